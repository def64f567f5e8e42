//! Desired state (from a [`Lab`]), actual state (observed by the effects
//! layer), and the plan that turns one into the other.
//!
//! Everything a lab creates carries its ownership marker, so the actual state
//! is "what this lab owns", found by name even without a state file; the plan
//! creates what is missing, fixes what differs and deletes what the lab owns
//! but no longer wants.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
    path::PathBuf,
};

use serde::Serialize;

use super::{
    net::Ipv4Net,
    topology::{Attachment, Lab},
};

/// Alias set on everything a lab creates: namespaces (on their `lo`) and the
/// lab host's links. `netlab:<lab>`.
pub fn owner_alias(lab: &str) -> String {
    format!("netlab:{lab}")
}

/// Link group set atomically when a lab-host link is created (the alias needs
/// a second request, so a crash in between would otherwise leave an
/// unmarked link). FNV-1a of the owner alias, kept away from the small group
/// numbers people assign by hand.
pub fn owner_group(lab: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in owner_alias(lab).bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h | 0x4000_0000
}

/// First line of every file a lab writes; how `down` finds them.
pub fn file_marker(lab: &str) -> String {
    format!("# written by netlab for lab {lab}; `netlab down` removes it")
}

/// Where `ip netns exec` finds per-namespace configuration files.
pub const NETNS_ETC: &str = "/etc/netns";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RouteSpec {
    pub to: Ipv4Net,
    pub via: Ipv4Addr,
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.to.prefix_len == 0 {
            write!(f, "default via {}", self.via)
        } else {
            write!(f, "{} via {}", self.to, self.via)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostVeth {
    pub bridge: String,
    pub netns: String,
    pub ifname: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct CableVeth {
    pub a_netns: String,
    pub a_ifname: String,
    pub b_netns: String,
    pub b_ifname: String,
}

/// What a node namespace should contain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeDesired {
    /// veth name → address.
    pub addresses: BTreeMap<String, Ipv4Net>,
    pub routes: BTreeSet<RouteSpec>,
    pub forwarding: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Desired {
    pub lab: String,
    /// netns → contents.
    pub nodes: BTreeMap<String, NodeDesired>,
    /// Bridge name → the lab host's address on it.
    pub bridges: BTreeMap<String, Option<Ipv4Net>>,
    /// Lab-host end name → where its peer lives.
    pub host_veths: BTreeMap<String, HostVeth>,
    pub cables: BTreeSet<CableVeth>,
    pub host_routes: BTreeSet<RouteSpec>,
    pub files: BTreeMap<PathBuf, String>,
}

impl Desired {
    /// `host_nameservers`: the lab host's own nameservers, used when the lab
    /// names none.
    pub fn from_lab(lab: &Lab, host_nameservers: &[Ipv4Addr]) -> Desired {
        let mut d = Desired {
            lab: lab.name.clone(),
            ..Default::default()
        };
        for b in &lab.bridges {
            d.bridges.insert(b.name.clone(), b.gateway_net());
        }
        for n in &lab.nodes {
            let mut nd = NodeDesired {
                forwarding: n.forwarding,
                ..Default::default()
            };
            for i in &n.interfaces {
                nd.addresses.insert(i.name.clone(), i.address);
                if let Attachment::Bridge { bridge, host_name } = &i.attachment {
                    d.host_veths.insert(
                        host_name.clone(),
                        HostVeth {
                            bridge: bridge.clone(),
                            netns: n.netns.clone(),
                            ifname: i.name.clone(),
                        },
                    );
                }
            }
            if let Some(gw) = n.gateway {
                nd.routes.insert(RouteSpec {
                    to: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("/0"),
                    via: gw,
                });
            }
            for r in &n.routes {
                nd.routes.insert(RouteSpec {
                    to: r.to,
                    via: r.via,
                });
            }
            d.nodes.insert(n.netns.clone(), nd);
        }
        for c in &lab.cables {
            d.cables.insert(CableVeth {
                a_netns: lab.netns_of(&c.a.node),
                a_ifname: c.a.interface.clone(),
                b_netns: lab.netns_of(&c.b.node),
                b_ifname: c.b.interface.clone(),
            });
        }
        for r in &lab.host_routes {
            d.host_routes.insert(RouteSpec {
                to: r.to,
                via: r.via,
            });
        }
        let hosts = hosts_file(lab);
        let resolv = resolv_conf(lab, host_nameservers);
        for n in &lab.nodes {
            let dir = PathBuf::from(NETNS_ETC).join(&n.netns);
            d.files.insert(dir.join("hosts"), hosts.clone());
            d.files.insert(dir.join("resolv.conf"), resolv.clone());
        }
        d
    }
}

/// `/etc/hosts` for every node: every node by name (its first address), and
/// `<node>-<interface>` for each of its addresses.
pub fn hosts_file(lab: &Lab) -> String {
    let mut s = file_marker(&lab.name);
    s.push_str("\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for n in &lab.nodes {
        for (k, i) in n.interfaces.iter().enumerate() {
            if k == 0 {
                s.push_str(&format!(
                    "{}\t{} {}-{}\n",
                    i.address.addr, n.name, n.name, i.name
                ));
            } else {
                s.push_str(&format!("{}\t{}-{}\n", i.address.addr, n.name, i.name));
            }
        }
    }
    for b in &lab.bridges {
        if let Some(gw) = b.gateway {
            s.push_str(&format!("{gw}\t{}-gateway\n", b.name));
        }
    }
    s
}

pub fn resolv_conf(lab: &Lab, host_nameservers: &[Ipv4Addr]) -> String {
    let mut s = file_marker(&lab.name);
    s.push('\n');
    let servers: Vec<Ipv4Addr> = match &lab.dns.nameservers {
        Some(list) => list.clone(),
        // A loopback resolver (systemd-resolved's 127.0.0.53) is not there
        // inside a node's own network namespace.
        None => host_nameservers
            .iter()
            .copied()
            .filter(|a| !a.is_loopback())
            .collect(),
    };
    if !lab.dns.search.is_empty() {
        s.push_str(&format!("search {}\n", lab.dns.search.join(" ")));
    }
    for ns in servers {
        s.push_str(&format!("nameserver {ns}\n"));
    }
    s
}

/// Nameservers listed in a resolv.conf text.
pub fn parse_nameservers(resolv: &str) -> Vec<Ipv4Addr> {
    resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse().ok())
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    Bridge,
    Veth,
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkState {
    pub kind: LinkKind,
    pub up: bool,
    pub controller: Option<String>,
    pub addresses: BTreeSet<Ipv4Net>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeActual {
    /// Every link but `lo`.
    pub links: BTreeMap<String, LinkState>,
    pub lo_up: bool,
    /// Routes netlab manages (protocol static) in the main table.
    pub routes: BTreeSet<RouteSpec>,
    pub forwarding: bool,
}

/// What the lab owns right now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Actual {
    /// Owned namespaces and what they hold.
    pub nodes: BTreeMap<String, NodeActual>,
    /// Owned links on the lab host.
    pub host_links: BTreeMap<String, LinkState>,
    /// netlab-managed routes on the lab host.
    pub host_routes: BTreeSet<RouteSpec>,
    pub host_forwarding: bool,
    /// Files carrying the lab's marker.
    pub files: BTreeMap<PathBuf, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    DeleteNamespace {
        netns: String,
    },
    DeleteHostLink {
        name: String,
    },
    DeleteNodeLink {
        netns: String,
        name: String,
    },
    DeleteHostRoute {
        route: RouteSpec,
    },
    RemoveFile {
        path: PathBuf,
    },
    CreateNamespace {
        netns: String,
    },
    CreateBridge {
        name: String,
    },
    CreateHostVeth {
        name: String,
        bridge: String,
        netns: String,
        ifname: String,
    },
    SetController {
        name: String,
        bridge: String,
    },
    CreateCable {
        cable: CableVeth,
    },
    AddHostAddress {
        link: String,
        address: Ipv4Net,
    },
    DeleteHostAddress {
        link: String,
        address: Ipv4Net,
    },
    SetHostLinkUp {
        name: String,
    },
    AddNodeAddress {
        netns: String,
        link: String,
        address: Ipv4Net,
    },
    DeleteNodeAddress {
        netns: String,
        link: String,
        address: Ipv4Net,
    },
    SetNodeLinkUp {
        netns: String,
        link: String,
    },
    AddNodeRoute {
        netns: String,
        route: RouteSpec,
    },
    DeleteNodeRoute {
        netns: String,
        route: RouteSpec,
    },
    SetNodeForwarding {
        netns: String,
        on: bool,
    },
    EnableHostForwarding,
    AddHostRoute {
        route: RouteSpec,
    },
    WriteFile {
        path: PathBuf,
        content: String,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::DeleteNamespace { netns } => write!(f, "delete namespace {netns}"),
            Action::DeleteHostLink { name } => write!(f, "delete link {name} on the lab host"),
            Action::DeleteNodeLink { netns, name } => {
                write!(f, "delete link {name} in netns {netns}")
            }
            Action::DeleteHostRoute { route } => write!(f, "delete route {route} on the lab host"),
            Action::RemoveFile { path } => write!(f, "remove {}", path.display()),
            Action::CreateNamespace { netns } => write!(f, "create namespace {netns}"),
            Action::CreateBridge { name } => write!(f, "create bridge {name}"),
            Action::CreateHostVeth {
                name,
                bridge,
                netns,
                ifname,
            } => {
                write!(
                    f,
                    "create veth {ifname} in netns {netns} (peer {name} on bridge {bridge})"
                )
            }
            Action::SetController { name, bridge } => write!(f, "attach {name} to bridge {bridge}"),
            Action::CreateCable { cable } => write!(
                f,
                "create veth {} in netns {} (peer {} in netns {})",
                cable.a_ifname, cable.a_netns, cable.b_ifname, cable.b_netns
            ),
            Action::AddHostAddress { link, address } => {
                write!(f, "add address {address} to {link}")
            }
            Action::DeleteHostAddress { link, address } => {
                write!(f, "delete address {address} from {link}")
            }
            Action::SetHostLinkUp { name } => write!(f, "set {name} up"),
            Action::AddNodeAddress {
                netns,
                link,
                address,
            } => {
                write!(f, "add address {address} to {link} in netns {netns}")
            }
            Action::DeleteNodeAddress {
                netns,
                link,
                address,
            } => {
                write!(f, "delete address {address} from {link} in netns {netns}")
            }
            Action::SetNodeLinkUp { netns, link } => write!(f, "set {link} up in netns {netns}"),
            Action::AddNodeRoute { netns, route } => {
                write!(f, "add route {route} in netns {netns}")
            }
            Action::DeleteNodeRoute { netns, route } => {
                write!(f, "delete route {route} in netns {netns}")
            }
            Action::SetNodeForwarding { netns, on } => {
                write!(
                    f,
                    "turn IPv4 forwarding {} in netns {netns}",
                    if *on { "on" } else { "off" }
                )
            }
            Action::EnableHostForwarding => write!(f, "turn IPv4 forwarding on on the lab host"),
            Action::AddHostRoute { route } => write!(f, "add route {route} on the lab host"),
            Action::WriteFile { path, .. } => write!(f, "write {}", path.display()),
        }
    }
}

/// The actions that turn `actual` into `desired`, in an order that works:
/// deletions first, then namespaces, links, addresses, routes and files.
pub fn plan(desired: &Desired, actual: &Actual) -> Vec<Action> {
    let mut del = Vec::new();
    let mut add = Vec::new();

    // Namespaces the lab owns but no longer wants.
    for netns in actual.nodes.keys() {
        if !desired.nodes.contains_key(netns) {
            del.push(Action::DeleteNamespace {
                netns: netns.clone(),
            });
        }
    }
    let node_link =
        |netns: &str, name: &str| actual.nodes.get(netns).and_then(|n| n.links.get(name));

    // Host veths: present only when both ends are where they belong.
    let mut fresh_host_veths: BTreeSet<&str> = BTreeSet::new();
    let mut doomed_node_links: BTreeSet<(String, String)> = BTreeSet::new();
    for (name, want) in &desired.host_veths {
        let host_end = actual.host_links.get(name);
        let node_end = node_link(&want.netns, &want.ifname);
        let host_ok = host_end.is_some_and(|l| l.kind == LinkKind::Veth);
        let node_ok = node_end.is_some_and(|l| l.kind == LinkKind::Veth);
        if host_ok && node_ok {
            if host_end.and_then(|l| l.controller.as_deref()) != Some(want.bridge.as_str()) {
                add.push(Action::SetController {
                    name: name.clone(),
                    bridge: want.bridge.clone(),
                });
            }
            continue;
        }
        if host_end.is_some() {
            del.push(Action::DeleteHostLink { name: name.clone() });
        }
        if node_end.is_some() {
            doomed_node_links.insert((want.netns.clone(), want.ifname.clone()));
        }
        fresh_host_veths.insert(name);
    }
    let mut fresh_cables: BTreeSet<&CableVeth> = BTreeSet::new();
    for cable in &desired.cables {
        let a = node_link(&cable.a_netns, &cable.a_ifname);
        let b = node_link(&cable.b_netns, &cable.b_ifname);
        if a.is_some_and(|l| l.kind == LinkKind::Veth)
            && b.is_some_and(|l| l.kind == LinkKind::Veth)
        {
            continue;
        }
        if a.is_some() {
            doomed_node_links.insert((cable.a_netns.clone(), cable.a_ifname.clone()));
        }
        if b.is_some() {
            doomed_node_links.insert((cable.b_netns.clone(), cable.b_ifname.clone()));
        }
        fresh_cables.insert(cable);
    }
    // Links in kept namespaces that nothing wants any more.
    for (netns, node) in &actual.nodes {
        let Some(want) = desired.nodes.get(netns) else {
            continue;
        };
        for name in node.links.keys() {
            if !want.addresses.contains_key(name) {
                doomed_node_links.insert((netns.clone(), name.clone()));
            }
        }
    }
    for (netns, name) in &doomed_node_links {
        if desired.nodes.contains_key(netns) {
            del.push(Action::DeleteNodeLink {
                netns: netns.clone(),
                name: name.clone(),
            });
        }
    }
    // Lab-host links the lab owns but no longer wants (veths before bridges).
    let mut unwanted: Vec<(&String, &LinkState)> = actual
        .host_links
        .iter()
        .filter(|(name, _)| {
            !desired.host_veths.contains_key(*name) && !desired.bridges.contains_key(*name)
        })
        .collect();
    unwanted.sort_by_key(|(_, l)| l.kind == LinkKind::Bridge);
    for (name, _) in unwanted {
        del.push(Action::DeleteHostLink { name: name.clone() });
    }
    for route in &actual.host_routes {
        if !desired.host_routes.contains(route) {
            del.push(Action::DeleteHostRoute { route: *route });
        }
    }
    for path in actual.files.keys() {
        if !desired.files.contains_key(path) {
            del.push(Action::RemoveFile { path: path.clone() });
        }
    }

    // Creations.
    for netns in desired.nodes.keys() {
        if !actual.nodes.contains_key(netns) {
            add.push(Action::CreateNamespace {
                netns: netns.clone(),
            });
        }
    }
    for (name, gateway) in &desired.bridges {
        let have = actual.host_links.get(name);
        match have {
            Some(l) if l.kind == LinkKind::Bridge => {}
            Some(_) => {
                del.push(Action::DeleteHostLink { name: name.clone() });
                add.push(Action::CreateBridge { name: name.clone() });
            }
            None => add.push(Action::CreateBridge { name: name.clone() }),
        }
        let have_addrs = have
            .filter(|l| l.kind == LinkKind::Bridge)
            .map(|l| l.addresses.clone())
            .unwrap_or_default();
        for a in &have_addrs {
            if Some(*a) != *gateway {
                add.push(Action::DeleteHostAddress {
                    link: name.clone(),
                    address: *a,
                });
            }
        }
        if let Some(gw) = gateway {
            if !have_addrs.contains(gw) {
                add.push(Action::AddHostAddress {
                    link: name.clone(),
                    address: *gw,
                });
            }
        }
        if !have.is_some_and(|l| l.kind == LinkKind::Bridge && l.up) {
            add.push(Action::SetHostLinkUp { name: name.clone() });
        }
    }
    for (name, want) in &desired.host_veths {
        if fresh_host_veths.contains(name.as_str()) {
            add.push(Action::CreateHostVeth {
                name: name.clone(),
                bridge: want.bridge.clone(),
                netns: want.netns.clone(),
                ifname: want.ifname.clone(),
            });
        } else if !actual.host_links.get(name).is_some_and(|l| l.up) {
            add.push(Action::SetHostLinkUp { name: name.clone() });
        }
    }
    for cable in fresh_cables {
        add.push(Action::CreateCable {
            cable: cable.clone(),
        });
    }
    // Inside the nodes: addresses, link state, routes, forwarding.
    let fresh_links: BTreeSet<(String, String)> = desired
        .host_veths
        .iter()
        .filter(|(name, _)| fresh_host_veths.contains(name.as_str()))
        .map(|(_, v)| (v.netns.clone(), v.ifname.clone()))
        .chain(
            desired
                .cables
                .iter()
                .filter(|c| {
                    add.iter()
                        .any(|a| matches!(a, Action::CreateCable { cable } if cable == *c))
                })
                .flat_map(|c| {
                    [
                        (c.a_netns.clone(), c.a_ifname.clone()),
                        (c.b_netns.clone(), c.b_ifname.clone()),
                    ]
                }),
        )
        .collect();
    let mut routes = Vec::new();
    for (netns, want) in &desired.nodes {
        let have = actual.nodes.get(netns);
        for (link, address) in &want.addresses {
            let fresh = fresh_links.contains(&(netns.clone(), link.clone()));
            let have_link = if fresh {
                None
            } else {
                have.and_then(|n| n.links.get(link))
            };
            let have_addrs = have_link.map(|l| l.addresses.clone()).unwrap_or_default();
            for a in &have_addrs {
                if a != address {
                    add.push(Action::DeleteNodeAddress {
                        netns: netns.clone(),
                        link: link.clone(),
                        address: *a,
                    });
                }
            }
            if !have_addrs.contains(address) {
                add.push(Action::AddNodeAddress {
                    netns: netns.clone(),
                    link: link.clone(),
                    address: *address,
                });
            }
            if !have_link.is_some_and(|l| l.up) {
                add.push(Action::SetNodeLinkUp {
                    netns: netns.clone(),
                    link: link.clone(),
                });
            }
        }
        if !have.is_some_and(|n| n.lo_up) {
            add.push(Action::SetNodeLinkUp {
                netns: netns.clone(),
                link: "lo".into(),
            });
        }
        let have_routes = have.map(|n| n.routes.clone()).unwrap_or_default();
        // Routes through a re-created link vanished with it, and the kernel
        // flushes routes whose gateway an address change leaves unreachable.
        let relinked = want
            .addresses
            .keys()
            .any(|l| fresh_links.contains(&(netns.clone(), l.clone())))
            || add
                .iter()
                .any(|a| matches!(a, Action::DeleteNodeAddress { netns: n, .. } if n == netns));
        for r in &have_routes {
            if !want.routes.contains(r) && !relinked {
                routes.push(Action::DeleteNodeRoute {
                    netns: netns.clone(),
                    route: *r,
                });
            }
        }
        for r in &want.routes {
            if !have_routes.contains(r) || relinked {
                routes.push(Action::AddNodeRoute {
                    netns: netns.clone(),
                    route: *r,
                });
            }
        }
        if have.map(|n| n.forwarding).unwrap_or(false) != want.forwarding {
            add.push(Action::SetNodeForwarding {
                netns: netns.clone(),
                on: want.forwarding,
            });
        }
    }
    add.extend(routes);
    if !actual.host_forwarding && !desired.host_veths.is_empty() {
        add.push(Action::EnableHostForwarding);
    }
    for route in &desired.host_routes {
        if !actual.host_routes.contains(route) {
            add.push(Action::AddHostRoute { route: *route });
        }
    }
    for (path, content) in &desired.files {
        if actual.files.get(path) != Some(content) {
            add.push(Action::WriteFile {
                path: path.clone(),
                content: content.clone(),
            });
        }
    }
    del.extend(add);
    del
}

/// Everything that `down` removes: the plan towards an empty lab.
pub fn teardown(lab: &str, actual: &Actual) -> Vec<Action> {
    let empty = Desired {
        lab: lab.to_string(),
        ..Default::default()
    };
    plan(&empty, actual)
        .into_iter()
        // Routes and addresses go with their links and namespaces.
        .filter(|a| !matches!(a, Action::DeleteHostRoute { .. }))
        .collect()
}

/// What the system looks like once every action of a plan for `desired`
/// has succeeded: what `observe` would find on a converged lab host. The
/// planner's tests and the topology fuzz target check plans against it.
pub fn converged(desired: &Desired) -> Actual {
    let mut a = Actual {
        host_forwarding: true,
        ..Default::default()
    };
    for (name, gw) in &desired.bridges {
        a.host_links.insert(
            name.clone(),
            LinkState {
                kind: LinkKind::Bridge,
                up: true,
                controller: None,
                addresses: gw.iter().copied().collect(),
            },
        );
    }
    for (name, v) in &desired.host_veths {
        a.host_links.insert(
            name.clone(),
            LinkState {
                kind: LinkKind::Veth,
                up: true,
                controller: Some(v.bridge.clone()),
                addresses: BTreeSet::new(),
            },
        );
    }
    for (netns, n) in &desired.nodes {
        a.nodes.insert(
            netns.clone(),
            NodeActual {
                links: n
                    .addresses
                    .iter()
                    .map(|(l, addr)| {
                        (
                            l.clone(),
                            LinkState {
                                kind: LinkKind::Veth,
                                up: true,
                                controller: None,
                                addresses: [*addr].into(),
                            },
                        )
                    })
                    .collect(),
                lo_up: true,
                routes: n.routes.clone(),
                forwarding: n.forwarding,
            },
        );
    }
    a.host_routes = desired.host_routes.clone();
    a.files = desired.files.clone();
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::topology::{default_lab, parse};

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn default_lab_from_nothing() {
        let lab = default_lab();
        let d = Desired::from_lab(&lab, &["10.0.0.53".parse().unwrap()]);
        let p = plan(&d, &Actual::default());
        let text: Vec<String> = p.iter().map(|a| a.to_string()).collect();
        let expect = [
            "create namespace blue",
            "create namespace red",
            "create bridge v-net-0",
            "add address 192.168.15.5/24 to v-net-0",
            "set v-net-0 up",
            "create veth veth-blue in netns blue (peer veth-blue-br on bridge v-net-0)",
            "create veth veth-red in netns red (peer veth-red-br on bridge v-net-0)",
            "add address 192.168.15.2/24 to veth-blue in netns blue",
            "set veth-blue up in netns blue",
            "set lo up in netns blue",
            "add address 192.168.15.1/24 to veth-red in netns red",
            "set veth-red up in netns red",
            "set lo up in netns red",
            "add route default via 192.168.15.5 in netns blue",
            "add route default via 192.168.15.5 in netns red",
            "turn IPv4 forwarding on on the lab host",
            "write /etc/netns/blue/hosts",
            "write /etc/netns/blue/resolv.conf",
            "write /etc/netns/red/hosts",
            "write /etc/netns/red/resolv.conf",
        ];
        assert_eq!(text, expect);
    }

    #[test]
    fn converged_lab_plans_nothing() {
        let d = Desired::from_lab(&default_lab(), &[]);
        assert_eq!(plan(&d, &converged(&d)), vec![]);
    }

    #[test]
    fn edit_converges_removed_node_and_changed_address() {
        let before = Desired::from_lab(&default_lab(), &[]);
        let actual = converged(&before);
        let edited = parse(
            "lab.toml",
            r#"
            [[bridges]]
            name = "v-net-0"
            subnet = "192.168.15.0/24"
            gateway = "192.168.15.5"
            [[nodes]]
            name = "red"
            bridge = "v-net-0"
            address = "192.168.15.9"
            "#,
        )
        .unwrap();
        let after = Desired::from_lab(&edited, &[]);
        let text: Vec<String> = plan(&after, &actual)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            text,
            [
                "delete namespace blue",
                "delete link veth-blue-br on the lab host",
                "remove /etc/netns/blue/hosts",
                "remove /etc/netns/blue/resolv.conf",
                "delete address 192.168.15.1/24 from veth-red in netns red",
                "add address 192.168.15.9/24 to veth-red in netns red",
                "add route default via 192.168.15.5 in netns red",
                "write /etc/netns/red/hosts",
            ]
        );
        // And the result of that plan is converged.
        assert_eq!(plan(&after, &converged(&after)), vec![]);
    }

    #[test]
    fn half_made_veth_is_recreated() {
        let d = Desired::from_lab(&default_lab(), &[]);
        let mut actual = converged(&d);
        actual.nodes.get_mut("red").unwrap().links.clear();
        let text: Vec<String> = plan(&d, &actual).iter().map(|a| a.to_string()).collect();
        assert_eq!(
            text,
            [
                "delete link veth-red-br on the lab host",
                "create veth veth-red in netns red (peer veth-red-br on bridge v-net-0)",
                "add address 192.168.15.1/24 to veth-red in netns red",
                "set veth-red up in netns red",
                "add route default via 192.168.15.5 in netns red",
            ]
        );
    }

    #[test]
    fn teardown_removes_everything_owned() {
        let d = Desired::from_lab(&default_lab(), &[]);
        let text: Vec<String> = teardown("netlab", &converged(&d))
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            text,
            [
                "delete namespace blue",
                "delete namespace red",
                "delete link veth-blue-br on the lab host",
                "delete link veth-red-br on the lab host",
                "delete link v-net-0 on the lab host",
                "remove /etc/netns/blue/hosts",
                "remove /etc/netns/blue/resolv.conf",
                "remove /etc/netns/red/hosts",
                "remove /etc/netns/red/resolv.conf",
            ]
        );
        assert!(teardown("netlab", &Actual::default()).is_empty());
    }

    #[test]
    fn router_and_cables() {
        let lab = parse(
            "router.toml",
            r#"
            [[nodes]]
            name = "a"
            routes = [{ to = "10.0.2.0/24", via = "10.0.1.1" }]
            [[nodes]]
            name = "r"
            forwarding = true
            [[nodes]]
            name = "b"
            gateway = "10.0.2.1"
            [[cables]]
            a = { node = "a", address = "10.0.1.2/24" }
            b = { node = "r", address = "10.0.1.1/24" }
            [[cables]]
            a = { node = "r", address = "10.0.2.1/24" }
            b = { node = "b", address = "10.0.2.2/24" }
            "#,
        )
        .unwrap();
        let d = Desired::from_lab(&lab, &[]);
        assert_eq!(d.cables.len(), 2);
        assert!(d.nodes["r"].forwarding);
        assert_eq!(d.nodes["r"].addresses.len(), 2);
        assert_eq!(d.nodes["a"].addresses["veth-a"], net("10.0.1.2/24"));
        assert_eq!(d.nodes["r"].addresses["eth0"], net("10.0.1.1/24"));
        assert_eq!(d.nodes["r"].addresses["eth1"], net("10.0.2.1/24"));
        let p = plan(&d, &Actual::default());
        assert!(p.contains(&Action::SetNodeForwarding {
            netns: "r".into(),
            on: true
        }));
        assert!(p
            .iter()
            .any(|a| a.to_string() == "add route 10.0.2.0/24 via 10.0.1.1 in netns a"));
        assert!(p
            .iter()
            .any(|a| a.to_string() == "add route default via 10.0.2.1 in netns b"));
        // No bridge, so nothing on the lab host at all.
        assert!(!p.contains(&Action::EnableHostForwarding));
        assert_eq!(plan(&d, &converged(&d)), vec![]);
    }

    #[test]
    fn dns_files_name_every_node() {
        let lab = default_lab();
        let hosts = hosts_file(&lab);
        assert!(hosts.starts_with(&file_marker("netlab")));
        assert!(hosts.contains("192.168.15.1\tred red-veth-red\n"));
        assert!(hosts.contains("192.168.15.2\tblue blue-veth-blue\n"));
        assert!(hosts.contains("192.168.15.5\tv-net-0-gateway\n"));
        let resolv = resolv_conf(
            &lab,
            &["127.0.0.53".parse().unwrap(), "10.1.1.1".parse().unwrap()],
        );
        assert!(resolv.contains("nameserver 10.1.1.1\n"));
        assert!(!resolv.contains("127.0.0.53"));
        assert_eq!(
            parse_nameservers("# x\nnameserver 1.1.1.1\nnameserver ::1\n nameserver 9.9.9.9 \n"),
            vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(9, 9, 9, 9)]
        );
    }

    #[test]
    fn owner_group_is_stable_and_nonzero() {
        assert_eq!(owner_group("netlab"), owner_group("netlab"));
        assert_ne!(owner_group("netlab"), owner_group("other"));
        assert!(owner_group("x") >= 0x4000_0000);
    }
}
