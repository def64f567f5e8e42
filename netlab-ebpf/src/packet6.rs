//! Parsing an Ethernet/IPv6 frame: the fixed header, then the extension
//! headers walked (a bounded number of them) to the upper-layer header.
//! Apart from `packet` so the IPv4 path is not touched by any of it.

use aya_ebpf::programs::TcContext;
use netlab_common::IPPROTO_ICMPV6;
use network_types::{eth::EthHdr, ip::Ipv6Hdr};

use crate::packet::{ensure, ptr_at, FRAG_FIRST, FRAG_LATER, FRAG_NONE, IP_OFF};

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
#[derive(Clone, Copy)]
pub struct Upper {
    /// Its protocol (`IPPROTO_*`).
    pub proto: u8,
    /// Its offset in the frame.
    pub l4: usize,
    /// `FRAG_*`: a later fragment carries no upper-layer header at `l4`.
    pub frag: u8,
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

/// The frame's IPv6 header, unless the frame is not IPv6 or stays on its
/// link ([`is_link_local`]): what the hooks look at further.
#[inline(always)]
pub fn beyond_link(ctx: &TcContext) -> Option<Ip6> {
    header(ctx).filter(|ip| !is_link_local(ip))
}

/// Walk the extension headers to the upper-layer header (whose offset is
/// then inside the packet). Read through
/// `bpf_skb_load_bytes`, which checks each read against the packet, so the
/// variable offsets need no proof of bounds for the verifier.
#[inline(always)]
pub fn upper_layer(ctx: &TcContext, ip: &Ip6) -> Result<Upper, ChainError> {
    let mut next = ip.next_hdr;
    let mut off = IP_OFF + Ipv6Hdr::LEN;
    let mut frag = FRAG_NONE;
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
                let h: [u8; 4] = ctx.load(off).map_err(|_| ChainError::Truncated)?;
                next = h[0];
                let offset = u16::from_be_bytes([h[2], h[3]]) & 0xfff8;
                if offset != 0 {
                    // What follows is the middle of the datagram.
                    return Ok(Upper {
                        proto: next,
                        l4: off + 8,
                        frag: FRAG_LATER,
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
    })
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
