//! The prologue every packet hook shares: nothing is touched until `up`
//! has written the lab's configuration, and the packet is parsed once.
//! (A function, not a wrapper taking the handler: LLVM leaves a handler
//! passed as a closure out of line, and the verifier refuses a tail call
//! in a function that does not return `int`.)

use aya_ebpf::programs::TcContext;
use netlab_common::NatConfig;

use crate::{
    lab,
    packet::{self, Parsed},
    packet6::{self, ChainError, Ip6, Upper},
};

/// The active configuration and the parsed packet; `None` before `up`
/// (the hook then passes the packet, `TC_ACT_UNSPEC`).
#[inline(always)]
pub fn start(ctx: &TcContext) -> Option<(&'static NatConfig, Parsed)> {
    let cfg = lab::active_config()?;
    Some((cfg, packet::parse(ctx)))
}

/// The IPv6 programs' prologue: the active configuration and the frame's
/// IPv6 header with where its upper layer is (or why that was not found);
/// `None` before `up` or for a frame that is not IPv6 beyond its link
/// (the program passes it).
#[inline(always)]
pub fn start6(ctx: &TcContext) -> Option<(&'static NatConfig, Ip6, Result<Upper, ChainError>)> {
    let cfg = lab::active_config()?;
    let ip = packet6::beyond_link(ctx)?;
    let u = packet6::upper_layer(ctx, &ip).and_then(packet6::settle);
    Some((cfg, ip, u))
}
