//! `nl_gc`: one collection of the flow table, tail-called by a hook whose
//! new flow found the table full (`table::admit`). A program of its own so
//! the walk's callback frame never stacks on a hook's frames (Linux 6.1's
//! verifier counts them together).

use aya_ebpf::{
    bindings::TC_ACT_SHOT, cty::c_void, helpers::generated::bpf_for_each_map_elem, maps::Array,
    programs::TcContext,
};
use netlab_common::{stat, tail, FlowKey, FlowValue, GcState};
use netlab_ebpf::tcp_closed;

use crate::{
    flows::{self, flow_alive},
    lab::config,
    maps::{GC_RESUME, GC_STATE, NAT_FLOWS, TAILS},
    verdict::{add, count},
};

/// Collect, recount, and hand the packet back to the program that asked
/// (dropped, as for a full table, if that cannot be done).
#[inline(always)]
pub fn collect(ctx: &TcContext) -> i32 {
    let table = &NAT_FLOWS as *const _ as *mut c_void;
    collect_table(ctx, &GC_STATE, table, gc_step as *mut c_void)
}

/// Walk the flow table `table` with `step` (a `bpf_for_each_map_elem`
/// callback that counts in a [`Gc`]), set the entry count of `state`, count
/// the collection, and hand the packet back to the program that asked
/// (dropped, as for a full table, if that cannot be done).
#[inline(always)]
pub fn collect_table(
    ctx: &TcContext,
    state: &Array<GcState>,
    table: *mut c_void,
    step: *mut c_void,
) -> i32 {
    let Some(st) = state.get_ptr_mut(0) else {
        return TC_ACT_SHOT;
    };
    let mut gc = Gc::new(flows::now());
    unsafe {
        bpf_for_each_map_elem(table, step, &mut gc as *mut Gc as *mut c_void, 0);
        (*st).entries = gc.live;
    }
    count(stat::GC_RUNS);
    add(stat::GC_FREED, gc.freed);
    let resume = match GC_RESUME.get_ptr_mut(0) {
        Some(r) => unsafe {
            (*r).collected = 1;
            (*r).slot
        },
        None => tail::COUNT,
    };
    unsafe { TAILS.tail_call(ctx, resume) };
    count(stat::DROP_TABLE_FULL);
    TC_ACT_SHOT
}

/// What a collection works on (on the caller's stack).
#[repr(C)]
pub struct Gc {
    pub now: u64,
    pub live: u64,
    pub freed: u64,
}

impl Gc {
    #[inline(always)]
    pub fn new(now: u64) -> Gc {
        Gc {
            now,
            live: 0,
            freed: 0,
        }
    }
}

/// One entry of a collection: counted when its flow is alive (either half
/// fresh), removed when not. Returns 0 to go on.
#[inline(never)]
extern "C" fn gc_step(
    _map: *mut c_void,
    key: *mut c_void,
    value: *mut c_void,
    gc: *mut c_void,
) -> i64 {
    let gc = unsafe { &mut *(gc as *mut Gc) };
    let Some(cfg) = config() else { return 1 };
    let key = unsafe { *(key as *const FlowKey) };
    let v = unsafe { &*(value as *const FlowValue) };
    // Collections run when the table is full: connections that are over go
    // too, however recently they closed (as conntrack drops them early).
    if !tcp_closed(key.proto, v.state) && flow_alive(cfg, &key, v, gc.now) {
        gc.live += 1;
        return 0;
    }
    if NAT_FLOWS.remove(&key).is_ok() {
        gc.freed += 1;
    }
    0
}
