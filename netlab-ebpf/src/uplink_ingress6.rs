//! `nl_uplink_in6`, tail-called by `nl_uplink_in` for IPv6 to the uplink's
//! IPv6 address: the replies of masqueraded flows and the ICMPv6 errors
//! about them, translated back to their node (address-and-port-dependent filtering: only the exact
//! remote endpoint a flow went to gets in). Everything else is the lab
//! host's own and passes.

use aya_ebpf::programs::TcContext;
use netlab_common::{stat, NatConfig, DIR_REPLY};

use crate::{
    flows, flows6, icmp6, lab,
    packet6::{self, Pkt6},
    verdict::{count, finish, Verdict, TC_ACT_UNSPEC},
};

#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    let Some(cfg) = lab::active_config() else {
        return TC_ACT_UNSPEC;
    };
    finish(handle(ctx, cfg))
}

#[inline(always)]
fn handle(ctx: &TcContext, cfg: &NatConfig) -> Verdict {
    let Some(ip) = packet6::beyond_link(ctx) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let Ok(u) = packet6::upper_layer(ctx, &ip) else {
        return Ok(TC_ACT_UNSPEC);
    };
    if icmp6::is_error(ctx, &u) {
        let p = packet6::icmp_message(ctx, &ip, &u);
        icmp6::translate_in(ctx, &p, &u)?;
        return Ok(TC_ACT_UNSPEC);
    }
    let Some(p) = packet6::transport(ctx, &ip, &u) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let Some(v) = flows6::get(&p.key) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let val = unsafe { &*v };
    if val.dir != DIR_REPLY {
        return Ok(TC_ACT_UNSPEC);
    }
    let Some(orig) = flows6::get(&val.peer) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let now = flows::now();
    if !flows6::alive(cfg, p.proto, unsafe { &*orig }, now) {
        return Ok(TC_ACT_UNSPEC);
    }
    translate(ctx, cfg, &p, val, orig, now)
}

/// A reply, to its node.
#[inline(always)]
fn translate(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt6,
    reply: &netlab_common::Flow6Value,
    orig: *mut netlab_common::Flow6Value,
    now: u64,
) -> Verdict {
    packet6::set_addr(ctx, p, false, &reply.addr)?;
    packet6::set_port(ctx, p, false, p.dport, reply.port)?;
    flows6::touch(cfg, &reply.peer, orig, p, DIR_REPLY, now);
    count(stat::XLATE6_IN);
    Ok(TC_ACT_UNSPEC)
}
