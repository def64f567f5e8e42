//! Frames for program tests: built here, checked here, with checksum code of
//! its own (written apart from the programs' incremental updates, so a test
//! can catch them being wrong).

use std::net::{Ipv4Addr, Ipv6Addr};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

/// IPv6 extension headers.
pub const HOP_BY_HOP: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const DEST_OPTS: u8 = 60;

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const RST: u8 = 0x04;
pub const FIN: u8 = 0x01;

/// RFC 1071 checksum of `data` (with an initial sum).
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from(chunk[0]) << 8
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    u32::from(u16::from_be_bytes([s[0], s[1]]))
        + u32::from(u16::from_be_bytes([s[2], s[3]]))
        + u32::from(u16::from_be_bytes([d[0], d[1]]))
        + u32::from(u16::from_be_bytes([d[2], d[3]]))
        + u32::from(proto)
        + len as u32
}

/// An IPv4 packet (no Ethernet header) with valid checksums.
#[derive(Clone, Debug)]
pub struct Ip {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub id: u16,
    /// Flags and fragment offset, as in the header.
    pub frag: u16,
    pub options: Vec<u8>,
    /// The L4 header and payload, checksummed by [`Ip::bytes`].
    pub l4: Vec<u8>,
    /// Leave the L4 checksum as it is in `l4` (e.g. a UDP checksum of 0).
    pub keep_l4_checksum: bool,
}

impl Ip {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: Vec<u8>) -> Ip {
        Ip {
            src,
            dst,
            proto,
            ttl: 64,
            id: 0x1234,
            frag: 0x4000,
            options: Vec::new(),
            l4,
            keep_l4_checksum: false,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let ihl = 20 + self.options.len();
        assert!(ihl.is_multiple_of(4) && ihl <= 60);
        let total = ihl + self.l4.len();
        let mut h = vec![0u8; ihl];
        h[0] = 0x40 | (ihl / 4) as u8;
        h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        h[4..6].copy_from_slice(&self.id.to_be_bytes());
        h[6..8].copy_from_slice(&self.frag.to_be_bytes());
        h[8] = self.ttl;
        h[9] = self.proto;
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        h[20..].copy_from_slice(&self.options);
        let c = checksum(&h, 0);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        let mut l4 = self.l4.clone();
        let first_fragment = self.frag & 0x1fff == 0;
        if !self.keep_l4_checksum && first_fragment {
            match self.proto {
                TCP => {
                    l4[16..18].fill(0);
                    let c = checksum(&l4, pseudo_sum(self.src, self.dst, TCP, l4.len()));
                    l4[16..18].copy_from_slice(&c.to_be_bytes());
                }
                UDP => {
                    l4[6..8].fill(0);
                    let mut c = checksum(&l4, pseudo_sum(self.src, self.dst, UDP, l4.len()));
                    if c == 0 {
                        c = 0xffff;
                    }
                    l4[6..8].copy_from_slice(&c.to_be_bytes());
                }
                ICMP => {
                    l4[2..4].fill(0);
                    let c = checksum(&l4, 0);
                    l4[2..4].copy_from_slice(&c.to_be_bytes());
                }
                _ => {}
            }
        }
        h.extend_from_slice(&l4);
        h
    }

    /// In an Ethernet frame.
    pub fn frame(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        f.extend_from_slice(&self.bytes());
        f
    }
}

pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(payload);
    t
}

/// A TCP header with given sequence and acknowledgement numbers.
pub fn tcp_seq_ack(sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let mut t = tcp(sport, dport, flags, b"");
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    u
}

pub fn icmp_echo(request: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut i = vec![if request { 8 } else { 0 }, 0, 0, 0];
    i.extend_from_slice(&id.to_be_bytes());
    i.extend_from_slice(&seq.to_be_bytes());
    i.extend_from_slice(payload);
    i
}

/// An ICMP error of `type_`/`code` quoting `quoted` (an IPv4 packet).
pub fn icmp_error(type_: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut i = vec![type_, code, 0, 0, 0, 0, 0, 0];
    i.extend_from_slice(quoted);
    i
}

/// A parsed IPv4 (or, as [`Parsed6`], IPv6) frame with its checksums
/// verified.
#[derive(Debug)]
pub struct Parsed<A = Ipv4Addr> {
    pub src: A,
    pub dst: A,
    /// The upper-layer protocol.
    pub proto: u8,
    /// The IP header (IPv6: with its extension headers).
    pub l3: Vec<u8>,
    pub l4: Vec<u8>,
}

pub type Parsed6 = Parsed<Ipv6Addr>;

impl<A> Parsed<A> {
    pub fn sport(&self) -> u16 {
        u16::from_be_bytes([self.l4[0], self.l4[1]])
    }

    pub fn dport(&self) -> u16 {
        u16::from_be_bytes([self.l4[2], self.l4[3]])
    }

    /// ICMP or ICMPv6 echo identifier.
    pub fn echo_id(&self) -> u16 {
        u16::from_be_bytes([self.l4[4], self.l4[5]])
    }
}

/// Parse an Ethernet/IPv4 frame and check every checksum it carries
/// (IPv4 header, TCP/UDP with pseudo-header, ICMP; for an ICMP error also the
/// quoted header and, when complete, the quoted L4 checksum).
pub fn parse_checked(frame: &[u8]) -> Result<Parsed, String> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return Err("not IPv4".into());
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if checksum(&ip[..ihl], 0) != 0 {
        return Err("bad IPv4 header checksum".into());
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let proto = ip[9];
    let l4 = &ip[ihl..total];
    let first_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff == 0;
    if first_fragment {
        match proto {
            TCP if checksum(l4, pseudo_sum(src, dst, TCP, l4.len())) != 0 => {
                return Err("bad TCP checksum".into());
            }
            UDP if !(l4[6] == 0 && l4[7] == 0)
                && checksum(l4, pseudo_sum(src, dst, UDP, l4.len())) != 0 =>
            {
                return Err("bad UDP checksum".into());
            }
            ICMP => {
                if checksum(l4, 0) != 0 {
                    return Err("bad ICMP checksum".into());
                }
                if matches!(l4[0], 3 | 11 | 12) {
                    let q = &l4[8..];
                    let qihl = usize::from(q[0] & 0x0f) * 4;
                    if checksum(&q[..qihl], 0) != 0 {
                        return Err("bad quoted IPv4 header checksum".into());
                    }
                    let qtotal = usize::from(u16::from_be_bytes([q[2], q[3]]));
                    if q.len() >= qtotal {
                        let qsrc = Ipv4Addr::new(q[12], q[13], q[14], q[15]);
                        let qdst = Ipv4Addr::new(q[16], q[17], q[18], q[19]);
                        let ql4 = &q[qihl..qtotal];
                        let ok = match q[9] {
                            TCP => checksum(ql4, pseudo_sum(qsrc, qdst, TCP, ql4.len())) == 0,
                            UDP => {
                                (ql4[6] == 0 && ql4[7] == 0)
                                    || checksum(ql4, pseudo_sum(qsrc, qdst, UDP, ql4.len())) == 0
                            }
                            ICMP => checksum(ql4, 0) == 0,
                            _ => true,
                        };
                        if !ok {
                            return Err("bad quoted L4 checksum".into());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Parsed {
        src,
        dst,
        proto,
        l3: ip[..ihl].to_vec(),
        l4: l4.to_vec(),
    })
}

/// The IPv6 pseudo-header's sum (RFC 8200 8.1).
fn pseudo_sum6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: usize) -> u32 {
    let words = |a: Ipv6Addr| -> u32 { a.segments().iter().map(|w| u32::from(*w)).sum() };
    words(src) + words(dst) + (len as u32 >> 16) + (len as u32 & 0xffff) + u32::from(proto)
}

/// An IPv6 extension header: its type and its bytes, the first (the next
/// header) filled in by [`Ip6::bytes`].
#[derive(Clone, Debug)]
pub struct Ext {
    pub kind: u8,
    pub bytes: Vec<u8>,
}

impl Ext {
    /// Hop-by-hop, routing or destination options of `8 * units` bytes
    /// (padding only).
    pub fn options(kind: u8, units: usize) -> Ext {
        assert!(units >= 1);
        let mut bytes = vec![0u8; 8 * units];
        bytes[1] = (units - 1) as u8;
        // A PadN option over the rest (hop-by-hop and destination options).
        bytes[2] = 1;
        bytes[3] = (8 * units - 4) as u8;
        Ext { kind, bytes }
    }

    /// A fragment header: offset in 8-byte units, more fragments, id.
    pub fn fragment(offset: u16, more: bool, id: u32) -> Ext {
        let mut bytes = vec![0u8; 8];
        bytes[2..4].copy_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
        bytes[4..8].copy_from_slice(&id.to_be_bytes());
        Ext {
            kind: FRAGMENT,
            bytes,
        }
    }
}

/// An IPv6 packet (no Ethernet header) with a valid L4 checksum.
#[derive(Clone, Debug)]
pub struct Ip6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The upper-layer protocol.
    pub proto: u8,
    pub hop_limit: u8,
    pub ext: Vec<Ext>,
    /// The upper-layer header and payload, checksummed by [`Ip6::bytes`].
    pub l4: Vec<u8>,
}

impl Ip6 {
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, l4: Vec<u8>) -> Ip6 {
        Ip6 {
            src,
            dst,
            proto,
            hop_limit: 64,
            ext: Vec::new(),
            l4,
        }
    }

    /// With extension headers `ext`, in this order.
    pub fn with_ext(mut self, ext: Vec<Ext>) -> Ip6 {
        self.ext = ext;
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut chain = Vec::new();
        for (i, e) in self.ext.iter().enumerate() {
            let mut b = e.bytes.clone();
            b[0] = self.ext.get(i + 1).map_or(self.proto, |n| n.kind);
            chain.extend_from_slice(&b);
        }
        let mut l4 = self.l4.clone();
        let csum_at = match self.proto {
            TCP => Some(16),
            UDP => Some(6),
            ICMPV6 => Some(2),
            _ => None,
        };
        if let Some(at) = csum_at.filter(|at| l4.len() >= at + 2) {
            l4[at..at + 2].fill(0);
            let mut c = checksum(&l4, pseudo_sum6(self.src, self.dst, self.proto, l4.len()));
            if self.proto == UDP && c == 0 {
                c = 0xffff;
            }
            l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&((chain.len() + l4.len()) as u16).to_be_bytes());
        h[6] = self.ext.first().map_or(self.proto, |e| e.kind);
        h[7] = self.hop_limit;
        h[8..24].copy_from_slice(&self.src.octets());
        h[24..40].copy_from_slice(&self.dst.octets());
        h.extend_from_slice(&chain);
        h.extend_from_slice(&l4);
        h
    }

    /// In an Ethernet frame.
    pub fn frame(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd];
        f.extend_from_slice(&self.bytes());
        f
    }
}

/// An ICMPv6 echo request (128) or reply (129).
pub fn icmp6_echo(request: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut i = vec![if request { 128 } else { 129 }, 0, 0, 0];
    i.extend_from_slice(&id.to_be_bytes());
    i.extend_from_slice(&seq.to_be_bytes());
    i.extend_from_slice(payload);
    i
}

/// An ICMPv6 message of `type_` with a 4-byte body of zeros and `rest`
/// (neighbour discovery: 133 RS, 134 RA, 135 NS, 136 NA, 137 redirect).
pub fn icmp6(type_: u8, rest: &[u8]) -> Vec<u8> {
    let mut i = vec![type_, 0, 0, 0, 0, 0, 0, 0];
    i.extend_from_slice(rest);
    i
}

/// Parse an Ethernet/IPv6 frame, walking its extension headers, and check
/// the upper layer's checksum from scratch (TCP, UDP, whose checksum IPv6
/// makes mandatory, and ICMPv6, all over the pseudo-header).
pub fn parse_checked6(frame: &[u8]) -> Result<Parsed6, String> {
    if frame.len() < 54 || frame[12..14] != [0x86, 0xdd] || frame[14] >> 4 != 6 {
        return Err("not IPv6".into());
    }
    let ip = &frame[14..];
    let end = 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if end > ip.len() {
        return Err("payload length past the frame".into());
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
    let (mut next, mut off) = (ip[6], 40);
    while matches!(next, HOP_BY_HOP | ROUTING | DEST_OPTS | FRAGMENT) {
        if off + 8 > end {
            return Err("extension header past the end".into());
        }
        if next == FRAGMENT && u16::from_be_bytes([ip[off + 2], ip[off + 3]]) != 0 {
            return Err("a fragment (not checked)".into());
        }
        let len = if next == FRAGMENT {
            8
        } else {
            (usize::from(ip[off + 1]) + 1) * 8
        };
        next = ip[off];
        off += len;
    }
    let l4 = ip.get(off..end).ok_or("upper layer past the end")?;
    let sum = || checksum(l4, pseudo_sum6(src, dst, next, l4.len()));
    match next {
        TCP if sum() != 0 => return Err("bad TCP checksum".into()),
        UDP if l4[6..8] == [0, 0] => return Err("UDP over IPv6 without a checksum".into()),
        UDP if sum() != 0 => return Err("bad UDP checksum".into()),
        ICMPV6 if sum() != 0 => return Err("bad ICMPv6 checksum".into()),
        _ => {}
    }
    Ok(Parsed6 {
        src,
        dst,
        proto: next,
        l3: ip[..off].to_vec(),
        l4: l4.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_verify() {
        let a = Ipv4Addr::new(192, 168, 15, 1);
        let b = Ipv4Addr::new(198, 51, 100, 1);
        for l4 in [
            (TCP, tcp(1, 2, SYN, b"x")),
            (UDP, udp(1, 2, b"hello")),
            (ICMP, icmp_echo(true, 7, 1, b"abc")),
        ] {
            let f = Ip::new(a, b, l4.0, l4.1).frame();
            parse_checked(&f).unwrap();
            let mut bad = f.clone();
            let n = bad.len();
            bad[n - 1] ^= 0xff;
            assert!(parse_checked(&bad).is_err());
        }
    }

    #[test]
    fn built_ipv6_frames_verify_and_a_flipped_bit_does_not() {
        let a: Ipv6Addr = "fd00:15::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8::1".parse().unwrap();
        for (proto, l4) in [
            (TCP, tcp(1, 2, SYN, b"x")),
            (UDP, udp(1, 2, b"hello")),
            (ICMPV6, icmp6_echo(true, 7, 1, b"abc")),
        ] {
            for ext in [
                vec![],
                vec![Ext::options(HOP_BY_HOP, 1), Ext::options(DEST_OPTS, 2)],
            ] {
                let f = Ip6::new(a, b, proto, l4.clone()).with_ext(ext).frame();
                let p = parse_checked6(&f).unwrap();
                assert_eq!((p.src, p.dst, p.proto), (a, b, proto));
                for at in [22, 40, f.len() - 1] {
                    // A source address byte (in the pseudo-header), a
                    // destination byte, the payload's last.
                    let mut bad = f.clone();
                    bad[at] ^= 0x10;
                    assert!(parse_checked6(&bad).is_err(), "{proto} byte {at}");
                }
            }
        }
    }
}
