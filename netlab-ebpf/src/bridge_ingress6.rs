//! `nl_bridge_in6`, tail-called by `nl_bridge_in` for IPv6 from a lab
//! bridge to the uplink's IPv6 address: hairpin, as `bridge_ingress` does
//! for IPv4. A node's new connection to a forwarded port (or to another
//! node's mapping) goes straight to the target, from the uplink's address
//! and the client's own mapping (RFC 4787's hairpinning); both directions
//! are rewritten here and redirected out of the target's bridge.

use aya_ebpf::{programs::TcContext, EbpfContext as _};
use netlab_common::{
    stat, tail, Endpoint6, Flow6Key, Flow6Value, NatConfig, HOOK_BRIDGE_INGRESS, IPPROTO_ICMPV6,
    IPPROTO_TCP,
};
use netlab_ebpf::{in_nat_range, TCP_ACK, TCP_SYN};

use crate::{
    binding6,
    bridge_ingress::{into_lo, redirect},
    flows, flows6, hook, icmp6, lab,
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
    if ip.dst != cfg.uplink_addr6 || u.frag == FRAG_LATER || icmp6::is_error(ctx, &u) {
        return Ok(TC_ACT_UNSPEC);
    }
    // An echo to the uplink's address is the lab host's to answer.
    let Some(p) = packet6::transport(ctx, ip, &u).filter(|p| p.proto != IPPROTO_ICMPV6) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let now = flows::now();
    // One call of `hairpinned` for both ways in: the verifier of 6.1 walked
    // two inlined copies past its million instructions.
    let (v, orig) = match flows6::live_at(cfg, &p.key, HOOK_BRIDGE_INGRESS, now) {
        Some(live) => live,
        None => match new_flow(ctx, cfg, &p, now)? {
            Some(v) => (v, v),
            None => return Ok(TC_ACT_UNSPEC),
        },
    };
    hairpinned(ctx, cfg, &p, v, orig, now)
}

/// A node's new connection to a forward or a mapping at the uplink's
/// address: its flow's entry, or `None` when the packet is not one.
#[inline(always)]
fn new_flow(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt6,
    now: u64,
) -> Result<Option<*mut Flow6Value>, DropReason> {
    if lab::subnet6_of(&p.key.src_addr).is_none()
        || (p.proto == IPPROTO_TCP && (p.tcp_flags & TCP_SYN == 0 || p.tcp_flags & TCP_ACK != 0))
    {
        return Ok(None);
    }
    let Some((target, counter)) = target(cfg, p, now) else {
        return Ok(None);
    };
    if !table::admit6(ctx, &p.key, tail::BRIDGE_IN6) {
        return Err(DropReason::TableFull);
    }
    // The client's own mapping: the port it has (or gets) going out to
    // the target's endpoint.
    let out = Flow6Key::new(p.key.src_addr, target.addr, p.sport, target.port, p.proto);
    flows6::stage_hairpin(&p.key, counter, now)?;
    let sport = binding6::map(ctx.as_ptr(), cfg, &out, now)?;
    if let Err(e) = flows6::store_hairpin(&p.key, &target, &cfg.uplink_addr6, sport, counter, now) {
        binding6::unmap(&out, sport, now);
        return Err(e);
    }
    count(stat::NEW_HAIRPIN6);
    // Not logged (`flowlog::new_flow6`): whatever runs here, once per
    // verifier state, takes this program past Linux 6.1's million
    // instructions (72,350 without it).
    flows6::get(&p.key).map(Some).ok_or(DropReason::TableFull)
}

/// Whom a node's new connection to the uplink's IPv6 address goes to: a
/// forward's target, or the node holding that port's mapping
/// (peer-to-peer); other ports are the lab host's own. With the target,
/// its forward's counter (0 for a mapping).
#[inline(always)]
fn target(cfg: &NatConfig, p: &Pkt6, now: u64) -> Option<(Endpoint6, u16)> {
    if let Some(target) = lab::forward6(p.dport, p.proto) {
        return Some(target);
    }
    if !in_nat_range(cfg, u16::from_be(p.dport)) {
        return None;
    }
    Some((binding6::holder(p.dport, p.proto, now)?, 0))
}

/// A packet of a hairpinned flow: from the uplink's address, to its other
/// end, out of that end's bridge; or a reply to the lab host's own
/// connection to a forward (`nl_local_out6`), to the uplink's address:
/// into `lo`.
#[inline(always)]
fn hairpinned(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt6,
    v: *mut Flow6Value,
    orig: *mut Flow6Value,
    now: u64,
) -> Verdict {
    let (addr, port, sport) = unsafe { ((*v).addr, (*v).port, (*v).hairpin_sport) };
    // A node's address, else (compared only then) the lab host's own.
    let (out_ifindex, local) = match lab::subnet6_of(&addr) {
        Some(s) => (s.ifindex, false),
        None if packet6::same_addr(&addr, &cfg.uplink_addr6) => (0, true),
        None => return Ok(TC_ACT_UNSPEC),
    };
    packet6::set_addr(ctx, p, true, &cfg.uplink_addr6)?;
    packet6::set_port(ctx, p, true, p.sport, sport)?;
    packet6::set_addr(ctx, p, false, &addr)?;
    packet6::set_port(ctx, p, false, p.dport, port)?;
    flows6::touch(cfg, p, v, orig, now);
    if local {
        count(stat::XLATE6_LOCAL);
        return into_lo(ctx);
    }
    count(stat::XLATE6_HAIRPIN);
    Ok(redirect(out_ifindex))
}
