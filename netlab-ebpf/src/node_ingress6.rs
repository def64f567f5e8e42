//! `nl_node_in6`, tail-called by `nl_node_in` for IPv6: the fast path out.
//! A packet of an established flow that leaves by the uplink (masqueraded,
//! or a forwarded flow's reply) is translated here and handed straight to
//! the uplink with the Ethernet addresses the flow's earlier packets left
//! with, skipping the bridge and the lab host's routing. A flow's first
//! packets and any that change its state (SYN, FIN, reset: see
//! `flows6::steady`), fragments, ICMPv6 errors, an expiring hop limit and
//! a packet too big for the uplink take the slow path (`nl_uplink_out6`).

use aya_ebpf::{helpers::generated::bpf_check_mtu, programs::TcContext, EbpfContext as _};
use netlab_common::{stat, NatConfig, CONFIG_FAST_PATH, FLOW_L2, HOOK_UPLINK_EGRESS};

use crate::{
    fastpath, flows, flows6, hook, icmp6,
    packet::FRAG_NONE,
    packet6::{self, ChainError, Ip6, Upper},
    verdict::{count, finish, Verdict, TC_ACT_UNSPEC},
};

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    let Some((cfg, ip, u)) = hook::start6(ctx) else {
        return TC_ACT_UNSPEC;
    };
    finish(established(ctx, cfg, &ip, u))
}

#[inline(always)]
fn established(
    ctx: &TcContext,
    cfg: &NatConfig,
    ip: &Ip6,
    u: Result<Upper, ChainError>,
) -> Verdict {
    let Ok(u) = u else {
        return Ok(TC_ACT_UNSPEC);
    };
    if cfg.flags & CONFIG_FAST_PATH == 0
        || u.frag != FRAG_NONE
        || packet6::hop_limit(ctx) <= 1
        || icmp6::is_error(ctx, &u)
    {
        return Ok(TC_ACT_UNSPEC);
    }
    let Some(p) = packet6::transport(ctx, ip, &u) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let now = flows::now();
    let Some((v, orig)) = flows6::live_at(cfg, &p.key, HOOK_UPLINK_EGRESS, now) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let (flags, l2, port) = unsafe { ((*v).flags, (*v).l2, (*v).port) };
    if flags & FLOW_L2 == 0 || !flows6::steady(&p, unsafe { &*orig }) {
        return Ok(TC_ACT_UNSPEC);
    }
    let mut mtu_len: u32 = 0;
    let fits = unsafe { bpf_check_mtu(ctx.as_ptr(), cfg.uplink_ifindex, &mut mtu_len, 0, 0) };
    if fits != 0 {
        return Ok(TC_ACT_UNSPEC);
    }
    packet6::set_addr(ctx, &p, true, &cfg.uplink_addr6)?;
    packet6::set_port(ctx, &p, true, p.sport, port)?;
    flows6::touch_steady(cfg, &p, v, orig, now);
    packet6::forward_l2(ctx, &l2)?;
    count(stat::XLATE6_OUT);
    count(stat::FAST_OUT);
    Ok(fastpath::to_uplink(cfg))
}
