//! The lab topology: its TOML file format, the embedded default lab, and
//! validation into a [`Lab`] that the planner can trust.
//!
//! Parsing keeps the byte span of every field so that a validation error can
//! name the file, the line and the field (`lab.toml:12: nodes[1].address: …`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::net::Ipv4Net;

/// The seeds' network: bridge `v-net-0` with the lab host as gateway, `red`
/// and `blue` on it, masquerade out of the uplink and port 80 forwarded to blue.
pub const DEFAULT_LAB: &str = include_str!("default-lab.toml");

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

// ---------------------------------------------------------------------------
// The validated model.

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lab {
    pub name: String,
    pub netns_prefix: String,
    pub uplink: Uplink,
    pub nat: NatSettings,
    pub dns: DnsSettings,
    pub bridges: Vec<Bridge>,
    pub nodes: Vec<Node>,
    pub cables: Vec<Cable>,
    pub forwards: Vec<Forward>,
    /// Routes on the lab host (to subnets behind router nodes).
    pub host_routes: Vec<Route>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uplink {
    /// `None`: the interface of the lab host's default route.
    pub interface: Option<String>,
    /// `None`: the interface's first IPv4 address.
    pub address: Option<Ipv4Addr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatSettings {
    pub port_min: u16,
    pub port_max: u16,
    pub timeouts: Timeouts,
    /// Capacity of the flow table (entries; each flow takes two).
    pub max_flows: u32,
    /// Translate established flows at the node's veth and redirect them
    /// past the bridge and the lab host's stack (false: every packet takes
    /// the bridge and the host's routing).
    pub fast_path: bool,
}

/// Idle timeouts in seconds. The defaults follow RFC 4787 (UDP ≥ 2 min) and
/// RFC 5382 (TCP established ≥ 2 h 4 min, transitory ≥ 4 min).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    pub tcp_syn: u32,
    pub tcp_established: u32,
    pub tcp_closing: u32,
    pub tcp_rst: u32,
    pub udp: u32,
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_syn: 240,
            tcp_established: 7440,
            tcp_closing: 240,
            tcp_rst: 10,
            udp: 300,
            icmp: 30,
        }
    }
}

pub const DEFAULT_PORT_MIN: u16 = 10000;
pub const DEFAULT_PORT_MAX: u16 = 32767;
pub const DEFAULT_MAX_FLOWS: u32 = netlab_common::FLOW_ENTRIES;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsSettings {
    /// `None`: the host's own nameservers (loopback ones skipped).
    pub nameservers: Option<Vec<Ipv4Addr>>,
    pub search: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bridge {
    pub name: String,
    pub subnet: Ipv4Net,
    /// The lab host's address on the bridge; `None` makes a plain switch.
    pub gateway: Option<Ipv4Addr>,
    pub masquerade: bool,
    pub filtering: Filtering,
    /// Let the outside reach the subnet's addresses directly (no NAT).
    pub routed: bool,
}

impl Bridge {
    pub fn gateway_net(&self) -> Option<Ipv4Net> {
        self.gateway.map(|gw| self.subnet.with_addr(gw))
    }
}

/// RFC 4787 filtering behaviour for inbound packets on a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    AddressAndPortDependent,
    EndpointIndependent,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub netns: String,
    pub interfaces: Vec<Interface>,
    /// Default route.
    pub gateway: Option<Ipv4Addr>,
    pub routes: Vec<Route>,
    /// IPv4 forwarding inside the node (a router).
    pub forwarding: bool,
}

impl Node {
    /// The address other nodes know this node by.
    pub fn primary_address(&self) -> Option<Ipv4Addr> {
        self.interfaces.first().map(|i| i.address.addr)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Name inside the node's namespace.
    pub name: String,
    pub address: Ipv4Net,
    pub attachment: Attachment,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Attachment {
    /// A veth pair whose other end (`host_name`, on the lab host) is a port of `bridge`.
    Bridge { bridge: String, host_name: String },
    /// A veth pair straight to another node (no bridge).
    Cable {
        peer_node: String,
        peer_interface: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cable {
    pub a: CableEnd,
    pub b: CableEnd,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CableEnd {
    pub node: String,
    pub interface: String,
    pub address: Ipv4Net,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => netlab_common::IPPROTO_TCP,
            Proto::Udp => netlab_common::IPPROTO_UDP,
        }
    }

    pub fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// A port forward: ports `port_first..=port_last` on the uplink address go
/// to `node` at `target_addr`. With `target_range` the ports map one to one
/// onto `target_port..`; without, all of them go to `target_port` (as
/// iptables' DNAT of a port range to one port does).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    pub proto: Proto,
    pub port_first: u16,
    pub port_last: u16,
    pub node: String,
    pub target_addr: Ipv4Addr,
    pub target_port: u16,
    pub target_range: bool,
}

impl Forward {
    /// Every (outside port, inside port) pair of the forward. (A forward
    /// made by [`Lab::resolve_forward`] has one for every forwarded port; an
    /// inconsistent one, say from a hand-edited state file, stops where its
    /// target range would run past 65535.)
    pub fn port_pairs(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        (self.port_first..=self.port_last).map_while(|p| {
            let inside = if self.target_range {
                self.target_port.checked_add(p - self.port_first)?
            } else {
                self.target_port
            };
            Some((p, inside))
        })
    }

    pub fn ports_text(&self) -> String {
        if self.port_first == self.port_last {
            self.port_first.to_string()
        } else {
            format!("{}-{}", self.port_first, self.port_last)
        }
    }

    /// `node:port` (one port, or every forwarded port to that one) or
    /// `node:first-last` (a range onto a range).
    pub fn target_text(&self) -> String {
        let span = self.port_last.saturating_sub(self.port_first);
        if !self.target_range || span == 0 {
            format!("{}:{}", self.node, self.target_port)
        } else {
            let last = self.target_port.saturating_add(span);
            format!("{}:{}-{}", self.node, self.target_port, last)
        }
    }

    pub fn overlaps(&self, other: &Forward) -> bool {
        self.proto == other.proto
            && self.port_first <= other.port_last
            && other.port_first <= self.port_last
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {} ({})",
            self.proto,
            self.ports_text(),
            self.target_text(),
            self.target_addr
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// `0.0.0.0/0` for a default route.
    pub to: Ipv4Net,
    pub via: Ipv4Addr,
}

impl Lab {
    pub fn bridge(&self, name: &str) -> Option<&Bridge> {
        self.bridges.iter().find(|b| b.name == name)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The namespace a node name maps to.
    pub fn netns_of(&self, node: &str) -> String {
        format!("{}{}", self.netns_prefix, node)
    }

    /// The node that owns `addr` on one of its bridge interfaces (forward targets).
    pub fn node_by_bridge_address(&self, addr: Ipv4Addr) -> Option<&Node> {
        self.nodes.iter().find(|n| {
            n.interfaces.iter().any(|i| {
                i.address.addr == addr && matches!(i.attachment, Attachment::Bridge { .. })
            })
        })
    }

    /// Resolve a forward target written as `node` (the same ports),
    /// `node:port` (every forwarded port to that one), `node:a-b` (a range
    /// onto a range of the same size), or an address instead of `node`.
    pub fn resolve_forward(
        &self,
        proto: Proto,
        ports: (u16, u16),
        to: &str,
    ) -> Result<Forward, String> {
        let (who, port) = match to.rsplit_once(':') {
            Some((who, port)) => (who, Some(port)),
            None => (to, None),
        };
        let span = ports.1 - ports.0;
        let (target_port, target_range) = match port {
            None => (ports.0, true),
            Some(p) => {
                let (first, last) = parse_port_range(p)?;
                if last == first {
                    (first, false)
                } else if last - first != span {
                    return Err(format!(
                        "target port range {p} has {} ports but the forwarded range has {}",
                        u32::from(last - first) + 1,
                        u32::from(span) + 1
                    ));
                } else {
                    (first, true)
                }
            }
        };
        let node = match who.parse::<Ipv4Addr>() {
            Ok(addr) => {
                let node = self
                    .node_by_bridge_address(addr)
                    .ok_or_else(|| format!("no node has address {addr} on a bridge"))?;
                // Only bridges with a gateway have the lab host on them (as
                // for a target given by name, below).
                let bridge = node
                    .interfaces
                    .iter()
                    .find_map(|i| match &i.attachment {
                        Attachment::Bridge { bridge, .. } if i.address.addr == addr => {
                            self.bridge(bridge)
                        }
                        _ => None,
                    })
                    .filter(|b| b.gateway.is_none());
                if let Some(b) = bridge {
                    return Err(format!(
                        "{addr} is node `{}`'s address on bridge `{}`, which has no gateway, \
                         so the lab host cannot reach it",
                        node.name, b.name
                    ));
                }
                node
            }
            Err(_) => self
                .node(who)
                .ok_or_else(|| format!("unknown node `{who}`"))?,
        };
        let target_addr = match who.parse::<Ipv4Addr>() {
            Ok(addr) => addr,
            Err(_) => node
                .interfaces
                .iter()
                .find(|i| {
                    matches!(&i.attachment, Attachment::Bridge { bridge, .. }
                        if self.bridge(bridge).is_some_and(|b| b.gateway.is_some()))
                })
                .map(|i| i.address.addr)
                .ok_or_else(|| {
                    format!(
                        "node `{}` is on no bridge with a gateway, so the lab host cannot reach it",
                        node.name
                    )
                })?,
        };
        Ok(Forward {
            proto,
            port_first: ports.0,
            port_last: ports.1,
            node: node.name.clone(),
            target_addr,
            target_port,
            target_range: target_range && span > 0,
        })
    }

    /// The subnets on the lab host's bridges (those with a gateway).
    pub fn host_subnets(&self) -> impl Iterator<Item = &Bridge> {
        self.bridges.iter().filter(|b| b.gateway.is_some())
    }
}

/// `80` or `8000-8010`, each port 1-65535.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let parse_one = |p: &str| -> Result<u16, String> {
        let n: i64 = p
            .trim()
            .parse()
            .map_err(|_| format!("`{p}` is not a port number"))?;
        if !(1..=65535).contains(&n) {
            return Err(format!("port {n} is out of range (1-65535)"));
        }
        Ok(n as u16)
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse_one(a)?, parse_one(b)?);
            if a > b {
                return Err(format!("port range {s} is reversed"));
            }
            Ok((a, b))
        }
        None => parse_one(s).map(|p| (p, p)),
    }
}

// ---------------------------------------------------------------------------
// Errors.

/// One problem in a topology file, located by line and field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

/// Everything wrong with a topology file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(line) => write!(f, "{}:{}: ", self.source_name, line)?,
                None => write!(f, "{}: ", self.source_name)?,
            }
            if p.field.is_empty() {
                write!(f, "{}", p.message)?;
            } else {
                write!(f, "{}: {}", p.field, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLab {
    name: Option<Spanned<String>>,
    netns_prefix: Option<Spanned<String>>,
    uplink: Option<RawUplink>,
    nat: Option<RawNat>,
    dns: Option<RawDns>,
    #[serde(default)]
    bridges: Vec<Spanned<RawBridge>>,
    #[serde(default)]
    nodes: Vec<Spanned<RawNode>>,
    #[serde(default)]
    cables: Vec<Spanned<RawCable>>,
    #[serde(default)]
    forwards: Vec<Spanned<RawForward>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUplink {
    interface: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNat {
    port_range: Option<Spanned<String>>,
    max_flows: Option<Spanned<i64>>,
    fast_path: Option<Spanned<bool>>,
    timeouts: Option<RawTimeouts>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    tcp_syn: Option<Spanned<i64>>,
    tcp_established: Option<Spanned<i64>>,
    tcp_closing: Option<Spanned<i64>>,
    tcp_rst: Option<Spanned<i64>>,
    udp: Option<Spanned<i64>>,
    icmp: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    nameservers: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    search: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBridge {
    name: Spanned<String>,
    subnet: Spanned<String>,
    gateway: Option<Spanned<String>>,
    masquerade: Option<Spanned<bool>>,
    filtering: Option<Spanned<String>>,
    routed: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    bridge: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    interface: Option<Spanned<String>>,
    host_interface: Option<Spanned<String>>,
    interfaces: Option<Vec<Spanned<RawInterface>>>,
    gateway: Option<Spanned<String>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    forwarding: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    bridge: Spanned<String>,
    address: Spanned<String>,
    name: Option<Spanned<String>>,
    host_name: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCable {
    a: Spanned<RawCableEnd>,
    b: Spanned<RawCableEnd>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCableEnd {
    node: Spanned<String>,
    interface: Option<Spanned<String>>,
    address: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    protocol: Spanned<String>,
    port: Spanned<toml::Value>,
    to: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    to: Spanned<String>,
    via: Spanned<String>,
}

// ---------------------------------------------------------------------------
// Validation.

struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn at<T>(
        &mut self,
        spanned: &Spanned<T>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = self.line_of(spanned.span().start);
        self.problems.push(Problem {
            line: Some(line),
            field: field.into(),
            message: message.into(),
        });
    }

    fn ifname<'s>(&mut self, spanned: &'s Spanned<String>, field: &str) -> &'s str {
        if let Err(e) = check_ifname(spanned.get_ref()) {
            self.at(spanned, field, e);
        }
        spanned.get_ref()
    }

    /// A name for an interface the lab creates (a bridge, either end of a
    /// veth): the kernel's rules, and not `lo`, which every namespace (the
    /// lab host's too) already has.
    fn new_ifname<'s>(&mut self, spanned: &'s Spanned<String>, field: &str) -> &'s str {
        let name = self.ifname(spanned, field);
        if name == "lo" {
            self.at(
                spanned,
                field,
                "`lo` is the loopback interface every namespace already has",
            );
        }
        name
    }

    fn ipv4(&mut self, spanned: &Spanned<String>, field: &str) -> Option<Ipv4Addr> {
        match spanned.get_ref().parse::<Ipv4Addr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.at(
                    spanned,
                    field,
                    format!("`{}` is not an IPv4 address", spanned.get_ref()),
                );
                None
            }
        }
    }

    fn cidr(&mut self, spanned: &Spanned<String>, field: &str) -> Option<Ipv4Net> {
        match spanned.get_ref().parse::<Ipv4Net>() {
            Ok(n) => Some(n),
            Err(e) => {
                self.at(spanned, field, format!("bad CIDR: {e}"));
                None
            }
        }
    }

    fn seconds(&mut self, spanned: &Option<Spanned<i64>>, field: &str, default: u32) -> u32 {
        match spanned {
            None => default,
            Some(s) if (1..=i64::from(u32::MAX / 2)).contains(s.get_ref()) => *s.get_ref() as u32,
            Some(s) => {
                self.at(
                    s,
                    field,
                    format!("{} is not a positive number of seconds", s.get_ref()),
                );
                default
            }
        }
    }
}

/// Interface names: 1-15 bytes, no `/`, `:` or whitespace (the kernel's rules).
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > IFNAME_MAX {
        return Err(format!(
            "interface name `{name}` is {} bytes; Linux allows at most {IFNAME_MAX}",
            name.len()
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "interface name `{name}` may not contain `/`, `:` or spaces"
        ));
    }
    Ok(())
}

/// A DNS name (a `[dns] search` domain, written into every node's
/// resolv.conf as it is): labels of 1-63 letters, digits, `-` or `_`,
/// separated by dots, at most 253 bytes, optionally ending with a dot.
pub fn check_domain(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err(format!("`{}` is not a domain name", name.escape_debug()));
    }
    if bare.len() > 253 {
        return Err(format!(
            "domain name is {} bytes; DNS allows at most 253",
            bare.len()
        ));
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "`{}` is not a domain name: each dot-separated label must be 1-63 bytes",
                name.escape_debug()
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "`{}` is not a domain name: labels are letters, digits, `-` and `_`",
                name.escape_debug()
            ));
        }
    }
    Ok(())
}

/// Lab and node names: letters, digits, `-`, `_`, `.`, starting with a letter or digit.
fn check_name(name: &str, what: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} `{name}` must be 1-64 letters, digits, `-`, `_` or `.`, starting with a letter or digit"
        ))
    }
}

/// Parse and validate a topology file. `source_name` names it in errors.
pub fn parse(source_name: &str, text: &str) -> Result<Lab, ConfigError> {
    let fail = |problems| ConfigError {
        source_name: source_name.to_string(),
        problems,
    };
    let raw: RawLab = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        fail(vec![Problem {
            line,
            field: String::new(),
            message: e.message().trim().to_string(),
        }])
    })?;
    let mut c = Checker {
        text,
        problems: Vec::new(),
    };
    let lab = validate(&mut c, raw);
    if c.problems.is_empty() {
        Ok(lab)
    } else {
        c.problems.sort_by_key(|p| p.line);
        Err(fail(c.problems))
    }
}

fn validate(c: &mut Checker<'_>, raw: RawLab) -> Lab {
    let name = match &raw.name {
        Some(n) => {
            if let Err(e) = check_name(n.get_ref(), "lab name") {
                c.at(n, "name", e);
            }
            n.get_ref().clone()
        }
        None => "netlab".to_string(),
    };
    let netns_prefix = match &raw.netns_prefix {
        Some(p) => {
            let ok = p
                .get_ref()
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'));
            if !ok || p.get_ref().len() > 32 {
                c.at(
                    p,
                    "netns_prefix",
                    "must be at most 32 letters, digits, `-`, `_` or `.`",
                );
            }
            p.get_ref().clone()
        }
        None => String::new(),
    };

    let uplink = match &raw.uplink {
        None => Uplink {
            interface: None,
            address: None,
        },
        Some(u) => Uplink {
            interface: match &u.interface {
                Some(i) if i.get_ref() == "auto" => None,
                Some(i) => Some(c.ifname(i, "uplink.interface").to_string()),
                None => None,
            },
            address: u.address.as_ref().and_then(|a| c.ipv4(a, "uplink.address")),
        },
    };

    let nat = validate_nat(c, raw.nat.as_ref());
    let dns = DnsSettings {
        nameservers: raw
            .dns
            .as_ref()
            .and_then(|d| d.nameservers.as_ref())
            .map(|list| {
                list.iter()
                    .enumerate()
                    .filter_map(|(i, s)| c.ipv4(s, &format!("dns.nameservers[{i}]")))
                    .collect()
            }),
        search: raw
            .dns
            .as_ref()
            .map(|d| {
                d.search
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| match check_domain(s.get_ref()) {
                        Ok(()) => Some(s.get_ref().clone()),
                        Err(e) => {
                            c.at(s, format!("dns.search[{i}]"), e);
                            None
                        }
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };

    // Bridges.
    let mut bridges: Vec<Bridge> = Vec::new();
    let mut subnets: Vec<(Ipv4Net, String, Spanned<()>)> = Vec::new();
    for (i, rb) in raw.bridges.iter().enumerate() {
        let rb_inner = rb.get_ref();
        let f = |k: &str| format!("bridges[{i}].{k}");
        let bname = c.new_ifname(&rb_inner.name, &f("name")).to_string();
        if bridges.iter().any(|b| b.name == bname) {
            c.at(
                &rb_inner.name,
                f("name"),
                format!("duplicate bridge name `{bname}`"),
            );
        }
        let Some(subnet) = c.cidr(&rb_inner.subnet, &f("subnet")) else {
            continue;
        };
        if !subnet.is_network() {
            c.at(
                &rb_inner.subnet,
                f("subnet"),
                format!(
                    "{subnet} has host bits set; did you mean {}?",
                    subnet.network()
                ),
            );
        }
        let gateway = rb_inner.gateway.as_ref().and_then(|g| {
            let gw = c.ipv4(g, &f("gateway"))?;
            if !subnet.is_usable_host(gw) {
                c.at(
                    g,
                    f("gateway"),
                    format!("{gw} is not a usable address in subnet {subnet}"),
                );
            }
            Some(gw)
        });
        let filtering = match &rb_inner.filtering {
            None => Filtering::AddressAndPortDependent,
            Some(s) => match s.get_ref().as_str() {
                "address-and-port-dependent" => Filtering::AddressAndPortDependent,
                "endpoint-independent" => Filtering::EndpointIndependent,
                other => {
                    c.at(
                        s,
                        f("filtering"),
                        format!("`{other}` is not one of `address-and-port-dependent`, `endpoint-independent`"),
                    );
                    Filtering::AddressAndPortDependent
                }
            },
        };
        let masquerade = rb_inner
            .masquerade
            .as_ref()
            .map(|m| *m.get_ref())
            .unwrap_or(gateway.is_some());
        if masquerade && gateway.is_none() {
            if let Some(m) = &rb_inner.masquerade {
                c.at(
                    m,
                    f("masquerade"),
                    "needs a gateway: without one the lab host is not on this bridge",
                );
            }
        }
        subnets.push((
            subnet.network(),
            format!("bridge {bname}"),
            Spanned::new(rb_inner.subnet.span(), ()),
        ));
        bridges.push(Bridge {
            name: bname,
            subnet: subnet.network(),
            gateway,
            masquerade,
            filtering,
            routed: rb_inner
                .routed
                .as_ref()
                .map(|r| *r.get_ref())
                .unwrap_or(false),
        });
    }

    // Cables first collect their ends so nodes know their cable interfaces.
    struct RawEnd {
        node: String,
        interface: Option<String>,
        address: Option<Ipv4Net>,
        span: std::ops::Range<usize>,
        field: String,
    }
    let mut cable_ends: Vec<(RawEnd, RawEnd)> = Vec::new();
    for (i, rc) in raw.cables.iter().enumerate() {
        let mut end = |e: &Spanned<RawCableEnd>, side: &str| {
            let er = e.get_ref();
            let field = format!("cables[{i}].{side}");
            RawEnd {
                node: er.node.get_ref().clone(),
                interface: er
                    .interface
                    .as_ref()
                    .map(|n| c.new_ifname(n, &format!("{field}.interface")).to_string()),
                address: c.cidr(&er.address, &format!("{field}.address")),
                span: er.node.span(),
                field,
            }
        };
        let a = end(&rc.get_ref().a, "a");
        let b = end(&rc.get_ref().b, "b");
        if let (Some(aa), Some(ba)) = (a.address, b.address) {
            if aa.network() != ba.network() {
                c.at(
                    rc,
                    format!("cables[{i}]"),
                    format!("ends {aa} and {ba} are not on one subnet"),
                );
            } else if aa.addr == ba.addr {
                c.at(
                    rc,
                    format!("cables[{i}]"),
                    format!("both ends have address {}", aa.addr),
                );
            } else {
                for (e, addr) in [(&a, aa), (&b, ba)] {
                    if !addr.is_usable_host(addr.addr) {
                        c.at(
                            &Spanned::new(e.span.clone(), ()),
                            format!("{}.address", e.field),
                            format!("{addr} is the network or broadcast address"),
                        );
                    }
                }
                subnets.push((
                    aa.network(),
                    format!("cables[{i}]"),
                    Spanned::new(rc.span(), ()),
                ));
            }
        }
        if a.node == b.node {
            c.at(
                rc,
                format!("cables[{i}]"),
                format!("both ends are on node `{}`", a.node),
            );
        }
        cable_ends.push((a, b));
    }

    // Subnets may not overlap.
    for (i, (a, an, _)) in subnets.iter().enumerate() {
        for (b, bn, bs) in &subnets[i + 1..] {
            if a.overlaps(b) {
                let msg = format!("subnet {b} of {bn} overlaps {a} of {an}");
                c.at(bs, "", msg);
            }
        }
    }

    // Nodes.
    let mut nodes: Vec<Node> = Vec::new();
    let mut addresses: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for b in &bridges {
        if let Some(gw) = b.gateway {
            addresses.insert(gw, format!("the gateway of bridge {}", b.name));
        }
    }
    let mut host_names: BTreeSet<String> = bridges.iter().map(|b| b.name.clone()).collect();
    for (i, rn) in raw.nodes.iter().enumerate() {
        let rn = rn.get_ref();
        let f = |k: &str| format!("nodes[{i}].{k}");
        let nname = rn.name.get_ref().clone();
        if let Err(e) = check_name(&nname, "node name") {
            c.at(&rn.name, f("name"), e);
        }
        if nodes.iter().any(|n| n.name == nname) {
            c.at(
                &rn.name,
                f("name"),
                format!("duplicate node name `{nname}`"),
            );
        }
        // Bridge interfaces: the short form (bridge/address) or `interfaces = [...]`.
        struct Want<'r> {
            bridge: &'r Spanned<String>,
            address: &'r Spanned<String>,
            name: Option<&'r Spanned<String>>,
            host_name: Option<&'r Spanned<String>>,
            field: String,
        }
        let mut wants: Vec<Want<'_>> = Vec::new();
        match (&rn.bridge, &rn.address, &rn.interfaces) {
            (Some(_), Some(_), Some(list))
            | (Some(_), None, Some(list))
            | (None, Some(_), Some(list)) => {
                let span = rn
                    .bridge
                    .as_ref()
                    .map(|b| b.span())
                    .unwrap_or_else(|| rn.name.span());
                let _ = list;
                c.at(
                    &Spanned::new(span, ()),
                    f("bridge"),
                    "use either `bridge`/`address` or `interfaces`, not both",
                );
            }
            (Some(bridge), Some(address), None) => wants.push(Want {
                bridge,
                address,
                name: rn.interface.as_ref(),
                host_name: rn.host_interface.as_ref(),
                field: format!("nodes[{i}]"),
            }),
            (Some(bridge), None, None) => c.at(
                bridge,
                f("address"),
                "a node on a bridge needs an `address`",
            ),
            (None, Some(address), None) => c.at(address, f("bridge"), "`address` needs a `bridge`"),
            (None, None, Some(list)) => {
                for (j, ri) in list.iter().enumerate() {
                    let ri = ri.get_ref();
                    wants.push(Want {
                        bridge: &ri.bridge,
                        address: &ri.address,
                        name: ri.name.as_ref(),
                        host_name: ri.host_name.as_ref(),
                        field: format!("nodes[{i}].interfaces[{j}]"),
                    });
                }
            }
            (None, None, None) => {}
        }
        if rn.interfaces.is_some() {
            for (k, v) in [
                ("interface", &rn.interface),
                ("host_interface", &rn.host_interface),
            ] {
                if let Some(v) = v {
                    c.at(
                        v,
                        f(k),
                        "set names inside `interfaces` entries (`name`, `host_name`)",
                    );
                }
            }
        }
        let my_cables: Vec<(usize, &RawEnd, &RawEnd)> = cable_ends
            .iter()
            .enumerate()
            .flat_map(|(ci, (a, b))| {
                let mut v = Vec::new();
                if a.node == nname {
                    v.push((ci, a, b));
                }
                if b.node == nname {
                    v.push((ci, b, a));
                }
                v
            })
            .collect();
        let single = wants.len() + my_cables.len() == 1;
        let default_ifname = |idx: usize| {
            if single {
                format!("veth-{nname}")
            } else {
                format!("eth{idx}")
            }
        };

        let mut interfaces: Vec<Interface> = Vec::new();
        for (idx, w) in wants.iter().enumerate() {
            let bname = w.bridge.get_ref();
            let Some(bridge) = bridges.iter().find(|b| &b.name == bname) else {
                c.at(
                    w.bridge,
                    format!("{}.bridge", w.field),
                    format!("unknown bridge `{bname}`"),
                );
                continue;
            };
            let address = match w.address.get_ref().parse::<Ipv4Net>() {
                Ok(n) => {
                    if n.prefix_len != bridge.subnet.prefix_len {
                        c.at(
                            w.address,
                            format!("{}.address", w.field),
                            format!(
                                "prefix /{} differs from bridge {}'s subnet {}",
                                n.prefix_len, bridge.name, bridge.subnet
                            ),
                        );
                    }
                    Some(n.addr)
                }
                Err(_) => c.ipv4(w.address, &format!("{}.address", w.field)),
            };
            let Some(address) = address else { continue };
            if !bridge.subnet.contains(address) {
                c.at(
                    w.address,
                    format!("{}.address", w.field),
                    format!(
                        "{address} is outside subnet {} of bridge {}",
                        bridge.subnet, bridge.name
                    ),
                );
                continue;
            }
            if !bridge.subnet.is_usable_host(address) {
                c.at(
                    w.address,
                    format!("{}.address", w.field),
                    format!(
                        "{address} is the network or broadcast address of {}",
                        bridge.subnet
                    ),
                );
                continue;
            }
            if let Some(owner) = addresses.get(&address) {
                c.at(
                    w.address,
                    format!("{}.address", w.field),
                    format!("{address} is already {owner}"),
                );
                continue;
            }
            addresses.insert(address, format!("used by node {nname}"));
            // The keys that name the two ends: `interface`/`host_interface`
            // in the short form, `name`/`host_name` in an `interfaces` entry.
            let (name_key, host_key, default_span) = if rn.interfaces.is_some() {
                ("name", "host_name", w.bridge.span())
            } else {
                ("interface", "host_interface", rn.name.span())
            };
            let ifname = match w.name {
                Some(n) => c
                    .new_ifname(n, &format!("{}.{name_key}", w.field))
                    .to_string(),
                None => {
                    let name = default_ifname(idx);
                    if let Err(e) = check_ifname(&name) {
                        c.at(
                            &Spanned::new(default_span.clone(), ()),
                            format!("{}.{name_key}", w.field),
                            format!(
                                "{e} (the default name inside node `{nname}`); set `{name_key}`"
                            ),
                        );
                    }
                    name
                }
            };
            let host_name = match w.host_name {
                Some(n) => c
                    .new_ifname(n, &format!("{}.{host_key}", w.field))
                    .to_string(),
                None => {
                    let hn = if single {
                        format!("veth-{nname}-br")
                    } else {
                        format!("veth-{nname}-{idx}")
                    };
                    if let Err(e) = check_ifname(&hn) {
                        c.at(
                            &Spanned::new(default_span.clone(), ()),
                            format!("{}.{host_key}", w.field),
                            format!("{e} (the default lab-host side name for node `{nname}`); set `{host_key}`"),
                        );
                    }
                    hn
                }
            };
            if !host_names.insert(host_name.clone()) {
                let span = w
                    .host_name
                    .map(|h| h.span())
                    .unwrap_or_else(|| rn.name.span());
                c.at(
                    &Spanned::new(span, ()),
                    format!("{}.{host_key}", w.field),
                    format!("interface name `{host_name}` is used twice on the lab host"),
                );
            }
            interfaces.push(Interface {
                name: ifname,
                address: bridge.subnet.with_addr(address),
                attachment: Attachment::Bridge {
                    bridge: bridge.name.clone(),
                    host_name,
                },
            });
        }
        for (k, (_ci, mine, theirs)) in my_cables.iter().enumerate() {
            let Some(addr) = mine.address else { continue };
            if let Some(owner) = addresses.get(&addr.addr) {
                c.at(
                    &Spanned::new(mine.span.clone(), ()),
                    format!("{}.address", mine.field),
                    format!("{} is already {owner}", addr.addr),
                );
            }
            addresses.insert(addr.addr, format!("used by node {nname}"));
            let name = match &mine.interface {
                Some(n) => n.clone(),
                None => {
                    let name = default_ifname(wants.len() + k);
                    if let Err(e) = check_ifname(&name) {
                        c.at(
                            &Spanned::new(mine.span.clone(), ()),
                            format!("{}.interface", mine.field),
                            format!(
                                "{e} (the default name inside node `{nname}`); set `interface`"
                            ),
                        );
                    }
                    name
                }
            };
            interfaces.push(Interface {
                name,
                address: addr,
                attachment: Attachment::Cable {
                    peer_node: theirs.node.clone(),
                    peer_interface: String::new(), // filled below once every node is named
                },
            });
        }
        {
            let mut seen = BTreeSet::new();
            for iface in &interfaces {
                if !seen.insert(iface.name.clone()) {
                    c.at(
                        &rn.name,
                        f("interfaces"),
                        format!(
                            "interface name `{}` is used twice in node `{nname}`",
                            iface.name
                        ),
                    );
                }
            }
        }

        let own: Vec<Ipv4Net> = interfaces.iter().map(|i| i.address).collect();
        let whose = format!("node `{nname}`");
        let nowhere = |via: Ipv4Addr| format!("{via} is not on any subnet of node `{nname}`");
        // The node's routing table, to refuse a second route to one
        // destination: its connected subnets, then its default route.
        let mut table = RouteTable {
            owner: whose.clone(),
            connected: interfaces
                .iter()
                .map(|i| (i.address.network(), format!("interface `{}`", i.name)))
                .collect(),
            routes: BTreeMap::new(),
        };
        // The default route: `gateway`, or the first bridge's that has one.
        let (gateway, origin) = match &rn.gateway {
            Some(g) if g.get_ref() == "none" => (None, String::new()),
            Some(g) => {
                let gw = c.ipv4(g, &f("gateway")).and_then(|gw| {
                    let problem = next_hop_problem(&own, gw, &whose, nowhere);
                    if let Some(e) = problem {
                        c.at(g, f("gateway"), e);
                        return None;
                    }
                    Some(gw)
                });
                (gw, "its `gateway`".to_string())
            }
            None => {
                let from_bridge = interfaces.iter().find_map(|i| match &i.attachment {
                    Attachment::Bridge { bridge, .. } => bridges
                        .iter()
                        .find(|b| &b.name == bridge)
                        .and_then(|b| Some((b.gateway?, &b.name))),
                    Attachment::Cable { .. } => None,
                });
                match from_bridge {
                    Some((gw, bridge)) => (
                        Some(gw),
                        format!(
                            "the gateway of bridge `{bridge}`; set `gateway` to choose another, \
                             or `gateway = \"none\"`"
                        ),
                    ),
                    None => (None, String::new()),
                }
            }
        };
        if let Some(gw) = gateway {
            table.routes.insert(DEFAULT_ROUTE, (gw, origin));
        }
        let mut routes = Vec::new();
        for (j, r) in rn.routes.iter().enumerate() {
            let field = format!("nodes[{i}].routes[{j}]");
            let Some(route) = validate_route(c, r, &field) else {
                continue;
            };
            if let Some(e) = next_hop_problem(&own, route.via, &whose, nowhere) {
                c.at(&r.get_ref().via, format!("{field}.via"), e);
                continue;
            }
            match table.add(route, &field) {
                Ok(true) => routes.push(route),
                Ok(false) => {}
                Err(e) => c.at(&r.get_ref().to, format!("{field}.to"), e),
            }
        }
        nodes.push(Node {
            netns: format!("{netns_prefix}{nname}"),
            name: nname,
            interfaces,
            gateway,
            routes,
            forwarding: rn
                .forwarding
                .as_ref()
                .map(|f| *f.get_ref())
                .unwrap_or(false),
        });
    }
    // Cable ends must name nodes, and each end learns its peer's interface name.
    let mut cables = Vec::new();
    for (a, b) in &cable_ends {
        for e in [a, b] {
            if !nodes.iter().any(|n| n.name == e.node) {
                c.at(
                    &Spanned::new(e.span.clone(), ()),
                    format!("{}.node", e.field),
                    format!("unknown node `{}`", e.node),
                );
            }
        }
        let iface_of = |end: &RawEnd| -> Option<Interface> {
            let node = nodes.iter().find(|n| n.name == end.node)?;
            let addr = end.address?;
            node.interfaces
                .iter()
                .find(|i| i.address == addr && matches!(i.attachment, Attachment::Cable { .. }))
                .cloned()
        };
        if let (Some(ia), Some(ib)) = (iface_of(a), iface_of(b)) {
            cables.push(Cable {
                a: CableEnd {
                    node: a.node.clone(),
                    interface: ia.name.clone(),
                    address: ia.address,
                },
                b: CableEnd {
                    node: b.node.clone(),
                    interface: ib.name.clone(),
                    address: ib.address,
                },
            });
        }
    }
    for cable in &cables {
        for (me, peer) in [(&cable.a, &cable.b), (&cable.b, &cable.a)] {
            if let Some(node) = nodes.iter_mut().find(|n| n.name == me.node) {
                if let Some(iface) = node.interfaces.iter_mut().find(|i| i.name == me.interface) {
                    iface.attachment = Attachment::Cable {
                        peer_node: peer.node.clone(),
                        peer_interface: peer.interface.clone(),
                    };
                }
            }
        }
    }
    for n in &nodes {
        let ns_len = n.netns.len();
        if ns_len > 200 {
            c.problems.push(Problem {
                line: None,
                field: format!("nodes.{}", n.name),
                message: "namespace name is too long".into(),
            });
        }
    }

    // Routes on the lab host go through a node on one of its bridges (those
    // with a gateway), one route per destination (its bridges' subnets
    // being routes already).
    let host_own: Vec<Ipv4Net> = bridges.iter().filter_map(Bridge::gateway_net).collect();
    let mut host_table = RouteTable {
        owner: "the lab host".to_string(),
        connected: bridges
            .iter()
            .filter(|b| b.gateway.is_some())
            .map(|b| (b.subnet, format!("bridge `{}`", b.name)))
            .collect(),
        routes: BTreeMap::new(),
    };
    let mut host_routes = Vec::new();
    for (j, r) in raw.routes.iter().enumerate() {
        let field = format!("routes[{j}]");
        let Some(route) = validate_route(c, r, &field) else {
            continue;
        };
        let nowhere = |via: Ipv4Addr| {
            format!("{via} is not on a bridge the lab host is on (one with a `gateway`)")
        };
        if let Some(e) = next_hop_problem(&host_own, route.via, "the lab host", nowhere) {
            c.at(&r.get_ref().via, format!("{field}.via"), e);
            continue;
        }
        match host_table.add(route, &field) {
            Ok(true) => host_routes.push(route),
            Ok(false) => {}
            Err(e) => c.at(&r.get_ref().to, format!("{field}.to"), e),
        }
    }

    let mut lab = Lab {
        name,
        netns_prefix,
        uplink,
        nat,
        dns,
        bridges,
        nodes,
        cables,
        forwards: Vec::new(),
        host_routes,
    };

    // Forwards.
    for (i, rf) in raw.forwards.iter().enumerate() {
        let rf = rf.get_ref();
        let f = |k: &str| format!("forwards[{i}].{k}");
        let Some(proto) = Proto::parse(rf.protocol.get_ref()) else {
            c.at(
                &rf.protocol,
                f("protocol"),
                format!("`{}` is not `tcp` or `udp`", rf.protocol.get_ref()),
            );
            continue;
        };
        let ports = match rf.port.get_ref() {
            toml::Value::Integer(n) if (1..=65535).contains(n) => Ok((*n as u16, *n as u16)),
            toml::Value::Integer(n) => Err(format!("port {n} is out of range (1-65535)")),
            toml::Value::String(s) => parse_port_range(s),
            other => Err(format!(
                "`{other}` is not a port or a port range like \"8000-8010\""
            )),
        };
        let ports = match ports {
            Ok(p) => p,
            Err(e) => {
                c.at(&rf.port, f("port"), e);
                continue;
            }
        };
        match lab.resolve_forward(proto, ports, rf.to.get_ref()) {
            Ok(fwd) => {
                if let Some(other) = lab.forwards.iter().find(|o| o.overlaps(&fwd)) {
                    let msg = format!(
                        "{} {} overlaps the forward of {} {}",
                        proto,
                        fwd.ports_text(),
                        other.proto,
                        other.ports_text()
                    );
                    c.at(&rf.port, f("port"), msg);
                    continue;
                }
                lab.forwards.push(fwd);
            }
            Err(e) => c.at(&rf.to, f("to"), e),
        }
    }
    lab
}

fn validate_nat(c: &mut Checker<'_>, raw: Option<&RawNat>) -> NatSettings {
    let mut nat = NatSettings {
        port_min: DEFAULT_PORT_MIN,
        port_max: DEFAULT_PORT_MAX,
        timeouts: Timeouts::default(),
        max_flows: DEFAULT_MAX_FLOWS,
        fast_path: true,
    };
    let Some(raw) = raw else { return nat };
    if let Some(f) = &raw.fast_path {
        nat.fast_path = *f.get_ref();
    }
    if let Some(r) = &raw.port_range {
        match parse_port_range(r.get_ref()) {
            Ok((a, b)) if a >= 1024 && b > a => (nat.port_min, nat.port_max) = (a, b),
            Ok(_) => c.at(
                r,
                "nat.port_range",
                "must be a range of at least two ports from 1024 up",
            ),
            Err(e) => c.at(r, "nat.port_range", e),
        }
    }
    if let Some(m) = &raw.max_flows {
        match u32::try_from(*m.get_ref()) {
            Ok(n) if (2..=16_777_216).contains(&n) => nat.max_flows = n,
            _ => c.at(m, "nat.max_flows", "must be between 2 and 16777216"),
        }
    }
    if let Some(t) = &raw.timeouts {
        let d = Timeouts::default();
        nat.timeouts = Timeouts {
            tcp_syn: c.seconds(&t.tcp_syn, "nat.timeouts.tcp_syn", d.tcp_syn),
            tcp_established: c.seconds(
                &t.tcp_established,
                "nat.timeouts.tcp_established",
                d.tcp_established,
            ),
            tcp_closing: c.seconds(&t.tcp_closing, "nat.timeouts.tcp_closing", d.tcp_closing),
            tcp_rst: c.seconds(&t.tcp_rst, "nat.timeouts.tcp_rst", d.tcp_rst),
            udp: c.seconds(&t.udp, "nat.timeouts.udp", d.udp),
            icmp: c.seconds(&t.icmp, "nat.timeouts.icmp", d.icmp),
        };
    }
    nat
}

const DEFAULT_ROUTE: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::UNSPECIFIED,
    prefix_len: 0,
};

/// Why `via` cannot be the next hop of a route of `whose` (a node, the lab
/// host), whose interfaces have the addresses `own`; `None` when it can:
/// another usable address on one of their subnets. `nowhere` says it is on
/// none of them.
fn next_hop_problem(
    own: &[Ipv4Net],
    via: Ipv4Addr,
    whose: &str,
    nowhere: impl FnOnce(Ipv4Addr) -> String,
) -> Option<String> {
    if own.iter().any(|a| a.addr == via) {
        return Some(format!("{via} is an address of {whose} itself"));
    }
    match own.iter().find(|a| a.contains(via)) {
        None => Some(nowhere(via)),
        Some(a) if !a.is_usable_host(via) => Some(format!(
            "{via} is the network or broadcast address of {}",
            a.network()
        )),
        Some(_) => None,
    }
}

/// One routing table (a node's, the lab host's) as validation builds it.
/// The kernel keeps one route per destination: adding a second one (or one
/// to a connected subnet) fails with EEXIST, which `up` takes as done, so
/// the lab would never converge.
struct RouteTable {
    /// "node `red`", "the lab host".
    owner: String,
    /// Subnets reached directly, each with what reaches it.
    connected: Vec<(Ipv4Net, String)>,
    /// Destination → next hop and where that route comes from.
    routes: BTreeMap<Ipv4Net, (Ipv4Addr, String)>,
}

impl RouteTable {
    /// Add the route written at `field`: `Ok(false)` if the very same
    /// route is there already (it is one route), an error if another route
    /// has its destination.
    fn add(&mut self, route: Route, field: &str) -> Result<bool, String> {
        let dest = if route.to.prefix_len == 0 {
            "default".to_string()
        } else {
            route.to.to_string()
        };
        if let Some((_, what)) = self.connected.iter().find(|(n, _)| *n == route.to) {
            return Err(format!(
                "{dest} is the subnet of {what}, which {} reaches directly: a route to it \
                 via {} would clash with that one",
                self.owner, route.via
            ));
        }
        match self.routes.get(&route.to) {
            Some((via, _)) if *via == route.via => Ok(false),
            Some((via, what)) => Err(format!(
                "{} already has a route to {dest} via {via} ({what}); the kernel keeps one \
                 route per destination",
                self.owner
            )),
            None => {
                self.routes.insert(route.to, (route.via, field.to_string()));
                Ok(true)
            }
        }
    }
}

fn validate_route(c: &mut Checker<'_>, r: &Spanned<RawRoute>, field: &str) -> Option<Route> {
    let r = r.get_ref();
    let to = if r.to.get_ref() == "default" {
        Some(DEFAULT_ROUTE)
    } else {
        c.cidr(&r.to, &format!("{field}.to")).map(|n| {
            if !n.is_network() {
                c.at(
                    &r.to,
                    format!("{field}.to"),
                    format!("{n} has host bits set; did you mean {}?", n.network()),
                );
            }
            n.network()
        })
    };
    let via = c.ipv4(&r.via, &format!("{field}.via"));
    Some(Route { to: to?, via: via? })
}

/// The embedded default lab.
pub fn default_lab() -> Lab {
    parse("(default lab)", DEFAULT_LAB).expect("the embedded default lab is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "t"
[[bridges]]
name = "v-net-0"
subnet = "192.168.15.0/24"
gateway = "192.168.15.5"
"#;

    fn err(text: &str) -> String {
        parse("lab.toml", text).unwrap_err().to_string()
    }

    fn with_base(extra: &str) -> String {
        format!("{BASE}{extra}")
    }

    #[test]
    fn default_lab_is_the_seeds_network() {
        let lab = default_lab();
        assert_eq!(lab.name, "netlab");
        assert_eq!(lab.bridges.len(), 1);
        let b = &lab.bridges[0];
        assert_eq!(
            (b.name.as_str(), b.subnet.to_string()),
            ("v-net-0", "192.168.15.0/24".to_string())
        );
        assert_eq!(b.gateway, Some(Ipv4Addr::new(192, 168, 15, 5)));
        assert!(b.masquerade);
        let red = lab.node("red").unwrap();
        assert_eq!(red.netns, "red");
        assert_eq!(red.interfaces[0].name, "veth-red");
        assert_eq!(red.interfaces[0].address.to_string(), "192.168.15.1/24");
        assert_eq!(
            red.interfaces[0].attachment,
            Attachment::Bridge {
                bridge: "v-net-0".into(),
                host_name: "veth-red-br".into()
            }
        );
        assert_eq!(red.gateway, Some(Ipv4Addr::new(192, 168, 15, 5)));
        assert_eq!(lab.forwards.len(), 1);
        let f = &lab.forwards[0];
        assert_eq!((f.proto, f.port_first, f.target_port), (Proto::Tcp, 80, 80));
        assert_eq!(f.target_addr, Ipv4Addr::new(192, 168, 15, 2));
        assert_eq!(lab.uplink.interface, None);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = err(&with_base(
            "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\nadress = \"192.168.15.1\"\n",
        ));
        assert!(e.starts_with("lab.toml:10: "), "{e}");
        assert!(e.contains("unknown field `adress`"), "{e}");
    }

    #[test]
    fn bad_cidr() {
        let e = err("[[bridges]]\nname = \"b\"\nsubnet = \"192.168.15.0/33\"\n");
        assert_eq!(e, "lab.toml:3: bridges[0].subnet: bad CIDR: `33` in `192.168.15.0/33` is not a prefix length (0-32)");
        let e = err("[[bridges]]\nname = \"b\"\nsubnet = \"192.168.15.1/24\"\n");
        assert!(
            e.contains("has host bits set; did you mean 192.168.15.0/24?"),
            "{e}"
        );
    }

    #[test]
    fn address_outside_subnet_or_gateway() {
        let e = err(&with_base(
            "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.16.1\"\n",
        ));
        assert_eq!(e, "lab.toml:10: nodes[0].address: 192.168.16.1 is outside subnet 192.168.15.0/24 of bridge v-net-0");
        let e = err(&with_base(
            "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.5\"\n",
        ));
        assert_eq!(
            e,
            "lab.toml:10: nodes[0].address: 192.168.15.5 is already the gateway of bridge v-net-0"
        );
        let e = err(&with_base(
            "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.255\"\n",
        ));
        assert!(e.contains("broadcast"), "{e}");
        let e =
            err("[[bridges]]\nname = \"b\"\nsubnet = \"10.0.0.0/24\"\ngateway = \"10.0.1.1\"\n");
        assert_eq!(e, "lab.toml:4: bridges[0].gateway: 10.0.1.1 is not a usable address in subnet 10.0.0.0/24");
    }

    #[test]
    fn duplicates() {
        let node = |n: &str, a: &str| {
            format!("[[nodes]]\nname = \"{n}\"\nbridge = \"v-net-0\"\naddress = \"{a}\"\n")
        };
        let e = err(&with_base(&format!(
            "{}{}",
            node("red", "192.168.15.1"),
            node("red", "192.168.15.2")
        )));
        assert!(
            e.contains("lab.toml:12: nodes[1].name: duplicate node name `red`"),
            "{e}"
        );
        let e = err(&with_base(&format!(
            "{}{}",
            node("red", "192.168.15.1"),
            node("blue", "192.168.15.1")
        )));
        assert!(
            e.contains("lab.toml:14: nodes[1].address: 192.168.15.1 is already used by node red"),
            "{e}"
        );
        let e = err(&format!("{BASE}{BASE}").replace("name = \"t\"\n", ""));
        assert!(e.contains("duplicate bridge name `v-net-0`"), "{e}");
    }

    #[test]
    fn overlapping_subnets() {
        let e = err(&with_base(
            "[[bridges]]\nname = \"b2\"\nsubnet = \"192.168.0.0/16\"\n",
        ));
        assert_eq!(e, "lab.toml:9: subnet 192.168.0.0/16 of bridge b2 overlaps 192.168.15.0/24 of bridge v-net-0");
    }

    #[test]
    fn long_interface_names() {
        let e = err("[[bridges]]\nname = \"a-very-long-bridge\"\nsubnet = \"10.0.0.0/24\"\n");
        assert_eq!(
            e,
            "lab.toml:2: bridges[0].name: interface name `a-very-long-bridge` is 18 bytes; Linux allows at most 15"
        );
        let node = "[[nodes]]\nname = \"longnodename\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\n";
        let e = err(&with_base(node));
        assert!(e.contains("lab.toml:8: nodes[0].host_interface: interface name `veth-longnodename-br` is 20 bytes"), "{e}");
        // Both default names are too long, the one inside the node too.
        assert!(e.contains("lab.toml:8: nodes[0].interface: interface name `veth-longnodename` is 17 bytes; Linux allows at most 15 (the default name inside node `longnodename`); set `interface`"), "{e}");
        // Setting only the lab-host side leaves the node's side.
        let e = err(&with_base(&format!(
            "{node}host_interface = \"vlong-br\"\n"
        )));
        assert_eq!(e, "lab.toml:8: nodes[0].interface: interface name `veth-longnodename` is 17 bytes; Linux allows at most 15 (the default name inside node `longnodename`); set `interface`");
        // Setting both names explicitly fixes it.
        let lab = parse(
            "lab.toml",
            &with_base(&format!(
                "{node}host_interface = \"vlong-br\"\ninterface = \"eth0\"\n"
            )),
        )
        .unwrap();
        assert_eq!(lab.nodes[0].interfaces[0].name, "eth0");
        // An `interfaces` entry of its own, or a cable, has the same default.
        let e = err(&with_base(
            "[[nodes]]\nname = \"longnodename\"\ninterfaces = [{ bridge = \"v-net-0\", address = \"192.168.15.1\", host_name = \"vlong-br\" }]\n",
        ));
        assert_eq!(e, "lab.toml:9: nodes[0].interfaces[0].name: interface name `veth-longnodename` is 17 bytes; Linux allows at most 15 (the default name inside node `longnodename`); set `name`");
        let e = err("[[nodes]]\nname = \"longnodename\"\n[[nodes]]\nname = \"b\"\n[[cables]]\na = { node = \"longnodename\", address = \"10.0.0.1/24\" }\nb = { node = \"b\", address = \"10.0.0.2/24\" }\n");
        assert_eq!(e, "lab.toml:6: cables[0].a.interface: interface name `veth-longnodename` is 17 bytes; Linux allows at most 15 (the default name inside node `longnodename`); set `interface`");
    }

    #[test]
    fn no_interface_may_be_named_lo() {
        let red = "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\n";
        let e = err(&with_base(&format!("{red}interface = \"lo\"\n")));
        assert_eq!(
            e,
            "lab.toml:11: nodes[0].interface: `lo` is the loopback interface every namespace already has"
        );
        let e = err(&with_base(&format!("{red}host_interface = \"lo\"\n")));
        assert!(
            e.starts_with("lab.toml:11: nodes[0].host_interface: `lo`"),
            "{e}"
        );
        let e = err(&with_base(
            "[[nodes]]\nname = \"red\"\ninterfaces = [{ bridge = \"v-net-0\", address = \"192.168.15.1\", name = \"lo\" }]\n",
        ));
        assert!(
            e.starts_with("lab.toml:9: nodes[0].interfaces[0].name: `lo`"),
            "{e}"
        );
        let e = err("[[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"b\"\n[[cables]]\na = { node = \"a\", interface = \"lo\", address = \"10.0.0.1/24\" }\nb = { node = \"b\", address = \"10.0.0.2/24\" }\n");
        assert!(
            e.starts_with("lab.toml:6: cables[0].a.interface: `lo`"),
            "{e}"
        );
        let e = err("[[bridges]]\nname = \"lo\"\nsubnet = \"10.0.0.0/24\"\n");
        assert!(e.starts_with("lab.toml:2: bridges[0].name: `lo`"), "{e}");
    }

    #[test]
    fn unknown_references() {
        let e = err(&with_base(
            "[[nodes]]\nname = \"red\"\nbridge = \"v-net-9\"\naddress = \"192.168.15.1\"\n",
        ));
        assert_eq!(e, "lab.toml:9: nodes[0].bridge: unknown bridge `v-net-9`");
        let e = err(&with_base(
            "[[forwards]]\nprotocol = \"tcp\"\nport = 80\nto = \"green:80\"\n",
        ));
        assert_eq!(e, "lab.toml:10: forwards[0].to: unknown node `green`");
    }

    #[test]
    fn bad_ports() {
        let fwd = |p: &str| {
            with_base(&format!(
            "[[nodes]]\nname = \"blue\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.2\"\n[[forwards]]\nprotocol = \"tcp\"\nport = {p}\nto = \"blue:80\"\n"
        ))
        };
        assert_eq!(
            err(&fwd("0")),
            "lab.toml:13: forwards[0].port: port 0 is out of range (1-65535)"
        );
        assert_eq!(
            err(&fwd("65536")),
            "lab.toml:13: forwards[0].port: port 65536 is out of range (1-65535)"
        );
        assert!(err(&fwd("\"90-80\"")).contains("reversed"));
        let e = err(&fwd("80").replace("blue:80", "blue:0"));
        assert_eq!(
            e,
            "lab.toml:14: forwards[0].to: port 0 is out of range (1-65535)"
        );
        let e = err(&fwd("80").replace("\"tcp\"", "\"sctp\""));
        assert_eq!(
            e,
            "lab.toml:12: forwards[0].protocol: `sctp` is not `tcp` or `udp`"
        );
        // A range maps onto a range of the same size, or all onto one port.
        let lab = parse(
            "lab.toml",
            &fwd("\"8000-8009\"").replace("blue:80", "blue:9000-9009"),
        )
        .unwrap();
        let pairs: Vec<(u16, u16)> = lab.forwards[0].port_pairs().collect();
        assert_eq!(pairs.len(), 10);
        assert_eq!(pairs[3], (8003, 9003));
        assert_eq!(lab.forwards[0].target_text(), "blue:9000-9009");
        let lab = parse("lab.toml", &fwd("\"8000-8009\"")).unwrap();
        assert!(lab.forwards[0].port_pairs().all(|(_, inside)| inside == 80));
        assert_eq!(lab.forwards[0].target_text(), "blue:80");
        let lab = parse("lab.toml", &fwd("\"8000-8009\"").replace("blue:80", "blue")).unwrap();
        assert_eq!(lab.forwards[0].port_pairs().nth(9), Some((8009, 8009)));
        assert!(
            err(&fwd("\"8000-8009\"").replace("blue:80", "blue:1-3")).contains("has 3 ports but")
        );
        // All onto one port, however high.
        let lab = parse(
            "lab.toml",
            &fwd("\"1000-2000\"").replace("blue:80", "blue:65000"),
        )
        .unwrap();
        let f = &lab.forwards[0];
        assert_eq!(f.port_pairs().count(), 1001);
        assert!(f.port_pairs().all(|(_, inside)| inside == 65000));
        assert_eq!(f.target_text(), "blue:65000");
        assert_eq!(f.to_string(), "tcp 1000-2000 -> blue:65000 (192.168.15.2)");
        let lab = parse(
            "lab.toml",
            &fwd("\"65530-65535\"").replace("blue:80", "blue:65530-65535"),
        )
        .unwrap();
        assert_eq!(lab.forwards[0].port_pairs().last(), Some((65535, 65535)));
        assert_eq!(lab.forwards[0].target_text(), "blue:65530-65535");
        // A range onto a range that would run past 65535 (not one that
        // validation makes) is described and paired without overflowing.
        let odd = Forward {
            target_port: 65000,
            target_range: true,
            ..lab.forwards[0].clone()
        };
        assert_eq!(odd.target_text(), "blue:65000-65005");
        let odd = Forward {
            port_first: 1000,
            port_last: 2000,
            ..odd
        };
        assert_eq!(odd.target_text(), "blue:65000-65535");
        assert_eq!(odd.port_pairs().last(), Some((1535, 65535)));
    }

    #[test]
    fn forwards_only_to_bridges_the_lab_host_is_on() {
        let text = "[[bridges]]\nname = \"sw\"\nsubnet = \"10.0.0.0/24\"\n\
                    [[nodes]]\nname = \"blue\"\nbridge = \"sw\"\naddress = \"10.0.0.2\"\n\
                    [[forwards]]\nprotocol = \"tcp\"\nport = 80\nto = \"blue:80\"\n";
        assert_eq!(
            err(text),
            "lab.toml:11: forwards[0].to: node `blue` is on no bridge with a gateway, so the lab \
             host cannot reach it"
        );
        assert_eq!(
            err(&text.replace("blue:80", "10.0.0.2:80")),
            "lab.toml:11: forwards[0].to: 10.0.0.2 is node `blue`'s address on bridge `sw`, which \
             has no gateway, so the lab host cannot reach it"
        );
        // By address, the address picks the interface.
        let text = with_base(
            "[[bridges]]\nname = \"sw\"\nsubnet = \"10.0.0.0/24\"\n\
             [[nodes]]\nname = \"blue\"\ninterfaces = [\n\
               { bridge = \"sw\", address = \"10.0.0.2\" },\n\
               { bridge = \"v-net-0\", address = \"192.168.15.2\" },\n]\n\
             [[forwards]]\nprotocol = \"tcp\"\nport = 80\nto = \"192.168.15.2:80\"\n",
        );
        let lab = parse("lab.toml", &text).unwrap();
        assert_eq!(lab.forwards[0].target_addr, Ipv4Addr::new(192, 168, 15, 2));
        let lab = parse("lab.toml", &text.replace("192.168.15.2:80", "blue:80")).unwrap();
        assert_eq!(lab.forwards[0].target_addr, Ipv4Addr::new(192, 168, 15, 2));
        assert!(err(&text.replace("192.168.15.2:80", "10.0.0.2:80"))
            .contains("10.0.0.2 is node `blue`'s address on bridge `sw`, which has no gateway"));
        // An address that is no node's (the gateway, a free one) is refused.
        for free in ["192.168.15.5", "192.168.15.77"] {
            assert!(
                err(&text.replace("192.168.15.2:80", &format!("{free}:80"))).contains(&format!(
                    "forwards[0].to: no node has address {free} on a bridge"
                )),
                "{free}"
            );
        }
    }

    #[test]
    fn overlapping_forwards() {
        let text = with_base(
            "[[nodes]]\nname = \"blue\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.2\"\n\
             [[forwards]]\nprotocol = \"tcp\"\nport = \"80-90\"\nto = \"blue\"\n\
             [[forwards]]\nprotocol = \"tcp\"\nport = 85\nto = \"blue:22\"\n\
             [[forwards]]\nprotocol = \"udp\"\nport = 85\nto = \"blue\"\n",
        );
        assert_eq!(
            err(&text),
            "lab.toml:17: forwards[1].port: tcp 85 overlaps the forward of tcp 80-90"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let e = err(&with_base(
            "[[nodes]]\nname = \"red\"\nbridge = \"nope\"\naddress = \"192.168.15.1\"\n\
             [[nodes]]\nname = \"blue\"\nbridge = \"v-net-0\"\naddress = \"10.1.1.1\"\n",
        ));
        assert_eq!(e.lines().count(), 2, "{e}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = err("name = \"x\"\n[[nodes]\n");
        assert!(e.starts_with("lab.toml:2: "), "{e}");
    }

    #[test]
    fn several_bridges_and_multi_homed_node() {
        let lab = parse(
            "lab.toml",
            r#"
            [[bridges]]
            name = "br-a"
            subnet = "10.0.1.0/24"
            gateway = "10.0.1.254"
            [[bridges]]
            name = "br-b"
            subnet = "10.0.2.0/24"
            gateway = "10.0.2.254"
            masquerade = false
            filtering = "endpoint-independent"
            [[nodes]]
            name = "r"
            forwarding = true
            interfaces = [
              { bridge = "br-a", address = "10.0.1.1" },
              { bridge = "br-b", address = "10.0.2.1/24", name = "lan" },
            ]
            "#,
        )
        .unwrap();
        let r = lab.node("r").unwrap();
        assert_eq!(r.interfaces[0].name, "eth0");
        assert_eq!(r.interfaces[1].name, "lan");
        assert_eq!(
            r.interfaces[1].attachment,
            Attachment::Bridge {
                bridge: "br-b".into(),
                host_name: "veth-r-1".into()
            }
        );
        assert_eq!(r.gateway, Some(Ipv4Addr::new(10, 0, 1, 254)));
        assert!(!lab.bridge("br-b").unwrap().masquerade);
        assert_eq!(
            lab.bridge("br-b").unwrap().filtering,
            Filtering::EndpointIndependent
        );
        let e = err("[[bridges]]\nname = \"b\"\nsubnet = \"10.0.0.0/24\"\nmasquerade = true\n");
        assert!(e.contains("needs a gateway"), "{e}");
    }

    #[test]
    fn seeds_first_example_is_a_cable() {
        let lab = parse(
            "cable.toml",
            r#"
            [[nodes]]
            name = "red"
            [[nodes]]
            name = "blue"
            [[cables]]
            a = { node = "red", interface = "veth-red", address = "192.168.15.1/24" }
            b = { node = "blue", interface = "veth-blue", address = "192.168.15.2/24" }
            "#,
        )
        .unwrap();
        assert_eq!(lab.cables.len(), 1);
        assert_eq!(lab.node("red").unwrap().gateway, None);
        assert_eq!(
            lab.node("red").unwrap().interfaces[0].attachment,
            Attachment::Cable {
                peer_node: "blue".into(),
                peer_interface: "veth-blue".into()
            }
        );
        let e = err("[[nodes]]\nname = \"red\"\n[[cables]]\na = { node = \"red\", address = \"10.0.0.1/24\" }\nb = { node = \"ghost\", address = \"10.0.0.2/24\" }\n");
        assert_eq!(
            e,
            "cable.toml:5: cables[0].b.node: unknown node `ghost`"
                .replace("cable.toml", "lab.toml")
        );
    }

    #[test]
    fn node_routes_need_a_connected_gateway() {
        let e = err(&with_base(
            "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\nroutes = [{ to = \"10.0.0.0/8\", via = \"172.16.0.1\" }]\n",
        ));
        assert_eq!(
            e,
            "lab.toml:11: nodes[0].routes[0].via: 172.16.0.1 is not on any subnet of node `red`"
        );
    }

    #[test]
    fn one_route_per_destination() {
        let red = "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\n";
        // The default gateway (here the bridge's) is a route to default.
        let e = err(&with_base(&format!(
            "{red}routes = [{{ to = \"default\", via = \"192.168.15.9\" }}]\n"
        )));
        assert_eq!(
            e,
            "lab.toml:11: nodes[0].routes[0].to: node `red` already has a route to default via \
             192.168.15.5 (the gateway of bridge `v-net-0`; set `gateway` to choose another, or \
             `gateway = \"none\"`); the kernel keeps one route per destination"
        );
        let e = err(&with_base(&format!(
            "{red}gateway = \"192.168.15.9\"\nroutes = [{{ to = \"0.0.0.0/0\", via = \"192.168.15.5\" }}]\n"
        )));
        assert!(
            e.contains("lab.toml:12: nodes[0].routes[0].to: node `red` already has a route to default via 192.168.15.9 (its `gateway`)"),
            "{e}"
        );
        // Without a gateway, the route is the default route.
        let lab = parse(
            "lab.toml",
            &with_base(&format!(
                "{red}gateway = \"none\"\nroutes = [{{ to = \"default\", via = \"192.168.15.9\" }}]\n"
            )),
        )
        .unwrap();
        assert_eq!(lab.nodes[0].routes.len(), 1);
        // Two routes to one prefix; the same route twice is one.
        let two = |a: &str, b: &str| {
            with_base(&format!(
                "{red}routes = [{{ to = \"10.0.0.0/8\", via = \"{a}\" }}, {{ to = \"10.0.0.0/8\", via = \"{b}\" }}]\n"
            ))
        };
        assert_eq!(
            err(&two("192.168.15.8", "192.168.15.9")),
            "lab.toml:11: nodes[0].routes[1].to: node `red` already has a route to 10.0.0.0/8 via \
             192.168.15.8 (nodes[0].routes[0]); the kernel keeps one route per destination"
        );
        let lab = parse("lab.toml", &two("192.168.15.8", "192.168.15.8")).unwrap();
        assert_eq!(lab.nodes[0].routes.len(), 1);
        // A connected subnet has its route already.
        let e = err(&with_base(&format!(
            "{red}routes = [{{ to = \"192.168.15.0/24\", via = \"192.168.15.9\" }}]\n"
        )));
        assert_eq!(
            e,
            "lab.toml:11: nodes[0].routes[0].to: 192.168.15.0/24 is the subnet of interface \
             `veth-red`, which node `red` reaches directly: a route to it via 192.168.15.9 would \
             clash with that one"
        );
        // Next hops: another usable address on one of the node's subnets.
        let via = |v: &str| {
            err(&with_base(&format!(
                "{red}routes = [{{ to = \"10.0.0.0/8\", via = \"{v}\" }}]\n"
            )))
        };
        assert_eq!(
            via("192.168.15.255"),
            "lab.toml:11: nodes[0].routes[0].via: 192.168.15.255 is the network or broadcast \
             address of 192.168.15.0/24"
        );
        assert!(via("192.168.15.0").contains("network or broadcast"));
        assert_eq!(
            via("192.168.15.1"),
            "lab.toml:11: nodes[0].routes[0].via: 192.168.15.1 is an address of node `red` itself"
        );
        assert!(
            err(&with_base(&format!("{red}gateway = \"192.168.15.255\"\n")))
                .contains("nodes[0].gateway: 192.168.15.255 is the network or broadcast address")
        );
    }

    #[test]
    fn host_routes() {
        let route = |to: &str, via: &str| format!("[[routes]]\nto = \"{to}\"\nvia = \"{via}\"\n");
        let lab = parse("lab.toml", &with_base(&route("10.0.0.0/8", "192.168.15.1"))).unwrap();
        assert_eq!(
            lab.host_routes,
            [Route {
                to: "10.0.0.0/8".parse().unwrap(),
                via: Ipv4Addr::new(192, 168, 15, 1)
            }]
        );
        // Two routes to one prefix (the same one twice is one).
        let e = err(&with_base(&format!(
            "{}{}",
            route("10.0.0.0/8", "192.168.15.1"),
            route("10.0.0.0/8", "192.168.15.2")
        )));
        assert_eq!(
            e,
            "lab.toml:11: routes[1].to: the lab host already has a route to 10.0.0.0/8 via \
             192.168.15.1 (routes[0]); the kernel keeps one route per destination"
        );
        let text = with_base(&format!(
            "{}{}",
            route("10.0.0.0/8", "192.168.15.1"),
            route("10.0.0.0/8", "192.168.15.1")
        ));
        assert_eq!(parse("lab.toml", &text).unwrap().host_routes.len(), 1);
        // The next hop: a usable address on a bridge the lab host is on.
        assert_eq!(
            err(&with_base(&route("0.0.0.0/0", "192.168.15.255"))),
            "lab.toml:9: routes[0].via: 192.168.15.255 is the network or broadcast address of \
             192.168.15.0/24"
        );
        assert!(err(&with_base(&route("default", "192.168.15.0"))).contains("broadcast"));
        assert_eq!(
            err(&with_base(&route("10.0.0.0/8", "192.168.15.5"))),
            "lab.toml:9: routes[0].via: 192.168.15.5 is an address of the lab host itself"
        );
        assert_eq!(
            err(&with_base(&route("10.0.0.0/8", "172.16.0.1"))),
            "lab.toml:9: routes[0].via: 172.16.0.1 is not on a bridge the lab host is on (one \
             with a `gateway`)"
        );
        let e = err(&format!(
            "[[bridges]]\nname = \"sw\"\nsubnet = \"10.0.0.0/24\"\n{}",
            route("172.16.0.0/12", "10.0.0.1")
        ));
        assert!(
            e.contains("routes[0].via: 10.0.0.1 is not on a bridge the lab host is on"),
            "{e}"
        );
        // The lab host reaches its bridges' subnets directly.
        assert_eq!(
            err(&with_base(&route("192.168.15.0/24", "192.168.15.1"))),
            "lab.toml:8: routes[0].to: 192.168.15.0/24 is the subnet of bridge `v-net-0`, which \
             the lab host reaches directly: a route to it via 192.168.15.1 would clash with that one"
        );
    }

    #[test]
    fn dns_settings() {
        let lab = parse(
            "lab.toml",
            "[dns]\nnameservers = [\"10.0.0.53\"]\nsearch = [\"lab.example\", \"corp_x.example.\", \"x-1\"]\n",
        )
        .unwrap();
        assert_eq!(lab.dns.nameservers, Some(vec![Ipv4Addr::new(10, 0, 0, 53)]));
        assert_eq!(lab.dns.search, ["lab.example", "corp_x.example.", "x-1"]);
        let search = |d: &str| err(&format!("[dns]\nsearch = [\"ok\",\n  {d}]\n"));
        assert_eq!(
            search("\"x\\nnameserver 1.1.1.1\""),
            "lab.toml:3: dns.search[1]: `x\\nnameserver 1.1.1.1` is not a domain name: labels are \
             letters, digits, `-` and `_`"
        );
        assert!(search("\"two words\"").contains("dns.search[1]: `two words` is not"));
        assert_eq!(
            search("\"\""),
            "lab.toml:3: dns.search[1]: `` is not a domain name"
        );
        for bad in [".", "a..b", ".a", "a.b..", "x/y", "é.example"] {
            assert!(
                search(&format!("\"{bad}\"")).contains("dns.search[1]"),
                "{bad:?} accepted"
            );
        }
        let long = format!("\"{}.example\"", "a".repeat(64));
        assert!(search(&long).contains("1-63 bytes"));
        let label = "a".repeat(63);
        let just = format!("{label}.{label}.{label}.{}", "a".repeat(61));
        assert_eq!(just.len(), 253);
        parse("lab.toml", &format!("[dns]\nsearch = [\"{just}.\"]\n")).unwrap();
        assert!(search(&format!("\"{just}a\"")).contains("at most 253"));
        // Nameservers are IPv4 addresses, nothing else.
        let e = err("[dns]\nnameservers = [\"1.1.1.1\\nsearch evil\"]\n");
        assert!(e.starts_with("lab.toml:2: dns.nameservers[0]: "), "{e}");
    }

    #[test]
    fn nat_settings() {
        let lab = parse(
            "lab.toml",
            "[nat]\nport_range = \"40000-40999\"\nmax_flows = 1000\nfast_path = false\n[nat.timeouts]\nudp = 120\n",
        )
        .unwrap();
        assert_eq!(
            (lab.nat.port_min, lab.nat.port_max, lab.nat.max_flows),
            (40000, 40999, 1000)
        );
        assert_eq!(lab.nat.timeouts.udp, 120);
        assert!(!lab.nat.fast_path);
        assert!(default_lab().nat.fast_path);
        assert_eq!(lab.nat.timeouts.tcp_established, 7440);
        assert!(err("[nat]\nport_range = \"80-90\"\n").contains("nat.port_range"));
        assert!(err("[nat.timeouts]\nudp = 0\n").contains("nat.timeouts.udp"));
    }
}
