//! netlab's NAT dataplane: TC programs and the maps netlab fills.
//!
//! Hooks, one module each:
//! - `nl_uplink_out` (uplink, egress): masquerade, return half of forwards
//! - `nl_uplink_in` (uplink, ingress): replies, port forwards, filtering
//! - `nl_uplink_out6`, `nl_uplink_in6` (tail-called by the uplink's two for
//!   IPv6): masquerade of IPv6 (NAT66) and its replies
//! - `nl_bridge_in` (each lab bridge, ingress): hairpin, and the replies to
//!   the lab host's own connections to its forwards; `nl_bridge_in6`
//!   (tail-called) IPv6's hairpin
//! - `nl_node_in` (each node's veth on the lab host, ingress): fast path out,
//!   with `nl_node_new` (tail-called) for a masqueraded flow's first packet
//!   and `nl_node_in6` (tail-called) for IPv6's established flows
//! - `nl_local_out` (the lab host's `lo`, egress): its own connections to
//!   its forwards; `nl_local_out6` (tail-called) over IPv6
//! - `nl_host_port_in` (the lab host's port on a stretched bridge, ingress):
//!   the replies of forwards to nodes on other lab hosts
//! - `nl_tunnel_out` (each VXLAN device stretching a bridge, egress): the
//!   anycast gateway's own frames stay on their host
//! - `nl_gc` (tail-called by any of them): flow table collection when full;
//!   `nl_gc6` (tail-called by the IPv6 ones) the IPv6 table's
//!
//! State, one unit per concern: `flows` (the flow table; `flows6` IPv6's), `template` (how
//! every kind of flow is made), `binding` and `port_search` (mappings and
//! their ports; `binding6` IPv6's), `frags` (`frags6`), `fastpath` (cached addresses), `fwd_counters`
//! (each forward's packets and bytes), `table`, `gc` and `gc6`
//! (accounting and collection), `lab` (what user space says about the lab),
//! `verdict` (drop reasons, counted in one place), `flowlog`, `maps`.
#![no_std]
#![no_main]
// The atomic OR of a flow's state bits (`flow_state`).
#![feature(asm_experimental_arch)]
// Map keys and values go to the helpers by reference: by value (what clippy
// suggests for `impl Borrow`) copies them onto the 512-byte stack first.
#![allow(clippy::needless_borrows_for_generic_args)]

mod binding;
mod binding6;
mod bridge_ingress;
mod bridge_ingress6;
mod fastpath;
mod flow_state;
mod flowlog;
mod flows;
mod flows6;
mod frags;
mod frags6;
mod fwd_counters;
mod gc;
mod gc6;
mod hook;
mod host_port_ingress;
mod icmp;
mod icmp6;
mod lab;
mod local_egress;
mod local_egress6;
mod maps;
mod node_ingress;
mod node_ingress6;
mod packet;
mod packet6;
mod port_hint;
mod port_search;
mod table;
mod template;
mod tunnel_egress;
mod uplink_egress;
mod uplink_egress6;
mod uplink_ingress;
mod uplink_ingress6;
mod verdict;

use aya_ebpf::{macros::classifier, programs::TcContext};

// Inlined into the program's entry: one frame less against the 512 bytes
// of stack that Linux 6.1's verifier counts over all frames.
#[classifier]
#[inline(always)]
pub fn nl_uplink_in(ctx: TcContext) -> i32 {
    uplink_ingress::run(&ctx)
}

#[classifier]
pub fn nl_uplink_out(ctx: TcContext) -> i32 {
    uplink_egress::run(&ctx)
}

#[classifier]
pub fn nl_uplink_out6(ctx: TcContext) -> i32 {
    uplink_egress6::run(&ctx)
}

#[classifier]
pub fn nl_uplink_in6(ctx: TcContext) -> i32 {
    uplink_ingress6::run(&ctx)
}

#[classifier]
pub fn nl_bridge_in(ctx: TcContext) -> i32 {
    bridge_ingress::run(&ctx)
}

#[classifier]
pub fn nl_bridge_in6(ctx: TcContext) -> i32 {
    bridge_ingress6::run(&ctx)
}

#[classifier]
pub fn nl_node_in(ctx: TcContext) -> i32 {
    node_ingress::run(&ctx)
}

#[classifier]
pub fn nl_node_in6(ctx: TcContext) -> i32 {
    node_ingress6::run(&ctx)
}

#[classifier]
pub fn nl_node_new(ctx: TcContext) -> i32 {
    node_ingress::run_new(&ctx)
}

#[classifier]
pub fn nl_local_out(ctx: TcContext) -> i32 {
    local_egress::run(&ctx)
}

#[classifier]
pub fn nl_local_out6(ctx: TcContext) -> i32 {
    local_egress6::run(&ctx)
}

#[classifier]
pub fn nl_host_port_in(ctx: TcContext) -> i32 {
    host_port_ingress::run(&ctx)
}

#[classifier]
pub fn nl_tunnel_out(ctx: TcContext) -> i32 {
    tunnel_egress::run(&ctx)
}

#[classifier]
pub fn nl_gc(ctx: TcContext) -> i32 {
    gc::collect(&ctx)
}

#[classifier]
pub fn nl_gc6(ctx: TcContext) -> i32 {
    gc6::collect(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
