//! What node routes and the lab host's routes share: a route as written, a
//! next hop's reachability, and one routing table in which the kernel keeps
//! one route per destination.

use std::{collections::BTreeMap, net::Ipv4Addr};

use toml::Spanned;

use super::context::Checker;
use crate::model::{net::Ipv4Net, types::Route};

pub const DEFAULT_ROUTE: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::UNSPECIFIED,
    prefix_len: 0,
};

/// Why `via` cannot be the next hop of a route of `whose` (a node, the lab
/// host), whose interfaces have the addresses `own`; `None` when it can:
/// another usable address on one of their subnets. `nowhere` says it is on
/// none of them.
pub fn next_hop_problem(
    own: &[Ipv4Net],
    via: Ipv4Addr,
    whose: &str,
    nowhere: impl FnOnce(Ipv4Addr) -> String,
) -> Option<String> {
    if own.iter().any(|a| a.addr == via) {
        return Some(format!("{via} is an address of {whose} itself"));
    }
    match own.iter().find(|a| a.contains(via)) {
        None => Some(nowhere(via)),
        Some(a) if !a.is_usable_host(via) => Some(format!(
            "{via} is the network or broadcast address of {}",
            a.network()
        )),
        Some(_) => None,
    }
}

/// One routing table (a node's, the lab host's) as validation builds it.
/// The kernel keeps one route per destination: adding a second one (or one
/// to a connected subnet) fails with EEXIST, which `up` takes as done, so
/// the lab would never converge.
pub struct RouteTable {
    /// "node `red`", "the lab host".
    pub owner: String,
    /// Subnets reached directly, each with what reaches it.
    pub connected: Vec<(Ipv4Net, String)>,
    /// Destination → next hop and where that route comes from.
    pub routes: BTreeMap<Ipv4Net, (Ipv4Addr, String)>,
}

impl RouteTable {
    /// Add the route written at `field`: `Ok(false)` if the very same
    /// route is there already (it is one route), an error if another route
    /// has its destination.
    pub fn add(&mut self, route: Route, field: &str) -> Result<bool, String> {
        let dest = if route.to.prefix_len == 0 {
            "default".to_string()
        } else {
            route.to.to_string()
        };
        if let Some((_, what)) = self.connected.iter().find(|(n, _)| *n == route.to) {
            return Err(format!(
                "{dest} is the subnet of {what}, which {} reaches directly: a route to it \
                 via {} would clash with that one",
                self.owner, route.via
            ));
        }
        match self.routes.get(&route.to) {
            Some((via, _)) if *via == route.via => Ok(false),
            Some((via, what)) => Err(format!(
                "{} already has a route to {dest} via {via} ({what}); the kernel keeps one \
                 route per destination",
                self.owner
            )),
            None => {
                self.routes.insert(route.to, (route.via, field.to_string()));
                Ok(true)
            }
        }
    }
}

/// A route to `to` via `via` (written at `field`), each part checked.
pub fn route(
    c: &mut Checker<'_>,
    to: &Spanned<String>,
    via: &Spanned<String>,
    field: &str,
) -> Option<Route> {
    let dest = if to.get_ref() == "default" {
        Some(DEFAULT_ROUTE)
    } else {
        c.cidr(to, &format!("{field}.to")).map(|n| {
            if !n.is_network() {
                c.at(
                    to,
                    format!("{field}.to"),
                    format!("{n} has host bits set; did you mean {}?", n.network()),
                );
            }
            let net = n.network();
            if let Some((range, why)) = net.unusable_within() {
                c.at(
                    to,
                    format!("{field}.to"),
                    format!("{net} is inside {range} ({why}): no lab reaches it"),
                );
            }
            net
        })
    };
    let next_hop = c.ipv4(via, &format!("{field}.via"));
    Some(Route {
        to: dest?,
        via: next_hop?,
    })
}
