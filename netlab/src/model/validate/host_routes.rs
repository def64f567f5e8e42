//! `[[routes]]`: routes on the lab host, to subnets behind router nodes,
//! of either family. Each goes through a node on one of the lab host's
//! bridges (those with a `gateway`, or a `gateway6` for IPv6), one route per
//! destination (its bridges' subnets being routes already). Like a
//! bridge's subnet, a route's destination is masqueraded (`masquerade`,
//! default true) and/or reached from outside without NAT (`routed`,
//! default false).

use std::{collections::BTreeMap, net::IpAddr};

use toml::Spanned;

use super::{
    context::Checker,
    routing::{self, next_hop_problem, RouteTable},
};
use crate::model::{
    net::IpNet,
    raw::RawHostRoute,
    types::{Bridge, HostRoute, HostRoute6},
};

/// The lab host's IPv4 and IPv6 routes.
pub fn validate(
    c: &mut Checker<'_>,
    raw: &[Spanned<RawHostRoute>],
    bridges: &[Bridge],
) -> (Vec<HostRoute>, Vec<HostRoute6>) {
    let host_own: Vec<IpNet> = bridges
        .iter()
        .flat_map(|b| {
            let v6 = b.gateway6_net().map(IpNet::from);
            b.gateway_net().map(IpNet::from).into_iter().chain(v6)
        })
        .collect();
    let mut table = RouteTable {
        owner: "the lab host".to_string(),
        connected: bridges
            .iter()
            .flat_map(|b| {
                let what = format!("bridge `{}`", b.name);
                let v4 = b.gateway.map(|_| (b.subnet.into(), what.clone()));
                let v6 = b.subnet6.filter(|_| b.gateway6.is_some());
                v4.into_iter().chain(v6.map(|s| (s.into(), what)))
            })
            .collect(),
        routes: BTreeMap::new(),
    };
    let (mut routes, mut routes6) = (Vec::new(), Vec::new());
    for (j, r) in raw.iter().enumerate() {
        let field = format!("routes[{j}]");
        let r = r.get_ref();
        let Some(route) = routing::route(c, &r.to, &r.via, &field) else {
            continue;
        };
        let nowhere = |via: IpAddr| {
            let key = if via.is_ipv6() { "gateway6" } else { "gateway" };
            format!("{via} is not on a bridge the lab host is on (one with a `{key}`)")
        };
        if let Some(e) = next_hop_problem(&host_own, route.via, "the lab host", nowhere) {
            c.at(&r.via, format!("{field}.via"), e);
            continue;
        }
        match table.add(route, &field) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                c.at(&r.to, format!("{field}.to"), e);
                continue;
            }
        }
        let masquerade = r.masquerade.as_ref().is_none_or(|m| *m.get_ref());
        let routed = r.routed.as_ref().is_some_and(|m| *m.get_ref());
        match (route.to, route.via) {
            (IpNet::V4(to), IpAddr::V4(via)) => routes.push(HostRoute {
                to,
                via,
                file_index: j,
                masquerade,
                routed,
            }),
            (IpNet::V6(to), IpAddr::V6(via)) => routes6.push(HostRoute6 {
                to,
                via,
                file_index: j,
                masquerade,
                routed,
            }),
            _ => unreachable!("routing::route refuses a family mismatch"),
        }
    }
    (routes, routes6)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use crate::model::{
        test_support::{err, with_base},
        types::*,
        validate::parse,
    };

    #[test]
    fn host_routes() {
        let route = |to: &str, via: &str| format!("[[routes]]\nto = \"{to}\"\nvia = \"{via}\"\n");
        let lab = parse("lab.toml", &with_base(&route("10.0.0.0/8", "192.168.15.1"))).unwrap();
        assert_eq!(
            lab.host_routes,
            [HostRoute {
                to: "10.0.0.0/8".parse().unwrap(),
                via: Ipv4Addr::new(192, 168, 15, 1),
                file_index: 0,
                masquerade: true,
                routed: false,
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
    fn subnets_behind_host_routes_are_masqueraded_unless_told_otherwise() {
        let route = |extra: &str| {
            with_base(&format!(
                "[[routes]]\nto = \"10.44.0.0/24\"\nvia = \"192.168.15.1\"\n{extra}"
            ))
        };
        let r = parse("lab.toml", &route("")).unwrap().host_routes[0];
        assert_eq!((r.masquerade, r.routed), (true, false));
        let r = parse("lab.toml", &route("masquerade = false\nrouted = true\n"))
            .unwrap()
            .host_routes[0];
        assert_eq!((r.masquerade, r.routed), (false, true));
        // Node routes take neither key.
        let e = err(&with_base(
            "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\n\
             routes = [{ to = \"10.0.0.0/8\", via = \"192.168.15.9\", routed = true }]\n",
        ));
        assert!(e.contains("unknown field `routed`"), "{e}");
    }

    #[test]
    fn ipv6_host_routes() {
        use crate::model::test_support::with_base6;
        let route = |to: &str, via: &str| format!("[[routes]]\nto = \"{to}\"\nvia = \"{via}\"\n");
        let lab = parse(
            "lab.toml",
            &with_base6(&route("fd00:44::/64", "fd00:15::1")),
        )
        .unwrap();
        assert!(lab.host_routes.is_empty());
        assert_eq!(
            lab.host_routes6,
            [HostRoute6 {
                to: "fd00:44::/64".parse().unwrap(),
                via: "fd00:15::1".parse().unwrap(),
                file_index: 0,
                masquerade: true,
                routed: false,
            }]
        );
        assert_eq!(
            err(&with_base(&route("fd00:44::/64", "fd00:15::1"))),
            "lab.toml:9: routes[0].via: fd00:15::1 is not on a bridge the lab host is on (one \
             with a `gateway6`)"
        );
        assert_eq!(
            err(&with_base6(&route("fd00:15::/64", "fd00:15::1"))),
            "lab.toml:10: routes[0].to: fd00:15::/64 is the subnet of bridge `v-net-0`, which the \
             lab host reaches directly: a route to it via fd00:15::1 would clash with that one"
        );
        assert!(
            err(&with_base6(&route("fd00:44::/64", "192.168.15.1"))).contains(
                "routes[0].via: 192.168.15.1 is an IPv4 address, fd00:44::/64 an IPv6 destination"
            )
        );
        assert!(err(&with_base6(&route("fd00:15::5", "fd00:15::1"))).contains("bad CIDR"));
        let e = err(&with_base6(&format!(
            "{}{}",
            route("fd00:44::/64", "fd00:15::1"),
            route("fd00:44::/64", "fd00:15::2")
        )));
        assert!(
            e.contains("the lab host already has a route to fd00:44::/64 via fd00:15::1"),
            "{e}"
        );
    }
}
