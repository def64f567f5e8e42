//! TC ingress on the lab's bridges: hairpin. A node that connects to the
//! uplink address on a forwarded port (or, for peer-to-peer, to another
//! node's mapping) reaches the inside target directly. Both directions are
//! rewritten here and redirected back out of the target's bridge; the
//! source becomes the uplink address with the client's own mapping, as
//! RFC 4787 asks of hairpinning. The replies to the lab host's own
//! connections to its forwards (`local_egress`) come back here too, and go
//! into the lab host's `lo`. IPv6 to the uplink's IPv6 address goes to
//! `nl_bridge_in6`.

use aya_ebpf::{
    helpers::generated::{bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};
use netlab_common::{
    stat, tail, Endpoint, FlowKey, FlowValue, NatConfig, DIR_ORIGINAL, HOOK_BRIDGE_INGRESS,
    IPPROTO_ICMP, IPPROTO_TCP, KIND_LOCAL, LO_IFINDEX,
};
use netlab_ebpf::{in_nat_range, TCP_ACK, TCP_SYN};

use crate::{
    binding, flowlog, flows, frags, fwd_counters, hook, lab,
    maps::TAILS,
    packet::{clear_l2, is_icmp_error, rewrite, set_addr, Parsed, Pkt, FRAG_LATER},
    packet6, port_search,
    template::FlowTemplate,
    verdict::{count, finish, Verdict, TC_ACT_UNSPEC},
};

/// `BPF_F_INGRESS`: redirect into the interface's receive path.
const BPF_F_INGRESS: u64 = 1;

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    let Some((cfg, parsed)) = hook::start(ctx) else {
        return TC_ACT_UNSPEC;
    };
    finish(handle(ctx, cfg, parsed))
}

/// Out of the bridge `ifindex`, to the neighbour the lab host's routes
/// give for the packet's destination.
#[inline(always)]
pub fn redirect(ifindex: u32) -> i32 {
    unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}

#[inline(always)]
fn handle(ctx: &TcContext, cfg: &'static NatConfig, parsed: Parsed) -> Verdict {
    let p = match parsed {
        Parsed::Other => return ipv6(ctx, cfg),
        Parsed::OtherProto { .. } | Parsed::Bad => return Ok(TC_ACT_UNSPEC),
        Parsed::Ip(p) => p,
    };
    // Everything but traffic to the uplink address (node to node, node to
    // the gateway, node to the outside) is not ours here.
    if p.dst != cfg.uplink_addr || is_icmp_error(&p) {
        return Ok(TC_ACT_UNSPEC);
    }
    if p.frag == FRAG_LATER {
        return later_fragment(ctx, &p);
    }
    let now = flows::now();
    let key = p.key();
    if let Some(v) = flows::lookup_live(cfg, &key, now) {
        if !flows::reopens(&key, v, &p) {
            return established(ctx, cfg, &p, &key, v, now);
        }
    }
    let Some(client_net) = lab::subnet_of(p.src) else {
        return Ok(TC_ACT_UNSPEC);
    };
    if p.proto == IPPROTO_ICMP {
        return Ok(TC_ACT_UNSPEC);
    }
    let Some((target, counter)) = hairpin_target(cfg, &p, now) else {
        return Ok(TC_ACT_UNSPEC);
    };
    if p.proto == IPPROTO_TCP && (p.tcp_flags & TCP_SYN == 0 || p.tcp_flags & TCP_ACK != 0) {
        return Ok(TC_ACT_UNSPEC);
    }
    let Some(target_net) = lab::subnet_of(target.addr) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let t = FlowTemplate::hairpin(
        &p,
        cfg.uplink_addr,
        &target,
        target_net.ifindex,
        client_net.ifindex,
    )
    .through_forward(counter);
    hairpin(ctx, cfg, &p, t, now)
}

/// IPv6: to `nl_bridge_in6` (IPv6 hairpin), which looks at it; ARP and
/// the rest pass. Only the EtherType is read here: an IPv6 header on this
/// program's stack would take the room its port search's callback needs
/// (the verifier counts both).
#[inline(always)]
fn ipv6(ctx: &TcContext, cfg: &NatConfig) -> Verdict {
    if cfg.uplink_addr6 != [0; 16] && packet6::is_ipv6(ctx) {
        // Returns only when the tail call cannot be made.
        unsafe { TAILS.tail_call(ctx, tail::BRIDGE_IN6) };
    }
    Ok(TC_ACT_UNSPEC)
}

/// No L4 header: translated as its datagram's first fragment was.
#[inline(always)]
fn later_fragment(ctx: &TcContext, p: &Pkt) -> Verdict {
    let Some(t) = frags::translation(p) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let Some(out) = lab::subnet_of(t.dst_addr).map(|s| s.ifindex) else {
        return Ok(TC_ACT_UNSPEC);
    };
    set_addr(ctx, p, true, p.src, t.src_addr)?;
    set_addr(ctx, p, false, p.dst, t.dst_addr)?;
    count(stat::XLATE_HAIRPIN);
    Ok(redirect(out))
}

/// A packet of a known hairpin flow, a reply to the lab host's own, or
/// (on a host port) a reply of a forward across hosts.
#[inline(always)]
pub fn established(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt,
    key: &FlowKey,
    v: *mut FlowValue,
    now: u64,
) -> Verdict {
    let r = flows::rewrite_of(v);
    if r.hook != HOOK_BRIDGE_INGRESS || r.out_ifindex == 0 {
        return Ok(TC_ACT_UNSPEC);
    }
    rewrite(ctx, p, r.src, r.dst, r.sport, r.dport)?;
    flows::touch(cfg, key, v, p, now)?;
    frags::record(p, r.src, r.dst);
    if r.kind == KIND_LOCAL {
        count(stat::XLATE_LOCAL);
        return into_lo(ctx);
    }
    count(stat::XLATE_HAIRPIN);
    Ok(redirect(r.out_ifindex))
}

/// Hand a reply to the lab host's own connection back to it: received on
/// `lo`, with `lo`'s (zero) Ethernet addresses so it is the host's to take.
#[inline(always)]
pub fn into_lo(ctx: &TcContext) -> Verdict {
    clear_l2(ctx)?;
    Ok(unsafe { bpf_redirect(LO_IFINDEX, BPF_F_INGRESS) as i32 })
}

/// Whom a node's new connection to the uplink address goes to: a forward's
/// target, or another node's (or its own) mapping: peer-to-peer
/// hairpinning, as two peers behind one NAT do with their server-reflexive
/// addresses. Filtering guards mappings against the outside; nodes of the
/// lab reach each other's mappings whatever the filtering. Other ports are
/// the lab host's own services. With the target, its forward's counter
/// (0 for a mapping).
#[inline(always)]
fn hairpin_target(cfg: &NatConfig, p: &Pkt, now: u64) -> Option<(Endpoint, u16)> {
    if let Some(forward) = lab::forward(p.dport, p.proto) {
        return Some(forward);
    }
    if !in_nat_range(cfg, u16::from_be(p.dport)) {
        return None;
    }
    binding::holder(&Endpoint::new(cfg.uplink_addr, p.dport, p.proto), now).map(|e| (e, 0))
}

#[inline(always)]
fn hairpin(ctx: &TcContext, cfg: &NatConfig, p: &Pkt, t: FlowTemplate, now: u64) -> Verdict {
    let to_target = t.opening.out_ifindex;
    let t = port_search::map_flow(ctx, cfg, t, now, tail::BRIDGE_IN)?;
    flowlog::new_flow(cfg, &t, flowlog::HAIRPIN);
    count(stat::NEW_HAIRPIN);
    fwd_counters::add(t.forward, DIR_ORIGINAL, p.len);
    let x = t.translated();
    rewrite(ctx, p, x.src_addr, x.dst_addr, x.src_port, x.dst_port)?;
    frags::record(p, x.src_addr, x.dst_addr);
    count(stat::XLATE_HAIRPIN);
    Ok(redirect(to_target))
}
