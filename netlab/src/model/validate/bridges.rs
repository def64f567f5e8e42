//! `[[bridges]]`: the lab's switches, the lab host on those with a gateway.

use std::net::{Ipv4Addr, Ipv6Addr};

use toml::Spanned;

use super::context::Checker;
use crate::model::{
    net::{IpNet, Ipv4Net, Ipv6Net},
    raw::RawBridge,
    types::{Bridge, Filtering},
};

/// The bridges that validate (a bridge whose subnet does not parse is left
/// out, so that its nodes are not reported a second time); their names,
/// subnets and gateways go into the checker's `seen`.
pub fn validate(c: &mut Checker<'_>, raw: &[Spanned<RawBridge>]) -> Vec<Bridge> {
    let mut bridges: Vec<Bridge> = Vec::new();
    for (i, rb) in raw.iter().enumerate() {
        if let Some(bridge) = bridge(c, i, rb.get_ref(), &bridges) {
            c.seen.subnets.push((
                bridge.subnet.into(),
                format!("bridge {}", bridge.name),
                rb.get_ref().subnet.span(),
            ));
            if let (Some(s6), Some(raw6)) = (bridge.subnet6, &rb.get_ref().subnet6) {
                let what = format!("bridge {}", bridge.name);
                c.seen.subnets.push((s6.into(), what, raw6.span()));
            }
            bridges.push(bridge);
        }
    }
    for b in &bridges {
        c.seen.host_ifnames.insert(b.name.clone());
        let gateways = [b.gateway.map(Into::into), b.gateway6.map(Into::into)];
        for gw in gateways.into_iter().flatten() {
            c.seen
                .addresses
                .insert(gw, format!("the gateway of bridge {}", b.name));
        }
    }
    bridges
}

fn bridge(c: &mut Checker<'_>, i: usize, rb: &RawBridge, before: &[Bridge]) -> Option<Bridge> {
    let f = |k: &str| format!("bridges[{i}].{k}");
    let name = c.new_ifname(&rb.name, &f("name")).to_string();
    if before.iter().any(|b| b.name == name) {
        c.at(
            &rb.name,
            f("name"),
            format!("duplicate bridge name `{name}`"),
        );
    }
    let subnet = c.cidr(&rb.subnet, &f("subnet"))?;
    if !subnet.is_network() {
        c.at(
            &rb.subnet,
            f("subnet"),
            format!(
                "{subnet} has host bits set; did you mean {}?",
                subnet.network()
            ),
        );
    }
    if let Some(problem) = unusable_subnet(subnet.network().into()) {
        c.at(&rb.subnet, f("subnet"), problem);
    }
    let gateway = gateway(c, rb.gateway.as_ref(), subnet, &f("gateway"));
    let subnet6 = rb
        .subnet6
        .as_ref()
        .and_then(|s| subnet6(c, s, &f("subnet6")));
    let gateway6 = gateway6(c, rb, subnet6, gateway.is_some(), &f("gateway6"));
    let filtering = filtering(c, rb.filtering.as_ref(), &f("filtering"));
    let masquerade = rb
        .masquerade
        .as_ref()
        .map(|m| *m.get_ref())
        .unwrap_or(gateway.is_some());
    if masquerade && gateway.is_none() {
        if let Some(m) = &rb.masquerade {
            c.at(
                m,
                f("masquerade"),
                "needs a gateway: without one the lab host is not on this bridge",
            );
        }
    }
    Some(Bridge {
        name,
        subnet: subnet.network(),
        gateway,
        masquerade,
        filtering,
        routed: rb.routed.as_ref().map(|r| *r.get_ref()).unwrap_or(false),
        vni: None,
        subnet6,
        gateway6,
    })
}

/// Shortest and longest prefix of a bridge's IPv6 subnet. /64 is the size
/// of an IPv6 link (RFC 7421) and what tools expect; a longer one works as
/// well, the addresses being static (no SLAAC); a shorter one is a block to
/// split into links, not a link. /127 leaves no room beside the gateway.
pub const BRIDGE_PREFIX6: std::ops::RangeInclusive<u8> = 64..=126;

fn subnet6(c: &mut Checker<'_>, raw: &Spanned<String>, field: &str) -> Option<Ipv6Net> {
    let subnet = c.cidr6(raw, field)?;
    if !subnet.is_network() {
        let msg = format!(
            "{subnet} has host bits set; did you mean {}?",
            subnet.network()
        );
        c.at(raw, field, msg);
    }
    if !BRIDGE_PREFIX6.contains(&subnet.prefix_len) {
        let msg = format!(
            "/{} is not a link's prefix: a bridge's IPv6 subnet is /{} to /{} (a /64 as a rule)",
            subnet.prefix_len,
            BRIDGE_PREFIX6.start(),
            BRIDGE_PREFIX6.end()
        );
        c.at(raw, field, msg);
    }
    if let Some(problem) = unusable_subnet(subnet.network().into()) {
        c.at(raw, field, problem);
    }
    Some(subnet.network())
}

/// The lab host's IPv6 address on the bridge: `gateway6` as written
/// (`"none"`: none), or else, on a bridge the lab host is on (it has a
/// `gateway`), the subnet's first address, as Docker gives its bridge.
fn gateway6(
    c: &mut Checker<'_>,
    rb: &RawBridge,
    subnet6: Option<Ipv6Net>,
    host_on_bridge: bool,
    field: &str,
) -> Option<Ipv6Addr> {
    let Some(g) = &rb.gateway6 else {
        let subnet = subnet6.filter(|_| host_on_bridge)?;
        return Some(Ipv6Addr::from_bits(subnet.addr.to_bits().wrapping_add(1)));
    };
    if g.get_ref() == "none" {
        return None;
    }
    let gw = c.ipv6(g, field)?;
    match subnet6 {
        None if rb.subnet6.is_none() => c.at(g, field, "needs a `subnet6`"),
        None => {}
        Some(subnet) if !subnet.is_usable_host(gw) => c.at(
            g,
            field,
            format!("{gw} is not a usable address in subnet6 {subnet}"),
        ),
        Some(_) => {}
    }
    Some(gw)
}

/// Why `subnet` is no lab's to use, if it is not (bridges and cables).
pub fn unusable_subnet(subnet: IpNet) -> Option<String> {
    let (range, why) = match subnet {
        IpNet::V4(n) => n.unusable_overlap().map(|(r, w)| (IpNet::V4(r), w))?,
        IpNet::V6(n) => n.unusable_overlap().map(|(r, w)| (IpNet::V6(r), w))?,
    };
    Some(format!(
        "{subnet} overlaps {range} ({why}): no lab can use those addresses"
    ))
}

fn gateway(
    c: &mut Checker<'_>,
    raw: Option<&Spanned<String>>,
    subnet: Ipv4Net,
    field: &str,
) -> Option<Ipv4Addr> {
    let g = raw?;
    let gw = c.ipv4(g, field)?;
    if !subnet.is_usable_host(gw) {
        c.at(
            g,
            field,
            format!("{gw} is not a usable address in subnet {subnet}"),
        );
    }
    Some(gw)
}

fn filtering(c: &mut Checker<'_>, raw: Option<&Spanned<String>>, field: &str) -> Filtering {
    let Some(s) = raw else {
        return Filtering::AddressAndPortDependent;
    };
    match s.get_ref().as_str() {
        "address-and-port-dependent" => Filtering::AddressAndPortDependent,
        "endpoint-independent" => Filtering::EndpointIndependent,
        other => {
            c.at(
                s,
                field,
                format!(
                    "`{other}` is not one of `address-and-port-dependent`, `endpoint-independent`"
                ),
            );
            Filtering::AddressAndPortDependent
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::test_support::{err, with_base};

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
    fn overlapping_subnets() {
        let e = err(&with_base(
            "[[bridges]]\nname = \"b2\"\nsubnet = \"192.168.0.0/16\"\n",
        ));
        assert_eq!(e, "lab.toml:9: subnet 192.168.0.0/16 of bridge b2 overlaps 192.168.15.0/24 of bridge v-net-0");
    }

    #[test]
    fn unusable_ranges_are_refused_as_subnets_addresses_and_routes() {
        let bridge = |subnet: &str| {
            err(&format!(
                "[[bridges]]\nname = \"b\"\nsubnet = \"{subnet}\"\n"
            ))
        };
        assert_eq!(
            bridge("127.0.0.0/24"),
            "lab.toml:3: bridges[0].subnet: 127.0.0.0/24 overlaps 127.0.0.0/8 (loopback, which \
             every namespace keeps on `lo`): no lab can use those addresses"
        );
        for (subnet, range) in [
            ("224.0.0.0/24", "224.0.0.0/4 (multicast)"),
            ("0.0.0.0/8", "0.0.0.0/8"),
            ("169.254.0.0/16", "169.254.0.0/16 (link-local"),
            ("240.0.0.0/24", "240.0.0.0/4 (reserved"),
            ("0.0.0.0/0", "0.0.0.0/8"),
        ] {
            assert!(
                bridge(subnet).contains(&format!("overlaps {range}")),
                "{subnet}"
            );
        }
        let e = err(
            "[[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"b\"\n[[cables]]\n\
             a = { node = \"a\", address = \"127.1.0.1/24\" }\n\
             b = { node = \"b\", address = \"127.1.0.2/24\" }\n",
        );
        assert!(
            e.contains("cables[0]: 127.1.0.0/24 overlaps 127.0.0.0/8"),
            "{e}"
        );
        let route = |to: &str| {
            err(&with_base(&format!(
                "[[routes]]\nto = \"{to}\"\nvia = \"192.168.15.1\"\n"
            )))
        };
        assert_eq!(
            route("224.0.0.0/24"),
            "lab.toml:8: routes[0].to: 224.0.0.0/24 is inside 224.0.0.0/4 (multicast): no lab \
             reaches it"
        );
        assert!(err(&with_base("[uplink]\naddress = \"127.0.0.1\"\n"))
            .contains("uplink.address: 127.0.0.1 is in 127.0.0.0/8"));
        // The default route, and usable private and test ranges, pass.
        crate::model::validate::parse(
            "lab.toml",
            &with_base(
                "[[routes]]\nto = \"default\"\nvia = \"192.168.15.1\"\n\
                 [[bridges]]\nname = \"b2\"\nsubnet = \"100.64.0.0/24\"\n",
            ),
        )
        .unwrap();
    }

    #[test]
    fn ipv6_subnets_and_gateways() {
        use crate::model::validate::parse;
        let bridge = |extra: &str| {
            format!("[[bridges]]\nname = \"b\"\nsubnet = \"10.0.0.0/24\"\ngateway = \"10.0.0.1\"\n{extra}")
        };
        let e = |extra: &str| err(&bridge(extra));
        // Prefix sizes: a link's, /64 to /126.
        assert_eq!(
            e("subnet6 = \"fd00::/48\"\n"),
            "lab.toml:5: bridges[0].subnet6: /48 is not a link's prefix: a bridge's IPv6 subnet \
             is /64 to /126 (a /64 as a rule)"
        );
        assert!(e("subnet6 = \"fd00::/127\"\n").contains("/127 is not a link's prefix"));
        assert!(parse("lab.toml", &bridge("subnet6 = \"fd00::/120\"\n")).is_ok());
        assert_eq!(
            e("subnet6 = \"fd00::1/64\"\n"),
            "lab.toml:5: bridges[0].subnet6: fd00::1/64 has host bits set; did you mean fd00::/64?"
        );
        assert_eq!(
            e("subnet6 = \"fd00::/129\"\n"),
            "lab.toml:5: bridges[0].subnet6: bad CIDR: `129` in `fd00::/129` is not a prefix \
             length (0-128)"
        );
        assert!(e("subnet6 = \"10.0.1.0/24\"\n").contains("is not an IPv6 address"));
        assert!(e("subnet6 = \"fe80::/64\"\n")
            .contains("fe80::/64 overlaps fe80::/10 (link-local, which the kernel gives every interface itself)"));
        // gateway6: inside subnet6, not its anycast address, needs subnet6.
        assert_eq!(
            e("subnet6 = \"fd00::/64\"\ngateway6 = \"fd01::1\"\n"),
            "lab.toml:6: bridges[0].gateway6: fd01::1 is not a usable address in subnet6 fd00::/64"
        );
        assert!(
            e("subnet6 = \"fd00::/64\"\ngateway6 = \"fd00::\"\n").contains("not a usable address")
        );
        assert_eq!(
            e("gateway6 = \"fd00::1\"\n"),
            "lab.toml:5: bridges[0].gateway6: needs a `subnet6`"
        );
        assert!(e("subnet6 = \"fd00::/64\"\ngateway6 = \"10.0.0.1\"\n")
            .contains("is not an IPv6 address"));
        // The default: the subnet's first address on a bridge the lab host
        // is on; none on a plain switch, or with "none".
        let b = |extra: &str| parse("lab.toml", &bridge(extra)).unwrap().bridges[0].clone();
        let b1 = b("subnet6 = \"fd00::/64\"\n");
        assert_eq!(b1.gateway6, Some("fd00::1".parse().unwrap()));
        assert_eq!(b1.gateway6_net().unwrap().to_string(), "fd00::1/64");
        assert_eq!(
            b("subnet6 = \"fd00::/64\"\ngateway6 = \"none\"\n").gateway6,
            None
        );
        assert_eq!(b("").subnet6, None);
        let switch = parse(
            "lab.toml",
            "[[bridges]]\nname = \"sw\"\nsubnet = \"10.0.0.0/24\"\nsubnet6 = \"fd00::/64\"\n",
        )
        .unwrap();
        assert_eq!(switch.bridges[0].gateway6, None);
        assert!(!switch.routes_ipv6());
    }

    #[test]
    fn ipv6_subnets_may_not_overlap() {
        let two = format!(
            "{}[[bridges]]\nname = \"b2\"\nsubnet = \"10.0.0.0/24\"\nsubnet6 = \"fd00:15::/96\"\n",
            crate::model::test_support::BASE6
        );
        assert_eq!(
            err(&two),
            "lab.toml:12: subnet fd00:15::/96 of bridge b2 overlaps fd00:15::/64 of bridge v-net-0"
        );
        // The gateway6 is taken: a second bridge's cannot be it (nor a node's).
        let e = err(&crate::model::test_support::with_base6(
            "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\naddress6 = \"fd00:15::5\"\n",
        ));
        assert_eq!(
            e,
            "lab.toml:13: nodes[0].address6: fd00:15::5 is already the gateway of bridge v-net-0"
        );
    }
}
