//! A node's routing: its default routes (`gateway`, or its first bridge's
//! gateway; `gateway6`, or its first bridge's `gateway6`) and its static
//! `routes` of either family, each through a neighbour on one of its
//! subnets, one route per destination.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use toml::Spanned;

use super::{
    context::Checker,
    routing::{self, next_hop_problem, RouteTable},
};
use crate::model::{
    net::IpNet,
    raw::RawNode,
    types::{Attachment, Bridge, Interface, Route},
};

/// A node's routes, validated.
pub struct NodeRouting {
    pub gateway: Option<Ipv4Addr>,
    pub gateway6: Option<Ipv6Addr>,
    pub routes: Vec<Route>,
}

/// The node `rn` (written at `nodes[i]`) with its validated `interfaces`:
/// its default gateways and its other routes.
pub fn validate(
    c: &mut Checker<'_>,
    i: usize,
    rn: &RawNode,
    interfaces: &[Interface],
    bridges: &[Bridge],
) -> NodeRouting {
    let own: Vec<IpNet> = interfaces
        .iter()
        .flat_map(|i| std::iter::once(i.address.into()).chain(i.address6.map(IpNet::from)))
        .collect();
    let node = NodeNet {
        whose: format!("node `{}`", rn.name.get_ref()),
        own,
    };
    // The node's routing table, to refuse a second route to one
    // destination: its connected subnets, then its default routes.
    let mut table = RouteTable {
        owner: node.whose.clone(),
        connected: interfaces
            .iter()
            .flat_map(|i| {
                let what = format!("interface `{}`", i.name);
                let v6 = i.address6.map(|a| (a.network().into(), what.clone()));
                std::iter::once((i.address.network().into(), what)).chain(v6)
            })
            .collect(),
        routes: BTreeMap::new(),
    };
    let gateway = default_gateway(
        c,
        &node,
        rn.gateway.as_ref(),
        &format!("nodes[{i}].gateway"),
        || {
            bridge_gateway(
                interfaces,
                bridges,
                |_, b| b.gateway.map(IpAddr::from),
                "gateway",
            )
        },
    );
    let gateway6 = default_gateway(
        c,
        &node,
        rn.gateway6.as_ref(),
        &format!("nodes[{i}].gateway6"),
        || {
            // Only over an interface with an IPv6 address on that bridge.
            let gw6 = |i: &Interface, b: &Bridge| i.address6.and(b.gateway6).map(IpAddr::from);
            bridge_gateway(interfaces, bridges, gw6, "gateway6")
        },
    );
    for (gw, origin) in [&gateway, &gateway6].into_iter().flatten() {
        table
            .routes
            .insert(IpNet::default_for(*gw), (*gw, origin.clone()));
    }
    let mut routes = Vec::new();
    for (j, r) in rn.routes.iter().enumerate() {
        let field = format!("nodes[{i}].routes[{j}]");
        let r = r.get_ref();
        let Some(route) = routing::route(c, &r.to, &r.via, &field) else {
            continue;
        };
        if let Some(e) = node.next_hop_problem(route.via) {
            c.at(&r.via, format!("{field}.via"), e);
            continue;
        }
        match table.add(route, &field) {
            Ok(true) => routes.push(route),
            Ok(false) => {}
            Err(e) => c.at(&r.to, format!("{field}.to"), e),
        }
    }
    NodeRouting {
        gateway: gateway.and_then(|(gw, _)| match gw {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }),
        gateway6: gateway6.and_then(|(gw, _)| match gw {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        }),
        routes,
    }
}

/// A node as a router sees it: its addresses.
struct NodeNet {
    /// "node `red`".
    whose: String,
    own: Vec<IpNet>,
}

impl NodeNet {
    fn next_hop_problem(&self, via: IpAddr) -> Option<String> {
        let nowhere = |via: IpAddr| format!("{via} is not on any subnet of {}", self.whose);
        next_hop_problem(&self.own, via, &self.whose, nowhere)
    }
}

/// A default route's gateway and where it comes from: the key as written
/// at `field` (`gateway` or `gateway6`; `"none"`: no default route), or
/// else `from_bridge`.
fn default_gateway(
    c: &mut Checker<'_>,
    node: &NodeNet,
    raw: Option<&Spanned<String>>,
    field: &str,
    from_bridge: impl FnOnce() -> Option<(IpAddr, String)>,
) -> Option<(IpAddr, String)> {
    let Some(g) = raw else {
        return from_bridge();
    };
    if g.get_ref() == "none" {
        return None;
    }
    let v6 = field.ends_with('6');
    let gw: IpAddr = if v6 {
        c.ipv6(g, field)?.into()
    } else {
        c.ipv4(g, field)?.into()
    };
    if let Some(e) = node.next_hop_problem(gw) {
        c.at(g, field, e);
        return None;
    }
    let key = if v6 { "gateway6" } else { "gateway" };
    Some((gw, format!("its `{key}`")))
}

/// Without a `gateway` (`key`): the gateway (`gateway_of`) of the node's
/// first bridge that has one, and where that default route comes from.
fn bridge_gateway(
    interfaces: &[Interface],
    bridges: &[Bridge],
    gateway_of: impl Fn(&Interface, &Bridge) -> Option<IpAddr>,
    key: &str,
) -> Option<(IpAddr, String)> {
    let (gw, bridge) = interfaces.iter().find_map(|i| match &i.attachment {
        Attachment::Bridge { bridge, .. } => bridges
            .iter()
            .find(|b| &b.name == bridge)
            .and_then(|b| Some((gateway_of(i, b)?, &b.name))),
        Attachment::Cable { .. } => None,
    })?;
    Some((
        gw,
        format!(
            "the {key} of bridge `{bridge}`; set `{key}` to choose another, or `{key} = \"none\"`"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use crate::model::{
        test_support::{err, with_base},
        validate::parse,
    };

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
    fn ipv6_routes_and_default_routes() {
        use crate::model::{net::IpNet, test_support::with_base6};
        let red = "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\naddress6 = \"fd00:15::1\"\n";
        let lab = parse(
            "lab.toml",
            &with_base6(&format!(
                "{red}routes = [{{ to = \"fd00:99::/64\", via = \"fd00:15::9\" }}, {{ to = \"10.0.0.0/8\", via = \"192.168.15.9\" }}]\n"
            )),
        )
        .unwrap();
        let r = lab.node("red").unwrap();
        assert_eq!(r.routes.len(), 2);
        assert_eq!(r.routes[0].to, "fd00:99::/64".parse::<IpNet>().unwrap());
        assert_eq!(
            r.routes[0].via,
            "fd00:15::9".parse::<std::net::IpAddr>().unwrap()
        );
        let e = |routes: &str| err(&with_base6(&format!("{red}routes = [{routes}]\n")));
        // A family mismatch between destination and gateway.
        assert_eq!(
            e("{ to = \"fd00:99::/64\", via = \"192.168.15.9\" }"),
            "lab.toml:14: nodes[0].routes[0].via: 192.168.15.9 is an IPv4 address, fd00:99::/64 an \
             IPv6 destination: a route's gateway is of its destination's family"
        );
        assert!(e("{ to = \"10.0.0.0/8\", via = \"fd00:15::9\" }")
            .contains("fd00:15::9 is an IPv6 address, 10.0.0.0/8 an IPv4 destination"));
        // The IPv6 default route is the bridge's gateway6: a second is refused.
        assert_eq!(
            e("{ to = \"default\", via = \"fd00:15::9\" }"),
            "lab.toml:14: nodes[0].routes[0].to: node `red` already has a route to default (IPv6) \
             via fd00:15::5 (the gateway6 of bridge `v-net-0`; set `gateway6` to choose another, \
             or `gateway6 = \"none\"`); the kernel keeps one route per destination"
        );
        assert!(e("{ to = \"::/0\", via = \"fd00:15::9\" }")
            .contains("already has a route to default (IPv6)"));
        // Next hops: on one of the node's IPv6 subnets, not its own.
        assert_eq!(
            e("{ to = \"fd00:99::/64\", via = \"fd00:16::9\" }"),
            "lab.toml:14: nodes[0].routes[0].via: fd00:16::9 is not on any subnet of node `red`"
        );
        assert!(e("{ to = \"fd00:99::/64\", via = \"fd00:15::1\" }")
            .contains("is an address of node `red` itself"));
        assert!(e("{ to = \"fd00:99::/64\", via = \"fd00:15::\" }")
            .contains("subnet-router anycast address of fd00:15::/64"));
        assert!(e("{ to = \"fd00:15::/64\", via = \"fd00:15::9\" }").contains("reaches directly"));
        assert!(e("{ to = \"ff02::/16\", via = \"fd00:15::9\" }")
            .contains("is inside ff00::/8 (multicast)"));
        // gateway6 written, or "none" (then a route to default is the default route).
        let g = |extra: &str| parse("lab.toml", &with_base6(&format!("{red}{extra}")));
        let r = g("gateway6 = \"fd00:15::7\"\n").unwrap();
        assert_eq!(r.nodes[0].gateway6, Some("fd00:15::7".parse().unwrap()));
        let r = g("gateway6 = \"none\"\nroutes = [{ to = \"default\", via = \"fd00:15::9\" }]\n")
            .unwrap();
        assert_eq!(r.nodes[0].gateway6, None);
        assert_eq!(r.nodes[0].routes[0].to.to_string(), "::/0");
        assert_eq!(r.nodes[0].gateway, Some("192.168.15.5".parse().unwrap()));
        assert_eq!(
            err(&with_base6(&format!("{red}gateway6 = \"fd00:99::1\"\n"))),
            "lab.toml:14: nodes[0].gateway6: fd00:99::1 is not on any subnet of node `red`"
        );
        assert!(
            err(&with_base6(&format!("{red}gateway6 = \"192.168.15.5\"\n")))
                .contains("is not an IPv6 address")
        );
    }
}
