//! netlab's NAT dataplane: three TC programs and the maps netlab fills.
//!
//! - `nl_uplink_out` (uplink, egress): masquerade, return half of forwards
//! - `nl_uplink_in` (uplink, ingress): replies, port forwards, filtering
//! - `nl_bridge_in` (each lab bridge, ingress): hairpin
//! - `nl_node_in` (each node's veth on the lab host, ingress): fast path out,
//!   with `nl_node_new` (tail-called) for a masqueraded flow's first packet
//! - `nl_gc` (tail-called by any of them): flow table collection when full
#![no_std]
#![no_main]
// Map keys and values go to the helpers by reference: by value (what clippy
// suggests for `impl Borrow`) copies them onto the 512-byte stack first.
#![allow(clippy::needless_borrows_for_generic_args)]

mod bridge_ingress;
mod icmp;
mod maps;
mod nat;
mod node_ingress;
mod packet;
mod uplink_egress;
mod uplink_ingress;

use aya_ebpf::{macros::classifier, programs::TcContext};

/// "No opinion": continue with the next program on the hook (TCX) or the
/// next filter (clsact), so programs of others on the same interface still run.
pub const TC_ACT_UNSPEC: i32 = -1;

#[classifier]
pub fn nl_uplink_in(ctx: TcContext) -> i32 {
    uplink_ingress::run(&ctx)
}

#[classifier]
pub fn nl_uplink_out(ctx: TcContext) -> i32 {
    uplink_egress::run(&ctx)
}

#[classifier]
pub fn nl_bridge_in(ctx: TcContext) -> i32 {
    bridge_ingress::run(&ctx)
}

#[classifier]
pub fn nl_node_in(ctx: TcContext) -> i32 {
    node_ingress::run(&ctx)
}

#[classifier]
pub fn nl_node_new(ctx: TcContext) -> i32 {
    node_ingress::run_new(&ctx)
}

#[classifier]
pub fn nl_gc(ctx: TcContext) -> i32 {
    nat::collect(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
