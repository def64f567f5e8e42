//! TC egress on the lab host's `lo`: the lab host reaches its own forwards,
//! as Docker's hosts do. A connection of the lab host to the uplink address
//! on a forwarded port (`S:s → U:f`, which the host's routing sends through
//! `lo`) leaves as `U:s → T:t` for the forward's target, out of the
//! target's bridge; the target's replies (`T:t → U:s`) are turned back into
//! `U:f → S:s` at that bridge (`bridge_ingress`) and handed into `lo`.
//! IPv6 goes to `nl_local_out6`. Everything else on `lo` passes untouched.

use aya_ebpf::programs::TcContext;
use netlab_common::{
    stat, tail, FlowKey, FlowValue, NatConfig, DIR_ORIGINAL, HOOK_LOCAL_EGRESS, IPPROTO_TCP,
};
use netlab_ebpf::{TCP_ACK, TCP_SYN};

use crate::{
    bridge_ingress::redirect,
    flowlog, flows, fwd_counters, hook, lab,
    maps::TAILS,
    packet::{is_icmp_error, rewrite, Parsed, Pkt, FRAG_NONE},
    packet6, table,
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
        Parsed::Ip(p) => p,
        Parsed::Other => return ipv6(ctx, cfg),
        _ => return Ok(TC_ACT_UNSPEC),
    };
    // Loopback carries datagrams up to 64 KiB whole: a fragment here is
    // rare enough to leave to the lab host (no forward), as are ICMP errors.
    if p.dst != cfg.uplink_addr || p.frag != FRAG_NONE || is_icmp_error(&p) {
        return Ok(TC_ACT_UNSPEC);
    }
    let now = flows::now();
    let key = p.key();
    if let Some(v) = flows::lookup_packet(cfg, &p, &key, now) {
        return established(ctx, cfg, &p, &key, v, now);
    }
    let Some((target, counter)) = lab::forward(p.dport, p.proto) else {
        // The lab host's own service on the uplink address.
        return Ok(TC_ACT_UNSPEC);
    };
    if p.proto == IPPROTO_TCP && (p.tcp_flags & TCP_SYN == 0 || p.tcp_flags & TCP_ACK != 0) {
        // Only a SYN opens a connection; the host's stack answers the rest.
        return Ok(TC_ACT_UNSPEC);
    }
    let Some(target_net) = lab::subnet_of(target.addr) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let t = FlowTemplate::local(&p, cfg.uplink_addr, &target, target_net.ifindex)
        .through_forward(counter);
    new_flow(ctx, cfg, &p, t, now)
}

/// IPv6: to `nl_local_out6` when the lab translates IPv6; the rest passes.
#[inline(always)]
fn ipv6(ctx: &TcContext, cfg: &NatConfig) -> Verdict {
    if cfg.uplink_addr6 != [0; 16] && packet6::is_ipv6(ctx) {
        // Returns only when the tail call cannot be made.
        unsafe { TAILS.tail_call(ctx, tail::LOCAL_OUT6) };
    }
    Ok(TC_ACT_UNSPEC)
}

/// A packet of a connection already taken to its target.
#[inline(always)]
fn established(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt,
    key: &FlowKey,
    v: *mut FlowValue,
    now: u64,
) -> Verdict {
    let r = flows::rewrite_of(v);
    if r.hook != HOOK_LOCAL_EGRESS || r.out_ifindex == 0 {
        return Ok(TC_ACT_UNSPEC);
    }
    rewrite(ctx, p, r.src, r.dst, r.sport, r.dport)?;
    flows::touch(cfg, key, v, p, now)?;
    count(stat::XLATE_LOCAL);
    Ok(redirect(r.out_ifindex))
}

#[inline(always)]
fn new_flow(ctx: &TcContext, cfg: &NatConfig, p: &Pkt, t: FlowTemplate, now: u64) -> Verdict {
    if !table::admit(ctx, cfg, &t.opening.key, now, tail::LOCAL_OUT) {
        return Err(DropReason::TableFull);
    }
    flows::insert_pair(cfg, &t, now)?;
    flowlog::new_flow(cfg, &t, flowlog::LOCAL);
    count(stat::NEW_LOCAL);
    fwd_counters::add(t.forward, DIR_ORIGINAL, p.len);
    let x = t.translated();
    rewrite(ctx, p, x.src_addr, x.dst_addr, x.src_port, x.dst_port)?;
    count(stat::XLATE_LOCAL);
    Ok(redirect(t.opening.out_ifindex))
}
