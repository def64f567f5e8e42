//! ICMPv6 errors (destination unreachable, packet too big, time exceeded,
//! parameter problem) quote the packet that caused them. For a masqueraded
//! flow the outer address and the quoted packet are rewritten both ways, so
//! `traceroute -6` and path-MTU discovery (IPv6 routers do not fragment:
//! Packet Too Big must reach the node) work from behind the NAT.

use aya_ebpf::{helpers::generated::bpf_csum_diff, programs::TcContext};
use netlab_common::{
    stat, Flow6Key, HOOK_UPLINK_EGRESS, HOOK_UPLINK_INGRESS, IPPROTO_ICMPV6, IPPROTO_TCP,
    IPPROTO_UDP,
};
use netlab_ebpf::{csum_add_diff, csum_replace2};

use crate::{
    flows6,
    packet::{failed, FRAG_NONE},
    packet6::{self, Pkt6, Upper},
    verdict::{count, DropReason},
};

/// The ICMPv6 error types (RFC 4443 2.1: below 128).
const ERROR_LAST: u8 = 4;

/// The quoted packet of an error: its addresses, ports (echo: identifier,
/// keyed as `Flow6Key` has it) and protocol, and where its header and
/// upper-layer header are.
struct Quoted {
    key: Flow6Key,
    l3: usize,
    l4: usize,
}

/// Whether `u` is an ICMPv6 error message.
#[inline(always)]
pub fn is_error(ctx: &TcContext, u: &Upper) -> bool {
    if u.proto != IPPROTO_ICMPV6 || u.frag != FRAG_NONE {
        return false;
    }
    matches!(ctx.load::<u8>(u.l4), Ok(t) if (1..=ERROR_LAST).contains(&t))
}

/// The packet an error at `u` quotes, when it is TCP, UDP or ICMPv6 echo
/// right after its fixed header.
#[inline(always)]
fn quoted(ctx: &TcContext, u: &Upper) -> Option<Quoted> {
    let l3 = u.l4 + 8;
    let l4 = l3 + 40;
    let next: u8 = ctx.load(l3 + 6).ok()?;
    let src: [u8; 16] = ctx.load(l3 + 8).ok()?;
    let dst: [u8; 16] = ctx.load(l3 + 24).ok()?;
    let h: [u8; 8] = ctx.load(l4).ok()?;
    let (sport, dport) = match next {
        IPPROTO_TCP | IPPROTO_UDP => (
            u16::from_ne_bytes([h[0], h[1]]),
            u16::from_ne_bytes([h[2], h[3]]),
        ),
        // Only an echo request is ever quoted back about a flow of ours.
        IPPROTO_ICMPV6 if h[0] == packet6::ICMPV6_ECHO_REQUEST => {
            (u16::from_ne_bytes([h[4], h[5]]), 0)
        }
        _ => return None,
    };
    Some(Quoted {
        key: Flow6Key::new(src, dst, sport, dport, next),
        l3,
        l4,
    })
}

/// Translate an error from outside to the uplink's address about a packet
/// a node sent (a masqueraded flow's, or a forwarded flow's reply): to the
/// node, quoting the packet as the node sent it. `false` when it is about
/// no flow of ours (it is the lab host's).
#[inline(always)]
pub fn translate_in(ctx: &TcContext, p: &Pkt6, u: &Upper) -> Result<bool, DropReason> {
    let Some(q) = quoted(ctx, u) else {
        return Ok(false);
    };
    // The quoted packet left from the uplink: its reverse is the key of
    // the packets that come back in to the node.
    let k = &q.key;
    let back = Flow6Key::new(k.dst_addr, k.src_addr, k.dst_port, k.src_port, k.proto);
    let Some(v) = flows6::get(&back) else {
        return Ok(false);
    };
    let v = unsafe { &*v };
    if v.hook != HOOK_UPLINK_INGRESS {
        return Ok(false);
    }
    rewrite_quoted(ctx, p.l4, &q, true, &v.addr, v.port)?;
    packet6::set_addr(ctx, p, false, &v.addr)?;
    count(stat::XLATE_ICMP_ERROR);
    Ok(true)
}

/// Translate an error a node sends about a packet it got (a masqueraded
/// flow's reply, or a forwarded flow's packet from outside): from the
/// uplink's address, quoting the packet as it came. `false` when it is
/// about no flow of ours.
#[inline(always)]
pub fn translate_out(
    ctx: &TcContext,
    p: &Pkt6,
    u: &Upper,
    uplink: &[u8; 16],
) -> Result<bool, DropReason> {
    let Some(q) = quoted(ctx, u) else {
        return Ok(false);
    };
    // The quoted packet came in: its reverse is the key of the node's
    // packets going out.
    let k = &q.key;
    let out = Flow6Key::new(k.dst_addr, k.src_addr, k.dst_port, k.src_port, k.proto);
    let Some(v) = flows6::get(&out) else {
        return Ok(false);
    };
    let v = unsafe { &*v };
    if v.hook != HOOK_UPLINK_EGRESS {
        return Ok(false);
    }
    let port = v.port;
    rewrite_quoted(ctx, p.l4, &q, false, uplink, port)?;
    packet6::set_addr(ctx, p, true, uplink)?;
    count(stat::XLATE_ICMP_ERROR);
    Ok(true)
}

/// Rewrite the quoted packet's source (`src`) or destination address and
/// port to `addr` and `port`, with its own checksum when quoted (by hand:
/// it is data here) and the error's checksum (through the helper, which
/// knows the packet's checksum state).
#[inline(always)]
fn rewrite_quoted(
    ctx: &TcContext,
    icmp: usize,
    q: &Quoted,
    src: bool,
    addr: &[u8; 16],
    port: u16,
) -> Result<(), DropReason> {
    let icmp_csum = icmp + 2;
    let (old_addr, old_port) = if src {
        (&q.key.src_addr, q.key.src_port)
    } else {
        (&q.key.dst_addr, q.key.dst_port)
    };
    let diff = unsafe {
        bpf_csum_diff(
            old_addr.as_ptr() as *mut u32,
            16,
            addr.as_ptr() as *mut u32,
            16,
            0,
        )
    };
    if diff < 0 {
        return Err(DropReason::RewriteFailed);
    }
    let diff = diff as u32;
    ctx.store(q.l3 + if src { 8 } else { 24 }, addr, 0)
        .map_err(failed)?;
    ctx.l4_csum_replace(icmp_csum, 0, u64::from(diff), 0)
        .map_err(failed)?;
    let (port_off, csum_off) = match q.key.proto {
        IPPROTO_TCP => (q.l4 + if src { 0 } else { 2 }, q.l4 + 16),
        IPPROTO_UDP => (q.l4 + if src { 0 } else { 2 }, q.l4 + 6),
        _ => (q.l4 + 4, q.l4 + 2),
    };
    // The quoted checksum, when the error quotes it (TCP's lies 16 bytes in).
    if let Ok(old_csum) = ctx.load::<u16>(csum_off) {
        let mut c = csum_replace2(csum_add_diff(old_csum, diff), old_port, port);
        if q.key.proto == IPPROTO_UDP && c == 0 {
            c = 0xffff;
        }
        if c != old_csum {
            ctx.store(csum_off, &c, 0).map_err(failed)?;
            ctx.l4_csum_replace(icmp_csum, u64::from(old_csum), u64::from(c), 2)
                .map_err(failed)?;
        }
    }
    if old_port != port {
        ctx.store(port_off, &port, 0).map_err(failed)?;
        ctx.l4_csum_replace(icmp_csum, u64::from(old_port), u64::from(port), 2)
            .map_err(failed)?;
    }
    Ok(())
}
