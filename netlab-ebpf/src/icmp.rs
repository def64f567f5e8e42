//! ICMP errors (unreachable, time exceeded, parameter problem) quote the
//! packet that caused them. For a translated flow both the outer header and
//! the quoted one are rewritten, so traceroute and path-MTU discovery work
//! from behind the NAT.

use aya_ebpf::programs::TcContext;
use netlab_common::{stat, FlowKey, HOOK_UPLINK_INGRESS, KIND_ROUTED};

use crate::{
    flows,
    lab::{config, masqueraded},
    packet::{parse_inner, rewrite_inner, set_addr, Pkt},
    verdict::{count, DropReason},
};

/// Translate an ICMP error about a flow known at `hook`; `false` when it is
/// about no flow of ours (the caller decides whether it may pass as it is).
/// Errors about a routed subnet's flows are known and keep the quoted
/// packet as it is.
#[inline(always)]
pub fn translate_error(ctx: &TcContext, p: &Pkt, hook: u8) -> Result<bool, DropReason> {
    let Some(inner) = parse_inner(ctx, p) else {
        return Ok(false);
    };
    // The quoted packet went the other way: its reverse is the key a
    // packet of the flow has at this hook.
    let key = FlowKey::new(inner.dst, inner.src, inner.dport, inner.sport, inner.proto);
    let Some(v) = flows::get(&key) else {
        return Ok(false);
    };
    let v = unsafe { *v };
    if v.hook != hook {
        return Ok(false);
    }
    if v.kind == KIND_ROUTED {
        // The quoted packet stays as it is. The sender does too, unless it
        // is a router of a masqueraded subnet: then the uplink address
        // speaks for it, as for any other packet from there.
        if hook != HOOK_UPLINK_INGRESS && masqueraded(p.src) {
            if let Some(cfg) = config() {
                set_addr(ctx, p, true, p.src, cfg.uplink_addr)?;
            }
        }
        return Ok(true);
    }
    if hook == HOOK_UPLINK_INGRESS {
        // Outer: to the inside node. Quoted: the node's own packet as it left.
        rewrite_inner(ctx, p, &inner, true, v.dst_addr, v.dst_port)?;
        set_addr(ctx, p, false, p.dst, v.dst_addr)?;
    } else {
        // From an inside node: the outer source and the quoted destination
        // become the outside endpoint the remote knows.
        rewrite_inner(ctx, p, &inner, false, v.src_addr, v.src_port)?;
        set_addr(ctx, p, true, p.src, v.src_addr)?;
    }
    count(stat::XLATE_ICMP_ERROR);
    Ok(true)
}
