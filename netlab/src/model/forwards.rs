//! Port forwards: how a forward's target is written (`blue`, `blue:80`,
//! `blue:9000-9009`, an address) and resolved against the lab.

use std::net::Ipv4Addr;

use super::types::{Attachment, Forward, Lab, Proto};

impl Lab {
    /// Resolve a forward target written as `node` (the same ports),
    /// `node:port` (every forwarded port to that one), `node:a-b` (a range
    /// onto a range of the same size), or an address instead of `node`.
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
        let span = ports.1 - ports.0;
        let (target_port, target_range) = match port {
            None => (ports.0, true),
            Some(p) => {
                let (first, last) = parse_port_range(p)?;
                if last == first {
                    (first, false)
                } else if last - first != span {
                    return Err(format!(
                        "target port range {p} has {} ports but the forwarded range has {}",
                        u32::from(last - first) + 1,
                        u32::from(span) + 1
                    ));
                } else {
                    (first, true)
                }
            }
        };
        let node = match who.parse::<Ipv4Addr>() {
            Ok(addr) => {
                let node = self
                    .node_by_bridge_address(addr)
                    .ok_or_else(|| format!("no node has address {addr} on a bridge"))?;
                // Only bridges with a gateway have the lab host on them (as
                // for a target given by name, below).
                let bridge = node
                    .interfaces
                    .iter()
                    .find_map(|i| match &i.attachment {
                        Attachment::Bridge { bridge, .. } if i.address.addr == addr => {
                            self.bridge(bridge)
                        }
                        _ => None,
                    })
                    .filter(|b| b.gateway.is_none());
                if let Some(b) = bridge {
                    return Err(format!(
                        "{addr} is node `{}`'s address on bridge `{}`, which has no gateway, \
                         so the lab host cannot reach it",
                        node.name, b.name
                    ));
                }
                node
            }
            Err(_) => self
                .node(who)
                .ok_or_else(|| format!("unknown node `{who}`"))?,
        };
        let target_addr = match who.parse::<Ipv4Addr>() {
            Ok(addr) => addr,
            Err(_) => node
                .interfaces
                .iter()
                .find(|i| {
                    matches!(&i.attachment, Attachment::Bridge { bridge, .. }
                        if self.bridge(bridge).is_some_and(|b| b.gateway.is_some()))
                })
                .map(|i| i.address.addr)
                .ok_or_else(|| {
                    format!(
                        "node `{}` is on no bridge with a gateway, so the lab host cannot reach it",
                        node.name
                    )
                })?,
        };
        Ok(Forward {
            proto,
            port_first: ports.0,
            port_last: ports.1,
            node: node.name.clone(),
            target_addr,
            target_port,
            target_range: target_range && span > 0,
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
