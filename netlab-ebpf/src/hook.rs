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
};

/// The active configuration and the parsed packet; `None` before `up`
/// (the hook then passes the packet, `TC_ACT_UNSPEC`).
#[inline(always)]
pub fn start(ctx: &TcContext) -> Option<(&'static NatConfig, Parsed)> {
    let cfg = lab::active_config()?;
    Some((cfg, packet::parse(ctx)))
}
