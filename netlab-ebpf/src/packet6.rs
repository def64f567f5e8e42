//! Parsing an Ethernet/IPv6 frame: the fixed header, then the extension
//! headers walked (a bounded number of them) to the upper-layer header.
//! Apart from `packet` so the IPv4 path is not touched by any of it.

use aya_ebpf::{helpers::generated::bpf_csum_diff, programs::TcContext};
use netlab_common::{Flow6Key, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use network_types::{eth::EthHdr, ip::Ipv6Hdr};

use crate::{
    maps::UPPER6,
    packet::{ensure, failed, ptr_at, FRAG_FIRST, FRAG_LATER, FRAG_NONE, IP_OFF},
    verdict::DropReason,
};

const ETH_P_IPV6: u16 = 0x86dd;

/// Extension headers (RFC 8200 4, RFC 4302 for AH).
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;

/// How many extension headers are walked before giving up. A packet a
/// host sends has at most a few (hop-by-hop, destination options, routing,
/// fragment, AH, destination options again: RFC 8200 4.1 recommends that
/// order, each at most once, destination options twice), so six are
/// enough for any conforming packet; more is a chain made to exhaust the
/// parser. Cilium walks four.
pub const MAX_EXT_HEADERS: usize = 6;

/// ICMPv6 messages of neighbour discovery (RFC 4861): router solicitation
/// and advertisement, neighbour solicitation and advertisement, redirect.
const ND_FIRST: u8 = 133;
const ND_LAST: u8 = 137;

/// The fixed header's addresses (wire bytes).
#[derive(Clone, Copy)]
pub struct Ip6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub next_hdr: u8,
}

/// Where the upper-layer header is, past the extension headers.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Upper {
    /// Its protocol (`IPPROTO_*`).
    pub proto: u8,
    /// Its offset in the frame.
    pub l4: usize,
    /// `FRAG_*`: a later fragment carries no upper-layer header at `l4`.
    pub frag: u8,
    /// A fragment's identification (wire order), 0 for a packet whole.
    pub frag_id: u32,
}

/// Why the upper-layer header could not be found.
#[derive(Clone, Copy)]
pub enum ChainError {
    /// More extension headers than [`MAX_EXT_HEADERS`].
    TooLong,
    /// An extension header runs past the packet.
    Truncated,
}

/// The frame's IPv6 header, or `None` when it is not IPv6 (or too short
/// to hold the fixed header, or of another version).
#[inline(always)]
fn header(ctx: &TcContext) -> Option<Ip6> {
    if !ensure(ctx, IP_OFF + Ipv6Hdr::LEN) {
        return None;
    }
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    if u16::from_be(unsafe { (*eth).ether_type }) != ETH_P_IPV6 {
        return None;
    }
    let ip = unsafe { &*ptr_at::<Ipv6Hdr>(ctx, IP_OFF)? };
    if ip.vcf[0] >> 4 != 6 {
        return None;
    }
    Some(Ip6 {
        src: ip.src_addr,
        dst: ip.dst_addr,
        next_hdr: ip.next_hdr,
    })
}

/// Whether the frame says it carries IPv6 (its EtherType alone: nothing
/// parsed, nothing on the stack).
#[inline(always)]
pub fn is_ipv6(ctx: &TcContext) -> bool {
    matches!(ctx.load::<u16>(12), Ok(t) if u16::from_be(t) == ETH_P_IPV6)
}

/// The IPv6 header's hop limit (0 when the frame is too short): the fast
/// paths take only a packet with a hop to spare, as the stack would.
#[inline(always)]
pub fn hop_limit(ctx: &TcContext) -> u8 {
    ctx.load::<u8>(IP_OFF + 7).unwrap_or(0)
}

/// The fast paths' hand-over, after the translation: the next hop's
/// Ethernet addresses and one hop less (the IPv6 header has no checksum).
#[inline(always)]
pub fn forward_l2(ctx: &TcContext, l2: &[u8; 12]) -> Result<(), DropReason> {
    let head = ptr_at::<[u8; IP_OFF + 8]>(ctx, 0).ok_or(DropReason::RewriteFailed)? as *mut u8;
    unsafe {
        *(head as *mut [u8; 12]) = *l2;
        let hops = head.add(IP_OFF + 7);
        *hops = (*hops).saturating_sub(1);
    }
    Ok(())
}

/// The frame's IPv6 header, unless the frame is not IPv6 or stays on its
/// link ([`is_link_local`]): what the hooks look at further.
#[inline(always)]
pub fn beyond_link(ctx: &TcContext) -> Option<Ip6> {
    header(ctx).filter(|ip| !is_link_local(ip))
}

/// Walk the extension headers to the upper-layer header (whose offset is
/// then inside the packet). Read through `bpf_skb_load_bytes`, which
/// checks each read against the packet, so the variable offsets need no
/// proof of bounds for the verifier.
#[inline(always)]
pub fn upper_layer(ctx: &TcContext, ip: &Ip6) -> Result<Upper, ChainError> {
    let mut next = ip.next_hdr;
    let mut off = IP_OFF + Ipv6Hdr::LEN;
    let mut frag = FRAG_NONE;
    let mut frag_id = 0;
    for _ in 0..MAX_EXT_HEADERS {
        let len = match next {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let h: [u8; 2] = ctx.load(off).map_err(|_| ChainError::Truncated)?;
                next = h[0];
                (usize::from(h[1]) + 1) * 8
            }
            NEXTHDR_AUTH => {
                let h: [u8; 2] = ctx.load(off).map_err(|_| ChainError::Truncated)?;
                next = h[0];
                (usize::from(h[1]) + 2) * 4
            }
            NEXTHDR_FRAGMENT => {
                let h: [u8; 8] = ctx.load(off).map_err(|_| ChainError::Truncated)?;
                next = h[0];
                frag_id = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
                let offset = u16::from_be_bytes([h[2], h[3]]) & 0xfff8;
                if offset != 0 {
                    // What follows is the middle of the datagram.
                    return Ok(Upper {
                        proto: next,
                        l4: off + 8,
                        frag: FRAG_LATER,
                        frag_id,
                    });
                }
                if h[3] & 1 != 0 {
                    frag = FRAG_FIRST;
                }
                8
            }
            _ => {
                return Ok(Upper {
                    proto: next,
                    l4: off,
                    frag,
                    frag_id,
                })
            }
        };
        off += len;
        if off > ctx.len() as usize {
            return Err(ChainError::Truncated);
        }
    }
    if is_extension(next) {
        return Err(ChainError::TooLong);
    }
    Ok(Upper {
        proto: next,
        l4: off,
        frag,
        frag_id,
    })
}

/// `u` as values the verifier cannot know, for a program that goes on to
/// translate the packet.
///
/// The walk ends in one of a dozen ways, each with an offset and fragment
/// state of its own, and the verifier would check the rest of the program
/// once for each: 6.1's walked 867,501 instructions (of the million it
/// allows) through `nl_uplink_out6`. Stored in a per-CPU map and read
/// back, they are one state for all ways: 62,838 instructions. (The
/// lookup cannot fail; were it to, the packet would be one whose headers
/// cannot be followed.)
#[inline(always)]
pub fn settle(u: Upper) -> Result<Upper, ChainError> {
    let slot = UPPER6.get_ptr_mut(0).ok_or(ChainError::Truncated)?;
    unsafe {
        core::ptr::write_volatile(slot, u);
        Ok(core::ptr::read_volatile(slot))
    }
}

#[inline(always)]
fn is_extension(next: u8) -> bool {
    matches!(
        next,
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_FRAGMENT | NEXTHDR_AUTH | NEXTHDR_DEST
    )
}

/// Traffic that stays on its link: from or to a link-local unicast
/// address (fe80::/10), or to a link-local multicast group (ff02::/16).
/// Never translated, never dropped.
#[inline(always)]
fn is_link_local(ip: &Ip6) -> bool {
    let link_local = |a: &[u8; 16]| a[0] == 0xfe && a[1] & 0xc0 == 0x80;
    link_local(&ip.src) || link_local(&ip.dst) || (ip.dst[0] == 0xff && ip.dst[1] & 0x0f == 2)
}

/// Whether the packet is neighbour discovery (a router or neighbour
/// solicitation or advertisement, or a redirect), which passes whatever its
/// addresses. Never fragmented (RFC 6980), so a fragment is not.
#[inline(always)]
pub fn is_neighbour_discovery(ctx: &TcContext, u: &Upper) -> bool {
    if u.proto != IPPROTO_ICMPV6 || u.frag != FRAG_NONE {
        return false;
    }
    match ctx.load::<[u8; 2]>(u.l4) {
        Ok(t) => (ND_FIRST..=ND_LAST).contains(&t[0]),
        Err(_) => false,
    }
}

/// ICMPv6 echo request and reply (RFC 4443 4).
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// Checksum helper flags (`bpf_l4_csum_replace`).
const BPF_F_PSEUDO_HDR: u64 = 1 << 4;
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;

/// An IPv6 packet the NAT translates: TCP, UDP or ICMPv6 echo (not a later
/// fragment), with its ports in network order (for echo, the identifier as
/// [`Flow6Key`] has it: `(id, 0)` for a request, `(0, id)` for a reply).
#[derive(Clone, Copy)]
pub struct Pkt6 {
    /// Its addresses, ports and protocol (kept once, not beside an `Ip6`:
    /// the stack of 6.1's verifier counts every copy).
    pub key: Flow6Key,
    pub proto: u8,
    pub l4: usize,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    /// The frame's length, for the flow's byte count.
    pub len: u32,
    /// `FRAG_NONE` or `FRAG_FIRST`, and the fragment's identification.
    pub frag: u8,
    pub frag_id: u32,
}

/// The translatable packet `u` starts, or `None` (another protocol, an
/// ICMPv6 message other than echo, a later fragment, a header cut short).
#[inline(always)]
pub fn transport(ctx: &TcContext, ip: &Ip6, u: &Upper) -> Option<Pkt6> {
    if u.frag == FRAG_LATER {
        return None;
    }
    let mut p = message(ctx, ip, u);
    match u.proto {
        IPPROTO_TCP => {
            let h: [u8; 14] = ctx.load(u.l4).ok()?;
            p.sport = u16::from_ne_bytes([h[0], h[1]]);
            p.dport = u16::from_ne_bytes([h[2], h[3]]);
            p.tcp_flags = h[13];
        }
        IPPROTO_UDP => {
            let h: [u8; 8] = ctx.load(u.l4).ok()?;
            p.sport = u16::from_ne_bytes([h[0], h[1]]);
            p.dport = u16::from_ne_bytes([h[2], h[3]]);
        }
        IPPROTO_ICMPV6 => {
            let h: [u8; 8] = ctx.load(u.l4).ok()?;
            let id = u16::from_ne_bytes([h[4], h[5]]);
            p.icmp_type = h[0];
            match h[0] {
                ICMPV6_ECHO_REQUEST => p.sport = id,
                ICMPV6_ECHO_REPLY => p.dport = id,
                _ => return None,
            }
        }
        _ => return None,
    }
    p.key.src_port = p.sport;
    p.key.dst_port = p.dport;
    Some(p)
}

/// The packet `u` starts as a [`Pkt6`] without its ports: an ICMPv6
/// message other than echo (an error), whose addresses [`set_addr`] can
/// rewrite; [`transport`] reads the ports of the rest.
#[inline(always)]
pub fn message(ctx: &TcContext, ip: &Ip6, u: &Upper) -> Pkt6 {
    Pkt6 {
        key: Flow6Key::new(ip.src, ip.dst, 0, 0, u.proto),
        proto: u.proto,
        l4: u.l4,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        len: ctx.len(),
        frag: u.frag,
        frag_id: u.frag_id,
    }
}

#[inline(always)]
fn csum_off(p: &Pkt6) -> usize {
    match p.proto {
        IPPROTO_TCP => p.l4 + 16,
        IPPROTO_UDP => p.l4 + 6,
        _ => p.l4 + 2,
    }
}

#[inline(always)]
fn mangled_0(p: &Pkt6) -> u64 {
    if p.proto == IPPROTO_UDP {
        BPF_F_MARK_MANGLED_0
    } else {
        0
    }
}

/// Rewrite the source (`src = true`) or destination address, and the
/// upper-layer checksum's pseudo-header part (IPv6 has no header
/// checksum; TCP's, UDP's and ICMPv6's all cover the addresses).
#[inline(always)]
pub fn set_addr(ctx: &TcContext, p: &Pkt6, src: bool, new: &[u8; 16]) -> Result<(), DropReason> {
    let old = if src {
        &p.key.src_addr
    } else {
        &p.key.dst_addr
    };
    if same_addr(old, new) {
        return Ok(());
    }
    // Straight from where the addresses are: copies would cost stack.
    let diff = unsafe {
        bpf_csum_diff(
            old.as_ptr() as *mut u32,
            16,
            new.as_ptr() as *mut u32,
            16,
            0,
        )
    };
    if diff < 0 {
        return Err(DropReason::RewriteFailed);
    }
    // Size 0: `to` is a checksum difference.
    ctx.l4_csum_replace(csum_off(p), 0, diff as u64, BPF_F_PSEUDO_HDR | mangled_0(p))
        .map_err(failed)?;
    let off = IP_OFF + if src { 8 } else { 24 };
    ctx.store(off, new, 0).map_err(failed)
}

/// Address equality by 64-bit halves (see `binding6::same`).
#[inline(always)]
pub fn same_addr(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let half = |x: &[u8; 16], i: usize| {
        u64::from_ne_bytes([
            x[i],
            x[i + 1],
            x[i + 2],
            x[i + 3],
            x[i + 4],
            x[i + 5],
            x[i + 6],
            x[i + 7],
        ])
    };
    half(a, 0) == half(b, 0) && half(a, 8) == half(b, 8)
}

/// Rewrite only the source (`src = true`) or destination address: a later
/// fragment, whose upper-layer header (and checksum) went with the first.
#[inline(always)]
pub fn set_fragment_addr(ctx: &TcContext, src: bool, new: &[u8; 16]) -> Result<(), DropReason> {
    ctx.store(IP_OFF + if src { 8 } else { 24 }, new, 0)
        .map_err(failed)
}

/// Rewrite the source or destination port (for echo: the identifier).
#[inline(always)]
pub fn set_port(
    ctx: &TcContext,
    p: &Pkt6,
    src: bool,
    old: u16,
    new: u16,
) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    let off = match p.proto {
        IPPROTO_ICMPV6 => p.l4 + 4,
        _ => p.l4 + if src { 0 } else { 2 },
    };
    ctx.l4_csum_replace(
        csum_off(p),
        u64::from(old),
        u64::from(new),
        2 | mangled_0(p),
    )
    .map_err(failed)?;
    ctx.store(off, &new, 0).map_err(failed)
}
