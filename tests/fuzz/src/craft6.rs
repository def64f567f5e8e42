//! Structured IPv6 packet inputs: addresses from the lab's IPv6 subnets,
//! the uplink, the outside, link-local and multicast; a chain of extension
//! headers (hop-by-hop, routing, destination options, fragment, AH), any
//! number of them; TCP, UDP, ICMPv6 echo, neighbour discovery and other
//! ICMPv6, other protocols; truncation. Built with
//! `netlab_tests::packet::Ip6`, so checksums are right.

use std::net::Ipv6Addr;

use arbitrary::Arbitrary;
use netlab_common::{IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
use netlab_tests::packet::{icmp6, icmp6_echo, tcp, udp, Ext, Ip6, DEST_OPTS, HOP_BY_HOP, ROUTING};

use crate::{
    craft::ProgChoice,
    dataplane::{RED6, REMOTE6, ROUTED6, UPLINK6},
};

#[derive(Arbitrary, Debug)]
pub struct Craft6 {
    pub prog: ProgChoice,
    pub src: Host6,
    pub dst: Host6,
    pub ext: Vec<Ext6>,
    pub l4: L4v6,
    pub sport: u16,
    pub dport: u16,
    /// Bytes cut off the frame's end (at most its whole payload).
    pub cut: u8,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Host6 {
    Red,
    /// Another address of red's (masqueraded) subnet.
    Lab(u8),
    Routed,
    Uplink,
    Remote,
    /// fe80::n
    LinkLocal(u8),
    /// ff0s::n, scope `s` (2: link-local)
    Multicast(u8, u8),
    Unspecified,
    Any([u8; 16]),
}

impl Host6 {
    pub fn addr(self) -> Ipv6Addr {
        match self {
            Host6::Red => RED6,
            Host6::Lab(n) => Ipv6Addr::from(u128::from(RED6) & !0xffff | u128::from(n)),
            Host6::Routed => ROUTED6,
            Host6::Uplink => UPLINK6,
            Host6::Remote => REMOTE6,
            Host6::LinkLocal(n) => Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(n)),
            Host6::Multicast(s, n) => {
                Ipv6Addr::new(0xff00 | u16::from(s & 0xf), 0, 0, 0, 0, 0, 0, u16::from(n))
            }
            Host6::Unspecified => Ipv6Addr::UNSPECIFIED,
            Host6::Any(o) => Ipv6Addr::from(o),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Ext6 {
    /// Options headers of 8 × (1 + n % 4) bytes.
    HopByHop(u8),
    Routing(u8),
    DestOpts(u8),
    /// Offset in 8-byte units, more fragments.
    Fragment(u16, bool),
    /// An authentication header of 4 × (2 + n % 4) bytes.
    Auth(u8),
}

impl Ext6 {
    fn ext(self) -> Ext {
        let units = |n: u8| usize::from(n % 4) + 1;
        match self {
            Ext6::HopByHop(n) => Ext::options(HOP_BY_HOP, units(n)),
            Ext6::Routing(n) => Ext::options(ROUTING, units(n)),
            Ext6::DestOpts(n) => Ext::options(DEST_OPTS, units(n)),
            Ext6::Fragment(offset, more) => Ext::fragment(offset & 0x1fff, more, 7),
            Ext6::Auth(n) => {
                let len = n % 4;
                let mut bytes = vec![0u8; 4 * (usize::from(len) + 2)];
                bytes[1] = len;
                Ext { kind: 51, bytes }
            }
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum L4v6 {
    Tcp(u8),
    Udp,
    Echo(bool),
    /// Neighbour discovery (133..=137) or another ICMPv6 type.
    Icmp(u8),
    Other(u8, u8),
}

impl Craft6 {
    pub fn build(&self) -> Vec<u8> {
        let (proto, l4) = match self.l4 {
            L4v6::Tcp(flags) => (IPPROTO_TCP, tcp(self.sport, self.dport, flags, b"data")),
            L4v6::Udp => (IPPROTO_UDP, udp(self.sport, self.dport, b"data")),
            L4v6::Echo(request) => (
                IPPROTO_ICMPV6,
                icmp6_echo(request, self.sport, self.dport, b"ping"),
            ),
            L4v6::Icmp(t) => (IPPROTO_ICMPV6, icmp6(t, &RED6.octets())),
            L4v6::Other(proto, len) => (proto, vec![0xab; usize::from(len % 32)]),
        };
        let ext = self.ext.iter().take(10).map(|e| e.ext()).collect();
        let mut f = Ip6::new(self.src.addr(), self.dst.addr(), proto, l4)
            .with_ext(ext)
            .frame();
        let payload = f.len() - 14 - 40;
        f.truncate(f.len() - usize::from(self.cut).min(payload));
        f
    }
}
