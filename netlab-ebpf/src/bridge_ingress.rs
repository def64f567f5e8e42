//! TC ingress on the lab's bridges: hairpin. A node that connects to the
//! uplink address on a forwarded port (or, for peer-to-peer, to another
//! node's mapping) reaches the inside target directly. Both directions are
//! rewritten here and redirected back out of the target's bridge; the
//! source becomes the uplink address with the client's own mapping, as
//! RFC 4787 asks of hairpinning.

use aya_ebpf::{
    bindings::TC_ACT_SHOT, helpers::generated::bpf_redirect_neigh, programs::TcContext,
};
use netlab_common::{
    stat, tail, Endpoint, FlowKey, ForwardKey, NatConfig, DIR_ORIGINAL, HOOK_BRIDGE_INGRESS,
    IPPROTO_ICMP, IPPROTO_TCP, KIND_HAIRPIN,
};
use netlab_ebpf::{in_nat_range, TCP_ACK, TCP_SYN};

use crate::{
    maps::{config, count, FORWARD_RULES, NAT_FLOWS, NAT_PORTS},
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
fn redirect(ifindex: u32) -> i32 {
    unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 }
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
        Parsed::Other | Parsed::OtherProto { .. } | Parsed::Bad => return Ok(TC_ACT_UNSPEC),
        Parsed::Ip(p) => p,
    };
    // Everything but traffic to the uplink address (node to node, node to
    // the gateway, node to the outside) is not ours here.
    if p.dst != cfg.uplink_addr || is_icmp_error(&p) {
        return Ok(TC_ACT_UNSPEC);
    }
    if p.frag == FRAG_LATER {
        // No L4 header: translated as its datagram's first fragment was.
        let Some(t) = nat::fragment_translation(&p) else {
            return Ok(TC_ACT_UNSPEC);
        };
        let Some(out) = nat::subnet_of(t.dst_addr).map(|s| s.ifindex) else {
            return Ok(TC_ACT_UNSPEC);
        };
        set_addr(ctx, &p, true, p.src, t.src_addr)?;
        set_addr(ctx, &p, false, p.dst, t.dst_addr)?;
        count(stat::XLATE_HAIRPIN);
        return Ok(redirect(out));
    }
    let now = nat::now();
    let key = FlowKey::new(p.src, p.dst, p.sport, p.dport, p.proto);
    if let Some(v) = nat::lookup_live(cfg, &key, now) {
        let (hook, src, dst, sport, dport, out) = unsafe {
            (
                (*v).hook,
                (*v).src_addr,
                (*v).dst_addr,
                (*v).src_port,
                (*v).dst_port,
                (*v).out_ifindex,
            )
        };
        if hook != HOOK_BRIDGE_INGRESS || out == 0 {
            return Ok(TC_ACT_UNSPEC);
        }
        rewrite(ctx, &p, src, dst, sport, dport)?;
        if nat::touch(cfg, &key, v, &p, now).is_err() {
            return Ok(TC_ACT_SHOT);
        }
        nat::record_fragment(&p, src, dst);
        count(stat::XLATE_HAIRPIN);
        return Ok(redirect(out));
    }
    let Some(client_net) = nat::subnet_of(p.src) else {
        return Ok(TC_ACT_UNSPEC);
    };
    if p.proto == IPPROTO_ICMP {
        return Ok(TC_ACT_UNSPEC);
    }
    let target = if let Some(t) = FORWARD_RULES.get_ptr(ForwardKey::new(p.dport, p.proto)) {
        let t = unsafe { *t };
        Endpoint::new(t.addr, t.port, p.proto)
    } else if in_nat_range(cfg, u16::from_be(p.dport)) {
        // Another node's (or its own) mapping: peer-to-peer hairpinning, as
        // two peers behind one NAT do with their server-reflexive addresses.
        // Filtering guards mappings against the outside; nodes of the lab
        // reach each other's mappings whatever the filtering.
        let Some(b) = NAT_PORTS.get_ptr(&Endpoint::new(cfg.uplink_addr, p.dport, p.proto)) else {
            return Ok(TC_ACT_UNSPEC);
        };
        let b = unsafe { *b };
        if b.expires_ns <= now {
            return Ok(TC_ACT_UNSPEC);
        }
        b.peer
    } else {
        // A service of the lab host itself.
        return Ok(TC_ACT_UNSPEC);
    };
    if p.proto == IPPROTO_TCP && (p.tcp_flags & TCP_SYN == 0 || p.tcp_flags & TCP_ACK != 0) {
        return Ok(TC_ACT_UNSPEC);
    }
    let Some(target_net) = nat::subnet_of(target.addr) else {
        return Ok(TC_ACT_UNSPEC);
    };
    hairpin(
        ctx,
        cfg,
        &p,
        &key,
        &target,
        target_net.ifindex,
        client_net.ifindex,
        now,
    )
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn hairpin(
    ctx: &TcContext,
    cfg: &NatConfig,
    p: &Pkt,
    key: &FlowKey,
    target: &Endpoint,
    target_ifindex: u32,
    client_ifindex: u32,
    now: u64,
) -> Result<i32, ()> {
    let up = cfg.uplink_addr;
    let state = if p.proto == IPPROTO_TCP {
        netlab_ebpf::tcp_next_state(0, p.tcp_flags, DIR_ORIGINAL)
    } else {
        0
    };
    let spec = nat::PairSpec {
        key: *key,
        new_dst: target.addr,
        new_dport: target.port,
        kind: KIND_HAIRPIN,
        state,
        hook_original: HOOK_BRIDGE_INGRESS,
        hook_reply: HOOK_BRIDGE_INGRESS,
        ifindex_original: target_ifindex,
        ifindex_reply: client_ifindex,
    };
    let port = nat::map_flow(ctx, cfg, spec, now, tail::BRIDGE_IN);
    let Some(port) = port else {
        return Ok(TC_ACT_SHOT);
    };
    count(stat::NEW_HAIRPIN);
    rewrite(ctx, p, up, target.addr, port, target.port)?;
    nat::record_fragment(p, up, target.addr);
    if let Some(v) = NAT_FLOWS.get_ptr_mut(key) {
        let v = unsafe { &mut *v };
        v.packets = 1;
        v.bytes = u64::from(p.len);
    }
    count(stat::XLATE_HAIRPIN);
    Ok(redirect(target_ifindex))
}
