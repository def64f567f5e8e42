//! Frames for program tests: built here, checked here, with checksum code of
//! its own (written apart from the programs' incremental updates, so a test
//! can catch them being wrong).

use std::net::Ipv4Addr;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

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

/// A parsed IPv4 frame with its checksums verified.
#[derive(Debug)]
pub struct Parsed {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub l3: Vec<u8>,
    pub l4: Vec<u8>,
}

impl Parsed {
    pub fn sport(&self) -> u16 {
        u16::from_be_bytes([self.l4[0], self.l4[1]])
    }

    pub fn dport(&self) -> u16 {
        u16::from_be_bytes([self.l4[2], self.l4[3]])
    }

    /// ICMP echo identifier.
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
}
