//! The fast path's address caching: the Ethernet addresses a flow leaves
//! the uplink with (learnt from its first packet on the slow path, or from
//! the FIB), the node ports replies are handed to, and the hand-over itself.

use aya_ebpf::{
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use netlab_common::{
    Flow6Value, FlowValue, NatConfig, CONFIG_FAST_PATH, CONFIG_UPLINK_PEER, FLOW_L2,
};

use crate::{
    maps::{NODE_PORTS, NODE_PORTS6},
    packet::{read_l2, Pkt, FRAG_NONE},
    packet6,
};

/// Remember the uplink's Ethernet addresses for a flow, from a packet of it
/// the lab host's stack has just routed (at the uplink's egress).
#[inline(always)]
pub fn learn_l2(ctx: &TcContext, v: *mut FlowValue) {
    let v = unsafe { &mut *v };
    if v.flags & FLOW_L2 != 0 {
        return;
    }
    if let Some(l2) = read_l2(ctx) {
        set_l2(v, l2);
    }
}

#[inline(always)]
pub fn set_l2(v: &mut FlowValue, l2: [u8; 12]) {
    v.l2 = l2;
    v.flags |= FLOW_L2;
}

/// Where a translated packet for the node at `node` goes on the fast path
/// in: the lab host's end of its veth, and the Ethernet addresses to give
/// the packet. Anything the stack must see (fragments, an expiring TTL)
/// takes the slow path.
#[inline(always)]
pub fn node_port(cfg: &NatConfig, p: &Pkt, node: u32) -> Option<(u32, [u8; 12])> {
    if cfg.flags & CONFIG_FAST_PATH == 0 || p.frag != FRAG_NONE || p.ttl <= 1 {
        return None;
    }
    let port = unsafe { &*NODE_PORTS.get_ptr(&node)? };
    let mut l2 = [0u8; 12];
    l2[..6].copy_from_slice(&port.node_mac);
    l2[6..].copy_from_slice(&port.gateway_mac);
    Some((port.ifindex, l2))
}

/// [`node_port`] for IPv6: the node at `node`, for a translated packet
/// that is not a fragment and has a hop to spare.
#[inline(always)]
pub fn node_port6(
    ctx: &TcContext,
    cfg: &NatConfig,
    frag: u8,
    node: &[u8; 16],
) -> Option<(u32, [u8; 12])> {
    if cfg.flags & CONFIG_FAST_PATH == 0 || frag != FRAG_NONE || packet6::hop_limit(ctx) <= 1 {
        return None;
    }
    let port = unsafe { &*NODE_PORTS6.get_ptr(node)? };
    let mut l2 = [0u8; 12];
    l2[..6].copy_from_slice(&port.node_mac);
    l2[6..].copy_from_slice(&port.gateway_mac);
    Some((port.ifindex, l2))
}

/// Remember the uplink's Ethernet addresses for an IPv6 flow's direction
/// `v` (as [`learn_l2`]).
#[inline(always)]
pub fn learn_l2_6(ctx: &TcContext, v: *mut Flow6Value) {
    let v = unsafe { &mut *v };
    if v.flags & FLOW_L2 != 0 {
        return;
    }
    if let Some(l2) = read_l2(ctx) {
        v.l2 = l2;
        v.flags |= FLOW_L2;
    }
}

/// Hand a packet straight into the node behind `ifindex` (its veth peer).
#[inline(always)]
pub fn into_node(ifindex: u32) -> i32 {
    unsafe { bpf_redirect_peer(ifindex, 0) as i32 }
}

/// Hand a translated packet to the uplink. A veth uplink's other end is
/// where it would arrive after transmission: handing it there skips one
/// more trip through a queue.
#[inline(always)]
pub fn to_uplink(cfg: &NatConfig) -> i32 {
    let action = if cfg.flags & CONFIG_UPLINK_PEER != 0 {
        unsafe { bpf_redirect_peer(cfg.uplink_ifindex, 0) }
    } else {
        unsafe { bpf_redirect(cfg.uplink_ifindex, 0) }
    };
    action as i32
}
