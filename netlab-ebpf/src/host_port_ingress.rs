//! TC ingress on a host port: the lab host's own end of a veth on a
//! stretched bridge, holding its address there. A forward on this host's
//! uplink to a node on another host sends the connection out of it with
//! that address as source (`uplink_ingress`); the node's replies arrive
//! here, are translated back and leave by the uplink. Nothing else from
//! the lab is let in to that address but ICMP (the host answers pings).

use aya_ebpf::programs::TcContext;
use netlab_common::{NatConfig, IPPROTO_ICMP};

use crate::{
    bridge_ingress, flows, hook,
    packet::{Parsed, FRAG_LATER},
    verdict::{finish, DropReason, Verdict, TC_ACT_UNSPEC},
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
        // ARP: the host port answers for its address itself.
        Parsed::Other => return Ok(TC_ACT_UNSPEC),
        Parsed::OtherProto { .. } => return Err(DropReason::Protocol),
        Parsed::Bad => return Err(DropReason::BadHeader),
        Parsed::Ip(p) => p,
    };
    if p.frag == FRAG_LATER {
        // The forwards across hosts translate no fragments.
        return Err(DropReason::Fragment);
    }
    let now = flows::now();
    let key = p.key();
    if let Some(v) = flows::lookup_live(cfg, &key, now) {
        return bridge_ingress::established(ctx, cfg, &p, &key, v, now);
    }
    if p.proto == IPPROTO_ICMP {
        return Ok(TC_ACT_UNSPEC);
    }
    Err(DropReason::NoMapping)
}
