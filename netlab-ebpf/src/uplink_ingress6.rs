//! `nl_uplink_in6`, tail-called by `nl_uplink_in` for IPv6 to the uplink's
//! IPv6 address: the replies of masqueraded flows and the ICMPv6 errors
//! about them, translated back to their node, and port forwards to their
//! target (address-and-port-dependent filtering: only the exact
//! remote endpoint a flow went to gets in). Everything else is the lab
//! host's own and passes.

use aya_ebpf::programs::TcContext;
use netlab_common::{
    stat, tail, Flow6Value, ForwardKey, NatConfig, HOOK_UPLINK_INGRESS, IPPROTO_ICMPV6,
};

use crate::{
    fastpath, flowlog, flows, flows6, frags6, hook, icmp6,
    maps::FORWARD6_RULES,
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
        return Ok(TC_ACT_UNSPEC);
    };
    if u.frag == FRAG_LATER {
        if let Some(a) = frags6::translation(ip, &u) {
            packet6::set_fragment_addr(ctx, false, &a)?;
        }
        return Ok(TC_ACT_UNSPEC);
    }
    if icmp6::is_error(ctx, &u) {
        let p = packet6::message(ctx, ip, &u);
        icmp6::translate_in(ctx, &p, &u)?;
        return Ok(TC_ACT_UNSPEC);
    }
    let Some(p) = packet6::transport(ctx, ip, &u) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let now = flows::now();
    if let Some((v, orig)) = flows6::live_for(cfg, &p, HOOK_UPLINK_INGRESS, now) {
        return translate(ctx, cfg, &p, v, orig, now);
    }
    forward(ctx, cfg, &p, now)
}

/// A packet without a flow: a new connection to a forwarded port goes to
/// the forward's target; anything else is the lab host's.
#[inline(always)]
fn forward(ctx: &TcContext, cfg: &NatConfig, p: &Pkt6, now: u64) -> Verdict {
    if p.proto == IPPROTO_ICMPV6 || !flows6::opens_flow(p) {
        return Ok(TC_ACT_UNSPEC);
    }
    let Some(t) = FORWARD6_RULES.get_ptr(&ForwardKey::new(p.dport, p.proto)) else {
        return Ok(TC_ACT_UNSPEC);
    };
    if !table::admit6(ctx, &p.key, tail::UPLINK_IN6) {
        return Err(DropReason::TableFull);
    }
    let (addr, port, counter) = unsafe { ((*t).addr, (*t).port, (*t).counter) };
    flows6::insert_forwarded(&p.key, &addr, port, counter, now)?;
    count(stat::NEW_DNAT6);
    flowlog::new_flow6();
    let Some(v) = flows6::get(&p.key) else {
        return Err(DropReason::TableFull);
    };
    translate(ctx, cfg, p, v, v, now)
}

/// A packet of a known flow, to its node: a masqueraded flow's reply, or a
/// forwarded flow's packet from outside.
#[inline(always)]
fn translate(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt6,
    v: *mut Flow6Value,
    orig: *mut Flow6Value,
    now: u64,
) -> Verdict {
    let (addr, port) = unsafe { ((*v).addr, (*v).port) };
    // Read before the rewrite: the hop limit as it arrived.
    let fast = fastpath::node_port6(ctx, cfg, p.frag, &addr);
    packet6::set_addr(ctx, p, false, &addr)?;
    packet6::set_port(ctx, p, false, p.dport, port)?;
    frags6::record(p, &addr);
    flows6::touch(cfg, p, v, orig, now);
    count(stat::XLATE6_IN);
    if let Some((ifindex, l2)) = fast {
        packet6::forward_l2(ctx, &l2)?;
        count(stat::FAST_IN);
        return Ok(fastpath::into_node(ifindex));
    }
    Ok(TC_ACT_UNSPEC)
}
