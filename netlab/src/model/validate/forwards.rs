//! `[[forwards]]`: ports of the uplink address forwarded to nodes. The
//! target is resolved and the forward added exactly as `netlab fwd add`
//! does ([`crate::model::forwards`]).

use toml::Spanned;

use super::context::Checker;
use crate::model::{
    forwards::parse_port_range,
    hosts::{forward_across, host_port_address, target_bridge},
    raw::RawForward,
    types::{Forward, Lab, Proto},
};

/// Add the file's forwards to `lab` (whose nodes are validated).
pub fn validate(c: &mut Checker<'_>, raw: &[Spanned<RawForward>], lab: &mut Lab) {
    for (i, rf) in raw.iter().enumerate() {
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
        let ports = match ports(rf.port.get_ref()) {
            Ok(p) => p,
            Err(e) => {
                c.at(&rf.port, f("port"), e);
                continue;
            }
        };
        match lab.resolve_forward(proto, ports, rf.to.get_ref()) {
            Ok(fwd) => {
                let fwd = Forward {
                    take_host_port: rf.take_host_port.as_ref().is_some_and(|t| *t.get_ref()),
                    host: rf.host.as_ref().map(|h| h.get_ref().clone()),
                    ipv6: rf.ipv6.as_ref().is_none_or(|v| *v.get_ref()),
                    ..fwd
                };
                // Asked for explicitly, IPv6 must be possible.
                if let Some(v6) = rf.ipv6.as_ref().filter(|v| *v.get_ref()) {
                    if lab.forward_target6(&fwd).is_none() {
                        c.at(
                            v6,
                            f("ipv6"),
                            format!(
                                "node `{}` has no `address6` the NAT reaches at {} (on a \
                                 masqueraded bridge with a `gateway6`, or behind a masqueraded \
                                 IPv6 route): the forward can only be IPv4",
                                fwd.node, fwd.target_addr
                            ),
                        );
                        continue;
                    }
                }
                if let Some(h) = &rf.host {
                    if let Err(e) = taking_host(lab, &fwd) {
                        c.at(h, f("host"), e);
                        continue;
                    }
                }
                if let Err(e) = lab.add_forward(fwd) {
                    c.at(&rf.port, f("port"), e);
                }
            }
            Err(e) => c.at(&rf.to, f("to"), e),
        }
    }
}

/// A forward's `host`: a host of the file; when not its target node's,
/// the target must be a node's address on a bridge, and the host's
/// address there ([`host_port_address`]) free.
fn taking_host(lab: &Lab, f: &Forward) -> Result<(), String> {
    let host = f.host.as_deref().unwrap_or_default();
    if !lab.hosts.iter().any(|h| h.name == host) {
        return Err(match lab.hosts.is_empty() {
            true => "needs [[hosts]]: a forward is taken on the lab host".to_string(),
            false => format!("unknown host `{host}`"),
        });
    }
    if !forward_across(lab, f) {
        return Ok(());
    }
    let Some(bridge) = target_bridge(lab, f) else {
        return Err(format!(
            "a forward on another host than {}'s must target its address on a bridge \
             (the bridge is stretched to host {host})",
            f.node
        ));
    };
    let Some(address) = host_port_address(lab, bridge, host) else {
        return Err(format!(
            "bridge {}'s subnet {} has no address left for host {host}",
            bridge.name, bridge.subnet
        ));
    };
    let holder = lab.nodes.iter().find(|n| {
        n.interfaces
            .iter()
            .any(|i| i.address.addr == address && bridge.subnet.contains(address))
    });
    match holder {
        Some(n) => Err(format!(
            "host {host}'s address on bridge {} would be {address} (from the top of the \
             subnet, one per host), which is node {}'s: give the node another address",
            bridge.name, n.name
        )),
        None => Ok(()),
    }
}

/// `port = 80` or `port = "8000-8010"`.
fn ports(value: &toml::Value) -> Result<(u16, u16), String> {
    match value {
        toml::Value::Integer(n) if (1..=65535).contains(n) => Ok((*n as u16, *n as u16)),
        toml::Value::Integer(n) => Err(format!("port {n} is out of range (1-65535)")),
        toml::Value::String(s) => parse_port_range(s),
        other => Err(format!(
            "`{other}` is not a port or a port range like \"8000-8010\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use crate::model::{
        test_support::{err, with_base, with_base6},
        types::*,
        validate::parse,
    };

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
    fn forwards_reach_nodes_behind_the_lab_hosts_routes() {
        // r routes between v-net-0 and a cable to b (10.44.0.0/24); the lab
        // host's route to that subnet goes through r.
        let text = with_base(
            "[[nodes]]\nname = \"r\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.2\"\n\
             forwarding = true\n\
             [[nodes]]\nname = \"b\"\ngateway = \"10.44.0.1\"\n\
             [[cables]]\na = { node = \"r\", address = \"10.44.0.1/24\" }\n\
             b = { node = \"b\", address = \"10.44.0.10/24\" }\n\
             [[forwards]]\nprotocol = \"tcp\"\nport = 80\nto = \"b:8080\"\n\
             [[forwards]]\nprotocol = \"udp\"\nport = 53\nto = \"10.44.0.10\"\n",
        );
        let route = "[[routes]]\nto = \"10.44.0.0/24\"\nvia = \"192.168.15.2\"\n";
        let lab = parse("lab.toml", &format!("{text}{route}")).unwrap();
        assert_eq!(lab.forwards[0].node, "b");
        assert_eq!(lab.forwards[0].target_addr, Ipv4Addr::new(10, 44, 0, 10));
        assert_eq!(lab.forwards[1].target_addr, Ipv4Addr::new(10, 44, 0, 10));
        assert!(lab.host_routes[0].masquerade && !lab.host_routes[0].routed);
        // Without the route, neither target is reachable.
        let e = err(&text);
        assert!(
            e.contains("forwards[0].to: node `b` is on no bridge with a gateway, so the lab host"),
            "{e}"
        );
        assert!(
            e.contains("forwards[1].to: 10.44.0.10 is node `b`'s address on a cable, behind none"),
            "{e}"
        );
        // A route elsewhere: the message says the routes were looked at.
        let other = "[[routes]]\nto = \"10.45.0.0/24\"\nvia = \"192.168.15.2\"\n";
        assert!(err(&format!("{text}{other}")).contains(
            "forwards[0].to: node `b` is on no bridge with a gateway, and none of the lab host's \
             `[[routes]]` leads to its addresses, so the lab host cannot reach it"
        ));
    }

    #[test]
    fn take_host_port_is_read_per_forward() {
        let fwd = |extra: &str| {
            with_base(&format!(
                "[[nodes]]\nname = \"blue\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.2\"\n\
                 [[forwards]]\nprotocol = \"tcp\"\nport = 22\nto = \"blue\"\n{extra}"
            ))
        };
        assert!(!parse("lab.toml", &fwd("")).unwrap().forwards[0].take_host_port);
        let lab = parse("lab.toml", &fwd("take_host_port = true\n")).unwrap();
        assert!(lab.forwards[0].take_host_port);
        assert!(err(&fwd("take_host_port = \"yes\"\n"))
            .contains("forwards[0].take_host_port: invalid type"));
    }

    /// A forward applies to IPv6 too unless it says `ipv6 = false`; saying
    /// `ipv6 = true` for a target the NAT cannot reach over IPv6 is an
    /// error at the key, not a forward that is silently IPv4 only.
    #[test]
    fn ipv6_of_a_forward_is_both_by_default_off_on_request_and_checked_when_asked() {
        let fwd = |address6: &str, extra: &str| {
            with_base6(&format!(
                "[[nodes]]\nname = \"blue\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.2\"\n\
                 {address6}[[forwards]]\nprotocol = \"tcp\"\nport = 80\nto = \"blue\"\n{extra}"
            ))
        };
        let with6 = "address6 = \"fd00:15::2\"\n";
        assert!(parse("lab.toml", &fwd(with6, "")).unwrap().forwards[0].ipv6);
        let lab = parse("lab.toml", &fwd(with6, "ipv6 = false\n")).unwrap();
        assert!(!lab.forwards[0].ipv6);
        assert_eq!(
            lab.forwards[0].to_string(),
            "tcp 80 -> blue:80 (192.168.15.2), IPv4 only"
        );
        assert!(parse("lab.toml", &fwd(with6, "ipv6 = true\n")).is_ok());
        // Behind a router, through a masqueraded IPv6 route of the lab host's.
        let behind = |masquerade: bool| {
            with_base6(&format!(
                "[[nodes]]\nname = \"r\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.3\"\n\
                 address6 = \"fd00:15::3\"\nforwarding = true\n[[nodes]]\nname = \"b\"\n\
                 [[cables]]\na = {{ node = \"r\", address = \"10.0.2.1/24\", address6 = \"fd00:2::1/64\" }}\n\
                 b = {{ node = \"b\", address = \"10.0.2.2/24\", address6 = \"fd00:2::2/64\" }}\n\
                 [[routes]]\nto = \"10.0.2.0/24\"\nvia = \"192.168.15.3\"\n\
                 [[routes]]\nto = \"fd00:2::/64\"\nvia = \"fd00:15::3\"\nmasquerade = {masquerade}\n\
                 [[forwards]]\nprotocol = \"tcp\"\nport = 80\nto = \"b\"\nipv6 = true\n"
            ))
        };
        let lab = parse("lab.toml", &behind(true)).unwrap();
        assert_eq!(
            lab.forward_target6(&lab.forwards[0]),
            Some("fd00:2::2".parse().unwrap())
        );
        assert!(err(&behind(false)).contains("forwards[0].ipv6: node `b` has no `address6`"));
        assert_eq!(
            err(&fwd("", "ipv6 = true\n")),
            "lab.toml:17: forwards[0].ipv6: node `blue` has no `address6` the NAT reaches at \
             192.168.15.2 (on a masqueraded bridge with a `gateway6`, or behind a masqueraded IPv6 \
             route): the forward can only be IPv4"
        );
    }
}
