//! TC egress on each VXLAN device that stretches a lab bridge to the other
//! lab hosts. The bridge device has the same MAC address on every host
//! (the anycast gateway's), so what it sends itself (its ARP, its IPv6
//! link-local's ND, MLD and IGMP reports, router solicitations) concerns
//! its own host's nodes only: in another host's bridge the frame would
//! carry that bridge's own address as its source (6.1 logs "received
//! packet ... with own address as source address" for each), and its
//! ND would meet a link-local that is the same there. Such frames are
//! dropped here and counted; every other frame (the nodes', the host
//! port's: MAC addresses of their own) passes untouched.
//!
//! No packet parsing and no configuration needed: the map holds an entry
//! only for the tunnels `up` found, and nothing is touched before.

use aya_ebpf::programs::TcContext;

use crate::{
    maps::TUNNEL_GATEWAYS,
    verdict::{finish, DropReason, Verdict, TC_ACT_UNSPEC},
};

/// Where the Ethernet source address is.
const ETH_SOURCE: usize = 6;

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    finish(handle(ctx))
}

#[inline(always)]
fn handle(ctx: &TcContext) -> Verdict {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(gateway) = TUNNEL_GATEWAYS.get_ptr(&ifindex) else {
        return Ok(TC_ACT_UNSPEC);
    };
    // Shorter than an Ethernet header: not a frame of the bridge's.
    let Ok(source) = ctx.load::<[u8; 6]>(ETH_SOURCE) else {
        return Ok(TC_ACT_UNSPEC);
    };
    if mac_value(&source) == mac_value(unsafe { &*gateway }) {
        return Err(DropReason::GatewayIntoTunnel);
    }
    Ok(TC_ACT_UNSPEC)
}

/// A MAC address as one integer: compared without a call to `bcmp`,
/// which the eBPF target does not have.
#[inline(always)]
fn mac_value(m: &[u8; 6]) -> u64 {
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0])
}
