//! What stands in a lab's way on a particular lab host: the checks that
//! need the host's facts, made before anything is created (by `up`, and by
//! `check --host-netns`). Pure: the effects layer gathers [`HostFacts`],
//! this finds the [`Problem`]s, each located through the file's
//! [`SourceMap`] like the file's own (`lab.toml:4: bridges[0].subnet: …`,
//! exit code 2).
//!
//! - a lab subnet (bridge, cable, `[[routes]]` destination) overlapping a
//!   route of the host (other than its default route and the lab's own):
//!   on a real host, the lab would cut it off from those addresses;
//! - the NAT port range overlapping `ip_local_port_range`;
//! - a forward of a port on which the lab host listens (naming the
//!   process), unless the forward says `take_host_port = true`;
//! - a namespace or lab-host interface the lab would make that exists and
//!   is not the lab's (naming the lab that owns it, if one does);
//! - an uplink that is not there, has not the address, or carries another
//!   lab's NAT.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{
    net::{IpNet, Ipv4Net, Ipv6Net},
    source::{Problem, SourceMap},
    types::{Attachment, Forward, Lab, Proto},
};

/// The lab host as the effects layer finds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// Its IPv4 routes (main table), the default route included.
    pub routes: Vec<RouteFact>,
    /// Its interfaces.
    pub interfaces: Vec<InterfaceFact>,
    /// Named network namespaces on the machine (/run/netns).
    pub namespaces: Vec<Owned>,
    /// Its listening sockets (TCP in LISTEN, bound UDP).
    pub listeners: Vec<Listener>,
    /// `net.ipv4.ip_local_port_range`.
    pub ip_local_port_range: (u16, u16),
    /// The interface of its default route, if it has one (`uplink = auto`).
    pub default_route_interface: Option<String>,
    /// Uplinks that labs living on this host translate on: interface name,
    /// owner = the lab.
    pub nat_uplinks: Vec<Owned>,
}

/// A route of the lab host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteFact {
    /// Of either family.
    pub destination: IpNet,
    /// How it reads, as `ip route` shows it: `198.51.100.0/24 dev eth0`.
    pub shown: String,
    /// The lab whose interface carries it, from the interface's mark.
    pub owner: Option<String>,
}

/// An interface of the lab host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceFact {
    pub name: String,
    /// The lab that made it, from its mark.
    pub owner: Option<String>,
    pub addresses: Vec<Ipv4Net>,
    /// Its IPv6 addresses but the link-local ones.
    pub addresses6: Vec<Ipv6Net>,
}

/// Something named that a lab may own (a namespace, an uplink in use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owned {
    pub name: String,
    /// The lab, from netlab's mark; `None`: not netlab's.
    pub owner: Option<String>,
}

/// A socket listening on the lab host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub proto: Proto,
    pub port: u16,
    /// `None`: every address (0.0.0.0, or a dual-stack `::` socket).
    pub address: Option<Ipv4Addr>,
    /// Who listens, as the user knows it: `sshd (pid 812)`.
    pub process: String,
}

/// The uplink a lab would use on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUplink {
    pub interface: String,
    pub address: Ipv4Addr,
    /// The IPv6 address NAT66 translates to: `[uplink] address6`, or the
    /// interface's first; `None` when it has none.
    pub address6: Option<Ipv6Addr>,
}

/// Everything that stands in the way of `lab` on the host of `facts`.
pub fn find(lab: &Lab, sources: &SourceMap, facts: &HostFacts) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut add = |field: String, message: String| {
        problems.push(sources.problem(super::hosts::file_field(lab, &field), message))
    };
    for (field, subnet) in lab_subnets(lab) {
        if let Some(message) = route_conflict(lab, subnet, facts) {
            add(field, message);
        }
    }
    let uplink = if lab.needs_nat() {
        match resolve_uplink(lab, facts) {
            Ok(u) => Some(u),
            Err((field, message)) => {
                add(field.to_string(), message);
                None
            }
        }
    } else {
        None
    };
    if lab.masquerades() {
        if let Some(message) = port_range_conflict(lab, facts) {
            add("nat.port_range".into(), message);
        }
    }
    for (i, fwd) in lab.forwards.iter().enumerate() {
        if let Some(message) = forward_conflict(fwd, uplink.as_ref().map(|u| u.address), facts) {
            add(format!("forwards[{i}].port"), message);
        }
    }
    for (field, name) in namespaces(lab) {
        if let Some(message) = namespace_conflict(lab, name, facts) {
            add(field, message);
        }
    }
    for (field, name) in lab_host_interfaces(lab, sources) {
        if let Some(message) = interface_conflict(lab, name, uplink.as_ref(), facts) {
            add(field, message);
        }
    }
    problems
}

/// The lab's subnets of both families as the lab host's routes see them,
/// with their fields (a route's by its place in the file's `[[routes]]`,
/// which mixes the families).
fn lab_subnets(lab: &Lab) -> Vec<(String, IpNet)> {
    let bridges = lab.bridges.iter().enumerate();
    let bridges6 = lab.bridges.iter().enumerate();
    let cables = lab.cables.iter().enumerate();
    let cables6 = lab.cables.iter().enumerate();
    let routes = lab.host_routes.iter().map(|r| (r.file_index, r.to.into()));
    let routes6 = lab.host_routes6.iter().map(|r| (r.file_index, r.to.into()));
    bridges
        .map(|(i, b)| (format!("bridges[{i}].subnet"), b.subnet.into()))
        .chain(
            bridges6
                .filter_map(|(i, b)| Some((format!("bridges[{i}].subnet6"), b.subnet6?.into()))),
        )
        .chain(cables.map(|(i, c)| (format!("cables[{i}]"), c.a.address.network().into())))
        .chain(
            cables6.filter_map(|(i, c)| {
                Some((format!("cables[{i}]"), c.a.address6?.network().into()))
            }),
        )
        .chain(
            routes
                .chain(routes6)
                .map(|(j, to)| (format!("routes[{j}].to"), to)),
        )
        .collect()
}

/// A route of the host (not the default route, not the lab's own) that
/// `subnet` overlaps.
fn route_conflict(lab: &Lab, subnet: IpNet, facts: &HostFacts) -> Option<String> {
    let route = facts.routes.iter().find(|r| {
        r.destination.prefix_len() > 0
            && r.owner.as_deref() != Some(lab.name.as_str())
            && r.destination.overlaps(&subnet)
    })?;
    let whose = match &route.owner {
        Some(other) => format!(" (lab {other}'s)"),
        None => String::new(),
    };
    Some(format!(
        "{subnet} overlaps the lab host's route `{}`{whose}: the lab would cut the host off \
         from those addresses; choose another subnet",
        route.shown
    ))
}

/// The interface and address the lab's NAT would use, or the field and
/// why there is none.
pub fn resolve_uplink(
    lab: &Lab,
    facts: &HostFacts,
) -> Result<ResolvedUplink, (&'static str, String)> {
    let name = match (&lab.uplink.interface, &facts.default_route_interface) {
        (Some(name), _) | (None, Some(name)) => name,
        (None, None) => {
            return Err((
                "uplink.interface",
                "the lab host has no default route to find the uplink by; set `[uplink] \
                 interface`"
                    .into(),
            ))
        }
    };
    let Some(iface) = facts.interfaces.iter().find(|i| &i.name == name) else {
        return Err((
            "uplink.interface",
            format!("the lab host has no interface `{name}`"),
        ));
    };
    let address = match lab.uplink.address {
        Some(a) if iface.addresses.iter().any(|n| n.addr == a) => a,
        Some(a) => {
            let has: Vec<String> = iface.addresses.iter().map(|n| n.to_string()).collect();
            return Err((
                "uplink.address",
                format!("{a} is not an address of `{name}` (it has {})", list(&has)),
            ));
        }
        None => match iface.addresses.first() {
            Some(n) => n.addr,
            None => {
                return Err((
                    "uplink.interface",
                    format!("`{name}` has no IPv4 address to translate to"),
                ))
            }
        },
    };
    let address6 = match lab.uplink.address6 {
        Some(a) if iface.addresses6.iter().any(|n| n.addr == a) => Some(a),
        Some(a) => {
            let has: Vec<String> = iface.addresses6.iter().map(|n| n.to_string()).collect();
            return Err((
                "uplink.address6",
                format!(
                    "{a} is not an IPv6 address of `{name}` (it has {})",
                    list(&has)
                ),
            ));
        }
        None => iface.addresses6.first().map(|n| n.addr),
    }
    .filter(|_| lab.translates_ipv6());
    if let Some(other) = facts
        .nat_uplinks
        .iter()
        .find(|u| &u.name == name && u.owner.as_deref() != Some(lab.name.as_str()))
    {
        let other = other.owner.as_deref().unwrap_or("another lab");
        return Err((
            "uplink.interface",
            format!(
                "`{name}` already carries lab {other}'s NAT; give each lab its own lab host \
                 (--host-netns or --sandbox)"
            ),
        ));
    }
    Ok(ResolvedUplink {
        interface: name.clone(),
        address,
        address6,
    })
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn port_range_conflict(lab: &Lab, facts: &HostFacts) -> Option<String> {
    let (lo, hi) = facts.ip_local_port_range;
    let (min, max) = (lab.nat.port_min, lab.nat.port_max);
    (min <= hi && lo <= max).then(|| {
        format!(
            "{min}-{max} overlaps the lab host's ip_local_port_range {lo}-{hi}, from which its \
             own connections take their ports; choose a range outside it"
        )
    })
}

/// Why `fwd` would take connections from a service of the lab host
/// (listening on the uplink `address`, or on every address), unless it says
/// `take_host_port`. For the lab file and for `netlab fwd add`.
pub fn forward_conflict(
    fwd: &Forward,
    uplink_address: Option<Ipv4Addr>,
    facts: &HostFacts,
) -> Option<String> {
    if fwd.take_host_port {
        return None;
    }
    let taken: Vec<String> = facts
        .listeners
        .iter()
        .filter(|l| {
            l.proto == fwd.proto
                && (fwd.port_first..=fwd.port_last).contains(&l.port)
                && (l.address.is_none() || uplink_address.is_none() || l.address == uplink_address)
        })
        .map(|l| format!("{} {} ({})", l.proto, l.port, l.process))
        .collect();
    (!taken.is_empty()).then(|| {
        format!(
            "the lab host listens on {}: the forward would take those connections from the \
             outside; set `take_host_port = true` to forward them anyway",
            taken.join(", ")
        )
    })
}

/// The namespaces the lab makes, with the field that names each.
fn namespaces(lab: &Lab) -> Vec<(String, &str)> {
    let nodes = lab.nodes.iter().enumerate();
    nodes
        .map(|(i, n)| (format!("nodes[{i}].name"), n.netns.as_str()))
        .collect()
}

fn namespace_conflict(lab: &Lab, name: &str, facts: &HostFacts) -> Option<String> {
    let ns = facts.namespaces.iter().find(|n| n.name == name)?;
    match ns.owner.as_deref() {
        Some(owner) if owner == lab.name => None,
        Some(owner) => Some(format!(
            "namespace `{name}` belongs to lab {owner}: take it down with `netlab down --name \
             {owner}`, or set `netns_prefix`"
        )),
        None => Some(format!(
            "namespace `{name}` exists and is not netlab's: remove it if nothing uses it (`ip \
             netns del {name}`), or set `netns_prefix`"
        )),
    }
}

/// The lab-host interfaces the lab makes (bridges, the lab-host ends of
/// veths), with the field that names each (a default name is reported at
/// its node).
fn lab_host_interfaces<'l>(lab: &'l Lab, sources: &SourceMap) -> Vec<(String, &'l str)> {
    let mut out: Vec<(String, &str)> = Vec::new();
    for (i, b) in lab.bridges.iter().enumerate() {
        out.push((format!("bridges[{i}].name"), &b.name));
    }
    for (i, n) in lab.nodes.iter().enumerate() {
        let listed = sources.has(&super::hosts::file_field(
            lab,
            &format!("nodes[{i}].interfaces"),
        ));
        for (j, iface) in n.interfaces.iter().enumerate() {
            if let Attachment::Bridge { host_name, .. } = &iface.attachment {
                let field = if listed {
                    format!("nodes[{i}].interfaces[{j}].host_name")
                } else {
                    format!("nodes[{i}].host_interface")
                };
                out.push((field, host_name));
            }
        }
    }
    out
}

fn interface_conflict(
    lab: &Lab,
    name: &str,
    uplink: Option<&ResolvedUplink>,
    facts: &HostFacts,
) -> Option<String> {
    if uplink.is_some_and(|u| u.interface == name) {
        return Some(format!(
            "`{name}` is the uplink: the lab cannot make an interface of that name"
        ));
    }
    let iface = facts.interfaces.iter().find(|i| i.name == name)?;
    match iface.owner.as_deref() {
        Some(owner) if owner == lab.name => None,
        Some(owner) => Some(format!(
            "interface `{name}` on the lab host belongs to lab {owner}: take it down with \
             `netlab down --name {owner}`, or rename it in the lab file"
        )),
        None => Some(format!(
            "interface `{name}` exists on the lab host and is not netlab's; rename it in the \
             lab file"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        test_support::{with_base, with_base6},
        validate::{default_lab, parse_with_sources},
    };

    /// Lab host H: uplink eth0 198.51.100.1/24 (default route through it),
    /// lab `other` with bridge o-br on 10.99.0.0/16 and namespace `blue`,
    /// python3 listening on every address at tcp 8081, sshd on loopback.
    fn facts() -> HostFacts {
        let route = |dest: &str, shown: &str, owner: Option<&str>| RouteFact {
            destination: dest.parse().unwrap(),
            shown: shown.into(),
            owner: owner.map(str::to_string),
        };
        let iface = |name: &str, owner: Option<&str>, addrs: &[&str]| InterfaceFact {
            name: name.into(),
            owner: owner.map(str::to_string),
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            addresses6: if name == "eth0" {
                vec![
                    "2001:db8:100::1/64".parse().unwrap(),
                    "2001:db8:100::7/64".parse().unwrap(),
                ]
            } else {
                Vec::new()
            },
        };
        let listener = |port: u16, address: Option<Ipv4Addr>, process: &str| Listener {
            proto: Proto::Tcp,
            port,
            address,
            process: process.into(),
        };
        HostFacts {
            routes: vec![
                route("0.0.0.0/0", "default via 198.51.100.2 dev eth0", None),
                route("198.51.100.0/24", "198.51.100.0/24 dev eth0", None),
                route("10.99.0.0/16", "10.99.0.0/16 dev o-br", Some("other")),
                route("192.168.15.0/24", "192.168.15.0/24 dev v-net-0", Some("t")),
            ],
            interfaces: vec![
                iface("lo", None, &["127.0.0.1/8"]),
                iface("eth0", None, &["198.51.100.1/24"]),
                iface("o-br", Some("other"), &["10.99.0.1/16"]),
                iface("v-net-0", Some("t"), &["192.168.15.5/24"]),
                iface("docker0", None, &[]),
            ],
            namespaces: vec![
                Owned {
                    name: "blue".into(),
                    owner: Some("other".into()),
                },
                Owned {
                    name: "red".into(),
                    owner: None,
                },
            ],
            listeners: vec![
                listener(8081, None, "python3 (pid 4242)"),
                listener(22, Some(Ipv4Addr::LOCALHOST), "sshd (pid 812)"),
            ],
            ip_local_port_range: (32768, 60999),
            default_route_interface: Some("eth0".into()),
            nat_uplinks: vec![Owned {
                name: "eth0".into(),
                owner: Some("t".into()),
            }],
        }
    }

    /// [`facts`] with the uplink's IPv6 subnet 2001:db8:100::/64 among the routes.
    fn facts_with_ipv6_uplink_route() -> HostFacts {
        let mut f = facts();
        f.routes.push(RouteFact {
            destination: "2001:db8:100::/64".parse().unwrap(),
            shown: "2001:db8:100::/64 dev eth0 proto kernel".into(),
            owner: None,
        });
        f
    }

    fn problems(text: &str, facts: &HostFacts) -> Vec<String> {
        let (lab, sources) = parse_with_sources("lab.toml", text).unwrap();
        let problems = find(&lab, &sources, facts);
        sources
            .error(problems)
            .to_string()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_lab_that_fits_its_host_has_no_problem() {
        assert_eq!(problems(&with_base(""), &facts()), Vec::<String>::new());
        let (lab, sources) = (default_lab(), SourceMap::unlocated("(default lab)"));
        let mut clean = facts();
        clean.namespaces.clear();
        clean.routes.pop();
        clean.interfaces.pop();
        clean.interfaces.retain(|i| i.name != "v-net-0");
        clean.nat_uplinks.clear();
        assert_eq!(find(&lab, &sources, &clean), vec![]);
    }

    #[test]
    fn an_ipv6_lab_subnet_over_an_ipv6_route_of_the_host_is_refused() {
        let mut f = facts_with_ipv6_uplink_route();
        f.routes.push(RouteFact {
            destination: "::/0".parse().unwrap(),
            shown: "default via 2001:db8:100::1 dev eth0".into(),
            owner: None,
        });
        let text = "name = \"t\"\n[[bridges]]\nname = \"b\"\nsubnet = \"10.7.0.0/24\"\n\
                    gateway = \"10.7.0.1\"\nsubnet6 = \"2001:db8:100::/64\"\n";
        assert_eq!(
            problems(text, &f),
            [
                "lab.toml:6: bridges[0].subnet6: 2001:db8:100::/64 overlaps the lab host's route \
                 `2001:db8:100::/64 dev eth0 proto kernel`: the lab would cut the host off from \
                 those addresses; choose another subnet"
            ]
        );
        // The IPv6 default route is none; nor is another family's route.
        let ok = text.replace("2001:db8:100::/64", "fd00:7::/64");
        assert_eq!(problems(&ok, &f), Vec::<String>::new());
    }

    #[test]
    fn a_lab_subnet_over_a_route_of_the_host_is_refused_naming_the_route() {
        let text = "name = \"t\"\n[[bridges]]\nname = \"b\"\nsubnet = \"198.51.100.0/25\"\n\
                    gateway = \"198.51.100.100\"\n";
        assert_eq!(
            problems(text, &facts()),
            [
                "lab.toml:4: bridges[0].subnet: 198.51.100.0/25 overlaps the lab host's route \
              `198.51.100.0/24 dev eth0`: the lab would cut the host off from those addresses; \
              choose another subnet"
            ]
        );
        // Another lab's route is named with its owner; the default route
        // and the lab's own routes are no conflict.
        let text = with_base(
            "[[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"z\"\n[[cables]]\n\
             a = { node = \"a\", address = \"10.99.1.1/24\" }\n\
             b = { node = \"z\", address = \"10.99.1.2/24\" }\n\
             [[routes]]\nto = \"198.51.100.128/25\"\nvia = \"192.168.15.9\"\n",
        );
        let found = problems(&text, &facts());
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with(
            "lab.toml:11: cables[0]: 10.99.1.0/24 overlaps the lab \
                                      host's route `10.99.0.0/16 dev o-br` (lab other's)"
        ));
        assert!(found[1].starts_with("lab.toml:15: routes[0].to: 198.51.100.128/25 overlaps"));
    }

    #[test]
    fn a_route_over_a_route_of_the_host_is_named_by_its_place_in_the_file() {
        // An IPv6 route first: the IPv4 one is the file's routes[1].
        let f = facts_with_ipv6_uplink_route();
        let text = with_base6(
            "[[routes]]\nto = \"fd00:99::/64\"\nvia = \"fd00:15::9\"\n\
             [[routes]]\nto = \"198.51.100.128/25\"\nvia = \"192.168.15.9\"\n",
        );
        let found = problems(&text, &f);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("lab.toml:13: routes[1].to: 198.51.100.128/25 overlaps"),
            "{found:?}"
        );
        // An IPv6 route over one of the host's is found too, at its place.
        let text = text.replace("fd00:99::/64", "2001:db8:100::/64");
        let found = problems(&text, &f);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("lab.toml:10: routes[0].to: 2001:db8:100::/64 overlaps"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("lab.toml:13: routes[1].to:"),
            "{found:?}"
        );
    }

    #[test]
    fn the_nat_port_range_stays_clear_of_the_hosts_own_ports() {
        let text = with_base("[nat]\nport_range = \"30000-40000\"\n");
        assert_eq!(
            problems(&text, &facts()),
            [
                "lab.toml:8: nat.port_range: 30000-40000 overlaps the lab host's \
              ip_local_port_range 32768-60999, from which its own connections take their ports; \
              choose a range outside it"
            ]
        );
        // The default range, and a lab that does not masquerade, pass.
        let mut low = facts();
        low.ip_local_port_range = (1024, 9999);
        assert!(problems(&with_base(""), &low).is_empty());
        let no_nat = "name = \"t\"\n[[bridges]]\nname = \"sw\"\nsubnet = \"10.1.0.0/24\"\n";
        assert!(problems(no_nat, &facts()).is_empty());
    }

    #[test]
    fn a_forward_of_a_port_the_host_listens_on_names_the_process_unless_taken() {
        let fwd = |port: &str, extra: &str| {
            with_base(&format!(
                "[[nodes]]\nname = \"n1\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.2\"\n\
                 [[forwards]]\nprotocol = \"tcp\"\nport = {port}\nto = \"n1:80\"\n{extra}"
            ))
        };
        assert_eq!(
            problems(&fwd("\"8080-8090\"", ""), &facts()),
            [
                "lab.toml:13: forwards[0].port: the lab host listens on tcp 8081 (python3 (pid \
              4242)): the forward would take those connections from the outside; set \
              `take_host_port = true` to forward them anyway"
            ]
        );
        assert!(problems(&fwd("8081", "take_host_port = true\n"), &facts()).is_empty());
        // A listener on another address (sshd on loopback) is not shadowed,
        // nor is another protocol.
        assert!(problems(&fwd("22", ""), &facts()).is_empty());
        let udp = fwd("8081", "").replace("\"tcp\"", "\"udp\"");
        assert!(problems(&udp, &facts()).is_empty());
        // The same check for `netlab fwd add`.
        let (lab, _) = parse_with_sources("lab.toml", &fwd("8081", "")).unwrap();
        let uplink = Some(Ipv4Addr::new(198, 51, 100, 1));
        assert!(forward_conflict(&lab.forwards[0], uplink, &facts())
            .is_some_and(|m| m.contains("python3 (pid 4242)")));
    }

    #[test]
    fn names_taken_on_the_host_name_their_owner() {
        let text = with_base(
            "[[nodes]]\nname = \"blue\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.2\"\n\
             [[nodes]]\nname = \"red\"\ninterfaces = [{ bridge = \"v-net-0\", address = \
             \"192.168.15.3\", host_name = \"docker0\" }]\n\
             [[bridges]]\nname = \"o-br\"\nsubnet = \"10.98.0.0/24\"\n",
        );
        assert_eq!(
            problems(&text, &facts()),
            [
                "lab.toml:8: nodes[0].name: namespace `blue` belongs to lab other: take it down \
                 with `netlab down --name other`, or set `netns_prefix`",
                "lab.toml:12: nodes[1].name: namespace `red` exists and is not netlab's: remove \
                 it if nothing uses it (`ip netns del red`), or set `netns_prefix`",
                "lab.toml:13: nodes[1].interfaces[0].host_name: interface `docker0` exists on \
                 the lab host and is not netlab's; rename it in the lab file",
                "lab.toml:15: bridges[1].name: interface `o-br` on the lab host belongs to lab \
                 other: take it down with `netlab down --name other`, or rename it in the lab file",
            ]
        );
        // The lab's own (converging it) are no conflict: v-net-0 above.
    }

    #[test]
    fn the_uplink_must_be_there_with_its_address_and_free() {
        let mut none = facts();
        none.default_route_interface = None;
        assert_eq!(
            problems(&with_base(""), &none),
            [
                "lab.toml: uplink.interface: the lab host has no default route to find the uplink \
              by; set `[uplink] interface`"
            ]
        );
        let named = |uplink: &str| with_base(&format!("[uplink]\n{uplink}\n"));
        assert_eq!(
            problems(&named("interface = \"eth9\""), &facts()),
            ["lab.toml:8: uplink.interface: the lab host has no interface `eth9`"]
        );
        assert_eq!(
            problems(&named("address = \"198.51.100.7\""), &facts()),
            [
                "lab.toml:8: uplink.address: 198.51.100.7 is not an address of `eth0` (it has \
              198.51.100.1/24)"
            ]
        );
        assert!(problems(&named("interface = \"docker0\""), &facts())[0]
            .contains("`docker0` has no IPv4 address to translate to"));
        let mut taken = facts();
        taken.nat_uplinks[0].owner = Some("other".into());
        assert!(problems(&with_base(""), &taken)[0]
            .contains("uplink.interface: `eth0` already carries lab other's NAT"));
        // A bridge named like the uplink.
        let text = with_base("[uplink]\ninterface = \"v-net-0\"\n");
        let mut bridged = facts();
        bridged.nat_uplinks.clear();
        assert!(problems(&text, &bridged)
            .iter()
            .any(|p| p.contains("bridges[0].name: `v-net-0` is the uplink")));
        let r = resolve_uplink(
            &parse_with_sources("l", &with_base("")).unwrap().0,
            &facts(),
        );
        assert_eq!(
            r,
            Ok(ResolvedUplink {
                interface: "eth0".into(),
                address: Ipv4Addr::new(198, 51, 100, 1),
                // An IPv4 lab translates no IPv6.
                address6: None,
            })
        );
    }

    #[test]
    fn the_uplinks_ipv6_address_is_the_one_named_or_its_first() {
        let f = facts();
        let lab = |extra: &str| {
            parse_with_sources("lab.toml", &with_base6(extra))
                .unwrap()
                .0
        };
        let first = resolve_uplink(&lab(""), &f).unwrap();
        assert_eq!(first.address6, Some("2001:db8:100::1".parse().unwrap()));
        let named = resolve_uplink(&lab("[uplink]\naddress6 = \"2001:db8:100::7\"\n"), &f).unwrap();
        assert_eq!(named.address6, Some("2001:db8:100::7".parse().unwrap()));
        let (field, why) =
            resolve_uplink(&lab("[uplink]\naddress6 = \"2001:db8:100::9\"\n"), &f).unwrap_err();
        assert_eq!(field, "uplink.address6");
        assert_eq!(
            why,
            "2001:db8:100::9 is not an IPv6 address of `eth0` (it has 2001:db8:100::1/64, \
             2001:db8:100::7/64)"
        );
    }
}
