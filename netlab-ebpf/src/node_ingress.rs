//! TC ingress on the lab-host end of each node's veth: the fast path out.
//! A packet of an established flow is translated here and handed straight
//! to the uplink with the flow's cached Ethernet addresses, skipping the
//! bridge, the lab host's routing and its neighbour lookup. Anything else
//! (new flows, ICMP errors, fragments, an expiring TTL, a packet too big for
//! the uplink) takes the slow path through the bridge.

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::generated::{bpf_check_mtu, bpf_redirect},
    programs::TcContext,
    EbpfContext as _,
};
use netlab_common::{stat, FlowKey, CONFIG_FAST_PATH, FLOW_L2, HOOK_UPLINK_EGRESS};

use crate::{
    maps::{config, count},
    nat,
    packet::{self, is_icmp_error, rewrite_forward, Parsed, FRAG_NONE},
    TC_ACT_UNSPEC,
};

pub fn run(ctx: &TcContext) -> i32 {
    // On any error the slow path gets the packet.
    handle(ctx).unwrap_or(TC_ACT_UNSPEC)
}

#[inline(always)]
fn handle(ctx: &TcContext) -> Result<i32, ()> {
    let Some(cfg) = config() else {
        return Ok(TC_ACT_UNSPEC);
    };
    if cfg.flags & CONFIG_FAST_PATH == 0 || cfg.uplink_addr == 0 {
        return Ok(TC_ACT_UNSPEC);
    }
    let Parsed::Ip(p) = packet::parse(ctx) else {
        return Ok(TC_ACT_UNSPEC);
    };
    if p.frag != FRAG_NONE || p.ttl <= 1 || is_icmp_error(&p) {
        return Ok(TC_ACT_UNSPEC);
    }
    let now = nat::now();
    let key = FlowKey::new(p.src, p.dst, p.sport, p.dport, p.proto);
    let Some(v) = nat::lookup_live(cfg, &key, now) else {
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
    Ok(unsafe { bpf_redirect(cfg.uplink_ifindex, 0) } as i32)
}
