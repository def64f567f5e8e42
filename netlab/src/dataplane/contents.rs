//! The pure description of a lab's dataplane: what goes into the maps
//! (configuration, subnets, lab interfaces, forwards, node ports),
//! computed from the lab and what `up` found on the lab host, or written
//! out directly by the harnesses that run the programs without a lab. One
//! function, [`fill_maps`](super::fill::fill_maps), writes it; its stable
//! digest is stored with the dataplane, for `status` and for telling a
//! change on re-`up`.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use aya::maps::lpm_trie::Key;
use netlab_common::{
    addr_from_octets, port_to_net, Forward6Target, ForwardKey, ForwardTarget, NatConfig, NodePort,
    SubnetInfo, FLOW6_ENTRIES, SUBNET_ENDPOINT_INDEPENDENT_FILTERING, SUBNET_MASQUERADE,
    SUBNET_ROUTED,
};

use crate::model::topology::{Bridge, Filtering, Forward, Lab, NatSettings};

/// What `up` writes into the maps for a lab on its lab host: computed
/// before anything is loaded, digested to tell a change, written by
/// [`fill_maps`](super::fill::fill_maps).
pub struct MapContents {
    pub config: NatConfig,
    /// `LAB_SUBNETS`.
    pub subnets: Vec<(Key<u32>, SubnetInfo)>,
    /// `LAB_SUBNETS6`: the IPv6 subnets, with the same `SubnetInfo` as
    /// an IPv4 subnet of the same bridge or route would have.
    pub subnets6: Vec<(Key<[u8; 16]>, SubnetInfo)>,
    /// `LAB_IFACES`: ifindex, `LAB_IFACE_*` flags.
    pub ifaces: Vec<(u32, u32)>,
    /// `FORWARD_RULES`, by forward (their counters 0: `fill_maps` gives
    /// each forward its counter, see `fwd_counters`).
    pub forwards: Vec<ForwardEntries>,
    /// `FORWARD6_RULES`: the forwards reached over IPv6 too.
    pub forwards6: Forward6Entries,
    /// `NODE_PORTS`: node address (map order), the lab host's end of its
    /// veth by name, the entry.
    pub node_ports: Vec<(u32, String, NodePort)>,
    /// `NODE_PORTS6`: the same by IPv6 address (a lab that translates IPv6).
    pub node_ports6: Vec<([u8; 16], NodePort)>,
    /// `TUNNEL_GATEWAYS`: each VXLAN device's ifindex, and the MAC address
    /// of the bridge it stretches (the anycast gateway's).
    pub tunnel_gateways: Vec<(u32, [u8; 6])>,
}

impl MapContents {
    /// Stable across builds (see [`StableDigest`]): stored with the
    /// dataplane, so a re-`up` tells whether the maps change.
    pub fn digest(&self) -> String {
        maps_digest(self)
    }
    /// The description of `lab` on a lab host where `host` was found.
    pub fn of_lab(lab: &Lab, host: &LabHostIfaces, fast_path: bool) -> MapContents {
        let config = nat_config(
            &lab.nat,
            fast_path,
            host.uplink_ifindex,
            host.uplink_address,
            host.uplink_address6,
            host.uplink_is_veth,
        );
        // Sorted: the digest must not depend on a hash map's order (a lab
        // with two bridges, or a bridge and a host port, was otherwise
        // reported changed by an `up` that changed nothing, now and then).
        let mut ifaces: Vec<(u32, u32)> = host
            .bridge_ifindex
            .values()
            .map(|&i| (i, netlab_common::LAB_IFACE_BRIDGE))
            .collect();
        ifaces.sort_unstable();
        MapContents {
            tunnel_gateways: tunnel_gateways(lab, &host.tunnel_ifindex),
            config,
            subnets: subnet_entries(lab, &host.bridge_ifindex),
            subnets6: subnet6_entries(lab, &host.bridge_ifindex),
            ifaces,
            forwards: forward_entries(&lab.forwards),
            forwards6: forward6_entries(lab, &lab.forwards),
            node_ports: if fast_path {
                host.node_ports.clone()
            } else {
                Vec::new()
            },
            node_ports6: if fast_path && host.uplink_address6.is_some() {
                host.node_ports6.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// A description written out directly, for runs of the programs
    /// without a lab (program tests, micro-benchmark, fuzzing): `config`
    /// and, added by the methods below, subnets, forwards and node ports.
    pub fn with_config(config: NatConfig) -> MapContents {
        MapContents {
            config,
            subnets: Vec::new(),
            subnets6: Vec::new(),
            ifaces: Vec::new(),
            forwards: Vec::new(),
            forwards6: Vec::new(),
            node_ports: Vec::new(),
            node_ports6: Vec::new(),
            tunnel_gateways: Vec::new(),
        }
    }

    /// A subnet `net`/`prefix_len` with `SUBNET_*` `flags`, on the bridge
    /// at `ifindex`.
    pub fn subnet(mut self, net: Ipv4Addr, prefix_len: u8, flags: u32, ifindex: u32) -> Self {
        let key = Key::new(u32::from(prefix_len), addr_from_octets(net.octets()));
        self.subnets.push((key, SubnetInfo { flags, ifindex }));
        self
    }

    /// An IPv6 subnet `net`/`prefix_len` with `SUBNET_*` `flags`, on the
    /// bridge at `ifindex`.
    pub fn subnet6(mut self, net: Ipv6Addr, prefix_len: u8, flags: u32, ifindex: u32) -> Self {
        self.subnets6.push(subnet6_entry(
            net,
            prefix_len,
            SubnetInfo { flags, ifindex },
        ));
        self
    }

    /// A forward of `proto` (`IPPROTO_*`) port `port` to `to`:`to_port`.
    pub fn forward(mut self, proto: u8, port: u16, to: Ipv4Addr, to_port: u16) -> Self {
        self.forwards
            .push(vec![forward_entry(proto, port, to, to_port)]);
        self
    }

    /// An IPv6 forward of `port` to `to`:`to_port`.
    pub fn forward6(mut self, proto: u8, port: u16, to: Ipv6Addr, to_port: u16) -> Self {
        let target = Forward6Target {
            addr: to.octets(),
            port: port_to_net(to_port),
            counter: 0,
        };
        self.forwards6
            .push((ForwardKey::new(port_to_net(port), proto), target));
        self
    }

    /// A node's fast-path entry.
    pub fn node_port(mut self, node: Ipv4Addr, port: NodePort) -> Self {
        let name = format!("port-of-{node}");
        self.node_ports
            .push((addr_from_octets(node.octets()), name, port));
        self
    }

    /// A node's fast-path entry by IPv6 address.
    pub fn node_port6(mut self, node: Ipv6Addr, port: NodePort) -> Self {
        self.node_ports6.push((node.octets(), port));
        self
    }
}

/// What `up` found on the lab host for the lab: the interface index of
/// each bridge, the uplink, and (fast path) each node's port.
pub struct LabHostIfaces {
    pub bridge_ifindex: HashMap<String, u32>,
    pub uplink_ifindex: u32,
    pub uplink_address: Ipv4Addr,
    pub uplink_address6: Option<Ipv6Addr>,
    pub uplink_is_veth: bool,
    pub node_ports: Vec<(u32, String, NodePort)>,
    pub node_ports6: Vec<([u8; 16], NodePort)>,
    /// Each VXLAN device of the lab's share by name.
    pub tunnel_ifindex: HashMap<String, u32>,
}

/// Each of the share's tunnels found on the lab host, with its bridge's
/// (anycast) MAC address; sorted, for the digest.
fn tunnel_gateways(lab: &Lab, tunnel_ifindex: &HashMap<String, u32>) -> Vec<(u32, [u8; 6])> {
    let mut out: Vec<(u32, [u8; 6])> = lab
        .share
        .iter()
        .flat_map(|s| &s.tunnels)
        .filter_map(|t| {
            let ifindex = tunnel_ifindex.get(&t.name)?;
            Some((*ifindex, crate::model::hosts::anycast_mac(t.vni)))
        })
        .collect();
    out.sort_unstable();
    out
}

/// How full the flow table may get before new flows are refused. The
/// programs' count of its entries drifts between collections (CPUs racing
/// on it lose updates; the IPv6 count goes up only), so admission stops
/// short of the table's size by a reserve that grows with the CPUs, and a
/// new flow finds a free entry. (The reserve was sized for the LRU the
/// table once was, whose CPUs held up to 128 free entries each.)
pub fn flow_limit(max_flows: u32) -> u32 {
    let cpus = aya::util::nr_cpus().map(|n| n as u32).unwrap_or(64);
    let reserve = (max_flows / 16).max(2 * 128 * cpus).min(max_flows / 2);
    max_flows - reserve
}

/// [`flow_limit`] for the IPv6 flow table, which holds `max_flows`
/// entries up to its fixed size (`FLOW6_ENTRIES`).
pub fn flow_limit6(max_flows: u32) -> u32 {
    flow_limit(max_flows.min(FLOW6_ENTRIES))
}

/// The configuration a lab file with every default gets, on an uplink with
/// `uplink_addr` (map order) at ifindex 1: for runs of the programs through
/// `BPF_PROG_TEST_RUN` (program tests, the micro-benchmark).
pub fn default_config(uplink_addr: u32, fast_path: bool) -> NatConfig {
    use crate::model::topology::{Timeouts, DEFAULT_MAX_FLOWS, DEFAULT_PORT_MAX, DEFAULT_PORT_MIN};
    let defaults = NatSettings {
        port_min: DEFAULT_PORT_MIN,
        port_max: DEFAULT_PORT_MAX,
        timeouts: Timeouts::default(),
        max_flows: DEFAULT_MAX_FLOWS,
        fast_path,
    };
    let uplink = Ipv4Addr::from(uplink_addr.to_ne_bytes());
    nat_config(&defaults, fast_path, 1, uplink, None, false)
}

/// `CONFIG`: the lab's NAT settings on its uplink.
fn nat_config(
    nat: &NatSettings,
    fast_path: bool,
    uplink_ifindex: u32,
    uplink: Ipv4Addr,
    uplink6: Option<Ipv6Addr>,
    uplink_is_veth: bool,
) -> NatConfig {
    let t = nat.timeouts;
    let mut flags = 0;
    if fast_path {
        flags |= netlab_common::CONFIG_FAST_PATH;
        if uplink_is_veth {
            flags |= netlab_common::CONFIG_UPLINK_PEER;
        }
    }
    NatConfig {
        uplink_addr: addr_from_octets(uplink.octets()),
        uplink_ifindex,
        port_min: nat.port_min,
        port_max: nat.port_max,
        flags,
        timeout_tcp_syn: t.tcp_syn,
        timeout_tcp_established: t.tcp_established,
        timeout_tcp_closing: t.tcp_closing,
        timeout_tcp_rst: t.tcp_rst,
        timeout_udp: t.udp,
        timeout_icmp: t.icmp,
        flow_limit: flow_limit(nat.max_flows),
        flow_limit6: flow_limit6(nat.max_flows),
        uplink_addr6: uplink6.map_or([0; 16], |a| a.octets()),
    }
}

/// One forward's `FORWARD_RULES` entries, one per outside port: they
/// share the forward's counter.
pub type ForwardEntries = Vec<(ForwardKey, ForwardTarget)>;

/// Each forward's entries, in the order of `forwards`.
pub fn forward_entries(forwards: &[Forward]) -> Vec<ForwardEntries> {
    forwards
        .iter()
        .map(|f| {
            f.port_pairs()
                .map(|(outside, inside)| {
                    let (key, target) =
                        forward_entry(f.proto.number(), outside, f.target_addr, inside);
                    let snat_addr = f.snat.map_or(0, |a| addr_from_octets(a.octets()));
                    (
                        key,
                        ForwardTarget {
                            snat_addr,
                            ..target
                        },
                    )
                })
                .collect()
        })
        .collect()
}

/// `FORWARD_RULES`' entry for `proto` port `outside` to `to`:`inside`.
/// `FORWARD6_RULES`' entries.
pub type Forward6Entries = Vec<(ForwardKey, Forward6Target)>;

/// The IPv6 side of `forwards` (a forward applies to both families): each
/// forwarded port to the target interface's IPv6 address, when it has one
/// on a masqueraded dual-stack bridge of this lab host (whose replies
/// NAT66 translates back). Sorted, for the digest.
pub fn forward6_entries(lab: &Lab, forwards: &[Forward]) -> Forward6Entries {
    let mut out: Forward6Entries = forwards
        .iter()
        .filter(|f| f.snat.is_none())
        .filter(|f| f.ipv6)
        .filter_map(|f| Some((f, lab.forward_target6(f)?)))
        .flat_map(|(f, to)| {
            f.port_pairs().map(move |(outside, inside)| {
                (
                    ForwardKey::new(port_to_net(outside), f.proto.number()),
                    Forward6Target {
                        addr: to.octets(),
                        port: port_to_net(inside),
                        counter: 0,
                    },
                )
            })
        })
        .collect();
    out.sort_unstable_by_key(|(k, _)| (k.proto, k.port));
    out
}

fn forward_entry(
    proto: u8,
    outside: u16,
    to: Ipv4Addr,
    inside: u16,
) -> (ForwardKey, ForwardTarget) {
    (
        ForwardKey::new(port_to_net(outside), proto),
        ForwardTarget {
            addr: addr_from_octets(to.octets()),
            port: port_to_net(inside),
            counter: 0,
            snat_addr: 0,
        },
    )
}

/// LAB_SUBNETS: the lab host's bridges, and the subnets behind router
/// nodes that the lab host's routes reach (masqueraded unless the route
/// says otherwise, so their private addresses never leave untranslated;
/// their packets hairpin through the bridge of the route's next hop).
fn subnet_entries(lab: &Lab, bridge_ifindex: &HashMap<String, u32>) -> Vec<(Key<u32>, SubnetInfo)> {
    let bridges: Vec<_> = lab.host_subnets().map(|b| (b, b.subnet)).collect();
    let routes = lab.host_routes.iter().map(|r| RouteTo {
        to: r.to,
        via: r.via,
        masquerade: r.masquerade,
        routed: r.routed,
    });
    let mut entries = family_entries(&bridges, routes, bridge_ifindex);
    // A host port's address: its ifindex is where the forwards across
    // hosts that translate to it leave (flags 0: the outside is refused).
    let host_ports = lab.share.iter().flat_map(|s| &s.host_ports);
    entries.extend(host_ports.filter_map(|p| {
        let ifindex = bridge_ifindex.get(&p.name).copied().unwrap_or(0);
        let net = crate::model::Ipv4Net::new(p.address, 32)?;
        Some((net.lpm_key(), SubnetInfo { flags: 0, ifindex }))
    }));
    entries
}

/// `LAB_SUBNETS6`: the IPv6 subnets of the bridges the lab host is on and
/// those behind router nodes, as `subnet_entries` for IPv4.
fn subnet6_entries(
    lab: &Lab,
    bridge_ifindex: &HashMap<String, u32>,
) -> Vec<(Key<[u8; 16]>, SubnetInfo)> {
    let bridges: Vec<_> = lab
        .host_subnets6()
        .filter_map(|b| Some((b, b.subnet6?)))
        .collect();
    let routes = lab.host_routes6.iter().map(|r| RouteTo {
        to: r.to,
        via: r.via,
        masquerade: r.masquerade,
        routed: r.routed,
    });
    family_entries(&bridges, routes, bridge_ifindex)
}

/// A subnet of one address family as a key of its `LAB_SUBNETS*` trie.
trait LabNet: Copy {
    type Addr: Copy;
    type Bits: aya::Pod;
    /// The trie's key: the prefix, host bits cleared.
    fn lpm_key(self) -> Key<Self::Bits>;
    fn holds(self, addr: Self::Addr) -> bool;
}

impl LabNet for crate::model::Ipv4Net {
    type Addr = Ipv4Addr;
    type Bits = u32;
    fn lpm_key(self) -> Key<u32> {
        let net = self.network();
        Key::new(
            u32::from(net.prefix_len),
            addr_from_octets(net.addr.octets()),
        )
    }
    fn holds(self, addr: Ipv4Addr) -> bool {
        self.contains(addr)
    }
}

impl LabNet for crate::model::Ipv6Net {
    type Addr = Ipv6Addr;
    type Bits = [u8; 16];
    fn lpm_key(self) -> Key<[u8; 16]> {
        let net = self.network();
        Key::new(u32::from(net.prefix_len), net.addr.octets())
    }
    fn holds(self, addr: Ipv6Addr) -> bool {
        self.contains(addr)
    }
}

/// A lab host's route to a subnet behind a router node, of either family.
struct RouteTo<N: LabNet> {
    to: N,
    via: N::Addr,
    masquerade: bool,
    routed: bool,
}

/// One family's subnet entries: each of the lab host's `bridges` (with its
/// subnet of that family), then each subnet a route reaches through a
/// router node on one of them, which shares that bridge's filtering and
/// ifindex (its packets hairpin there).
fn family_entries<N: LabNet>(
    bridges: &[(&Bridge, N)],
    routes: impl Iterator<Item = RouteTo<N>>,
    bridge_ifindex: &HashMap<String, u32>,
) -> Vec<(Key<N::Bits>, SubnetInfo)> {
    let entry = |net: N, flags: u32, bridge: &str| {
        let ifindex = bridge_ifindex.get(bridge).copied().unwrap_or(0);
        (net.lpm_key(), SubnetInfo { flags, ifindex })
    };
    let mut entries: Vec<_> = bridges
        .iter()
        .map(|(b, net)| {
            let flags = subnet_flags(b.masquerade, b.routed, b.filtering);
            entry(*net, flags, &b.name)
        })
        .collect();
    entries.extend(routes.filter_map(|r| {
        let (bridge, _) = bridges.iter().find(|(_, net)| net.holds(r.via))?;
        let flags = subnet_flags(r.masquerade, r.routed, bridge.filtering);
        Some(entry(r.to, flags, &bridge.name))
    }));
    entries
}

/// `LAB_SUBNETS6`' entry for `net`/`prefix_len` (the host bits of `net`
/// cleared, as the trie keys on the prefix only).
pub fn subnet6_entry(
    net: Ipv6Addr,
    prefix_len: u8,
    info: SubnetInfo,
) -> (Key<[u8; 16]>, SubnetInfo) {
    let net = crate::model::Ipv6Net {
        addr: net,
        prefix_len: prefix_len.min(128),
    };
    (net.lpm_key(), info)
}

/// `SUBNET_*` flags of a subnet (a bridge's, or one behind a router node).
pub fn subnet_flags(masquerade: bool, routed: bool, filtering: Filtering) -> u32 {
    let mut flags = 0;
    if masquerade {
        flags |= SUBNET_MASQUERADE;
    }
    if filtering == Filtering::EndpointIndependent {
        flags |= SUBNET_ENDPOINT_INDEPENDENT_FILTERING;
    }
    if routed {
        flags |= SUBNET_ROUTED;
    }
    flags
}

/// FNV-1a (64 bit) over explicitly fed bytes: a digest that stays the same
/// across Rust releases and machines, unlike `DefaultHasher`, so a digest
/// stored by one build of netlab compares equal in the next.
pub(super) struct StableDigest(u64);

impl StableDigest {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(super) fn new() -> StableDigest {
        StableDigest(Self::OFFSET)
    }

    pub(super) fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(Self::PRIME);
        }
        self
    }

    /// A variable-length field, length first, so ("ab","c") and ("a","bc") differ.
    pub(super) fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes(&(bytes.len() as u64).to_le_bytes()).bytes(bytes)
    }

    pub(super) fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

fn maps_digest(c: &MapContents) -> String {
    let mut d = StableDigest::new();
    d.field(bytemuck::bytes_of(&c.config));
    for (ifindex, flags) in &c.ifaces {
        d.bytes(&ifindex.to_le_bytes()).bytes(&flags.to_le_bytes());
    }
    for (k, v) in &c.subnets {
        d.bytes(&k.prefix_len().to_le_bytes())
            .bytes(&k.data().to_le_bytes())
            .field(bytemuck::bytes_of(v));
    }
    for (k, v) in &c.subnets6 {
        d.bytes(&k.prefix_len().to_le_bytes())
            .bytes(&k.data())
            .field(bytemuck::bytes_of(v));
    }
    for (k, v) in c.forwards.iter().flatten() {
        d.field(bytemuck::bytes_of(k)).field(bytemuck::bytes_of(v));
    }
    // Only when there are any: a lab without IPv6 forwards keeps its digest.
    for (k, v) in &c.forwards6 {
        d.field(bytemuck::bytes_of(k)).field(bytemuck::bytes_of(v));
    }
    for (addr, name, port) in &c.node_ports {
        d.bytes(&addr.to_le_bytes())
            .field(name.as_bytes())
            .field(bytemuck::bytes_of(port));
    }
    for (addr, port) in &c.node_ports6 {
        d.bytes(addr).field(bytemuck::bytes_of(port));
    }
    for (ifindex, mac) in &c.tunnel_gateways {
        d.bytes(&ifindex.to_le_bytes()).bytes(mac);
    }
    d.hex()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::default_lab;
    use netlab_common::IPPROTO_TCP;
    use std::collections::BTreeSet;

    const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

    fn default_lab_on_host(lab: &Lab) -> MapContents {
        let host = LabHostIfaces {
            bridge_ifindex: HashMap::from([("v-net-0".to_string(), 1)]),
            uplink_ifindex: 1,
            uplink_address: UPLINK,
            uplink_address6: None,
            uplink_is_veth: false,
            node_ports: Vec::new(),
            node_ports6: Vec::new(),
            tunnel_ifindex: HashMap::new(),
        };
        MapContents::of_lab(lab, &host, false)
    }

    fn subnets(c: &MapContents) -> Vec<(u32, u32, SubnetInfo)> {
        c.subnets
            .iter()
            .map(|(k, v)| (k.prefix_len(), k.data(), *v))
            .collect()
    }

    /// The harnesses that run the programs without a lab (program tests,
    /// micro-benchmark) write out the default lab's description by hand:
    /// it must be what `up` would write for that lab.
    #[test]
    fn the_harness_description_is_the_default_labs() {
        let lab = default_lab();
        let from_lab = default_lab_on_host(&lab);
        let written =
            MapContents::with_config(default_config(addr_from_octets(UPLINK.octets()), false))
                .subnet(Ipv4Addr::new(192, 168, 15, 0), 24, SUBNET_MASQUERADE, 1)
                .subnet6(
                    "fdec:60cc:b1bd:15::".parse().unwrap(),
                    64,
                    SUBNET_MASQUERADE,
                    1,
                )
                .forward(IPPROTO_TCP, 80, Ipv4Addr::new(192, 168, 15, 2), 80);
        assert_eq!(from_lab.config, written.config);
        assert_eq!(subnets(&from_lab), subnets(&written));
        let subnets6 = |c: &MapContents| -> Vec<(u32, [u8; 16], SubnetInfo)> {
            c.subnets6
                .iter()
                .map(|(k, v)| (k.prefix_len(), k.data(), *v))
                .collect()
        };
        assert_eq!(subnets6(&from_lab), subnets6(&written));
        assert_eq!(subnets6(&from_lab).len(), 1);
        assert_eq!(from_lab.forwards, written.forwards);
        assert_eq!(from_lab.ifaces, vec![(1, netlab_common::LAB_IFACE_BRIDGE)]);
    }

    #[test]
    fn an_ipv6_subnet_is_keyed_by_its_prefix_and_digested() {
        let info = SubnetInfo {
            flags: SUBNET_MASQUERADE,
            ifindex: 3,
        };
        let (key, v) = subnet6_entry("fd00:15::9".parse().unwrap(), 64, info);
        assert_eq!(key.prefix_len(), 64);
        assert_eq!(
            Ipv6Addr::from(key.data()),
            "fd00:15::".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(v, info);
        let (all, _) = subnet6_entry("fd00:15::9".parse().unwrap(), 0, info);
        assert_eq!(all.data(), [0; 16]);
        let config = default_config(addr_from_octets(UPLINK.octets()), false);
        let v4_only = MapContents::with_config(config).digest();
        let dual = MapContents::with_config(config).subnet6(
            "fd00:15::".parse().unwrap(),
            64,
            SUBNET_MASQUERADE,
            3,
        );
        assert_ne!(v4_only, dual.digest());
    }

    /// A forward applies to both families: to the target interface's IPv6
    /// address when its bridge is masqueraded and dual-stack; a node with
    /// no IPv6 address, or a bridge with none, has no IPv6 side.
    #[test]
    fn a_forward_reaches_its_node_over_ipv6_where_the_node_has_an_address() {
        use crate::model::{
            test_support::{with_base, with_base6},
            validate::parse,
        };
        let nodes =
            "[[nodes]]\nname = \"blue\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.2\"\n";
        let forward =
            "[[forwards]]\nprotocol = \"udp\"\nport = \"5000-5001\"\nto = \"blue:7000-7001\"\n";
        let dual = parse(
            "lab.toml",
            &with_base6(&format!("{nodes}address6 = \"fd00:15::2\"\n{forward}")),
        )
        .unwrap();
        let entries = forward6_entries(&dual, &dual.forwards);
        let blue: Ipv6Addr = "fd00:15::2".parse().unwrap();
        assert_eq!(
            entries,
            vec![
                (
                    ForwardKey::new(port_to_net(5000), 17),
                    Forward6Target {
                        addr: blue.octets(),
                        port: port_to_net(7000),
                        counter: 0
                    }
                ),
                (
                    ForwardKey::new(port_to_net(5001), 17),
                    Forward6Target {
                        addr: blue.octets(),
                        port: port_to_net(7001),
                        counter: 0
                    }
                ),
            ]
        );
        let v4_node = parse("lab.toml", &with_base6(&format!("{nodes}{forward}"))).unwrap();
        assert!(forward6_entries(&v4_node, &v4_node.forwards).is_empty());
        let v4_lab = parse("lab.toml", &with_base(&format!("{nodes}{forward}"))).unwrap();
        assert!(forward6_entries(&v4_lab, &v4_lab.forwards).is_empty());
        // `ipv6 = false`: IPv4 only, the IPv4 entries as ever.
        let v4_only = parse(
            "lab.toml",
            &with_base6(&format!(
                "{nodes}address6 = \"fd00:15::2\"\n{forward}ipv6 = false\n"
            )),
        )
        .unwrap();
        assert!(forward6_entries(&v4_only, &v4_only.forwards).is_empty());
        assert_eq!(forward_entries(&v4_only.forwards).concat().len(), 2);
    }

    /// A share's tunnel found on the lab host gets its bridge's anycast
    /// MAC in `TUNNEL_GATEWAYS`, and changes the digest; a lab on one host
    /// has none.
    #[test]
    fn a_shares_tunnel_holds_its_bridges_anycast_mac() {
        use crate::model::test_support::{share_of, stretched};
        let text =
            stretched("[[nodes]]\nname = \"n1\"\nbridge = \"br0\"\naddress = \"192.168.15.1\"\n");
        let lab = share_of(&text, "a");
        let mut host = LabHostIfaces {
            bridge_ifindex: HashMap::from([("br0".to_string(), 3)]),
            uplink_ifindex: 1,
            uplink_address: UPLINK,
            uplink_address6: None,
            uplink_is_veth: false,
            node_ports: Vec::new(),
            node_ports6: Vec::new(),
            tunnel_ifindex: HashMap::new(),
        };
        let without = MapContents::of_lab(&lab, &host, false);
        assert!(without.tunnel_gateways.is_empty());
        host.tunnel_ifindex.insert("vx-42".to_string(), 7);
        let with = MapContents::of_lab(&lab, &host, false);
        assert_eq!(
            with.tunnel_gateways,
            vec![(7, [0x02, 0x4e, 0x4c, 0, 0, 42])]
        );
        assert_ne!(with.digest(), without.digest());
        assert!(default_lab_on_host(&default_lab())
            .tunnel_gateways
            .is_empty());
    }

    /// A lab host with several lab interfaces (bridges, host ports) is
    /// described the same however its hash map iterates: 32 maps, each with
    /// a seed of its own, give one digest.
    #[test]
    fn the_digest_does_not_depend_on_the_order_of_interfaces() {
        let lab = default_lab();
        let digests: BTreeSet<String> = (0..32)
            .map(|_| {
                let host = LabHostIfaces {
                    bridge_ifindex: (1..=6).map(|i| (format!("if{i}"), i)).collect(),
                    uplink_ifindex: 9,
                    uplink_address: UPLINK,
                    uplink_address6: None,
                    uplink_is_veth: false,
                    node_ports: Vec::new(),
                    node_ports6: Vec::new(),
                    tunnel_ifindex: HashMap::new(),
                };
                MapContents::of_lab(&lab, &host, false).digest()
            })
            .collect();
        assert_eq!(digests.len(), 1, "{digests:?}");
    }

    #[test]
    fn the_digest_tells_a_changed_forward() {
        let lab = default_lab();
        let before = default_lab_on_host(&lab).digest();
        assert_eq!(before, default_lab_on_host(&lab).digest());
        let mut moved = lab.clone();
        moved.forwards[0].port_first = 81;
        moved.forwards[0].port_last = 81;
        assert_ne!(before, default_lab_on_host(&moved).digest());
    }
}
