//! TC egress on the uplink: masquerade of the lab's subnets, the return
//! half of port forwards, and the check that no lab address leaves
//! untranslated unless its subnet is routed (IPv4 and IPv6 alike).

use aya_ebpf::programs::TcContext;
use netlab_common::{
    event, stat, tail, FlowKey, NatConfig, SubnetInfo, HOOK_UPLINK_EGRESS, SUBNET_MASQUERADE,
};

use crate::{
    fastpath, flowlog, flows, frags, hook, icmp, lab,
    maps::TAILS,
    packet::{is_icmp_error, rewrite, set_addr, Parsed, Pkt, FRAG_LATER},
    packet6::{self, ChainError},
    port_search,
    template::FlowTemplate,
    verdict::{count, finish, DropReason, Verdict, TC_ACT_UNSPEC},
};

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    let Some((cfg, parsed)) = hook::start(ctx) else {
        return TC_ACT_UNSPEC;
    };
    finish(handle(ctx, cfg, parsed))
}

#[inline(always)]
fn handle(ctx: &TcContext, cfg: &'static NatConfig, parsed: Parsed) -> Verdict {
    let p = match parsed {
        Parsed::Other => return ipv6(ctx, cfg),
        Parsed::Bad => return Ok(TC_ACT_UNSPEC),
        Parsed::OtherProto { src, .. } => {
            // Only TCP, UDP and ICMP are translated: anything else from a
            // masqueraded subnet would leave with an inside address.
            if src == cfg.uplink_addr {
                return Ok(TC_ACT_UNSPEC);
            }
            return untranslated(ctx, lab::subnet_of(src), DropReason::Protocol);
        }
        Parsed::Ip(p) => p,
    };
    if p.src == cfg.uplink_addr {
        // The lab host's own traffic.
        return Ok(TC_ACT_UNSPEC);
    }
    if p.frag == FRAG_LATER {
        if let Some(t) = frags::translation(&p) {
            set_addr(ctx, &p, true, p.src, t.src_addr)?;
            return Ok(TC_ACT_UNSPEC);
        }
        // Its first fragment was not seen: sending it would leak an inside address.
        return untranslated(ctx, lab::subnet_of(p.src), DropReason::Fragment);
    }
    if is_icmp_error(&p) {
        if icmp::translate_error(ctx, &p, HOOK_UPLINK_EGRESS)? {
            return Ok(TC_ACT_UNSPEC);
        }
        // About nothing we translated: sending it would leak an inside address.
        return untranslated(ctx, lab::subnet_of(p.src), DropReason::NoMapping);
    }
    let now = flows::now();
    let key = p.key();
    if let Some(v) = flows::lookup_packet(cfg, &p, &key, now) {
        return established(ctx, cfg, &p, &key, v, now);
    }
    let subnet = lab::subnet_of(p.src);
    if subnet.is_some_and(|s| s.flags & SUBNET_MASQUERADE != 0) {
        return masquerade(ctx, cfg, &p, now);
    }
    untranslated(ctx, subnet, DropReason::NoMapping)
}

/// IPv6 (or another protocol than IPv4): from a masqueraded subnet, to
/// `nl_uplink_out6` (NAT66) when the uplink has an IPv6 address to
/// translate to, dropped otherwise; as for IPv4, nothing forwarded from a
/// lab bridge unless its source is in a routed subnet. Link-local traffic
/// and neighbour discovery pass whatever their addresses, and so does
/// everything else.
#[inline(always)]
fn ipv6(ctx: &TcContext, cfg: &NatConfig) -> Verdict {
    let Some(ip) = packet6::beyond_link(ctx) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let subnet = lab::subnet6_of(&ip.src);
    let reason = if subnet.is_some_and(|s| s.flags & SUBNET_MASQUERADE != 0) {
        if cfg.uplink_addr6 != [0; 16] {
            // Returns only when the tail call cannot be made.
            unsafe { TAILS.tail_call(ctx, tail::UPLINK_OUT6) };
        }
        DropReason::V6Untranslated
    } else if !lab::may_leave_as_is(ctx, subnet) {
        DropReason::UnknownSource
    } else {
        return Ok(TC_ACT_UNSPEC);
    };
    match packet6::upper_layer(ctx, &ip) {
        Ok(u) if packet6::is_neighbour_discovery(ctx, &u) => Ok(TC_ACT_UNSPEC),
        Ok(_) => Err(reason),
        Err(ChainError::TooLong | ChainError::Truncated) => Err(DropReason::V6HeaderChain),
    }
}

/// A packet with no translation, from an address in `subnet` (if any) of
/// the lab: one from a masqueraded subnet is dropped for `reason`; one
/// forwarded from a lab bridge, from a source neither masqueraded nor
/// routed, as `drop_unknown_source`; the rest pass.
#[inline(always)]
fn untranslated(ctx: &TcContext, subnet: Option<&SubnetInfo>, reason: DropReason) -> Verdict {
    if subnet.is_some_and(|s| s.flags & SUBNET_MASQUERADE != 0) {
        return Err(reason);
    }
    if !lab::may_leave_as_is(ctx, subnet) {
        return Err(DropReason::UnknownSource);
    }
    Ok(TC_ACT_UNSPEC)
}

/// A packet of a known flow: translated here if the flow's entry is this
/// hook's (a forward's reply), passed on otherwise.
#[inline(always)]
fn established(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt,
    key: &FlowKey,
    v: *mut netlab_common::FlowValue,
    now: u64,
) -> Verdict {
    let r = flows::rewrite_of(v);
    if r.hook != HOOK_UPLINK_EGRESS {
        return Ok(TC_ACT_UNSPEC);
    }
    rewrite(ctx, p, r.src, r.dst, r.sport, r.dport)?;
    flows::touch(cfg, key, v, p, now)?;
    fastpath::learn_l2(ctx, v);
    frags::record(p, r.src, r.dst);
    count(stat::XLATE_OUT);
    Ok(TC_ACT_UNSPEC)
}

/// A new outbound flow from a masqueraded subnet.
#[inline(always)]
fn masquerade(ctx: &TcContext, cfg: &NatConfig, p: &Pkt, now: u64) -> Verdict {
    if lab::subnet_of(p.dst).is_some() {
        // To another lab subnet by way of the uplink (a route is missing):
        // no flow, or the outside could answer as that lab address.
        return Err(DropReason::Unsolicited);
    }
    if !flows::opens_flow(p) {
        // A reset or echo reply for a flow we do not know: sending it
        // would leak the inside address.
        return Err(DropReason::NoMapping);
    }
    let template = FlowTemplate::masquerade(p, cfg.uplink_addr);
    let t = match port_search::map_flow(ctx, cfg, template, now, tail::UPLINK_OUT) {
        Ok(t) => t,
        Err(reason) => {
            flowlog::dropped(cfg, p, event::NO_FREE_PORT);
            return Err(reason);
        }
    };
    flowlog::new_flow(cfg, &t, flowlog::SNAT_OUT);
    count(stat::NEW_SNAT);
    let up = cfg.uplink_addr;
    let port = t.other.key.dst_port;
    rewrite(ctx, p, up, p.dst, port, p.dport)?;
    if let Some(v) = flows::get(&t.opening.key) {
        fastpath::learn_l2(ctx, v);
    }
    frags::record(p, up, p.dst);
    count(stat::XLATE_OUT);
    Ok(TC_ACT_UNSPEC)
}
