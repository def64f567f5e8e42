//! TC egress on the uplink: masquerade of the lab's subnets and the return
//! half of port forwards.

use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use aya_log_ebpf::debug;
use netlab_common::{stat, tail, FlowKey, NatConfig, CONFIG_LOG, HOOK_UPLINK_EGRESS};

use crate::{
    icmp,
    maps::{config, count},
    nat,
    packet::{self, is_icmp_error, rewrite, set_addr, Parsed, Pkt, FRAG_LATER},
    TC_ACT_UNSPEC,
};

pub fn run(ctx: &TcContext) -> i32 {
    match handle(ctx) {
        Ok(action) => action,
        Err(()) => TC_ACT_SHOT,
    }
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
        Parsed::Other | Parsed::Bad => return Ok(TC_ACT_UNSPEC),
        Parsed::OtherProto { src, .. } => {
            // Only TCP, UDP and ICMP are translated: anything else from a
            // masqueraded subnet would leave with an inside address.
            if src != cfg.uplink_addr && nat::masqueraded(src) {
                count(stat::DROP_PROTOCOL);
                return Ok(TC_ACT_SHOT);
            }
            return Ok(TC_ACT_UNSPEC);
        }
        Parsed::Ip(p) => p,
    };
    if p.src == cfg.uplink_addr {
        // The lab host's own traffic.
        return Ok(TC_ACT_UNSPEC);
    }
    if p.frag == FRAG_LATER {
        if let Some(t) = nat::fragment_translation(&p) {
            set_addr(ctx, &p, true, p.src, t.src_addr)?;
        } else if nat::masqueraded(p.src) {
            // Its first fragment was not seen: sending it would leak an inside address.
            count(stat::DROP_FRAGMENT);
            return Ok(TC_ACT_SHOT);
        }
        return Ok(TC_ACT_UNSPEC);
    }
    if is_icmp_error(&p) {
        if !icmp::translate_error(ctx, &p, HOOK_UPLINK_EGRESS)? && nat::masqueraded(p.src) {
            // About nothing we translated: sending it would leak an inside address.
            count(stat::DROP_NO_MAPPING);
            return Ok(TC_ACT_SHOT);
        }
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
        if hook != HOOK_UPLINK_EGRESS {
            return Ok(TC_ACT_UNSPEC);
        }
        rewrite(ctx, &p, src, dst, sport, dport)?;
        if nat::touch(cfg, &key, v, &p, now).is_err() {
            return Ok(TC_ACT_SHOT);
        }
        nat::learn_l2(ctx, v);
        nat::record_fragment(&p, src, dst);
        count(stat::XLATE_OUT);
        return Ok(TC_ACT_UNSPEC);
    }
    if nat::masqueraded(p.src) {
        return masquerade(ctx, cfg, &p, &key, now);
    }
    Ok(TC_ACT_UNSPEC)
}

/// A new outbound flow from a masqueraded subnet.
#[inline(always)]
fn masquerade(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt,
    key: &FlowKey,
    now: u64,
) -> Result<i32, ()> {
    if nat::subnet_of(p.dst).is_some() {
        // To another lab subnet by way of the uplink (a route is missing):
        // no flow, or the outside could answer as that lab address.
        count(stat::DROP_UNSOLICITED);
        return Ok(TC_ACT_SHOT);
    }
    if !nat::opens_flow(p) {
        // A reset or echo reply for a flow we do not know: sending it
        // would leak the inside address.
        count(stat::DROP_NO_MAPPING);
        return Ok(TC_ACT_SHOT);
    }
    let up = cfg.uplink_addr;
    let port = nat::map_flow(
        ctx,
        cfg,
        nat::masquerade_spec(p, key),
        now,
        tail::UPLINK_OUT,
    );
    let Some(port) = port else {
        if cfg.flags & CONFIG_LOG != 0 {
            debug!(
                ctx,
                "no free port for {:i}:{}",
                u32::from_be(p.src),
                u16::from_be(p.sport)
            );
        }
        return Ok(TC_ACT_SHOT);
    };
    if cfg.flags & CONFIG_LOG != 0 {
        debug!(
            ctx,
            "masquerade {:i}:{} as port {}",
            u32::from_be(p.src),
            u16::from_be(p.sport),
            u16::from_be(port)
        );
    }
    count(stat::NEW_SNAT);
    rewrite(ctx, p, up, p.dst, port, p.dport)?;
    if let Some(v) = crate::maps::NAT_FLOWS.get_ptr_mut(key) {
        let v = unsafe { &mut *v };
        v.packets = 1;
        v.bytes = u64::from(p.len);
        nat::learn_l2(ctx, v);
    }
    nat::record_fragment(p, up, p.dst);
    count(stat::XLATE_OUT);
    Ok(TC_ACT_UNSPEC)
}
