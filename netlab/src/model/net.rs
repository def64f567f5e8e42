//! IPv4 and IPv6 prefixes: the little address arithmetic the model needs.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// An IPv4 address with a prefix length, e.g. `192.168.15.5/24`.
/// Either a network (host bits zero) or an interface address.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 32).then_some(Self { addr, prefix_len })
    }

    fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        }
    }

    /// The network this address belongs to (host bits cleared).
    pub fn network(&self) -> Ipv4Net {
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(self.addr) & self.mask()),
            prefix_len: self.prefix_len,
        }
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    pub fn is_network(&self) -> bool {
        self.network().addr == self.addr
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let shorter = self.prefix_len.min(other.prefix_len);
        let a = Ipv4Net {
            addr: self.addr,
            prefix_len: shorter,
        };
        a.contains(other.addr)
    }

    /// Whether `ip` may be given to a host on this network: inside it and,
    /// for prefixes up to /30, neither the network nor the broadcast address.
    pub fn is_usable_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip)
            && (self.prefix_len >= 31 || (ip != self.network().addr && ip != self.broadcast()))
    }

    /// The same prefix length with another address (an interface address on this network).
    pub fn with_addr(&self, addr: Ipv4Addr) -> Ipv4Net {
        Ipv4Net {
            addr,
            prefix_len: self.prefix_len,
        }
    }
}

/// Ranges no lab subnet, address or route may use, each with why: a
/// packet to or from them never travels between namespaces as a lab's
/// would.
pub const UNUSABLE: &[(Ipv4Net, &str)] = &[
    (
        net(0, 0, 0, 0, 8),
        "\"this network\", never an address of a host",
    ),
    (
        net(127, 0, 0, 0, 8),
        "loopback, which every namespace keeps on `lo`",
    ),
    (net(169, 254, 0, 0, 16), "link-local, never routed"),
    (net(224, 0, 0, 0, 4), "multicast"),
    (net(240, 0, 0, 0, 4), "reserved, with the broadcast address"),
];

const fn net(a: u8, b: u8, c: u8, d: u8, prefix_len: u8) -> Ipv4Net {
    Ipv4Net {
        addr: Ipv4Addr::new(a, b, c, d),
        prefix_len,
    }
}

impl Ipv4Net {
    /// The unusable range (and why) this network overlaps, if any.
    pub fn unusable_overlap(&self) -> Option<(Ipv4Net, &'static str)> {
        UNUSABLE.iter().copied().find(|(r, _)| r.overlaps(self))
    }

    /// The unusable range (and why) this network lies inside, if any.
    pub fn unusable_within(&self) -> Option<(Ipv4Net, &'static str)> {
        UNUSABLE
            .iter()
            .copied()
            .find(|(r, _)| r.prefix_len <= self.prefix_len && r.contains(self.addr))
    }
}

/// The unusable range (and why) `addr` is in, if any.
pub fn unusable_range(addr: Ipv4Addr) -> Option<(Ipv4Net, &'static str)> {
    UNUSABLE.iter().copied().find(|(r, _)| r.contains(addr))
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl From<Ipv4Net> for String {
    fn from(net: Ipv4Net) -> String {
        net.to_string()
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = ParseNetError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct ParseNetError(pub String);

impl fmt::Display for ParseNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Ipv4Net {
    type Err = ParseNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or_else(|| {
            ParseNetError(format!("`{s}` is not in CIDR form (address/prefix-length)"))
        })?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| ParseNetError(format!("`{addr}` in `{s}` is not an IPv4 address")))?;
        let prefix_len: u8 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(|| {
            ParseNetError(format!("`{len}` in `{s}` is not a prefix length (0-32)"))
        })?;
        Ok(Ipv4Net { addr, prefix_len })
    }
}

/// An IPv6 address with a prefix length, e.g. `fd00:15::5/64`. Either a
/// network (host bits zero) or an interface address.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct Ipv6Net {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
}

impl Ipv6Net {
    pub fn new(addr: Ipv6Addr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 128).then_some(Self { addr, prefix_len })
    }

    fn mask(&self) -> u128 {
        u128::MAX
            .checked_shl(128 - u32::from(self.prefix_len))
            .unwrap_or(0)
    }

    pub fn network(&self) -> Ipv6Net {
        Ipv6Net {
            addr: Ipv6Addr::from(u128::from(self.addr) & self.mask()),
            prefix_len: self.prefix_len,
        }
    }

    pub fn is_network(&self) -> bool {
        self.network().addr == self.addr
    }

    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.addr) & self.mask()
    }

    pub fn overlaps(&self, other: &Ipv6Net) -> bool {
        let shorter = self.prefix_len.min(other.prefix_len);
        Ipv6Net {
            addr: self.addr,
            prefix_len: shorter,
        }
        .contains(other.addr)
    }

    /// Whether `ip` may be given to a host on this network: inside it and,
    /// up to /126, not the subnet-router anycast address (all host bits
    /// zero, RFC 4291 2.6.1). IPv6 has no broadcast address.
    pub fn is_usable_host(&self, ip: Ipv6Addr) -> bool {
        self.contains(ip) && (self.prefix_len >= 127 || ip != self.network().addr)
    }

    pub fn with_addr(&self, addr: Ipv6Addr) -> Ipv6Net {
        Ipv6Net {
            addr,
            prefix_len: self.prefix_len,
        }
    }

    /// The unusable range (and why) this network overlaps, if any.
    pub fn unusable_overlap(&self) -> Option<(Ipv6Net, &'static str)> {
        UNUSABLE6.iter().copied().find(|(r, _)| r.overlaps(self))
    }

    /// The unusable range (and why) this network lies inside, if any.
    pub fn unusable_within(&self) -> Option<(Ipv6Net, &'static str)> {
        UNUSABLE6
            .iter()
            .copied()
            .find(|(r, _)| r.prefix_len <= self.prefix_len && r.contains(self.addr))
    }
}

/// IPv6 ranges no lab subnet, address or route may use, each with why.
pub const UNUSABLE6: &[(Ipv6Net, &str)] = &[
    (
        net6(0, 128),
        "the unspecified address, never an address of a host",
    ),
    (
        net6(1, 128),
        "loopback, which every namespace keeps on `lo`",
    ),
    (
        net6(0xffff_0000_0000, 96),
        "IPv4-mapped addresses, which stand for IPv4 in sockets",
    ),
    (
        net6(0xfe80 << 112, 10),
        "link-local, which the kernel gives every interface itself",
    ),
    (net6(0xff00 << 112, 8), "multicast"),
];

const fn net6(bits: u128, prefix_len: u8) -> Ipv6Net {
    Ipv6Net {
        addr: Ipv6Addr::from_bits(bits),
        prefix_len,
    }
}

/// The unusable IPv6 range (and why) `addr` is in, if any.
pub fn unusable_range6(addr: Ipv6Addr) -> Option<(Ipv6Net, &'static str)> {
    UNUSABLE6.iter().copied().find(|(r, _)| r.contains(addr))
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl From<Ipv6Net> for String {
    fn from(net: Ipv6Net) -> String {
        net.to_string()
    }
}

impl TryFrom<String> for Ipv6Net {
    type Error = ParseNetError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for Ipv6Net {
    type Err = ParseNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or_else(|| {
            ParseNetError(format!("`{s}` is not in CIDR form (address/prefix-length)"))
        })?;
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| ParseNetError(format!("`{addr}` in `{s}` is not an IPv6 address")))?;
        let prefix_len: u8 = len.parse().ok().filter(|l| *l <= 128).ok_or_else(|| {
            ParseNetError(format!("`{len}` in `{s}` is not a prefix length (0-128)"))
        })?;
        Ok(Ipv6Net { addr, prefix_len })
    }
}

/// A prefix of either family: a route's destination, an address as the
/// kernel lists it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub enum IpNet {
    V4(Ipv4Net),
    V6(Ipv6Net),
}

impl IpNet {
    /// The default route's destination in the family of `via`.
    pub fn default_for(via: IpAddr) -> IpNet {
        match via {
            IpAddr::V4(_) => IpNet::V4(Ipv4Net {
                addr: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
            }),
            IpAddr::V6(_) => IpNet::V6(Ipv6Net {
                addr: Ipv6Addr::UNSPECIFIED,
                prefix_len: 0,
            }),
        }
    }

    pub fn addr(&self) -> IpAddr {
        match self {
            IpNet::V4(n) => IpAddr::V4(n.addr),
            IpNet::V6(n) => IpAddr::V6(n.addr),
        }
    }

    pub fn prefix_len(&self) -> u8 {
        match self {
            IpNet::V4(n) => n.prefix_len,
            IpNet::V6(n) => n.prefix_len,
        }
    }

    pub fn network(&self) -> IpNet {
        match self {
            IpNet::V4(n) => IpNet::V4(n.network()),
            IpNet::V6(n) => IpNet::V6(n.network()),
        }
    }

    /// Whether `ip` is inside (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (IpNet::V4(n), IpAddr::V4(a)) => n.contains(a),
            (IpNet::V6(n), IpAddr::V6(a)) => n.contains(a),
            _ => false,
        }
    }

    /// Whether the two share an address (never across families).
    pub fn overlaps(&self, other: &IpNet) -> bool {
        match (self, other) {
            (IpNet::V4(a), IpNet::V4(b)) => a.overlaps(b),
            (IpNet::V6(a), IpNet::V6(b)) => a.overlaps(b),
            _ => false,
        }
    }

    /// Whether `ip` may be given to a host on this network (see each
    /// family's `is_usable_host`).
    pub fn is_usable_host(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (IpNet::V4(n), IpAddr::V4(a)) => n.is_usable_host(a),
            (IpNet::V6(n), IpAddr::V6(a)) => n.is_usable_host(a),
            _ => false,
        }
    }

    pub fn is_network(&self) -> bool {
        self.network() == *self
    }

    /// The unusable range (and why) this network lies inside, if any.
    pub fn unusable_within(&self) -> Option<(IpNet, &'static str)> {
        match self {
            IpNet::V4(n) => n.unusable_within().map(|(r, w)| (IpNet::V4(r), w)),
            IpNet::V6(n) => n.unusable_within().map(|(r, w)| (IpNet::V6(r), w)),
        }
    }

    pub fn is_v6(&self) -> bool {
        matches!(self, IpNet::V6(_))
    }
}

impl From<Ipv4Net> for IpNet {
    fn from(n: Ipv4Net) -> IpNet {
        IpNet::V4(n)
    }
}

impl From<Ipv6Net> for IpNet {
    fn from(n: Ipv6Net) -> IpNet {
        IpNet::V6(n)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpNet::V4(n) => n.fmt(f),
            IpNet::V6(n) => n.fmt(f),
        }
    }
}

impl From<IpNet> for String {
    fn from(net: IpNet) -> String {
        net.to_string()
    }
}

impl TryFrom<String> for IpNet {
    type Error = ParseNetError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for IpNet {
    type Err = ParseNetError;

    /// IPv6 when the address has a `:`, else IPv4.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            s.parse().map(IpNet::V6)
        } else {
            s.parse().map(IpNet::V4)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(net("192.168.15.0/24").to_string(), "192.168.15.0/24");
        assert!("192.168.15.0".parse::<Ipv4Net>().is_err());
        assert!("192.168.15.0/33".parse::<Ipv4Net>().is_err());
        assert!("192.168.15/24".parse::<Ipv4Net>().is_err());
        assert!("1992.168.15.2/24".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn arithmetic() {
        let n = net("192.168.15.0/24");
        assert!(n.is_network());
        assert!(!net("192.168.15.1/24").is_network());
        assert_eq!(n.broadcast(), Ipv4Addr::new(192, 168, 15, 255));
        assert!(n.contains(Ipv4Addr::new(192, 168, 15, 5)));
        assert!(!n.contains(Ipv4Addr::new(192, 168, 16, 5)));
        assert!(n.is_usable_host(Ipv4Addr::new(192, 168, 15, 1)));
        assert!(!n.is_usable_host(Ipv4Addr::new(192, 168, 15, 0)));
        assert!(!n.is_usable_host(Ipv4Addr::new(192, 168, 15, 255)));
        assert!(net("10.0.0.0/31").is_usable_host(Ipv4Addr::new(10, 0, 0, 0)));
        assert!(n.overlaps(&net("192.168.0.0/16")));
        assert!(net("192.168.0.0/16").overlaps(&n));
        assert!(!n.overlaps(&net("192.168.16.0/24")));
        assert_eq!(net("0.0.0.0/0").network(), net("0.0.0.0/0"));
    }

    #[test]
    fn unusable_ranges() {
        assert_eq!(
            net("127.0.0.0/24").unusable_overlap().map(|r| r.0),
            Some(net("127.0.0.0/8"))
        );
        assert!(net("0.0.0.0/0").unusable_overlap().is_some());
        assert!(net("0.0.0.0/0").unusable_within().is_none());
        assert!(net("224.0.0.0/24").unusable_within().is_some());
        assert!(net("192.168.15.0/24").unusable_overlap().is_none());
        assert!(net("100.64.0.0/10").unusable_overlap().is_none());
        assert!(unusable_range(Ipv4Addr::new(169, 254, 1, 1)).is_some());
        assert!(unusable_range(Ipv4Addr::new(255, 255, 255, 255)).is_some());
        assert!(unusable_range(Ipv4Addr::new(198, 51, 100, 1)).is_none());
    }

    fn net6(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_arithmetic() {
        let n = net6("fd00:15::/64");
        assert_eq!(n.to_string(), "fd00:15::/64");
        assert!(n.is_network());
        assert!(!net6("fd00:15::1/64").is_network());
        assert_eq!(net6("fd00:15::1/64").network(), n);
        assert!(n.contains("fd00:15::ffff:1".parse().unwrap()));
        assert!(!n.contains("fd00:16::1".parse().unwrap()));
        assert!(n.is_usable_host("fd00:15::1".parse().unwrap()));
        assert!(!n.is_usable_host("fd00:15::".parse().unwrap()));
        assert!(net6("fd00::/127").is_usable_host("fd00::".parse().unwrap()));
        assert!(n.overlaps(&net6("fd00::/16")));
        assert!(!n.overlaps(&net6("fd00:16::/64")));
        assert_eq!(net6("::/0").network(), net6("::/0"));
        assert!(net6("::/0").contains("2001:db8::1".parse().unwrap()));
        assert!("fd00::/129".parse::<Ipv6Net>().is_err());
        assert!("fd00::".parse::<Ipv6Net>().is_err());
        assert!("10.0.0.0/8".parse::<Ipv6Net>().is_err());
    }

    #[test]
    fn ipv6_unusable_ranges() {
        for (bad, range) in [
            ("fe80::/64", "fe80::/10"),
            ("ff02::/16", "ff00::/8"),
            ("::1/128", "::1/128"),
            ("::ffff:0:0/112", "::ffff:0.0.0.0/96"),
        ] {
            assert_eq!(
                net6(bad).unusable_overlap().map(|r| r.0.to_string()),
                Some(range.to_string()),
                "{bad}"
            );
        }
        assert!(net6("fd00:15::/64").unusable_overlap().is_none());
        assert!(net6("2001:db8::/32").unusable_overlap().is_none());
        assert!(net6("::/0").unusable_within().is_none());
        assert!(unusable_range6("fe80::1".parse().unwrap()).is_some());
        assert!(unusable_range6("2001:db8::1".parse().unwrap()).is_none());
    }

    #[test]
    fn either_family() {
        let v4: IpNet = "10.0.0.0/8".parse().unwrap();
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(!v4.is_v6() && v6.is_v6());
        assert!(!v4.overlaps(&v6) && !v6.contains("10.0.0.1".parse().unwrap()));
        assert!(v4.contains("10.1.2.3".parse().unwrap()));
        assert_eq!(
            IpNet::default_for("fd00::1".parse().unwrap()).to_string(),
            "::/0"
        );
        assert_eq!(
            IpNet::default_for("10.0.0.1".parse().unwrap()).to_string(),
            "0.0.0.0/0"
        );
        assert!("fd00::/200".parse::<IpNet>().is_err());
    }
}
