//! TC ingress on the lab-host end of each node's veth: the fast path out.
//!
//! `nl_node_in` translates a packet of an established flow and hands it
//! straight to the uplink with the flow's cached Ethernet addresses,
//! skipping the bridge, the lab host's routing and its neighbour lookup.
//! The first packet of a masqueraded flow goes on (by tail call) to
//! `nl_node_new`, which opens the flow with one FIB lookup for its next hop
//! and sends it the same way; keeping it a program of its own keeps the
//! common case small for the verifier and the stack. Anything else (hairpin,
//! other subnets, ICMP errors, fragments, an expiring TTL, a packet too big
//! for the uplink, a next hop not resolved yet) takes the slow path through
//! the bridge.

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibLookup, TC_ACT_SHOT},
    helpers::generated::{bpf_check_mtu, bpf_fib_lookup, bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
    EbpfContext as _,
};
use netlab_common::{
    stat, tail, FlowKey, NatConfig, CONFIG_FAST_PATH, CONFIG_UPLINK_PEER, FLOW_L2,
    HOOK_UPLINK_EGRESS,
};

use crate::{
    maps::{config, count, FIB_SCRATCH, NAT_FLOWS, TAILS},
    nat,
    packet::{self, is_icmp_error, rewrite_forward, Parsed, Pkt, ETH_LEN, FRAG_NONE},
    TC_ACT_UNSPEC,
};

const AF_INET: u8 = 2;

/// A packet the fast path may take, and its configuration.
#[inline(always)]
fn candidate(ctx: &TcContext) -> Option<(&'static NatConfig, Pkt)> {
    let cfg = config()?;
    if cfg.flags & CONFIG_FAST_PATH == 0 || cfg.uplink_addr == 0 {
        return None;
    }
    let Parsed::Ip(p) = packet::parse(ctx) else {
        return None;
    };
    if p.frag != FRAG_NONE || p.ttl <= 1 || is_icmp_error(&p) {
        return None;
    }
    Some((cfg, p))
}

pub fn run(ctx: &TcContext) -> i32 {
    // On any error the slow path gets the packet.
    established(ctx).unwrap_or(TC_ACT_UNSPEC)
}

#[inline(always)]
fn established(ctx: &TcContext) -> Result<i32, ()> {
    let Some((cfg, p)) = candidate(ctx) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let now = nat::now();
    let key = FlowKey::new(p.src, p.dst, p.sport, p.dport, p.proto);
    let Some(v) = nat::lookup_packet(cfg, &p, &key, now) else {
        // Returns only when the tail call cannot be made.
        unsafe { TAILS.tail_call(ctx, tail::NODE_NEW) };
        return Ok(TC_ACT_UNSPEC);
    };
    let (hook, flags, src, dst, sport, dport, l2) = unsafe {
        let v = &*v;
        (
            v.hook, v.flags, v.src_addr, v.dst_addr, v.src_port, v.dst_port, v.l2,
        )
    };
    if hook != HOOK_UPLINK_EGRESS || flags & FLOW_L2 == 0 {
        return Ok(TC_ACT_UNSPEC);
    }
    let mut mtu_len: u32 = 0;
    let fits = unsafe { bpf_check_mtu(ctx.as_ptr(), cfg.uplink_ifindex, &mut mtu_len, 0, 0) };
    if fits != 0 {
        return Ok(TC_ACT_UNSPEC);
    }
    if nat::touch(cfg, &key, v, &p, now).is_err() {
        return Ok(TC_ACT_SHOT);
    }
    rewrite_forward(ctx, &p, src, dst, sport, dport, &l2)?;
    count(stat::XLATE_OUT);
    count(stat::FAST_OUT);
    Ok(to_uplink(cfg))
}

pub fn run_new(ctx: &TcContext) -> i32 {
    new_flow(ctx).unwrap_or(TC_ACT_UNSPEC)
}

/// The first packet of a flow from a masqueraded subnet to the outside:
/// open the flow here when the FIB says it leaves by the uplink through a
/// resolved next hop, remember that hop for the flow, and send the packet.
#[inline(always)]
fn new_flow(ctx: &TcContext) -> Result<i32, ()> {
    let Some((cfg, p)) = candidate(ctx) else {
        return Ok(TC_ACT_UNSPEC);
    };
    if !nat::masqueraded(p.src)
        || nat::subnet_of(p.dst).is_some()
        || p.dst == cfg.uplink_addr
        || !nat::opens_flow(&p)
    {
        return Ok(TC_ACT_UNSPEC);
    }
    // The lookup's parameters live in per-CPU scratch memory: the stack is
    // small and the port search that follows needs its share.
    let fib = unsafe { &mut *FIB_SCRATCH.get_ptr_mut(0).ok_or(())? };
    *fib = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = p.proto;
    fib.sport = p.sport;
    fib.dport = p.dport;
    fib.__bindgen_anon_1.tot_len = (p.len as usize - ETH_LEN) as u16;
    fib.ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    fib.__bindgen_anon_3.ipv4_src = p.src;
    fib.__bindgen_anon_4.ipv4_dst = p.dst;
    let found = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            fib as *mut FibLookup,
            core::mem::size_of::<FibLookup>() as i32,
            0,
        )
    };
    // Not resolved (no neighbour entry yet), too big, or not via the
    // uplink: the lab host's stack takes it.
    if found != 0 || fib.ifindex != cfg.uplink_ifindex {
        return Ok(TC_ACT_UNSPEC);
    }
    let mut l2 = [0u8; 12];
    l2[..6].copy_from_slice(&fib.dmac);
    l2[6..].copy_from_slice(&fib.smac);
    let key = FlowKey::new(p.src, p.dst, p.sport, p.dport, p.proto);
    let now = nat::now();
    let Some(port) = nat::map_flow(
        ctx,
        cfg,
        nat::masquerade_spec(&p, &key),
        now,
        tail::NODE_NEW,
    ) else {
        return Ok(TC_ACT_SHOT);
    };
    if let Some(v) = NAT_FLOWS.get_ptr_mut(&key) {
        let v = unsafe { &mut *v };
        v.l2 = l2;
        v.flags |= FLOW_L2;
        v.packets = 1;
        v.bytes = u64::from(p.len);
    }
    rewrite_forward(ctx, &p, cfg.uplink_addr, p.dst, port, p.dport, &l2)?;
    count(stat::NEW_SNAT);
    count(stat::XLATE_OUT);
    count(stat::FAST_OUT);
    Ok(to_uplink(cfg))
}

/// Hand a translated packet to the uplink. A veth uplink's other end is
/// where it would arrive after transmission: handing it there skips one
/// more trip through a queue.
#[inline(always)]
fn to_uplink(cfg: &NatConfig) -> i32 {
    let action = if cfg.flags & CONFIG_UPLINK_PEER != 0 {
        unsafe { bpf_redirect_peer(cfg.uplink_ifindex, 0) }
    } else {
        unsafe { bpf_redirect(cfg.uplink_ifindex, 0) }
    };
    action as i32
}
