//! `nl_uplink_out6`, tail-called by `nl_uplink_out` for IPv6 from a
//! masqueraded subnet: stateful masquerade (NAT66) of TCP, UDP and ICMPv6
//! echo to the uplink's IPv6 address, and of the ICMPv6 errors a node sends
//! about their replies. Nothing else from such a subnet
//! leaves, each drop counted for its reason.

use aya_ebpf::{programs::TcContext, EbpfContext as _};
use netlab_common::{stat, tail, Flow6Value, NatConfig, HOOK_UPLINK_EGRESS};

use crate::{
    binding6, fastpath, flowlog, flows, flows6, frags6, hook, icmp6, lab,
    packet::FRAG_LATER,
    packet6::{self, ChainError, Ip6, Pkt6, Upper},
    table,
    verdict::{count, finish, DropReason, Verdict, TC_ACT_UNSPEC},
};

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    let Some((cfg, ip, u)) = hook::start6(ctx) else {
        return TC_ACT_UNSPEC;
    };
    finish(handle(ctx, cfg, &ip, u))
}

#[inline(always)]
fn handle(ctx: &TcContext, cfg: &NatConfig, ip: &Ip6, u: Result<Upper, ChainError>) -> Verdict {
    let Ok(u) = u else {
        return Err(DropReason::V6HeaderChain);
    };
    if packet6::is_neighbour_discovery(ctx, &u) {
        return Ok(TC_ACT_UNSPEC);
    }
    if u.frag == FRAG_LATER {
        if let Some(a) = frags6::translation(ip, &u) {
            packet6::set_fragment_addr(ctx, true, &a)?;
            return Ok(TC_ACT_UNSPEC);
        }
        // Its first fragment was not seen: sending it would leak the
        // inside address.
        return Err(DropReason::Fragment);
    }
    if icmp6::is_error(ctx, &u) {
        let p = packet6::message(ctx, ip, &u);
        if icmp6::translate_out(ctx, &p, &u, &cfg.uplink_addr6)? {
            return Ok(TC_ACT_UNSPEC);
        }
        // About nothing we translated: it would leak an inside address.
        return Err(DropReason::NoMapping);
    }
    let Some(p) = packet6::transport(ctx, ip, &u) else {
        return Err(DropReason::Protocol);
    };
    let now = flows::now();
    if let Some((v, orig)) = flows6::live_for(cfg, &p, HOOK_UPLINK_EGRESS, now) {
        return established(ctx, cfg, &p, v, orig, now);
    }
    masquerade(ctx, cfg, &p, now)
}

/// A packet of a known flow: a masqueraded flow's, or a forwarded flow's
/// reply; from the uplink's address and the flow's port either way.
#[inline(always)]
fn established(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt6,
    v: *mut Flow6Value,
    orig: *mut Flow6Value,
    now: u64,
) -> Verdict {
    let port = unsafe { (*v).port };
    packet6::set_addr(ctx, p, true, &cfg.uplink_addr6)?;
    packet6::set_port(ctx, p, true, p.sport, port)?;
    frags6::record(p, &cfg.uplink_addr6);
    flows6::touch(cfg, p, v, orig, now);
    fastpath::learn_l2_6(ctx, v);
    count(stat::XLATE6_OUT);
    Ok(TC_ACT_UNSPEC)
}

/// A new outbound flow.
#[inline(always)]
fn masquerade(ctx: &TcContext, cfg: &NatConfig, p: &Pkt6, now: u64) -> Verdict {
    if lab::subnet6_of(&p.key.dst_addr).is_some() {
        // To another lab subnet by way of the uplink (a route is missing):
        // no flow, or the outside could answer as that lab address.
        return Err(DropReason::Unsolicited);
    }
    if !flows6::opens_flow(p) {
        return Err(DropReason::NoMapping);
    }
    if !table::admit6(ctx, &p.key, tail::UPLINK_OUT6) {
        return Err(DropReason::TableFull);
    }
    flows6::stage_masquerade(&p.key, now)?;
    let port = binding6::map(ctx.as_ptr(), cfg, &p.key, now)
        .inspect_err(|_| flowlog::no_free_port6(cfg, &p.key))?;
    if let Err(e) = flows6::store_masquerade(&p.key, &cfg.uplink_addr6, port, now) {
        binding6::unmap(&p.key, port, now);
        return Err(e);
    }
    count(stat::NEW_SNAT6);
    flowlog::new_flow6();
    let Some(v) = flows6::get(&p.key) else {
        return Err(DropReason::TableFull);
    };
    established(ctx, cfg, p, v, v, now)
}
