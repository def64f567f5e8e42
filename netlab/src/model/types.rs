//! The validated lab: what the planner and the dataplane work from. Every
//! value here has passed validation ([`super::validate`]); the file as
//! written is `model::raw`.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde::{Deserialize, Serialize};

use super::{
    impair::LinkImpair,
    net::{IpNet, Ipv4Net, Ipv6Net},
};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

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
    pub host_routes: Vec<HostRoute>,
    /// The lab host's routes to IPv6 subnets behind router nodes (apart
    /// from the IPv4 ones: the dataplane keeps a table per family).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_routes6: Vec<HostRoute6>,
    /// `[[hosts]]`: the lab hosts the lab spans (empty: one lab host, the
    /// one `up` runs on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<Host>,
    #[serde(default)]
    pub vxlan: VxlanSettings,
    /// Set on one host's share of a lab over several hosts (see
    /// [`super::hosts::share`]): which host, and its tunnels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<Share>,
}

/// A lab host of a lab over several hosts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub name: String,
    /// The address the other hosts reach this one at (the VXLAN endpoint).
    pub underlay: Ipv4Addr,
    /// The underlay interface; `None`: the kernel's route to each peer.
    pub interface: Option<String>,
}

/// How bridges with nodes on several hosts are stretched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanSettings {
    /// UDP destination port of the tunnels (IANA's 4789 by default).
    pub port: u16,
    /// MTU of node links on stretched bridges: the underlay's less the 50
    /// bytes VXLAN over IPv4 adds.
    pub mtu: u32,
}

pub const VXLAN_PORT: u16 = 4789;
/// IPv4 (20) + UDP (8) + VXLAN (8) + the inner Ethernet header (14).
pub const VXLAN_OVERHEAD: u32 = 50;
pub const DEFAULT_UNDERLAY_MTU: u32 = 1500;

impl Default for VxlanSettings {
    fn default() -> Self {
        Self {
            port: VXLAN_PORT,
            mtu: DEFAULT_UNDERLAY_MTU - VXLAN_OVERHEAD,
        }
    }
}

/// One host's share of a lab over several hosts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// The lab's name in its file (the share runs as `<lab>@<host>`).
    pub lab: String,
    pub host: String,
    pub tunnels: Vec<Tunnel>,
    /// This host's ports on stretched bridges (see [`HostPort`]).
    #[serde(default)]
    pub host_ports: Vec<HostPort>,
    /// The nodes on the other hosts (their names resolve in this share's nodes too).
    #[serde(default)]
    pub remote_nodes: Vec<Node>,
    /// Where the share's nodes, bridges and forwards are in the file.
    #[serde(default)]
    pub file_index: FileIndex,
}

/// The lab host's own port on a stretched bridge, for forwards taken on
/// this host to nodes on other hosts: a veth pair, `peer` on the bridge
/// and `name` on the lab host holding `address` as a `/32` (no second
/// route to the bridge's subnet) with a MAC address of its own (the
/// bridge's is the anycast gateway's on every host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    pub name: String,
    pub peer: String,
    pub bridge: String,
    pub address: Ipv4Addr,
    /// The stretched bridge's MTU.
    pub mtu: u32,
}

/// For each of a share's nodes, bridges and forwards, its index in the file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIndex {
    pub nodes: Vec<usize>,
    pub bridges: Vec<usize>,
    pub forwards: Vec<usize>,
}

/// A VXLAN device stretching `bridge` to the other hosts that have nodes on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunnel {
    /// The device's name on this host.
    pub name: String,
    pub bridge: String,
    pub vni: u32,
    pub port: u16,
    pub local: Ipv4Addr,
    pub interface: Option<String>,
    /// The device's MTU (and so the bridge's): the node links' on it.
    pub mtu: u32,
    /// Every other host with nodes on the bridge: head-end replication.
    pub remotes: Vec<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uplink {
    /// `None`: the interface of the lab host's default route.
    pub interface: Option<String>,
    /// `None`: the interface's first IPv4 address.
    pub address: Option<Ipv4Addr>,
    /// The IPv6 address to translate to; `None`: the interface's first
    /// global one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
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
    /// The VXLAN network identifier of the bridge, in a lab over several hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// The bridge's IPv6 subnet (a dual-stack bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    /// The lab host's IPv6 address on the bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
}

impl Bridge {
    pub fn gateway_net(&self) -> Option<Ipv4Net> {
        self.gateway.map(|gw| self.subnet.with_addr(gw))
    }

    pub fn gateway6_net(&self) -> Option<Ipv6Net> {
        Some(self.subnet6?.with_addr(self.gateway6?))
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
    /// IPv6 default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// Other routes, of either family.
    pub routes: Vec<Route>,
    /// IPv4 and IPv6 forwarding inside the node (a router).
    pub forwarding: bool,
    /// Services: shell commands (`sh -c`) `up` keeps running inside the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run: Vec<String>,
    /// The lab host it runs on, in a lab over several hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl Node {
    /// The address other nodes know this node by.
    pub fn primary_address(&self) -> Option<Ipv4Addr> {
        self.interfaces.first().map(|i| i.address.addr)
    }

    /// The IPv6 address other nodes know this node by: its first one.
    pub fn primary_address6(&self) -> Option<Ipv6Addr> {
        self.interfaces
            .iter()
            .find_map(|i| i.address6.map(|a| a.addr))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Name inside the node's namespace.
    pub name: String,
    pub address: Ipv4Net,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Net>,
    pub attachment: Attachment,
    /// Delay, loss, rate... of the traffic out of and into the node here.
    #[serde(default, skip_serializing_if = "LinkImpair::is_none")]
    pub impair: LinkImpair,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Net>,
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
    /// Over IPv6 too, where the target has an IPv6 address the NAT can
    /// reach ([`Lab::forward_target6`]); `ipv6 = false`: IPv4 only.
    #[serde(default = "yes")]
    pub ipv6: bool,
    /// The lab host may listen on these ports itself: the forward takes
    /// their connections from the outside anyway (`take_host_port = true`;
    /// otherwise such a forward is refused, see [`super::host_conflicts`]).
    #[serde(default)]
    pub take_host_port: bool,
    /// The lab host that takes the forward on its uplink, when the file
    /// names one (`host = "NAME"`); else the target node's host.
    #[serde(default)]
    pub host: Option<String>,
    /// In a host's share, for a forward to a node on another host: this
    /// host's address on the target's stretched bridge (its host port),
    /// the source the connections are given so the replies come back here.
    #[serde(default)]
    pub snat: Option<Ipv4Addr>,
}

fn yes() -> bool {
    true
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
            "{} {} -> {} ({}){}",
            self.proto,
            self.ports_text(),
            self.target_text(),
            self.target_addr,
            if self.ipv6 { "" } else { ", IPv4 only" }
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// `0.0.0.0/0` or `::/0` for a default route; of `via`'s family.
    pub to: IpNet,
    pub via: IpAddr,
}

/// A route on the lab host to a subnet behind a router node. Like a
/// bridge's subnet, the destination is masqueraded (the default) and/or
/// `routed` (the outside reaches it without NAT); a forward may target a
/// node whose address is inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    pub to: Ipv4Net,
    pub via: Ipv4Addr,
    /// Its place in the file's `[[routes]]` (of both families): checks
    /// made later, against the lab host, name it as the file does.
    #[serde(default)]
    pub file_index: usize,
    #[serde(default = "masquerade_by_default")]
    pub masquerade: bool,
    #[serde(default)]
    pub routed: bool,
}

/// A route on the lab host to an IPv6 subnet behind a router node: as
/// [`HostRoute`], its `masquerade` and `routed` for the dataplane's IPv6 side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute6 {
    pub to: Ipv6Net,
    pub via: Ipv6Addr,
    /// Its place in the file's `[[routes]]` (of both families): checks
    /// made later, against the lab host, name it as the file does.
    #[serde(default)]
    pub file_index: usize,
    #[serde(default = "masquerade_by_default")]
    pub masquerade: bool,
    #[serde(default)]
    pub routed: bool,
}

fn masquerade_by_default() -> bool {
    true
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

    /// Whether anything of the lab leaves the uplink translated: a bridge
    /// or a subnet behind a host route that masquerades.
    pub fn masquerades(&self) -> bool {
        self.bridges.iter().any(|b| b.masquerade) || self.host_routes.iter().any(|r| r.masquerade)
    }

    /// Whether the lab needs the NAT dataplane (and so an uplink): it
    /// masquerades or forwards.
    pub fn needs_nat(&self) -> bool {
        self.masquerades() || !self.forwards.is_empty()
    }

    /// The subnets on the lab host's bridges (those with a gateway).
    pub fn host_subnets(&self) -> impl Iterator<Item = &Bridge> {
        self.bridges.iter().filter(|b| b.gateway.is_some())
    }

    /// The bridges the lab host is on over IPv6 (those with a `gateway6`).
    pub fn host_subnets6(&self) -> impl Iterator<Item = &Bridge> {
        self.bridges.iter().filter(|b| b.gateway6.is_some())
    }

    /// Whether the lab has IPv6 for the NAT to translate: a masqueraded
    /// bridge of the lab host's with a `gateway6`. Only then does it take
    /// the uplink's IPv6 address and load the IPv6 programs (on Linux 6.1
    /// their verification costs a lab's `up` about as much as all the
    /// IPv4 ones).
    pub fn translates_ipv6(&self) -> bool {
        self.host_subnets6().any(|b| b.masquerade)
    }

    /// Whether the lab is dual-stack on the lab host: it then needs IPv6
    /// forwarding there.
    pub fn routes_ipv6(&self) -> bool {
        self.host_subnets6().next().is_some()
    }
}
