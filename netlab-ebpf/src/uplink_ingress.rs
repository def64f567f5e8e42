//! TC ingress on the uplink: replies to masqueraded flows, port forwards,
//! endpoint-independent filtering, and the checks that keep the outside out.

use aya_ebpf::{programs::TcContext, EbpfContext as _};
use netlab_common::{
    event, stat, tail, Endpoint, FlowKey, FlowValue, ForwardTarget, NatConfig, DIR_ORIGINAL,
    HOOK_UPLINK_INGRESS, IPPROTO_ICMP, IPPROTO_TCP, KIND_ROUTED,
    SUBNET_ENDPOINT_INDEPENDENT_FILTERING, SUBNET_ROUTED,
};
use netlab_ebpf::{in_nat_range, TCP_ACK, TCP_SYN};

use crate::{
    binding, bridge_ingress, fastpath, flowlog, flows, frags, fwd_counters, hook, icmp, lab,
    maps::TAILS,
    packet::{
        is_icmp_error, rewrite, rewrite_forward, set_addr, Parsed, Pkt, FRAG_LATER, FRAG_NONE,
        ICMP_ECHO_REPLY,
    },
    packet6, port_search, table,
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
        Parsed::OtherProto { src, dst } => return other_protocol(src, dst),
        Parsed::Bad => return Err(DropReason::BadHeader),
        Parsed::Ip(p) => p,
    };
    if p.dst != cfg.uplink_addr {
        return to_lab_address(ctx, cfg, &p);
    }
    if (p.frag == FRAG_LATER || is_icmp_error(&p)) && lab::subnet_of(p.src).is_some() {
        // A lab source is spoofed here (and hairpinned datagrams' fragments
        // are recorded under lab sources: never translate by those).
        return Err(DropReason::Spoofed);
    }
    if p.frag == FRAG_LATER {
        if let Some(t) = frags::translation(&p) {
            set_addr(ctx, &p, false, p.dst, t.dst_addr)?;
        }
        return Ok(TC_ACT_UNSPEC);
    }
    if is_icmp_error(&p) {
        icmp::translate_error(ctx, &p, HOOK_UPLINK_INGRESS)?;
        return Ok(TC_ACT_UNSPEC);
    }
    let now = flows::now();
    let key = p.key();
    if let Some(v) = flows::lookup_packet(cfg, &p, &key, now) {
        return established(ctx, cfg, &p, &key, v, now);
    }
    miss(ctx, cfg, &p, &key, now)
}

/// IPv6 (or another protocol than IPv4): to the uplink's IPv6 address, to
/// `nl_uplink_in6` (the replies of masqueraded flows); as for an
/// untranslated IPv4 protocol, never into a lab subnet that is not routed,
/// never from a lab source. Link-local traffic and neighbour discovery pass.
#[inline(always)]
fn ipv6(ctx: &TcContext, cfg: &NatConfig) -> Verdict {
    let Some(ip) = packet6::beyond_link(ctx) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let reason = if lab::subnet6_of(&ip.src).is_some() {
        DropReason::Spoofed
    } else if ip.dst == cfg.uplink_addr6 && cfg.uplink_addr6 != [0; 16] {
        // Returns only when the tail call cannot be made.
        unsafe { TAILS.tail_call(ctx, tail::UPLINK_IN6) };
        return Ok(TC_ACT_UNSPEC);
    } else {
        match lab::subnet6_of(&ip.dst) {
            Some(sn) if sn.flags & SUBNET_ROUTED == 0 => DropReason::Unsolicited,
            _ => return Ok(TC_ACT_UNSPEC),
        }
    };
    match packet6::upper_layer(ctx, &ip) {
        Ok(u) if packet6::is_neighbour_discovery(ctx, &u) => Ok(TC_ACT_UNSPEC),
        _ => Err(reason),
    }
}

/// A protocol netlab does not translate: never let into the lab, except
/// into a routed subnet; a lab source from outside is spoofed.
#[inline(always)]
fn other_protocol(src: u32, dst: u32) -> Verdict {
    if lab::subnet_of(src).is_some() {
        return Err(DropReason::Spoofed);
    }
    match lab::subnet_of(dst) {
        Some(sn) if sn.flags & SUBNET_ROUTED == 0 => Err(DropReason::Unsolicited),
        _ => Ok(TC_ACT_UNSPEC),
    }
}

/// Straight to a lab address: only a routed subnet takes that.
#[inline(always)]
fn to_lab_address(ctx: &TcContext, cfg: &NatConfig, p: &Pkt) -> Verdict {
    let Some(sn) = lab::subnet_of(p.dst) else {
        return Ok(TC_ACT_UNSPEC);
    };
    if sn.flags & SUBNET_ROUTED == 0 {
        return Err(DropReason::Unsolicited);
    }
    if lab::subnet_of(p.src).is_some() {
        return Err(DropReason::Spoofed);
    }
    if p.frag == FRAG_NONE && !is_icmp_error(p) {
        return routed(ctx, cfg, p);
    }
    Ok(TC_ACT_UNSPEC)
}

/// A reply (or a forward's later packet) of a known flow.
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
    if r.hook != HOOK_UPLINK_INGRESS {
        return Ok(TC_ACT_UNSPEC);
    }
    flows::touch(cfg, key, v, p, now)?;
    count(stat::XLATE_IN);
    if r.out_ifindex != 0 {
        // A forward to another lab host's node: out of the host port.
        rewrite(ctx, p, r.src, r.dst, r.sport, r.dport)?;
        return Ok(bridge_ingress::redirect(r.out_ifindex));
    }
    if let Some((ifindex, l2)) = fastpath::node_port(cfg, p, r.dst) {
        rewrite_forward(ctx, p, r.src, r.dst, r.sport, r.dport, &l2)?;
        count(stat::FAST_IN);
        return Ok(fastpath::into_node(ifindex));
    }
    rewrite(ctx, p, r.src, r.dst, r.sport, r.dport)?;
    frags::record(p, r.src, r.dst);
    Ok(TC_ACT_UNSPEC)
}

/// A packet from the outside straight to a node of a routed subnet: kept
/// as a flow without translation, so the node's replies leave as they are
/// instead of being masqueraded; with the fast path it goes straight in.
#[inline(always)]
fn routed(ctx: &TcContext, cfg: &NatConfig, p: &Pkt) -> Verdict {
    let now = flows::now();
    let key = p.key();
    let v = match flows::lookup_packet(cfg, p, &key, now) {
        Some(v) => v,
        None => {
            if !table::admit(ctx, cfg, &key, now, tail::UPLINK_IN) {
                return Err(DropReason::TableFull);
            }
            let t = FlowTemplate::routed(p);
            if flows::insert_pair(cfg, &t, now).is_err() {
                // The node already has a flow with this tuple (its own,
                // masqueraded): leave the packet to the stack.
                return Ok(TC_ACT_UNSPEC);
            }
            flowlog::new_flow(cfg, &t, flowlog::ROUTED);
            match flows::get(&key) {
                Some(v) => v,
                None => return Ok(TC_ACT_UNSPEC),
            }
        }
    };
    if unsafe { (*v).kind } != KIND_ROUTED {
        return Ok(TC_ACT_UNSPEC);
    }
    flows::touch(cfg, &key, v, p, now)?;
    if let Some((ifindex, l2)) = fastpath::node_port(cfg, p, p.dst) {
        rewrite_forward(ctx, p, p.src, p.dst, p.sport, p.dport, &l2)?;
        count(stat::FAST_IN);
        return Ok(fastpath::into_node(ifindex));
    }
    Ok(TC_ACT_UNSPEC)
}

/// A packet to the uplink address that matches no flow.
#[inline(always)]
fn miss(ctx: &TcContext, cfg: &NatConfig, p: &Pkt, key: &FlowKey, now: u64) -> Verdict {
    if lab::subnet_of(p.src).is_some() {
        return Err(DropReason::Spoofed);
    }
    if p.proto != IPPROTO_ICMP {
        if let Some(rule) = lab::forward_rule(p.dport, p.proto) {
            if rule.snat_addr != 0 {
                return forward_across(ctx, cfg, p, &rule, now);
            }
            let target = Endpoint::new(rule.addr, rule.port, p.proto);
            return port_forward(ctx, cfg, p, key, &target, rule.counter, now);
        }
    } else if p.icmp_type != ICMP_ECHO_REPLY {
        // Echo requests and the rest are the lab host's to answer.
        return Ok(TC_ACT_UNSPEC);
    }
    let mapped = p.proto == IPPROTO_ICMP || in_nat_range(cfg, u16::from_be(p.dport));
    if !mapped {
        return Ok(TC_ACT_UNSPEC);
    }
    let outside = Endpoint::new(cfg.uplink_addr, p.dport, p.proto);
    if let Some(inside) = binding::holder(&outside, now) {
        return to_mapping(ctx, cfg, p, key, &inside, now);
    }
    if p.proto == IPPROTO_ICMP
        || binding::host_socket_uses(ctx.as_ptr(), p.proto, p.src, p.sport, p.dst, p.dport)
    {
        // The lab host's own ping, or its own socket on a port in the NAT range.
        return Ok(TC_ACT_UNSPEC);
    }
    flowlog::dropped(cfg, p, event::NO_MAPPING);
    Err(DropReason::NoMapping)
}

/// An outside host reaches an inside endpoint through its mapping: the
/// reply half of an existing flow that was evicted (rebuild it), or a new
/// flow where the endpoint's subnet filters endpoint-independently.
#[inline(always)]
fn to_mapping(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt,
    key: &FlowKey,
    inside: &Endpoint,
    now: u64,
) -> Verdict {
    let t = FlowTemplate::inbound(p, inside);
    if let Some(out) = flows::get(&t.other.key) {
        let out = unsafe { &*out };
        if out.src_addr == cfg.uplink_addr && out.src_port == p.dport {
            let reply = t.opening_entry(now)?;
            reply.state = out.state;
            reply.created_ns = out.created_ns;
            flows::put(key, reply)?;
            count(stat::REPAIRED);
            return translate_new(ctx, cfg, p, key, inside, now);
        }
    }
    let eif = lab::subnet_of(inside.addr)
        .is_some_and(|s| s.flags & SUBNET_ENDPOINT_INDEPENDENT_FILTERING != 0);
    if !eif {
        return Err(DropReason::Filtered);
    }
    if !table::admit(ctx, cfg, key, now, tail::UPLINK_IN) {
        return Err(DropReason::TableFull);
    }
    flows::insert_pair(cfg, &t, now)?;
    flowlog::new_flow(cfg, &t, flowlog::SNAT_IN);
    count(stat::NEW_SNAT);
    translate_new(ctx, cfg, p, key, inside, now)
}

#[inline(always)]
fn translate_new(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt,
    key: &FlowKey,
    inside: &Endpoint,
    now: u64,
) -> Verdict {
    rewrite(ctx, p, p.src, inside.addr, p.sport, inside.port)?;
    if let Some(v) = flows::get(key) {
        let _ = flows::touch(cfg, key, v, p, now);
    }
    frags::record(p, p.src, inside.addr);
    count(stat::XLATE_IN);
    Ok(TC_ACT_UNSPEC)
}

/// A new flow to a forwarded port (whose counter is `counter`).
#[inline(always)]
fn port_forward(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt,
    key: &FlowKey,
    target: &Endpoint,
    counter: u16,
    now: u64,
) -> Verdict {
    if p.proto == IPPROTO_TCP && (p.tcp_flags & TCP_SYN == 0 || p.tcp_flags & TCP_ACK != 0) {
        // Only a SYN opens a forwarded connection.
        return Err(DropReason::NoMapping);
    }
    if !table::admit(ctx, cfg, key, now, tail::UPLINK_IN) {
        return Err(DropReason::TableFull);
    }
    let mut t = FlowTemplate::forward(p, target).through_forward(counter);
    flows::free_reply_key(cfg, &mut t, now);
    flows::insert_pair(cfg, &t, now)?;
    flowlog::new_flow(cfg, &t, flowlog::DNAT);
    count(stat::NEW_DNAT);
    fwd_counters::add(counter, DIR_ORIGINAL, p.len);
    let x = t.translated();
    rewrite(ctx, p, x.src_addr, x.dst_addr, x.src_port, x.dst_port)?;
    frags::record(p, p.src, target.addr);
    count(stat::XLATE_IN);
    Ok(TC_ACT_UNSPEC)
}

/// A new connection to a forward whose target is a node on another lab
/// host: translated twice (DNAT to the target, SNAT to this host's address
/// on the stretched bridge at a port of the NAT range, found as a
/// masquerade's is), and sent out of this host's port on that bridge, so
/// the node's replies come back here (`host_port_ingress`).
#[inline(always)]
fn forward_across(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt,
    rule: &ForwardTarget,
    now: u64,
) -> Verdict {
    if p.proto == IPPROTO_TCP && (p.tcp_flags & TCP_SYN == 0 || p.tcp_flags & TCP_ACK != 0) {
        return Err(DropReason::NoMapping);
    }
    if p.frag != FRAG_NONE {
        // Its later fragments would have no port to be found by.
        return Err(DropReason::Fragment);
    }
    let Some(host_port) = lab::subnet_of(rule.snat_addr).map(|s| s.ifindex) else {
        return Err(DropReason::NoMapping);
    };
    let t = FlowTemplate::forward_across(p, rule, host_port, cfg.uplink_ifindex)
        .through_forward(rule.counter);
    let t = port_search::map_flow(ctx, cfg, t, now, tail::UPLINK_IN)?;
    flowlog::new_flow(cfg, &t, flowlog::DNAT);
    count(stat::NEW_DNAT);
    fwd_counters::add(t.forward, DIR_ORIGINAL, p.len);
    let x = t.translated();
    rewrite(ctx, p, x.src_addr, x.dst_addr, x.src_port, x.dst_port)?;
    count(stat::XLATE_IN);
    Ok(bridge_ingress::redirect(host_port))
}
