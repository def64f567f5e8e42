//! Port forwards: how a forward's target is written (`blue`, `blue:80`,
//! `blue:9000-9009`, an address) and resolved against the lab.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::types::{Attachment, Forward, HostRoute, Interface, Lab, Node, Proto};

impl Lab {
    /// Resolve a forward target written as `node` (the same ports),
    /// `node:port` (every forwarded port to that one), `node:a-b` (a range
    /// onto a range of the same size), or an address instead of `node`.
    /// The target is an address the lab host reaches: on one of its bridges
    /// (one with a gateway) or behind one of its `[[routes]]`.
    pub fn resolve_forward(
        &self,
        proto: Proto,
        ports: (u16, u16),
        to: &str,
    ) -> Result<Forward, String> {
        let (who, port) = match to.rsplit_once(':') {
            Some((who, port)) => (who, Some(port)),
            None => (to, None),
        };
        let (target_port, target_range) = target_ports(ports, port)?;
        let (node, target_addr) = match who.parse::<Ipv4Addr>() {
            Ok(addr) => self.target_by_address(addr)?,
            Err(_) => self.target_by_name(who)?,
        };
        Ok(Forward {
            proto,
            port_first: ports.0,
            port_last: ports.1,
            node: node.name.clone(),
            target_addr,
            target_port,
            target_range,
            ipv6: true,
            take_host_port: false,
            host: None,
            snat: None,
        })
    }

    /// The IPv6 address a forward reaches its node at: the `address6` of
    /// the target interface, on a masqueraded bridge with a `gateway6`, or
    /// behind a router that a masqueraded IPv6 route of the lab host's
    /// leads to (as IPv4's forwards behind `[[routes]]`); the NAT66 then
    /// translates the node's replies. `None` for an IPv4-only target.
    pub fn forward_target6(&self, f: &Forward) -> Option<Ipv6Addr> {
        let node = self.node(&f.node)?;
        let iface = node
            .interfaces
            .iter()
            .find(|i| i.address.addr == f.target_addr)?;
        let addr6 = iface.address6?.addr;
        if let Attachment::Bridge { bridge, .. } = &iface.attachment {
            if let Some(b) = self.bridge(bridge).filter(|b| b.gateway6.is_some()) {
                return b.masquerade.then_some(addr6);
            }
        }
        let route = self
            .host_routes6
            .iter()
            .filter(|r| r.to.contains(addr6))
            .max_by_key(|r| r.to.prefix_len)?;
        route.masquerade.then_some(addr6)
    }

    /// The lab host's route that reaches `addr` (the longest match).
    pub fn host_route_to(&self, addr: Ipv4Addr) -> Option<&HostRoute> {
        self.host_routes
            .iter()
            .filter(|r| r.to.contains(addr))
            .max_by_key(|r| r.to.prefix_len)
    }

    /// Whether the lab host reaches a node's interface: it is on the
    /// interface's bridge, or a route of its leads to the address.
    pub fn host_reaches(&self, iface: &Interface) -> bool {
        let on_bridge = matches!(&iface.attachment, Attachment::Bridge { bridge, .. }
            if self.bridge(bridge).is_some_and(|b| b.gateway.is_some()));
        on_bridge || self.host_route_to(iface.address.addr).is_some()
    }

    /// "" or that a target is not behind a route either (when the lab host
    /// has routes): `", and none of the lab host's [[routes]] leads to {what}"`.
    fn nor_through_routes(&self, what: &str) -> String {
        if self.host_routes.is_empty() {
            String::new()
        } else {
            format!(", and none of the lab host's `[[routes]]` leads to {what}")
        }
    }

    fn target_by_address(&self, addr: Ipv4Addr) -> Result<(&Node, Ipv4Addr), String> {
        let found = self.nodes.iter().find_map(|n| {
            let on = |bridged: bool| {
                n.interfaces.iter().find(|i| {
                    i.address.addr == addr
                        && bridged == matches!(i.attachment, Attachment::Bridge { .. })
                })
            };
            on(true).or_else(|| on(false)).map(|i| (n, i))
        });
        let Some((node, iface)) = found else {
            return Err(format!("no node has address {addr} on a bridge"));
        };
        if self.host_reaches(iface) {
            return Ok((node, addr));
        }
        Err(match &iface.attachment {
            // Only bridges with a gateway have the lab host on them.
            Attachment::Bridge { bridge, .. } => format!(
                "{addr} is node `{}`'s address on bridge `{bridge}`, which has no gateway{}, so \
                 the lab host cannot reach it",
                node.name,
                self.nor_through_routes("it")
            ),
            Attachment::Cable { .. } => format!(
                "{addr} is node `{}`'s address on a cable, behind none of the lab host's \
                 `[[routes]]`, so the lab host cannot reach it",
                node.name
            ),
        })
    }

    /// A node's address on a bridge the lab host is on, else the first
    /// one behind a route of the lab host.
    fn target_by_name(&self, who: &str) -> Result<(&Node, Ipv4Addr), String> {
        let node = self
            .node(who)
            .ok_or_else(|| format!("unknown node `{who}`"))?;
        let on_bridge = node.interfaces.iter().find(|i| {
            matches!(&i.attachment, Attachment::Bridge { bridge, .. }
                if self.bridge(bridge).is_some_and(|b| b.gateway.is_some()))
        });
        let iface = on_bridge.or_else(|| {
            node.interfaces
                .iter()
                .find(|i| self.host_route_to(i.address.addr).is_some())
        });
        match iface {
            Some(i) => Ok((node, i.address.addr)),
            None => Err(format!(
                "node `{}` is on no bridge with a gateway{}, so the lab host cannot reach it",
                node.name,
                self.nor_through_routes("its addresses")
            )),
        }
    }
}

/// The target ports written after `:` (if any) for the forwarded `ports`:
/// the first target port, and whether the ports map one to one.
fn target_ports(ports: (u16, u16), written: Option<&str>) -> Result<(u16, bool), String> {
    let span = ports.1 - ports.0;
    let Some(p) = written else {
        return Ok((ports.0, span > 0));
    };
    let (first, last) = parse_port_range(p)?;
    if last == first {
        Ok((first, false))
    } else if last - first != span {
        Err(format!(
            "target port range {p} has {} ports but the forwarded range has {}",
            u32::from(last - first) + 1,
            u32::from(span) + 1
        ))
    } else {
        Ok((first, true))
    }
}

/// What [`Lab::remove_forward_ports`] took out of the lab's forwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The forward the ports were part of, as it was.
    pub from: Forward,
    /// The removed ports, as a forward of their own (its map entries are
    /// the ones to delete).
    pub removed: Forward,
    /// What is left of `from` (none, one or two forwards), now in the lab.
    pub kept: Vec<Forward>,
}

impl Lab {
    /// Add a forward unless one of the lab's overlaps it. The one check for
    /// the lab file and `netlab fwd add`, with one wording.
    pub fn add_forward(&mut self, fwd: Forward) -> Result<(), String> {
        if let Some(other) = self.forwards.iter().find(|o| o.overlaps(&fwd)) {
            return Err(format!(
                "{} {} overlaps the forward of {} {}",
                fwd.proto,
                fwd.ports_text(),
                other.proto,
                other.ports_text()
            ));
        }
        self.forwards.push(fwd);
        Ok(())
    }

    /// Remove ports `first..=last` of `proto` from the forward that holds
    /// them all; a forward of a range keeps the ports on either side (each
    /// still going where it went). Ports that are not all in one forward
    /// are refused, naming the forward they would cut into.
    pub fn remove_forward_ports(
        &mut self,
        proto: Proto,
        ports: (u16, u16),
    ) -> Result<Removed, String> {
        let (first, last) = ports;
        let wanted = if first == last {
            format!("{proto} {first}")
        } else {
            format!("{proto} {first}-{last}")
        };
        let Some(i) = self
            .forwards
            .iter()
            .position(|f| f.proto == proto && f.port_first <= first && last <= f.port_last)
        else {
            return Err(match self.forwards.iter().find(|f| {
                f.proto == proto && f.port_first <= last && first <= f.port_last
            }) {
                Some(f) => format!(
                    "{wanted} is not all in one forward: the forward of {} {} holds only part of it",
                    f.proto,
                    f.ports_text()
                ),
                None => format!("no forward of {wanted}"),
            });
        };
        let from = self.forwards.remove(i);
        let part = |a: u16, b: u16| Forward {
            port_first: a,
            port_last: b,
            target_port: if from.target_range {
                from.target_port.saturating_add(a - from.port_first)
            } else {
                from.target_port
            },
            target_range: from.target_range && b > a,
            ..from.clone()
        };
        let mut kept = Vec::new();
        if from.port_first < first {
            kept.push(part(from.port_first, first - 1));
        }
        if last < from.port_last {
            kept.push(part(last + 1, from.port_last));
        }
        self.forwards.splice(i..i, kept.iter().cloned());
        Ok(Removed {
            removed: part(first, last),
            from,
            kept,
        })
    }
}

/// `80` or `8000-8010`, each port 1-65535.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let parse_one = |p: &str| -> Result<u16, String> {
        let n: i64 = p
            .trim()
            .parse()
            .map_err(|_| format!("`{p}` is not a port number"))?;
        if !(1..=65535).contains(&n) {
            return Err(format!("port {n} is out of range (1-65535)"));
        }
        Ok(n as u16)
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse_one(a)?, parse_one(b)?);
            if a > b {
                return Err(format!("port range {s} is reversed"));
            }
            Ok((a, b))
        }
        None => parse_one(s).map(|p| (p, p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{test_support::with_base, validate::parse};

    /// A lab with blue (192.168.15.2) and forwards tcp 8000-8010 → blue:9000-9010
    /// and udp 5000-5009 → blue:53.
    fn lab() -> Lab {
        parse(
            "lab.toml",
            &with_base(
                "[[nodes]]\nname = \"blue\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.2\"\n\
                 [[forwards]]\nprotocol = \"tcp\"\nport = \"8000-8010\"\nto = \"blue:9000-9010\"\n\
                 [[forwards]]\nprotocol = \"udp\"\nport = \"5000-5009\"\nto = \"blue:53\"\n",
            ),
        )
        .unwrap()
    }

    fn pairs(lab: &Lab, proto: Proto) -> Vec<(u16, u16)> {
        let mut v: Vec<(u16, u16)> = lab
            .forwards
            .iter()
            .filter(|f| f.proto == proto)
            .flat_map(|f| f.port_pairs().collect::<Vec<_>>())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn fwd_add_refuses_an_overlap_with_the_files_wording() {
        let mut lab = lab();
        let fwd = lab
            .resolve_forward(Proto::Tcp, (8005, 8005), "blue:22")
            .unwrap();
        assert_eq!(
            lab.add_forward(fwd),
            Err("tcp 8005 overlaps the forward of tcp 8000-8010".to_string())
        );
        assert_eq!(lab.forwards.len(), 2);
        let fwd = lab
            .resolve_forward(Proto::Tcp, (8011, 8011), "blue:22")
            .unwrap();
        lab.add_forward(fwd).unwrap();
        assert_eq!(lab.forwards.len(), 3);
    }

    #[test]
    fn removing_one_port_of_a_range_keeps_the_others() {
        let mut lab = lab();
        let before = pairs(&lab, Proto::Tcp);
        let r = lab.remove_forward_ports(Proto::Tcp, (8003, 8003)).unwrap();
        assert_eq!(r.removed.port_pairs().collect::<Vec<_>>(), [(8003, 9003)]);
        assert_eq!(r.from.ports_text(), "8000-8010");
        assert_eq!(
            r.kept.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
            [
                "tcp 8000-8002 -> blue:9000-9002 (192.168.15.2)",
                "tcp 8004-8010 -> blue:9004-9010 (192.168.15.2)"
            ]
        );
        // Every other port still goes where it went.
        let expect: Vec<(u16, u16)> = before.into_iter().filter(|p| p.0 != 8003).collect();
        assert_eq!(pairs(&lab, Proto::Tcp), expect);
        // The port is free again; the UDP forward is untouched.
        let fwd = lab
            .resolve_forward(Proto::Tcp, (8003, 8003), "blue:22")
            .unwrap();
        lab.add_forward(fwd).unwrap();
        assert_eq!(pairs(&lab, Proto::Udp).len(), 10);
    }

    #[test]
    fn removing_ports_of_a_range_to_one_port_or_at_its_ends() {
        let mut lab = lab();
        let r = lab.remove_forward_ports(Proto::Udp, (5000, 5001)).unwrap();
        assert_eq!(
            r.removed.to_string(),
            "udp 5000-5001 -> blue:53 (192.168.15.2)"
        );
        assert_eq!(r.kept.len(), 1);
        assert_eq!(
            r.kept[0].to_string(),
            "udp 5002-5009 -> blue:53 (192.168.15.2)"
        );
        let r = lab.remove_forward_ports(Proto::Udp, (5009, 5009)).unwrap();
        assert_eq!(r.kept[0].ports_text(), "5002-5008");
        // The whole forward, as `fwd del` of the range it was added with.
        let r = lab.remove_forward_ports(Proto::Tcp, (8000, 8010)).unwrap();
        assert!(r.kept.is_empty());
        assert!(pairs(&lab, Proto::Tcp).is_empty());
    }

    #[test]
    fn removing_ports_not_forwarded_or_across_forwards_is_refused() {
        let mut lab = lab();
        assert_eq!(
            lab.remove_forward_ports(Proto::Tcp, (5000, 5000)),
            Err("no forward of tcp 5000".to_string())
        );
        assert_eq!(
            lab.remove_forward_ports(Proto::Tcp, (8005, 8020)),
            Err(
                "tcp 8005-8020 is not all in one forward: the forward of tcp 8000-8010 holds \
                 only part of it"
                    .to_string()
            )
        );
        assert_eq!(lab.forwards.len(), 2, "nothing removed");
    }
}
