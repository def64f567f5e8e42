//! `nl_local_out6`, tail-called by `nl_local_out` for IPv6 on the lab
//! host's `lo`: the lab host reaches its own IPv6 forwards, as
//! `local_egress` does for IPv4. A connection of the lab host to the
//! uplink's IPv6 address on a forwarded port (`U:s → U:f`) leaves as
//! `U:s → T:t` for the forward's target, out of the target's bridge; the
//! target's replies (`T:t → U:s`) are turned back into `U:f → U:s` at that
//! bridge (`nl_bridge_in6`, as a hairpin's are) and handed into `lo`.
//! Everything else on `lo` passes untouched.

use aya_ebpf::programs::TcContext;
use netlab_common::{
    stat, tail, Flow6Value, NatConfig, HOOK_LOCAL_EGRESS, IPPROTO_ICMPV6, IPPROTO_TCP,
};
use netlab_ebpf::{TCP_ACK, TCP_SYN};

use crate::{
    bridge_ingress::redirect,
    flowlog, flows, flows6, hook, icmp6, lab,
    packet::FRAG_NONE,
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
    // From the uplink's address to itself: what the lab host's routing
    // sends through `lo` for a connection to that address. Loopback
    // carries datagrams whole: a fragment is left to the lab host, as are
    // ICMPv6 errors.
    if ip.dst != cfg.uplink_addr6
        || ip.src != cfg.uplink_addr6
        || u.frag != FRAG_NONE
        || icmp6::is_error(ctx, &u)
    {
        return Ok(TC_ACT_UNSPEC);
    }
    let Some(p) = packet6::transport(ctx, ip, &u).filter(|p| p.proto != IPPROTO_ICMPV6) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let now = flows::now();
    if let Some((v, orig)) = flows6::live_at(cfg, &p.key, HOOK_LOCAL_EGRESS, now) {
        return established(ctx, cfg, &p, v, orig, now);
    }
    let Some((target, counter)) = lab::forward6(p.dport, p.proto) else {
        // The lab host's own service on the uplink's address.
        return Ok(TC_ACT_UNSPEC);
    };
    if p.proto == IPPROTO_TCP && (p.tcp_flags & TCP_SYN == 0 || p.tcp_flags & TCP_ACK != 0) {
        // Only a SYN opens a connection; the host's stack answers the rest.
        return Ok(TC_ACT_UNSPEC);
    }
    if !table::admit6(ctx, &p.key, tail::LOCAL_OUT6) {
        return Err(DropReason::TableFull);
    }
    // The replies are turned back at the target's bridge as a hairpin's
    // are: from the forwarded port, to the connection's own port.
    flows6::stage_hairpin(&p.key, counter, now)?;
    let reply = flows6::local_reply_key(&p.key, &target);
    if !flows6::claim_reply(cfg, &reply, now) {
        return Err(DropReason::Conflict);
    }
    flows6::store_local(&p.key, &reply, &target, counter, now)?;
    count(stat::NEW_LOCAL6);
    flowlog::new_flow6();
    let Some(v) = flows6::get(&p.key) else {
        return Err(DropReason::TableFull);
    };
    established(ctx, cfg, &p, v, v, now)
}

/// A packet of a connection already taken to its target: to the target,
/// out of its bridge.
#[inline(always)]
fn established(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt6,
    v: *mut Flow6Value,
    orig: *mut Flow6Value,
    now: u64,
) -> Verdict {
    let (addr, port) = unsafe { ((*v).addr, (*v).port) };
    let Some(out_ifindex) = lab::subnet6_of(&addr).map(|s| s.ifindex) else {
        return Ok(TC_ACT_UNSPEC);
    };
    packet6::set_addr(ctx, p, false, &addr)?;
    packet6::set_port(ctx, p, false, p.dport, port)?;
    flows6::touch(cfg, p, v, orig, now);
    count(stat::XLATE6_LOCAL);
    Ok(redirect(out_ifindex))
}
