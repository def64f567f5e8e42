//! The programs' log line for a new flow (`netlab log`), one format for
//! every place that makes flows:
//!
//! `new snat flow (uplink egress): 192.168.15.1:40000 -> 198.51.100.1:80 as
//! 198.51.100.2:12345 -> 198.51.100.1:80, ip protocol 6`: the opening
//! packet as it came and as it left.
//!
//! A log line costs the verifier thousands of steps per argument at every
//! place it is written (about 35,000 for this one), and a string argument
//! that can take several values multiplies that: so the kind and place
//! are one constant string per call site, the protocol its number.

use aya_ebpf::programs::TcContext;
use aya_log_ebpf::debug;
use netlab_common::{NatConfig, CONFIG_LOG};

use crate::template::FlowTemplate;

/// What was made where (the kinds as `netlab_common::kind_name` spells
/// them). Passed as a string argument at each call site: a string's
/// address copied from memory (a static, or a constant struct LLVM keeps
/// in `.rodata`) would be a plain number to the verifier, not a pointer.
pub const SNAT_OUT: &str = "snat flow (uplink egress)";
pub const SNAT_NODE: &str = "snat flow (node port, fast path)";
pub const SNAT_IN: &str = "snat flow (uplink ingress, endpoint-independent filtering)";
pub const DNAT: &str = "dnat flow (uplink ingress)";
pub const ROUTED: &str = "routed flow (uplink ingress)";
pub const HAIRPIN: &str = "hairpin flow (bridge)";
pub const LOCAL: &str = "local flow (lab host's lo)";

/// Log the new flow `t` (when `netlab log` runs). `x` is the other
/// direction's key: what the opening packet becomes is its reverse.
#[inline(always)]
pub fn new_flow(ctx: &TcContext, cfg: &NatConfig, t: &FlowTemplate, what: &str) {
    if cfg.flags & CONFIG_LOG == 0 {
        return;
    }
    let (k, x) = (&t.opening.key, &t.other.key);
    debug!(
        ctx,
        "new {}: {:i}:{} -> {:i}:{} as {:i}:{} -> {:i}:{}, ip protocol {}",
        what,
        u32::from_be(k.src_addr),
        u16::from_be(k.src_port),
        u32::from_be(k.dst_addr),
        u16::from_be(k.dst_port),
        u32::from_be(x.dst_addr),
        u16::from_be(x.dst_port),
        u32::from_be(x.src_addr),
        u16::from_be(x.src_port),
        k.proto
    );
}
