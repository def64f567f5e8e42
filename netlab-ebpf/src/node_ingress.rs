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
    bindings::bpf_fib_lookup as FibLookup,
    helpers::generated::{bpf_check_mtu, bpf_fib_lookup},
    programs::TcContext,
    EbpfContext as _,
};
use netlab_common::{stat, tail, NatConfig, CONFIG_FAST_PATH, FLOW_L2, HOOK_UPLINK_EGRESS};

use crate::{
    fastpath, flowlog, flows, lab,
    maps::{FIB_SCRATCH, TAILS},
    packet::{self, is_icmp_error, rewrite_forward, Parsed, Pkt, ETH_LEN, FRAG_NONE},
    packet6, port_search,
    template::FlowTemplate,
    verdict::{count, finish, Verdict, TC_ACT_UNSPEC},
};

const AF_INET: u8 = 2;

/// A packet the fast path may take, and its configuration.
#[inline(always)]
fn candidate(ctx: &TcContext) -> Option<(&'static NatConfig, Pkt)> {
    let cfg = lab::active_config()?;
    if cfg.flags & CONFIG_FAST_PATH == 0 {
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

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    finish(established(ctx))
}

#[inline(always)]
fn established(ctx: &TcContext) -> Verdict {
    if packet6::is_ipv6(ctx) {
        return ipv6(ctx);
    }
    let Some((cfg, p)) = candidate(ctx) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let now = flows::now();
    let key = p.key();
    let Some(v) = flows::lookup_packet(cfg, &p, &key, now) else {
        // Returns only when the tail call cannot be made.
        unsafe { TAILS.tail_call(ctx, tail::NODE_NEW) };
        return Ok(TC_ACT_UNSPEC);
    };
    let r = flows::rewrite_of(v);
    let l2 = unsafe { (*v).l2 };
    if r.hook != HOOK_UPLINK_EGRESS || r.flags & FLOW_L2 == 0 {
        return Ok(TC_ACT_UNSPEC);
    }
    let mut mtu_len: u32 = 0;
    let fits = unsafe { bpf_check_mtu(ctx.as_ptr(), cfg.uplink_ifindex, &mut mtu_len, 0, 0) };
    if fits != 0 {
        return Ok(TC_ACT_UNSPEC);
    }
    flows::touch(cfg, &key, v, &p, now)?;
    rewrite_forward(ctx, &p, r.src, r.dst, r.sport, r.dport, &l2)?;
    count(stat::XLATE_OUT);
    count(stat::FAST_OUT);
    Ok(fastpath::to_uplink(cfg))
}

/// IPv6: to `nl_node_in6` when the lab translates IPv6 on the fast path.
/// Only the EtherType is read here.
#[inline(always)]
fn ipv6(ctx: &TcContext) -> Verdict {
    if let Some(cfg) = lab::active_config() {
        if cfg.flags & CONFIG_FAST_PATH != 0 && cfg.uplink_addr6 != [0; 16] {
            // Returns only when the tail call cannot be made.
            unsafe { TAILS.tail_call(ctx, tail::NODE_IN6) };
        }
    }
    Ok(TC_ACT_UNSPEC)
}

#[inline(always)]
pub fn run_new(ctx: &TcContext) -> i32 {
    finish(new_flow(ctx))
}

/// The next hop's Ethernet addresses for a packet from a node, when the
/// FIB says it leaves by the uplink through a resolved neighbour. `None`
/// (not resolved yet, too big, not via the uplink): the lab host's stack
/// takes the packet.
#[inline(always)]
fn next_hop(ctx: &TcContext, cfg: &NatConfig, p: &Pkt) -> Option<[u8; 12]> {
    // The lookup's parameters live in per-CPU scratch memory: the stack is
    // small and the port search that follows needs its share.
    let fib = unsafe { &mut *FIB_SCRATCH.get_ptr_mut(0)? };
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
    if found != 0 || fib.ifindex != cfg.uplink_ifindex {
        return None;
    }
    let mut l2 = [0u8; 12];
    l2[..6].copy_from_slice(&fib.dmac);
    l2[6..].copy_from_slice(&fib.smac);
    Some(l2)
}

/// The first packet of a flow from a masqueraded subnet to the outside:
/// open the flow here when its next hop is known, remember that hop for
/// the flow, and send the packet.
#[inline(always)]
fn new_flow(ctx: &TcContext) -> Verdict {
    let Some((cfg, p)) = candidate(ctx) else {
        return Ok(TC_ACT_UNSPEC);
    };
    if !lab::masqueraded(p.src)
        || lab::subnet_of(p.dst).is_some()
        || p.dst == cfg.uplink_addr
        || !flows::opens_flow(&p)
    {
        return Ok(TC_ACT_UNSPEC);
    }
    let Some(l2) = next_hop(ctx, cfg, &p) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let now = flows::now();
    let template = FlowTemplate::masquerade(&p, cfg.uplink_addr);
    let t = port_search::map_flow(ctx, cfg, template, now, tail::NODE_NEW)?;
    if let Some(v) = flows::get(&t.opening.key) {
        fastpath::set_l2(unsafe { &mut *v }, l2);
    }
    flowlog::new_flow(cfg, &t, flowlog::SNAT_NODE);
    let port = t.other.key.dst_port;
    rewrite_forward(ctx, &p, cfg.uplink_addr, p.dst, port, p.dport, &l2)?;
    count(stat::NEW_SNAT);
    count(stat::XLATE_OUT);
    count(stat::FAST_OUT);
    Ok(fastpath::to_uplink(cfg))
}
