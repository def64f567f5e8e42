//! `nl_gc6`: one collection of the IPv6 flow table, tail-called by an
//! IPv6 hook whose new flow found the table (nearly) full
//! (`table::admit6`). A flow goes, both its entries, once it has timed out
//! or is over, as `nl_gc` does for IPv4.

use aya_ebpf::{cty::c_void, programs::TcContext};
use netlab_common::{Flow6Key, Flow6Value};
use netlab_ebpf::tcp_closed;

use crate::{
    flows6,
    gc::{collect_table, Gc},
    lab::config,
    maps::{GC6_STATE, NAT6_FLOWS},
};

/// Collect, recount, and hand the packet back to the program that asked.
#[inline(always)]
pub fn collect(ctx: &TcContext) -> i32 {
    let table = &NAT6_FLOWS as *const _ as *mut c_void;
    collect_table(ctx, &GC6_STATE, table, gc6_step as *mut c_void)
}

/// One entry of a collection: counted when its flow lives (by its
/// original entry's state and times, `flows6::tuple_state`), removed with
/// its other direction's entry when not. Returns 0 to go on.
#[inline(never)]
extern "C" fn gc6_step(
    _map: *mut c_void,
    key: *mut c_void,
    value: *mut c_void,
    gc: *mut c_void,
) -> i64 {
    let gc = unsafe { &mut *(gc as *mut Gc) };
    let Some(cfg) = config() else { return 1 };
    let key = unsafe { &*(key as *const Flow6Key) };
    let v = value as *mut Flow6Value;
    let state = unsafe { &*flows6::tuple_state(v) };
    if !tcp_closed(key.proto, state.state) && flows6::alive(cfg, key.proto, state, gc.now) {
        gc.live += 1;
        return 0;
    }
    let peer = unsafe { (*v).peer };
    if NAT6_FLOWS.remove(key).is_ok() {
        gc.freed += 1;
    }
    if flows6::points_back(&peer, key) && NAT6_FLOWS.remove(&peer).is_ok() {
        gc.freed += 1;
    }
    0
}
