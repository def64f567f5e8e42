//! TC ingress on the uplink: replies to masqueraded flows, port forwards,
//! endpoint-independent filtering, and the checks that keep the outside out.

use aya_ebpf::{
    bindings::TC_ACT_SHOT, helpers::generated::bpf_redirect_peer, programs::TcContext,
    EbpfContext as _,
};
use aya_log_ebpf::debug;
use netlab_common::{
    stat, tail, Endpoint, FlowKey, ForwardKey, NatConfig, CONFIG_FAST_PATH, CONFIG_LOG,
    DIR_ORIGINAL, DIR_REPLY, HOOK_UPLINK_EGRESS, HOOK_UPLINK_INGRESS, IPPROTO_ICMP, IPPROTO_TCP,
    KIND_DNAT, KIND_ROUTED, KIND_SNAT, SUBNET_ENDPOINT_INDEPENDENT_FILTERING, SUBNET_ROUTED,
};
use netlab_ebpf::{in_nat_range, TCP_ACK, TCP_SYN};

use crate::{
    icmp,
    maps::{
        config, count, FORWARD_RULES, NAT_FLOWS, NAT_PORTS, NODE_PORTS, SCRATCH_ORIGINAL,
        SCRATCH_REPLY,
    },
    nat::{self, entry},
    packet::{
        self, is_icmp_error, rewrite, rewrite_forward, set_addr, Parsed, Pkt, FRAG_LATER,
        FRAG_NONE, ICMP_ECHO_REPLY,
    },
    TC_ACT_UNSPEC,
};

pub fn run(ctx: &TcContext) -> i32 {
    match handle(ctx) {
        Ok(action) => action,
        Err(()) => TC_ACT_SHOT,
    }
}

#[inline(always)]
fn drop(reason: u32) -> Result<i32, ()> {
    count(reason);
    Ok(TC_ACT_SHOT)
}

#[inline(always)]
fn handle(ctx: &TcContext) -> Result<i32, ()> {
    let Some(cfg) = config() else {
        return Ok(TC_ACT_UNSPEC);
    };
    if cfg.uplink_addr == 0 {
        return Ok(TC_ACT_UNSPEC);
    }
    let p = match packet::parse(ctx) {
        Parsed::Other => return Ok(TC_ACT_UNSPEC),
        Parsed::OtherProto { src, dst } => {
            // Never translated, so never let into the lab, except into a
            // routed subnet; a lab source from outside is spoofed.
            if nat::subnet_of(src).is_some() {
                return drop(stat::DROP_SPOOFED);
            }
            return match nat::subnet_of(dst) {
                Some(sn) if sn.flags & SUBNET_ROUTED == 0 => drop(stat::DROP_UNSOLICITED),
                _ => Ok(TC_ACT_UNSPEC),
            };
        }
        Parsed::Bad => return drop(stat::DROP_BAD_HEADER),
        Parsed::Ip(p) => p,
    };
    if p.dst != cfg.uplink_addr {
        // Straight to a lab address: only a routed subnet takes that.
        if let Some(sn) = nat::subnet_of(p.dst) {
            if sn.flags & SUBNET_ROUTED == 0 {
                return drop(stat::DROP_UNSOLICITED);
            }
            if nat::subnet_of(p.src).is_some() {
                return drop(stat::DROP_SPOOFED);
            }
            if p.frag == FRAG_NONE && !is_icmp_error(&p) {
                return routed(ctx, cfg, &p);
            }
        }
        return Ok(TC_ACT_UNSPEC);
    }
    if p.frag == FRAG_LATER {
        // A lab source is spoofed here (and hairpinned datagrams' fragments
        // are recorded under lab sources: never translate by those).
        if nat::subnet_of(p.src).is_some() {
            return drop(stat::DROP_SPOOFED);
        }
        if let Some(t) = nat::fragment_translation(&p) {
            set_addr(ctx, &p, false, p.dst, t.dst_addr)?;
        }
        return Ok(TC_ACT_UNSPEC);
    }
    if is_icmp_error(&p) {
        if nat::subnet_of(p.src).is_some() {
            return drop(stat::DROP_SPOOFED);
        }
        icmp::translate_error(ctx, &p, HOOK_UPLINK_INGRESS)?;
        return Ok(TC_ACT_UNSPEC);
    }
    let now = nat::now();
    let key = FlowKey::new(p.src, p.dst, p.sport, p.dport, p.proto);
    if let Some(v) = nat::lookup_packet(cfg, &p, &key, now) {
        let (hook, src, dst, sport, dport) = unsafe {
            (
                (*v).hook,
                (*v).src_addr,
                (*v).dst_addr,
                (*v).src_port,
                (*v).dst_port,
            )
        };
        if hook != HOOK_UPLINK_INGRESS {
            return Ok(TC_ACT_UNSPEC);
        }
        if nat::touch(cfg, &key, v, &p, now).is_err() {
            return Ok(TC_ACT_SHOT);
        }
        count(stat::XLATE_IN);
        if let Some((ifindex, l2)) = fast_path_in(cfg, &p, dst) {
            rewrite_forward(ctx, &p, src, dst, sport, dport, &l2)?;
            count(stat::FAST_IN);
            return Ok(unsafe { bpf_redirect_peer(ifindex, 0) } as i32);
        }
        rewrite(ctx, &p, src, dst, sport, dport)?;
        nat::record_fragment(&p, src, dst);
        return Ok(TC_ACT_UNSPEC);
    }
    miss(ctx, cfg, &p, &key, now)
}

/// The fast path in: a translated packet for a node goes straight into the
/// node's namespace (`bpf_redirect_peer` from the lab host's end of its
/// veth), skipping the lab host's routing and the bridge. Anything the
/// stack must see (fragments, an expiring TTL) takes the slow path.
/// Returns the node's port and the Ethernet addresses to give the packet.
#[inline(always)]
fn fast_path_in(cfg: &NatConfig, p: &Pkt, node: u32) -> Option<(u32, [u8; 12])> {
    if cfg.flags & CONFIG_FAST_PATH == 0 || p.frag != FRAG_NONE || p.ttl <= 1 {
        return None;
    }
    let port = unsafe { &*NODE_PORTS.get_ptr(&node)? };
    let mut l2 = [0u8; 12];
    l2[..6].copy_from_slice(&port.node_mac);
    l2[6..].copy_from_slice(&port.gateway_mac);
    Some((port.ifindex, l2))
}

/// A packet from the outside straight to a node of a routed subnet: kept
/// as a flow without translation, so the node's replies leave as they are
/// instead of being masqueraded; with the fast path it goes straight in.
#[inline(always)]
fn routed(ctx: &TcContext, cfg: &NatConfig, p: &Pkt) -> Result<i32, ()> {
    let now = nat::now();
    let key = FlowKey::new(p.src, p.dst, p.sport, p.dport, p.proto);
    let v = match nat::lookup_packet(cfg, p, &key, now) {
        Some(v) => v,
        None => {
            if !nat::admit(ctx, cfg, now, tail::UPLINK_IN) {
                return drop(stat::DROP_TABLE_FULL);
            }
            let state = if p.proto == IPPROTO_TCP {
                netlab_ebpf::tcp_next_state(0, p.tcp_flags, DIR_ORIGINAL)
            } else {
                0
            };
            let in_val = entry(
                SCRATCH_ORIGINAL,
                p.src,
                p.dst,
                p.sport,
                p.dport,
                HOOK_UPLINK_INGRESS,
                KIND_ROUTED,
                DIR_ORIGINAL,
                state,
                0,
                now,
            )
            .ok_or(())?;
            let out_key = FlowKey::new(p.dst, p.src, p.dport, p.sport, p.proto);
            let out_val = entry(
                SCRATCH_REPLY,
                p.dst,
                p.src,
                p.dport,
                p.sport,
                HOOK_UPLINK_EGRESS,
                KIND_ROUTED,
                DIR_REPLY,
                state,
                0,
                now,
            )
            .ok_or(())?;
            if nat::insert_pair(cfg, &key, in_val, &out_key, out_val, now).is_err() {
                // The node already has a flow with this tuple (its own,
                // masqueraded): leave the packet to the stack.
                return Ok(TC_ACT_UNSPEC);
            }
            match NAT_FLOWS.get_ptr_mut(&key) {
                Some(v) => v,
                None => return Ok(TC_ACT_UNSPEC),
            }
        }
    };
    if unsafe { (*v).kind } != KIND_ROUTED {
        return Ok(TC_ACT_UNSPEC);
    }
    if nat::touch(cfg, &key, v, p, now).is_err() {
        return Ok(TC_ACT_SHOT);
    }
    if let Some((ifindex, l2)) = fast_path_in(cfg, p, p.dst) {
        rewrite_forward(ctx, p, p.src, p.dst, p.sport, p.dport, &l2)?;
        count(stat::FAST_IN);
        return Ok(unsafe { bpf_redirect_peer(ifindex, 0) } as i32);
    }
    Ok(TC_ACT_UNSPEC)
}

/// A packet to the uplink address that matches no flow.
#[inline(always)]
fn miss(ctx: &TcContext, cfg: &NatConfig, p: &Pkt, key: &FlowKey, now: u64) -> Result<i32, ()> {
    if nat::subnet_of(p.src).is_some() {
        return drop(stat::DROP_SPOOFED);
    }
    if p.proto != IPPROTO_ICMP {
        if let Some(t) = FORWARD_RULES.get_ptr(ForwardKey::new(p.dport, p.proto)) {
            let t = unsafe { *t };
            return port_forward(ctx, cfg, p, key, t.addr, t.port, now);
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
    if let Some(b) = NAT_PORTS.get_ptr(&outside) {
        let b = unsafe { *b };
        if b.expires_ns > now {
            return to_mapping(ctx, cfg, p, key, &b.peer, now);
        }
    }
    if p.proto == IPPROTO_ICMP
        || nat::host_socket_uses(ctx.as_ptr(), p.proto, p.src, p.sport, p.dst, p.dport)
    {
        // The lab host's own ping, or its own socket on a port in the NAT range.
        return Ok(TC_ACT_UNSPEC);
    }
    if cfg.flags & CONFIG_LOG != 0 {
        debug!(
            ctx,
            "no mapping for {:i}:{} -> port {}",
            u32::from_be(p.src),
            u16::from_be(p.sport),
            u16::from_be(p.dport)
        );
    }
    drop(stat::DROP_NO_MAPPING)
}

/// An outside host reaches an inside endpoint through its mapping: the
/// reply half of an existing flow that was evicted (repair it), or a new
/// flow where the endpoint's subnet filters endpoint-independently.
#[inline(always)]
fn to_mapping(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt,
    key: &FlowKey,
    inside: &Endpoint,
    now: u64,
) -> Result<i32, ()> {
    let out_key = FlowKey::new(inside.addr, p.src, inside.port, p.sport, p.proto);
    let in_val = entry(
        SCRATCH_REPLY,
        p.src,
        inside.addr,
        p.sport,
        inside.port,
        HOOK_UPLINK_INGRESS,
        KIND_SNAT,
        DIR_REPLY,
        0,
        0,
        now,
    )
    .ok_or(())?;
    if let Some(out) = NAT_FLOWS.get_ptr(&out_key) {
        let out = unsafe { &*out };
        if out.src_addr == cfg.uplink_addr && out.src_port == p.dport {
            in_val.state = out.state;
            in_val.created_ns = out.created_ns;
            nat::flow_put(key, in_val)?;
            count(stat::REPAIRED);
            return translate_new(ctx, cfg, p, key, inside, now);
        }
    }
    let eif = nat::subnet_of(inside.addr)
        .is_some_and(|s| s.flags & SUBNET_ENDPOINT_INDEPENDENT_FILTERING != 0);
    if !eif {
        return drop(stat::DROP_FILTERED);
    }
    if !nat::admit(ctx, cfg, now, tail::UPLINK_IN) {
        return drop(stat::DROP_TABLE_FULL);
    }
    let out_val = entry(
        SCRATCH_ORIGINAL,
        cfg.uplink_addr,
        p.src,
        p.dport,
        p.sport,
        HOOK_UPLINK_EGRESS,
        KIND_SNAT,
        DIR_ORIGINAL,
        0,
        0,
        now,
    )
    .ok_or(())?;
    if nat::insert_pair(cfg, key, in_val, &out_key, out_val, now).is_err() {
        return drop(stat::DROP_CONFLICT);
    }
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
) -> Result<i32, ()> {
    rewrite(ctx, p, p.src, inside.addr, p.sport, inside.port)?;
    if let Some(v) = NAT_FLOWS.get_ptr_mut(key) {
        let _ = nat::touch(cfg, key, v, p, now);
    }
    nat::record_fragment(p, p.src, inside.addr);
    count(stat::XLATE_IN);
    Ok(TC_ACT_UNSPEC)
}

/// A new flow to a forwarded port.
#[inline(always)]
fn port_forward(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt,
    key: &FlowKey,
    target: u32,
    target_port: u16,
    now: u64,
) -> Result<i32, ()> {
    if p.proto == IPPROTO_TCP && (p.tcp_flags & TCP_SYN == 0 || p.tcp_flags & TCP_ACK != 0) {
        // Only a SYN opens a forwarded connection.
        return drop(stat::DROP_NO_MAPPING);
    }
    if !nat::admit(ctx, cfg, now, tail::UPLINK_IN) {
        return drop(stat::DROP_TABLE_FULL);
    }
    let state = netlab_ebpf::tcp_next_state(0, p.tcp_flags, DIR_ORIGINAL);
    let state = if p.proto == IPPROTO_TCP { state } else { 0 };
    let in_val = entry(
        SCRATCH_ORIGINAL,
        p.src,
        target,
        p.sport,
        target_port,
        HOOK_UPLINK_INGRESS,
        KIND_DNAT,
        DIR_ORIGINAL,
        state,
        0,
        now,
    )
    .ok_or(())?;
    let out_key = FlowKey::new(target, p.src, target_port, p.sport, p.proto);
    let out_val = entry(
        SCRATCH_REPLY,
        cfg.uplink_addr,
        p.src,
        p.dport,
        p.sport,
        HOOK_UPLINK_EGRESS,
        KIND_DNAT,
        DIR_REPLY,
        state,
        0,
        now,
    )
    .ok_or(())?;
    if nat::insert_pair(cfg, key, in_val, &out_key, out_val, now).is_err() {
        return drop(stat::DROP_CONFLICT);
    }
    if cfg.flags & CONFIG_LOG != 0 {
        debug!(
            ctx,
            "forward {:i}:{} -> {:i}:{}",
            u32::from_be(p.src),
            u16::from_be(p.sport),
            u32::from_be(target),
            u16::from_be(target_port)
        );
    }
    count(stat::NEW_DNAT);
    rewrite(ctx, p, p.src, target, p.sport, target_port)?;
    if let Some(v) = NAT_FLOWS.get_ptr_mut(key) {
        let v = unsafe { &mut *v };
        v.packets = 1;
        v.bytes = u64::from(p.len);
    }
    nat::record_fragment(p, p.src, target);
    count(stat::XLATE_IN);
    Ok(TC_ACT_UNSPEC)
}
