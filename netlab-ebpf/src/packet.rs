//! Parsing an Ethernet/IPv4 frame into the fields NAT needs, and rewriting
//! addresses and ports with the kernel's checksum helpers (which also keep
//! CHECKSUM_PARTIAL and CHECKSUM_COMPLETE skbs right).

use aya_ebpf::programs::TcContext;
use netlab_common::{FlowKey, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
use netlab_ebpf::{csum_replace2, csum_replace4};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::verdict::DropReason;

pub const ETH_LEN: usize = EthHdr::LEN;
pub const IP_OFF: usize = ETH_LEN;
const ETH_P_IP: u16 = 0x0800;

const BPF_F_PSEUDO_HDR: u64 = 1 << 4;
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROB: u8 = 12;

/// Where a datagram's fragment stands.
pub const FRAG_NONE: u8 = 0;
pub const FRAG_FIRST: u8 = 1;
pub const FRAG_LATER: u8 = 2;

/// The fields of an IPv4 packet NAT reads. Addresses and ports are raw wire
/// order. For ICMP echo the identifier is the request's `sport` and the
/// reply's `dport` (see `netlab_common::FlowKey`).
#[derive(Clone, Copy)]
pub struct Pkt {
    pub l4: usize,
    pub proto: u8,
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// TCP sequence and acknowledgement numbers, host order.
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    pub icmp_type: u8,
    pub frag: u8,
    pub ip_id: u16,
    pub ttl: u8,
    pub len: u32,
    /// Offset of the end of the datagram (its IPv4 total length): what
    /// follows is Ethernet padding, never read as a header.
    pub end: usize,
}

impl Pkt {
    /// The packet's flow key, as its hook sees it.
    #[inline(always)]
    pub fn key(&self) -> FlowKey {
        FlowKey::new(self.src, self.dst, self.sport, self.dport, self.proto)
    }
}

/// A helper that rewrites the packet failed (it is then dropped: never
/// sent half translated).
#[inline(always)]
pub fn failed<E>(_: E) -> DropReason {
    DropReason::RewriteFailed
}

pub enum Parsed {
    /// Not IPv4: pass.
    Other,
    /// IPv4 of a protocol netlab does not translate (neither TCP, UDP nor
    /// ICMP): its addresses, for the programs to decide whether it may pass.
    OtherProto {
        src: u32,
        dst: u32,
    },
    Ip(Pkt),
    /// Claims to be IPv4 but is malformed or truncated.
    Bad,
}

/// Make the first `n` bytes directly readable (pull them into the linear
/// part of the skb when needed). False when the packet is shorter.
#[inline(always)]
pub fn ensure(ctx: &TcContext, n: usize) -> bool {
    if ctx.data() + n <= ctx.data_end() {
        return true;
    }
    if (ctx.len() as usize) < n {
        return false;
    }
    if ctx.pull_data(n as u32).is_err() {
        return false;
    }
    ctx.data() + n <= ctx.data_end()
}

/// A header of type `T` at `off`, bounds-checked for the verifier.
#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    if start + off + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *const T)
}

#[inline(always)]
fn read_u16(ctx: &TcContext, off: usize) -> Option<u16> {
    let p = ptr_at::<[u8; 2]>(ctx, off)?;
    Some(u16::from_ne_bytes(unsafe { *p }))
}

#[inline(always)]
pub fn parse(ctx: &TcContext) -> Parsed {
    if !ensure(ctx, ETH_LEN + Ipv4Hdr::LEN) {
        return Parsed::Other;
    }
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Parsed::Other;
    };
    if u16::from_be(unsafe { (*eth).ether_type }) != ETH_P_IP {
        return Parsed::Other;
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, IP_OFF) else {
        return Parsed::Other;
    };
    let ip = unsafe { &*ip };
    let ihl = usize::from(ip.ihl());
    if ip.version() != 4 || ihl < Ipv4Hdr::LEN {
        return Parsed::Bad;
    }
    let mut total = usize::from(u16::from_be_bytes(ip.tot_len));
    if total == 0 && ctx.len() as usize > IP_OFF + 0xffff {
        // BIG TCP: a GSO packet past 64 KiB carries no total length.
        total = ctx.len() as usize - IP_OFF;
    }
    if total < ihl || IP_OFF + total > ctx.len() as usize {
        return Parsed::Bad;
    }
    let proto = ip.proto;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMP {
        return Parsed::OtherProto {
            src: u32::from_ne_bytes(ip.src_addr),
            dst: u32::from_ne_bytes(ip.dst_addr),
        };
    }
    let frags = u16::from_be_bytes(ip.frags);
    let offset = frags & 0x1fff;
    let more = frags & 0x2000 != 0;
    let frag = if offset != 0 {
        FRAG_LATER
    } else if more {
        FRAG_FIRST
    } else {
        FRAG_NONE
    };
    let mut p = Pkt {
        l4: IP_OFF + ihl,
        proto,
        src: u32::from_ne_bytes(ip.src_addr),
        dst: u32::from_ne_bytes(ip.dst_addr),
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        tcp_seq: 0,
        tcp_ack: 0,
        icmp_type: 0,
        frag,
        ip_id: u16::from_ne_bytes(ip.id),
        ttl: ip.ttl,
        len: ctx.len(),
        end: IP_OFF + total,
    };
    if frag == FRAG_LATER {
        return Parsed::Ip(p);
    }
    let need = match proto {
        IPPROTO_TCP => 20,
        _ => 8,
    };
    if p.l4 + need > p.end || !ensure(ctx, p.l4 + need) {
        return Parsed::Bad;
    }
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let (Some(s), Some(d)) = (read_u16(ctx, p.l4), read_u16(ctx, p.l4 + 2)) else {
                return Parsed::Bad;
            };
            p.sport = s;
            p.dport = d;
            if proto == IPPROTO_TCP {
                // Two bytes (data offset, flags): a one-byte bounds check
                // compiles to a form the verifier cannot use.
                let Some(f) = ptr_at::<[u8; 2]>(ctx, p.l4 + 12) else {
                    return Parsed::Bad;
                };
                p.tcp_flags = unsafe { (*f)[1] };
                let Some(sa) = ptr_at::<[u8; 8]>(ctx, p.l4 + 4) else {
                    return Parsed::Bad;
                };
                let sa = unsafe { *sa };
                p.tcp_seq = u32::from_be_bytes([sa[0], sa[1], sa[2], sa[3]]);
                p.tcp_ack = u32::from_be_bytes([sa[4], sa[5], sa[6], sa[7]]);
            }
        }
        _ => {
            let Some(t) = ptr_at::<[u8; 2]>(ctx, p.l4) else {
                return Parsed::Bad;
            };
            p.icmp_type = unsafe { (*t)[0] };
            let Some(id) = read_u16(ctx, p.l4 + 4) else {
                return Parsed::Bad;
            };
            match p.icmp_type {
                ICMP_ECHO => p.sport = id,
                ICMP_ECHO_REPLY => p.dport = id,
                ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROB => {}
                // Messages without an identifier (timestamp, redirect, …)
                // are not translated: handled as another protocol, so
                // they never match an echo flow whose identifier is 0.
                _ => {
                    return Parsed::OtherProto {
                        src: p.src,
                        dst: p.dst,
                    }
                }
            }
        }
    }
    Parsed::Ip(p)
}

#[inline(always)]
pub fn is_icmp_error(p: &Pkt) -> bool {
    p.proto == IPPROTO_ICMP
        && (p.icmp_type == ICMP_DEST_UNREACH
            || p.icmp_type == ICMP_TIME_EXCEEDED
            || p.icmp_type == ICMP_PARAMETER_PROB)
}

#[inline(always)]
fn l4_csum_off(p: &Pkt) -> usize {
    match p.proto {
        IPPROTO_TCP => p.l4 + 16,
        IPPROTO_UDP => p.l4 + 6,
        _ => p.l4 + 2,
    }
}

#[inline(always)]
fn l4_flags(p: &Pkt) -> u64 {
    if p.proto == IPPROTO_UDP {
        BPF_F_MARK_MANGLED_0
    } else {
        0
    }
}

/// Rewrite the source (`src = true`) or destination address, with the IPv4
/// checksum and, for TCP/UDP with their header present, the pseudo-header
/// part of the L4 checksum.
#[inline(always)]
pub fn set_addr(ctx: &TcContext, p: &Pkt, src: bool, old: u32, new: u32) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    let off = IP_OFF + if src { 12 } else { 16 };
    if p.frag != FRAG_LATER && (p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP) {
        ctx.l4_csum_replace(
            l4_csum_off(p),
            u64::from(old),
            u64::from(new),
            BPF_F_PSEUDO_HDR | 4 | l4_flags(p),
        )
        .map_err(failed)?;
    }
    ctx.l3_csum_replace(IP_OFF + 10, u64::from(old), u64::from(new), 4)
        .map_err(failed)?;
    ctx.store(off, &new, 0).map_err(failed)
}

/// Rewrite the source or destination port (for ICMP echo: the identifier).
#[inline(always)]
pub fn set_port(ctx: &TcContext, p: &Pkt, src: bool, old: u16, new: u16) -> Result<(), DropReason> {
    if old == new {
        return Ok(());
    }
    let off = match p.proto {
        IPPROTO_ICMP => p.l4 + 4,
        _ => p.l4 + if src { 0 } else { 2 },
    };
    ctx.l4_csum_replace(
        l4_csum_off(p),
        u64::from(old),
        u64::from(new),
        2 | l4_flags(p),
    )
    .map_err(failed)?;
    ctx.store(off, &new, 0).map_err(failed)
}

/// Rewrite a packet to new addresses and ports.
#[inline(always)]
pub fn rewrite(
    ctx: &TcContext,
    p: &Pkt,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
) -> Result<(), DropReason> {
    set_addr(ctx, p, true, p.src, src)?;
    set_addr(ctx, p, false, p.dst, dst)?;
    if p.frag == FRAG_LATER {
        return Ok(());
    }
    if p.proto == IPPROTO_ICMP {
        // The identifier is one field: the request's sport or the reply's dport.
        if p.sport != sport {
            set_port(ctx, p, true, p.sport, sport)?;
        } else if p.dport != dport {
            set_port(ctx, p, false, p.dport, dport)?;
        }
        return Ok(());
    }
    set_port(ctx, p, true, p.sport, sport)?;
    set_port(ctx, p, false, p.dport, dport)
}

/// The packet a quoting ICMP error carries (its first bytes).
#[derive(Clone, Copy)]
pub struct Inner {
    /// Offset of the quoted IPv4 header.
    pub l3: usize,
    pub l4: usize,
    pub proto: u8,
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    /// Whether the quoted L4 checksum is inside the packet.
    pub l4_csum_present: bool,
}

/// Parse the packet quoted by an ICMP error.
#[inline(always)]
pub fn parse_inner(ctx: &TcContext, p: &Pkt) -> Option<Inner> {
    let l3 = p.l4 + 8;
    if l3 + Ipv4Hdr::LEN > p.end || !ensure(ctx, l3 + Ipv4Hdr::LEN) {
        return None;
    }
    let ip = ptr_at::<Ipv4Hdr>(ctx, l3)?;
    let ip = unsafe { &*ip };
    let ihl = usize::from(ip.ihl());
    if ip.version() != 4 || ihl < Ipv4Hdr::LEN {
        return None;
    }
    let proto = ip.proto;
    let src = u32::from_ne_bytes(ip.src_addr);
    let dst = u32::from_ne_bytes(ip.dst_addr);
    let l4 = l3 + ihl;
    if l4 + 8 > p.end || !ensure(ctx, l4 + 8) {
        return None;
    }
    let (sport, dport, csum_end) = match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let s = read_u16(ctx, l4)?;
            let d = read_u16(ctx, l4 + 2)?;
            (
                s,
                d,
                if proto == IPPROTO_TCP {
                    l4 + 18
                } else {
                    l4 + 8
                },
            )
        }
        IPPROTO_ICMP => {
            let t = unsafe { (*ptr_at::<[u8; 2]>(ctx, l4)?)[0] };
            let id = read_u16(ctx, l4 + 4)?;
            match t {
                ICMP_ECHO => (id, 0, l4 + 4),
                ICMP_ECHO_REPLY => (0, id, l4 + 4),
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(Inner {
        l3,
        l4,
        proto,
        src,
        dst,
        sport,
        dport,
        l4_csum_present: p.end >= csum_end,
    })
}

/// Rewrite the quoted packet's source (`src = true`) or destination endpoint
/// and the outer ICMP checksum to match. The quoted IPv4 and L4 checksums are
/// never offloaded, so they are updated by hand; the ICMP checksum goes
/// through the helper so offload state is respected.
#[inline(always)]
pub fn rewrite_inner(
    ctx: &TcContext,
    p: &Pkt,
    inner: &Inner,
    src: bool,
    addr: u32,
    port: u16,
) -> Result<(), DropReason> {
    let icmp_csum = p.l4 + 2;
    let (old_addr, old_port) = if src {
        (inner.src, inner.sport)
    } else {
        (inner.dst, inner.dport)
    };
    // Quoted IPv4 header: address and its checksum.
    if old_addr != addr {
        let ip_csum_off = inner.l3 + 10;
        let old_ip_csum: u16 = ctx.load(ip_csum_off).map_err(failed)?;
        let new_ip_csum = csum_replace4(old_ip_csum, old_addr, addr);
        ctx.store(inner.l3 + if src { 12 } else { 16 }, &addr, 0)
            .map_err(failed)?;
        ctx.store(ip_csum_off, &new_ip_csum, 0).map_err(failed)?;
        ctx.l4_csum_replace(icmp_csum, u64::from(old_addr), u64::from(addr), 4)
            .map_err(failed)?;
        ctx.l4_csum_replace(icmp_csum, u64::from(old_ip_csum), u64::from(new_ip_csum), 2)
            .map_err(failed)?;
    }
    // Quoted L4 header: port (or echo id) and, when quoted, its checksum.
    let port_off = match inner.proto {
        IPPROTO_ICMP => inner.l4 + 4,
        _ => inner.l4 + if src { 0 } else { 2 },
    };
    let csum_off = match inner.proto {
        IPPROTO_TCP => inner.l4 + 16,
        IPPROTO_UDP => inner.l4 + 6,
        _ => inner.l4 + 2,
    };
    if inner.l4_csum_present {
        let old_csum: u16 = ctx.load(csum_off).map_err(failed)?;
        // A UDP checksum of zero means none.
        if !(inner.proto == IPPROTO_UDP && old_csum == 0) {
            let mut c = old_csum;
            if inner.proto != IPPROTO_ICMP {
                c = csum_replace4(c, old_addr, addr);
            }
            c = csum_replace2(c, old_port, port);
            if inner.proto == IPPROTO_UDP && c == 0 {
                c = 0xffff;
            }
            if c != old_csum {
                ctx.store(csum_off, &c, 0).map_err(failed)?;
                ctx.l4_csum_replace(icmp_csum, u64::from(old_csum), u64::from(c), 2)
                    .map_err(failed)?;
            }
        }
    }
    if old_port != port {
        ctx.store(port_off, &port, 0).map_err(failed)?;
        ctx.l4_csum_replace(icmp_csum, u64::from(old_port), u64::from(port), 2)
            .map_err(failed)?;
    }
    Ok(())
}

/// The frame's Ethernet destination and source (12 bytes).
#[inline(always)]
pub fn read_l2(ctx: &TcContext) -> Option<[u8; 12]> {
    ptr_at::<[u8; 12]>(ctx, 0).map(|p| unsafe { *p })
}

/// The fast path's rewrite: addresses and ports translated, one hop less,
/// new Ethernet addresses, in as few helper calls as the checksums allow.
/// The IPv4 header checksum is never offloaded, so it is updated by hand
/// together with direct writes of the header; only the L4 checksum goes
/// through `bpf_l4_csum_replace`, which knows whether the packet's checksum
/// is still to be completed (CHECKSUM_PARTIAL) or final.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn rewrite_forward(
    ctx: &TcContext,
    p: &Pkt,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    l2: &[u8; 12],
) -> Result<(), DropReason> {
    // ICMP echo: the identifier is the request's sport, the reply's dport.
    let icmp = p.proto == IPPROTO_ICMP;
    let request = p.icmp_type == ICMP_ECHO;
    let (old_id, new_id) = if request {
        (p.sport, sport)
    } else {
        (p.dport, dport)
    };
    // Bounds for the verifier: the fixed headers, then the L4 header at its
    // variable offset (each pointer is checked on its own).
    let head =
        ptr_at::<[u8; ETH_LEN + Ipv4Hdr::LEN]>(ctx, 0).ok_or(DropReason::RewriteFailed)? as *mut u8;
    let l4 = ptr_at::<[u8; 8]>(ctx, p.l4).ok_or(DropReason::RewriteFailed)? as *mut u8;
    unsafe {
        *(head as *mut [u8; 12]) = *l2;
        let ip = head.add(IP_OFF) as *mut Ipv4Hdr;
        let mut check = u16::from_ne_bytes((*ip).check);
        check = csum_replace4(check, p.src, src);
        check = csum_replace4(check, p.dst, dst);
        let ttl_word = u16::from_ne_bytes([p.ttl, p.proto]);
        check = csum_replace2(check, ttl_word, u16::from_ne_bytes([p.ttl - 1, p.proto]));
        (*ip).src_addr = src.to_ne_bytes();
        (*ip).dst_addr = dst.to_ne_bytes();
        (*ip).ttl = p.ttl - 1;
        (*ip).check = check.to_ne_bytes();
        if icmp {
            *(l4.add(4) as *mut [u8; 2]) = new_id.to_ne_bytes();
        } else {
            *(l4 as *mut [u8; 2]) = sport.to_ne_bytes();
            *(l4.add(2) as *mut [u8; 2]) = dport.to_ne_bytes();
        }
    }
    let off = l4_csum_off(p);
    if icmp {
        if old_id != new_id {
            ctx.l4_csum_replace(off, u64::from(old_id), u64::from(new_id), 2)
                .map_err(failed)?;
        }
        return Ok(());
    }
    let flags = l4_flags(p);
    for (old, new) in [(p.src, src), (p.dst, dst)] {
        if old != new {
            ctx.l4_csum_replace(
                off,
                u64::from(old),
                u64::from(new),
                BPF_F_PSEUDO_HDR | 4 | flags,
            )
            .map_err(failed)?;
        }
    }
    for (old, new) in [(p.sport, sport), (p.dport, dport)] {
        if old != new {
            ctx.l4_csum_replace(off, u64::from(old), u64::from(new), 2 | flags)
                .map_err(failed)?;
        }
    }
    Ok(())
}

/// Zero the frame's Ethernet addresses: `lo`'s own, for a packet handed to
/// the lab host through its loopback.
#[inline(always)]
pub fn clear_l2(ctx: &TcContext) -> Result<(), DropReason> {
    ctx.store(0, &[0u8; 12], 0).map_err(failed)
}
