//! A node's routing: its default route (`gateway`, or its first bridge's
//! gateway) and its static `routes`, each through a neighbour on one of its
//! subnets, one route per destination.

use std::{collections::BTreeMap, net::Ipv4Addr};

use toml::Spanned;

use super::{
    context::Checker,
    routing::{self, next_hop_problem, RouteTable, DEFAULT_ROUTE},
};
use crate::model::{
    net::Ipv4Net,
    raw::RawNode,
    types::{Attachment, Bridge, Interface, Route},
};

/// The node `rn` (written at `nodes[i]`) with its validated `interfaces`:
/// its default gateway and its other routes.
pub fn validate(
    c: &mut Checker<'_>,
    i: usize,
    rn: &RawNode,
    interfaces: &[Interface],
    bridges: &[Bridge],
) -> (Option<Ipv4Addr>, Vec<Route>) {
    let node = NodeNet {
        whose: format!("node `{}`", rn.name.get_ref()),
        own: interfaces.iter().map(|i| i.address).collect(),
    };
    // The node's routing table, to refuse a second route to one
    // destination: its connected subnets, then its default route.
    let mut table = RouteTable {
        owner: node.whose.clone(),
        connected: interfaces
            .iter()
            .map(|i| (i.address.network(), format!("interface `{}`", i.name)))
            .collect(),
        routes: BTreeMap::new(),
    };
    let (gateway, origin) = match &rn.gateway {
        Some(g) if g.get_ref() == "none" => (None, String::new()),
        Some(g) => (
            written_gateway(c, &node, g, &format!("nodes[{i}].gateway")),
            "its `gateway`".to_string(),
        ),
        None => bridge_gateway(interfaces, bridges),
    };
    if let Some(gw) = gateway {
        table.routes.insert(DEFAULT_ROUTE, (gw, origin));
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
    (gateway, routes)
}

/// A node as a router sees it: its addresses.
struct NodeNet {
    /// "node `red`".
    whose: String,
    own: Vec<Ipv4Net>,
}

impl NodeNet {
    fn next_hop_problem(&self, via: Ipv4Addr) -> Option<String> {
        let nowhere = |via: Ipv4Addr| format!("{via} is not on any subnet of {}", self.whose);
        next_hop_problem(&self.own, via, &self.whose, nowhere)
    }
}

fn written_gateway(
    c: &mut Checker<'_>,
    node: &NodeNet,
    g: &Spanned<String>,
    field: &str,
) -> Option<Ipv4Addr> {
    let gw = c.ipv4(g, field)?;
    if let Some(e) = node.next_hop_problem(gw) {
        c.at(g, field, e);
        return None;
    }
    Some(gw)
}

/// Without a `gateway`: the gateway of the node's first bridge that has one,
/// and where that default route comes from.
fn bridge_gateway(interfaces: &[Interface], bridges: &[Bridge]) -> (Option<Ipv4Addr>, String) {
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
}
