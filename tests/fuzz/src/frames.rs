//! Reading frames independently of the programs: IPv4 shape, the tuple a
//! program keys a packet by, which bytes a program may rewrite, and whether
//! `netlab_tests::packet::parse_checked` can look at a frame without
//! indexing out of bounds.

use std::net::{Ipv4Addr, Ipv6Addr};

use netlab_common::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use netlab_tests::packet::checksum;

use crate::dataplane::{Prog, REDIRECT, SHOT};

pub const ETH: usize = 14;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    pub ihl: usize,
    /// The header's total length.
    pub total: usize,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub id: u16,
    pub frag_offset: u16,
    pub more_fragments: bool,
    /// Offset of the L4 header in the frame.
    pub l4: usize,
    /// End of the datagram in the frame (total length, or the frame's end
    /// when it is truncated).
    pub end: usize,
}

impl Ipv4 {
    pub fn later_fragment(&self) -> bool {
        self.frag_offset != 0
    }

    pub fn fragmented(&self) -> bool {
        self.frag_offset != 0 || self.more_fragments
    }

    /// Bytes past the datagram (Ethernet padding).
    pub fn padded(&self, frame: &[u8]) -> bool {
        ETH + self.total < frame.len()
    }

    pub fn truncated(&self, frame: &[u8]) -> bool {
        ETH + self.total > frame.len()
    }
}

fn u16_at(f: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([f[i], f[i + 1]])
}

/// What the oracles need of an IPv6 packet, read by walking its whole
/// chain of extension headers (however long) within the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// It stays on its link: from or to fe80::/10, or to a link-scope
    /// multicast group.
    pub link_local: bool,
    /// Neighbour discovery (ICMPv6 133..=137, not a fragment).
    pub nd: bool,
}

/// The IPv6 header of an Ethernet frame, when there is a complete one.
pub fn ipv6(frame: &[u8]) -> Option<Ipv6> {
    if frame.len() < ETH + 40 || frame[12..14] != [0x86, 0xdd] || frame[ETH] >> 4 != 6 {
        return None;
    }
    let ip = &frame[ETH..];
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?);
    let ll = |a: Ipv6Addr| a.segments()[0] & 0xffc0 == 0xfe80;
    let link_local = ll(src) || ll(dst) || (dst.segments()[0] & 0xff0f == 0xff02);
    let (mut next, mut off, mut fragment) = (ip[6], 40, false);
    let nd = loop {
        let (Some(&n), Some(&len)) = (ip.get(off), ip.get(off + 1)) else {
            break false;
        };
        off += match next {
            0 | 43 | 60 => (usize::from(len) + 1) * 8,
            51 => (usize::from(len) + 2) * 4,
            44 => {
                let Some(fo) = ip.get(off + 2..off + 4) else {
                    break false;
                };
                fragment |= u16_at(fo, 0) & 0xfff9 != 0;
                8
            }
            58 => break !fragment && (133..=137).contains(&n),
            _ => break false,
        };
        next = n;
    };
    Some(Ipv6 {
        src,
        dst,
        link_local,
        nd,
    })
}

/// The IPv4 header of an Ethernet frame, when there is a complete one.
pub fn ipv4(frame: &[u8]) -> Option<Ipv4> {
    if frame.len() < ETH + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[ETH..];
    if ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 || ihl > ip.len() {
        return None;
    }
    let total = usize::from(u16_at(ip, 2));
    let frags = u16_at(ip, 6);
    Some(Ipv4 {
        ihl,
        total,
        proto: ip[9],
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        ttl: ip[8],
        id: u16_at(ip, 4),
        frag_offset: frags & 0x1fff,
        more_fragments: frags & 0x2000 != 0,
        l4: ETH + ihl,
        end: (ETH + total).min(frame.len()),
    })
}

/// The minimal L4 header the programs read for a protocol.
pub fn l4_header_len(proto: u8) -> Option<usize> {
    match proto {
        IPPROTO_TCP => Some(20),
        IPPROTO_UDP | IPPROTO_ICMP => Some(8),
        _ => None,
    }
}

/// Why an IPv4 frame of a protocol the programs translate is malformed,
/// judged by its own headers (lengths included), or `None` when it is a
/// proper packet (possibly a fragment, possibly with Ethernet padding).
pub fn malformed(frame: &[u8]) -> Option<&'static str> {
    if frame.len() < ETH + 20 || frame[12..14] != [0x08, 0x00] {
        return None; // not IPv4: not ours to judge
    }
    let ip = &frame[ETH..];
    if ip[0] >> 4 != 4 {
        return Some("version is not 4");
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < 20 {
        return Some("IHL below 5");
    }
    if ihl > ip.len() {
        return Some("options past the end of the frame");
    }
    let total = usize::from(u16_at(ip, 2));
    if total < ihl {
        return Some("total length shorter than the header");
    }
    let need = l4_header_len(ip[9])?;
    let later = u16_at(ip, 6) & 0x1fff != 0;
    if !later && total < ihl + need {
        return Some("total length leaves no room for the L4 header");
    }
    // A truncated datagram (total length past the frame's end) has all its
    // headers: translating it is harmless, the stack drops it after.
    None
}

/// The tuple a program keys a packet by (addresses and ports as on the
/// wire, ICMP echo identifier as the requester's port), read from the
/// frame's bytes as the programs read them (the frame's length, not the
/// IPv4 total length, bounds the headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl Tuple {
    pub fn reversed(&self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }

    pub fn key(&self) -> netlab_common::FlowKey {
        netlab_common::FlowKey::new(
            crate::dataplane::na(self.src),
            crate::dataplane::na(self.dst),
            self.sport.to_be(),
            self.dport.to_be(),
            self.proto,
        )
    }
}

pub fn icmp_is_error(t: u8) -> bool {
    matches!(t, 3 | 11 | 12)
}

pub fn tuple(frame: &[u8]) -> Option<Tuple> {
    let ip = ipv4(frame)?;
    let need = l4_header_len(ip.proto)?;
    let mut t = Tuple {
        src: ip.src,
        dst: ip.dst,
        sport: 0,
        dport: 0,
        proto: ip.proto,
    };
    if ip.later_fragment() {
        return Some(t);
    }
    if frame.len() < ip.l4 + need {
        return None;
    }
    let l4 = &frame[ip.l4..];
    match ip.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            t.sport = u16_at(l4, 0);
            t.dport = u16_at(l4, 2);
        }
        _ => match l4[0] {
            8 => t.sport = u16_at(l4, 4),
            0 => t.dport = u16_at(l4, 4),
            _ => {}
        },
    }
    Some(t)
}

/// The packet an ICMP error quotes: offset of its IPv4 header and of its L4
/// header in the frame, and its protocol, when the quote has a complete
/// IPv4 header and 8 bytes of L4 inside the outer datagram.
#[derive(Clone, Copy, Debug)]
pub struct Quote {
    pub l3: usize,
    pub l4: usize,
    pub proto: u8,
    pub icmp_type: u8,
    pub tuple: Tuple,
}

pub fn quote(frame: &[u8]) -> Option<Quote> {
    let ip = ipv4(frame)?;
    if ip.proto != IPPROTO_ICMP || ip.later_fragment() {
        return None;
    }
    let end = ip.end;
    if end < ip.l4 + 8 || !icmp_is_error(frame[ip.l4]) {
        return None;
    }
    let l3 = ip.l4 + 8;
    if end < l3 + 20 || frame[l3] >> 4 != 4 {
        return None;
    }
    let qihl = usize::from(frame[l3] & 0x0f) * 4;
    let l4 = l3 + qihl;
    if qihl < 20 || end < l4 + 8 {
        return None;
    }
    let proto = frame[l3 + 9];
    let q = &frame[l3..];
    let mut tuple = Tuple {
        src: Ipv4Addr::new(q[12], q[13], q[14], q[15]),
        dst: Ipv4Addr::new(q[16], q[17], q[18], q[19]),
        sport: 0,
        dport: 0,
        proto,
    };
    let mut icmp_type = 0;
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            tuple.sport = u16_at(frame, l4);
            tuple.dport = u16_at(frame, l4 + 2);
        }
        IPPROTO_ICMP => {
            icmp_type = frame[l4];
            match icmp_type {
                8 => tuple.sport = u16_at(frame, l4 + 4),
                0 => tuple.dport = u16_at(frame, l4 + 4),
                _ => {}
            }
        }
        _ => {}
    }
    Some(Quote {
        l3,
        l4,
        proto,
        icmp_type,
        tuple,
    })
}

/// Whether `parse_checked` can read the frame without indexing past its
/// slices (it was written for the harness's own well-formed frames).
pub fn checkable(frame: &[u8]) -> bool {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return true; // it returns "not IPv4"
    }
    let ip = &frame[ETH..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16_at(ip, 2));
    if ihl > ip.len() {
        return false;
    }
    if checksum(&ip[..ihl], 0) != 0 {
        return true; // refused before any other slicing
    }
    if ihl > total || total > ip.len() {
        return false;
    }
    let l4 = &ip[ihl..total];
    let first = u16_at(ip, 6) & 0x3fff == 0;
    if !first {
        return true;
    }
    match ip[9] {
        IPPROTO_UDP => l4.len() >= 8,
        IPPROTO_ICMP => {
            if l4.is_empty() {
                return false;
            }
            if !matches!(l4[0], 3 | 11 | 12) {
                return true;
            }
            if l4.len() < 8 {
                return false;
            }
            let q = &l4[8..];
            if q.is_empty() {
                return false;
            }
            let qihl = usize::from(q[0] & 0x0f) * 4;
            if qihl > q.len() || q.len() < 20 {
                return false;
            }
            let qtotal = usize::from(u16_at(q, 2));
            if q.len() >= qtotal {
                if qihl > qtotal {
                    return false;
                }
                if q[9] == IPPROTO_UDP && qtotal - qihl < 8 {
                    return false;
                }
            }
            true
        }
        _ => true,
    }
}

/// Which bytes of `frame` a program may change when it returns `rc`, read
/// from the frame's own headers: Ethernet addresses and TTL only on the
/// fast paths (a redirect from nl_node_in or nl_uplink_in), the IPv4
/// checksum and addresses, the L4 ports (echo identifier) and checksum, and
/// in an ICMP error the quoted packet's addresses, ports and checksums.
/// Nothing past the datagram's total length, nothing of the payload.
pub fn allowed(frame: &[u8], prog: Prog, rc: u32) -> Vec<bool> {
    let mut ok = vec![false; frame.len()];
    if rc == SHOT {
        ok.fill(true);
        return ok;
    }
    let allow = |from: usize, to: usize, ok: &mut Vec<bool>, end: usize| {
        for b in ok.iter_mut().take(to.min(end)).skip(from) {
            *b = true;
        }
    };
    let fast = rc == REDIRECT && matches!(prog, Prog::NodeIn | Prog::UplinkIn);
    if fast {
        allow(0, 12, &mut ok, frame.len());
    }
    let Some(ip) = ipv4(frame) else {
        return ok;
    };
    let end = ip.end;
    if fast {
        allow(ETH + 8, ETH + 9, &mut ok, end);
    }
    allow(ETH + 10, ETH + 20, &mut ok, end);
    if ip.later_fragment() {
        return ok;
    }
    let l4 = ip.l4;
    match ip.proto {
        IPPROTO_TCP => {
            allow(l4, l4 + 4, &mut ok, end);
            allow(l4 + 16, l4 + 18, &mut ok, end);
        }
        IPPROTO_UDP => {
            allow(l4, l4 + 4, &mut ok, end);
            allow(l4 + 6, l4 + 8, &mut ok, end);
        }
        IPPROTO_ICMP if end > l4 => {
            allow(l4 + 2, l4 + 4, &mut ok, end);
            match frame[l4] {
                0 | 8 => allow(l4 + 4, l4 + 6, &mut ok, end),
                t if icmp_is_error(t) => {
                    if let Some(q) = quote(frame) {
                        allow(q.l3 + 10, q.l3 + 20, &mut ok, end);
                        match q.proto {
                            IPPROTO_TCP => {
                                allow(q.l4, q.l4 + 4, &mut ok, end);
                                allow(q.l4 + 16, q.l4 + 18, &mut ok, end);
                            }
                            IPPROTO_UDP => {
                                allow(q.l4, q.l4 + 4, &mut ok, end);
                                allow(q.l4 + 6, q.l4 + 8, &mut ok, end);
                            }
                            IPPROTO_ICMP => allow(q.l4 + 2, q.l4 + 6, &mut ok, end),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
    ok
}

/// Which header fields differ between a frame and its rewrite, as bits
/// (fuzzer feedback and failure reports).
pub fn changed_fields(a: &[u8], b: &[u8]) -> u32 {
    let mut bits = 0;
    let diff = |from: usize, to: usize| (from..to.min(a.len()).min(b.len())).any(|i| a[i] != b[i]);
    if diff(0, 12) {
        bits |= 1;
    }
    let Some(ip) = ipv4(a) else {
        return bits | if a != b { 0x80 } else { 0 };
    };
    if diff(ETH + 8, ETH + 9) {
        bits |= 2;
    }
    if diff(ETH + 12, ETH + 16) {
        bits |= 4;
    }
    if diff(ETH + 16, ETH + 20) {
        bits |= 8;
    }
    if diff(ip.l4, ip.l4 + 4) {
        bits |= 0x10;
    }
    if diff(ip.l4 + 4, ip.l4 + 8) {
        bits |= 0x20;
    }
    if diff(ip.l4 + 8, a.len()) {
        bits |= 0x40;
    }
    bits
}

pub fn hex(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}
