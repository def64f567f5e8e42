//! `[[nodes]]`: each node's name and interfaces (on bridges, written in the
//! short form `bridge`/`address` or as `interfaces = [...]`, and at cable
//! ends), with the names of both ends of every veth; its routing is
//! [`super::node_routes`].

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Range,
};

use toml::Spanned;

use super::{
    cables::DraftEnd,
    context::Checker,
    names::{check_ifname, check_name},
    node_routes, services,
};
use crate::model::{
    raw::{RawImpairs, RawNode},
    types::{Attachment, Bridge, Interface, Node},
};

/// Longest namespace name netlab makes (a file name under /run/netns).
const NETNS_MAX: usize = 200;

pub fn validate(
    c: &mut Checker<'_>,
    raw: &[Spanned<RawNode>],
    bridges: &[Bridge],
    ends: &[(DraftEnd, DraftEnd)],
    netns_prefix: &str,
) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for (i, rn) in raw.iter().enumerate() {
        let rn = rn.get_ref();
        let name = rn.name.get_ref().clone();
        if let Err(e) = check_name(&name, "node name") {
            c.at(&rn.name, format!("nodes[{i}].name"), e);
        }
        if nodes.iter().any(|n| n.name == name) {
            c.at(
                &rn.name,
                format!("nodes[{i}].name"),
                format!("duplicate node name `{name}`"),
            );
        }
        let interfaces = interfaces(c, i, rn, bridges, ends);
        let routing = node_routes::validate(c, i, rn, &interfaces, bridges);
        nodes.push(Node {
            netns: format!("{netns_prefix}{name}"),
            name,
            interfaces,
            gateway: routing.gateway,
            gateway6: routing.gateway6,
            routes: routing.routes,
            forwarding: rn
                .forwarding
                .as_ref()
                .map(|f| *f.get_ref())
                .unwrap_or(false),
            run: services::validate(c, i, rn.run.as_deref()),
            host: None,
        });
    }
    nodes
}

/// Namespace names are file names: refuse those too long to make.
pub fn check_namespaces(c: &mut Checker<'_>, nodes: &[Node]) {
    for n in nodes {
        if n.netns.len() > NETNS_MAX {
            c.unlocated(format!("nodes.{}", n.name), "namespace name is too long");
        }
    }
}

/// A bridge interface as written, in either form.
struct Want<'r> {
    bridge: &'r Spanned<String>,
    address: &'r Spanned<String>,
    address6: Option<&'r Spanned<String>>,
    name: Option<&'r Spanned<String>>,
    host_name: Option<&'r Spanned<String>>,
    impairs: RawImpairs<'r>,
    /// `nodes[i]` (short form) or `nodes[i].interfaces[j]`.
    field: String,
}

/// What names a node's interfaces when the file does not.
struct Naming<'r> {
    node: &'r str,
    /// The node has one interface: `veth-<node>`, `veth-<node>-br`.
    single: bool,
    /// The keys that name the two ends: `interface`/`host_interface` in the
    /// short form, `name`/`host_name` in an `interfaces` entry.
    name_key: &'static str,
    host_key: &'static str,
}

impl Naming<'_> {
    fn inside(&self, idx: usize) -> String {
        if self.single {
            format!("veth-{}", self.node)
        } else {
            format!("eth{idx}")
        }
    }

    fn lab_host(&self, idx: usize) -> String {
        if self.single {
            format!("veth-{}-br", self.node)
        } else {
            format!("veth-{}-{idx}", self.node)
        }
    }
}

/// Node `rn`'s interfaces: on bridges first, then at cable ends.
fn interfaces(
    c: &mut Checker<'_>,
    i: usize,
    rn: &RawNode,
    bridges: &[Bridge],
    ends: &[(DraftEnd, DraftEnd)],
) -> Vec<Interface> {
    let node = rn.name.get_ref().as_str();
    let wants = bridge_wants(c, i, rn);
    let cables: Vec<(&DraftEnd, &DraftEnd)> = ends
        .iter()
        .flat_map(|(a, b)| {
            let mut v = Vec::new();
            if a.node == node {
                v.push((a, b));
            }
            if b.node == node {
                v.push((b, a));
            }
            v
        })
        .collect();
    let (name_key, host_key) = if rn.interfaces.is_some() {
        ("name", "host_name")
    } else {
        ("interface", "host_interface")
    };
    let naming = Naming {
        node,
        single: wants.len() + cables.len() == 1,
        name_key,
        host_key,
    };
    let mut interfaces: Vec<Interface> = Vec::new();
    for (idx, w) in wants.iter().enumerate() {
        // Default names are reported where the entry (or the node) is.
        let default_span = if rn.interfaces.is_some() {
            w.bridge.span()
        } else {
            rn.name.span()
        };
        interfaces.extend(bridge_interface(c, &naming, idx, w, default_span, bridges));
    }
    for (k, (mine, theirs)) in cables.iter().enumerate() {
        interfaces.extend(cable_interface(c, &naming, wants.len() + k, mine, theirs));
    }
    let mut seen = BTreeSet::new();
    for iface in &interfaces {
        if !seen.insert(iface.name.clone()) {
            c.at(
                &rn.name,
                format!("nodes[{i}].interfaces"),
                format!(
                    "interface name `{}` is used twice in node `{node}`",
                    iface.name
                ),
            );
        }
    }
    interfaces
}

/// The bridge interfaces node `rn` asks for, in the short form or as
/// `interfaces = [...]` (not both).
fn bridge_wants<'r>(c: &mut Checker<'_>, i: usize, rn: &'r RawNode) -> Vec<Want<'r>> {
    let f = |k: &str| format!("nodes[{i}].{k}");
    let mut wants: Vec<Want<'_>> = Vec::new();
    match (&rn.bridge, &rn.address, &rn.interfaces) {
        (Some(_), _, Some(_)) | (None, Some(_), Some(_)) => {
            let span = rn
                .bridge
                .as_ref()
                .map(|b| b.span())
                .unwrap_or_else(|| rn.name.span());
            c.at_span(
                span,
                f("bridge"),
                "use either `bridge`/`address` or `interfaces`, not both",
            );
        }
        (Some(bridge), Some(address), None) => wants.push(Want {
            bridge,
            address,
            address6: rn.address6.as_ref(),
            name: rn.interface.as_ref(),
            host_name: rn.host_interface.as_ref(),
            impairs: rn.impairs(),
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
                    address6: ri.address6.as_ref(),
                    name: ri.name.as_ref(),
                    host_name: ri.host_name.as_ref(),
                    impairs: ri.impairs(),
                    field: format!("nodes[{i}].interfaces[{j}]"),
                });
            }
        }
        (None, None, None) => {}
    }
    if let (Some(a6), None) = (&rn.address6, &rn.bridge) {
        if rn.interfaces.is_none() {
            c.at(a6, f("bridge"), "`address6` needs a `bridge`");
        }
    }
    if rn.interfaces.is_some() {
        for (k, v) in [
            ("interface", &rn.interface),
            ("host_interface", &rn.host_interface),
            ("address6", &rn.address6),
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
    wants
}

/// The interface for `w` (the node's `idx`th), if its bridge and address
/// are good; its address is then taken.
fn bridge_interface(
    c: &mut Checker<'_>,
    naming: &Naming<'_>,
    idx: usize,
    w: &Want<'_>,
    default_span: Range<usize>,
    bridges: &[Bridge],
) -> Option<Interface> {
    let bname = w.bridge.get_ref();
    let Some(bridge) = bridges.iter().find(|b| &b.name == bname) else {
        c.at(
            w.bridge,
            format!("{}.bridge", w.field),
            format!("unknown bridge `{bname}`"),
        );
        return None;
    };
    let address = bridge_address(c, w, bridge)?;
    c.seen
        .addresses
        .insert(address.into(), format!("used by node {}", naming.node));
    let address6 = w.address6.and_then(|a| bridge_address6(c, w, a, bridge));
    if let Some(a6) = address6 {
        c.seen
            .addresses
            .insert(a6.into(), format!("used by node {}", naming.node));
    }
    let ifname = match w.name {
        Some(n) => c
            .new_ifname(n, &format!("{}.{}", w.field, naming.name_key))
            .to_string(),
        None => default_ifname(
            c,
            naming.inside(idx),
            default_span.clone(),
            &format!("{}.{}", w.field, naming.name_key),
            &format!("the default name inside node `{}`", naming.node),
            naming.name_key,
        ),
    };
    let host_name = match w.host_name {
        Some(n) => c
            .new_ifname(n, &format!("{}.{}", w.field, naming.host_key))
            .to_string(),
        None => default_ifname(
            c,
            naming.lab_host(idx),
            default_span.clone(),
            &format!("{}.{}", w.field, naming.host_key),
            &format!("the default lab-host side name for node `{}`", naming.node),
            naming.host_key,
        ),
    };
    if !c.seen.host_ifnames.insert(host_name.clone()) {
        let span = w.host_name.map(|h| h.span()).unwrap_or(default_span);
        c.at_span(
            span,
            format!("{}.{}", w.field, naming.host_key),
            format!("interface name `{host_name}` is used twice on the lab host"),
        );
    }
    let impair = super::impair::link(c, &w.field, &w.impairs);
    Some(Interface {
        name: ifname,
        address: bridge.subnet.with_addr(address),
        address6: address6.and_then(|a| Some(bridge.subnet6?.with_addr(a))),
        impair,
        attachment: Attachment::Bridge {
            bridge: bridge.name.clone(),
            host_name,
        },
    })
}

/// `w`'s address (`192.168.15.1`, or with the bridge's prefix length): a
/// usable one in the bridge's subnet that nothing else has.
fn bridge_address(c: &mut Checker<'_>, w: &Want<'_>, bridge: &Bridge) -> Option<Ipv4Addr> {
    let field = format!("{}.address", w.field);
    let address = match w.address.get_ref().parse::<crate::model::net::Ipv4Net>() {
        Ok(n) => {
            if n.prefix_len != bridge.subnet.prefix_len {
                c.at(
                    w.address,
                    &field,
                    format!(
                        "prefix /{} differs from bridge {}'s subnet {}",
                        n.prefix_len, bridge.name, bridge.subnet
                    ),
                );
            }
            n.addr
        }
        Err(_) => c.ipv4(w.address, &field)?,
    };
    let problem = if !bridge.subnet.contains(address) {
        format!(
            "{address} is outside subnet {} of bridge {}",
            bridge.subnet, bridge.name
        )
    } else if !bridge.subnet.is_usable_host(address) {
        format!(
            "{address} is the network or broadcast address of {}",
            bridge.subnet
        )
    } else if let Some(owner) = c.seen.addresses.get(&address.into()) {
        format!("{address} is already {owner}")
    } else {
        return Some(address);
    };
    c.at(w.address, field, problem);
    None
}

/// `w`'s IPv6 address `raw` (`fd00:15::1`, or with the prefix length of the
/// bridge's `subnet6`): a usable one in that subnet that nothing else has.
fn bridge_address6(
    c: &mut Checker<'_>,
    w: &Want<'_>,
    raw: &Spanned<String>,
    bridge: &Bridge,
) -> Option<Ipv6Addr> {
    let field = format!("{}.address6", w.field);
    let Some(subnet) = bridge.subnet6 else {
        let msg = format!("bridge {} has no `subnet6`", bridge.name);
        c.at(raw, &field, msg);
        return None;
    };
    let address = match raw.get_ref().parse::<crate::model::net::Ipv6Net>() {
        Ok(n) => {
            if n.prefix_len != subnet.prefix_len {
                let msg = format!(
                    "prefix /{} differs from bridge {}'s subnet6 {subnet}",
                    n.prefix_len, bridge.name
                );
                c.at(raw, &field, msg);
            }
            n.addr
        }
        Err(_) => c.ipv6(raw, &field)?,
    };
    let problem = if !subnet.contains(address) {
        format!(
            "{address} is outside subnet6 {subnet} of bridge {}",
            bridge.name
        )
    } else if !subnet.is_usable_host(address) {
        format!("{address} is the subnet-router anycast address of {subnet}")
    } else if let Some(owner) = c.seen.addresses.get(&address.into()) {
        format!("{address} is already {owner}")
    } else {
        return Some(address);
    };
    c.at(raw, field, problem);
    None
}

/// A default interface name, reported (at `span`, as `field`) when it does
/// not fit the kernel's rules: `what` says whose default it is, `key` how to
/// set another.
fn default_ifname(
    c: &mut Checker<'_>,
    name: String,
    span: Range<usize>,
    field: &str,
    what: &str,
    key: &str,
) -> String {
    if let Err(e) = check_ifname(&name) {
        c.at_span(span, field, format!("{e} ({what}); set `{key}`"));
    }
    name
}

/// The interface at the cable end `mine` (the node's `idx`th): its address
/// is taken, its peer named once every node is known.
fn cable_interface(
    c: &mut Checker<'_>,
    naming: &Naming<'_>,
    idx: usize,
    mine: &DraftEnd,
    theirs: &DraftEnd,
) -> Option<Interface> {
    let addr = mine.address?;
    // An IPv6 address only when both ends have one (else the cable's
    // problem, reported once by `cables::ends`).
    let addr6 = mine.address6.filter(|_| theirs.address6.is_some());
    let taken = std::iter::once((IpAddr::from(addr.addr), "address"))
        .chain(addr6.map(|a| (IpAddr::from(a.addr), "address6")));
    for (a, key) in taken {
        if let Some(owner) = c.seen.addresses.get(&a) {
            let message = format!("{a} is already {owner}");
            c.at_span(mine.span.clone(), format!("{}.{key}", mine.field), message);
        }
        c.seen
            .addresses
            .insert(a, format!("used by node {}", naming.node));
    }
    let name = match &mine.interface {
        Some(n) => n.clone(),
        None => default_ifname(
            c,
            naming.inside(idx),
            mine.span.clone(),
            &format!("{}.interface", mine.field),
            &format!("the default name inside node `{}`", naming.node),
            "interface",
        ),
    };
    Some(Interface {
        name,
        address: addr,
        address6: addr6,
        impair: mine.impair,
        attachment: Attachment::Cable {
            peer_node: theirs.node.clone(),
            // Filled in by `cables::join` once every node is named.
            peer_interface: String::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use crate::model::{
        test_support::{err, with_base, BASE},
        types::*,
        validate::parse,
    };

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
    fn ipv6_node_addresses() {
        use crate::model::test_support::{with_base6, BASE6};
        let red = |a6: &str| {
            with_base6(&format!(
                "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\naddress6 = \"{a6}\"\n"
            ))
        };
        let lab = parse("lab.toml", &red("fd00:15::1")).unwrap();
        let r = lab.node("red").unwrap();
        assert_eq!(
            r.interfaces[0].address6.unwrap().to_string(),
            "fd00:15::1/64"
        );
        assert_eq!(r.gateway6, Some("fd00:15::5".parse().unwrap()));
        assert_eq!(r.primary_address6(), Some("fd00:15::1".parse().unwrap()));
        assert!(parse("lab.toml", &red("fd00:15::1/64")).is_ok());
        assert_eq!(
            err(&red("fd00:15::1/80")),
            "lab.toml:13: nodes[0].address6: prefix /80 differs from bridge v-net-0's subnet6 fd00:15::/64"
        );
        assert_eq!(
            err(&red("fd00:16::1")),
            "lab.toml:13: nodes[0].address6: fd00:16::1 is outside subnet6 fd00:15::/64 of bridge v-net-0"
        );
        assert_eq!(
            err(&red("fd00:15::")),
            "lab.toml:13: nodes[0].address6: fd00:15:: is the subnet-router anycast address of fd00:15::/64"
        );
        assert!(err(&red("192.168.15.9"))
            .contains("nodes[0].address6: `192.168.15.9` is not an IPv6 address"));
        // A bridge without subnet6.
        let e = err(&with_base(
            "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\naddress6 = \"fd00::1\"\n",
        ));
        assert_eq!(
            e,
            "lab.toml:11: nodes[0].address6: bridge v-net-0 has no `subnet6`"
        );
        // Duplicates, across the short form and `interfaces` entries.
        let e = err(&format!(
            "{}[[nodes]]\nname = \"blue\"\ninterfaces = [{{ bridge = \"v-net-0\", address = \"192.168.15.2\", address6 = \"fd00:15::1\" }}]\n",
            red("fd00:15::1")
        ));
        assert!(
            e.contains("nodes[1].interfaces[0].address6: fd00:15::1 is already used by node red"),
            "{e}"
        );
        // `address6` belongs with `bridge`, or inside `interfaces` entries.
        let e = err(&format!(
            "{BASE6}[[nodes]]\nname = \"red\"\naddress6 = \"fd00:15::1\"\n"
        ));
        assert_eq!(
            e,
            "lab.toml:11: nodes[0].bridge: `address6` needs a `bridge`"
        );
        let e = err(&format!(
            "{BASE6}[[nodes]]\nname = \"red\"\naddress6 = \"fd00:15::1\"\ninterfaces = [{{ bridge = \"v-net-0\", address = \"192.168.15.2\" }}]\n"
        ));
        assert!(
            e.contains("nodes[0].address6: set names inside `interfaces` entries"),
            "{e}"
        );
    }

    #[test]
    fn a_node_without_an_ipv6_address_gets_no_ipv6_default_route() {
        use crate::model::test_support::with_base6;
        let lab = parse(
            "lab.toml",
            &with_base6(
                "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\n",
            ),
        )
        .unwrap();
        let r = lab.node("red").unwrap();
        assert_eq!((r.gateway6, r.interfaces[0].address6), (None, None));
        assert_eq!(r.gateway, Some(Ipv4Addr::new(192, 168, 15, 5)));
    }
}
