//! IPv4 prefixes: the little address arithmetic the model needs.

use std::{fmt, net::Ipv4Addr, str::FromStr};

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
}
