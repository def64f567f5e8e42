//! What node routes and the lab host's routes share: a route as written, a
//! next hop's reachability, and one routing table in which the kernel keeps
//! one route per destination (per family: IPv4 and IPv6 are two tables).

use std::{collections::BTreeMap, net::IpAddr};

use toml::Spanned;

use super::context::Checker;
use crate::model::{net::IpNet, types::Route};

/// Why `via` cannot be the next hop of a route of `whose` (a node, the lab
/// host), whose interfaces have the addresses `own` (of both families);
/// `None` when it can: another usable address on one of their subnets.
/// `nowhere` says it is on none of them.
pub fn next_hop_problem(
    own: &[IpNet],
    via: IpAddr,
    whose: &str,
    nowhere: impl FnOnce(IpAddr) -> String,
) -> Option<String> {
    if own.iter().any(|a| a.addr() == via) {
        return Some(format!("{via} is an address of {whose} itself"));
    }
    match own.iter().find(|a| a.contains(via)) {
        None => Some(nowhere(via)),
        Some(a) if !a.is_usable_host(via) => Some(match a {
            IpNet::V4(_) => format!(
                "{via} is the network or broadcast address of {}",
                a.network()
            ),
            IpNet::V6(_) => format!(
                "{via} is the subnet-router anycast address of {}",
                a.network()
            ),
        }),
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
    pub connected: Vec<(IpNet, String)>,
    /// Destination → next hop and where that route comes from.
    pub routes: BTreeMap<IpNet, (IpAddr, String)>,
}

/// How a destination reads in messages: `default` (`default (IPv6)`) or the prefix.
fn destination(to: IpNet) -> String {
    match to {
        IpNet::V4(n) if n.prefix_len == 0 => "default".to_string(),
        IpNet::V6(n) if n.prefix_len == 0 => "default (IPv6)".to_string(),
        _ => to.to_string(),
    }
}

impl RouteTable {
    /// Add the route written at `field`: `Ok(false)` if the very same
    /// route is there already (it is one route), an error if another route
    /// has its destination.
    pub fn add(&mut self, route: Route, field: &str) -> Result<bool, String> {
        let dest = destination(route.to);
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

/// A route to `to` via `via` (written at `field`), each part checked, and
/// both of one family (`to = "default"` takes `via`'s).
pub fn route(
    c: &mut Checker<'_>,
    to: &Spanned<String>,
    via: &Spanned<String>,
    field: &str,
) -> Option<Route> {
    let parsed_via = via.get_ref().parse::<IpAddr>().ok();
    let dest = if to.get_ref() == "default" {
        parsed_via.map(IpNet::default_for)
    } else {
        destination_net(c, to, &format!("{field}.to"))
    };
    if parsed_via.is_none() {
        let msg = format!("`{}` is not an IPv4 or IPv6 address", via.get_ref());
        c.at(via, format!("{field}.via"), msg);
    }
    let next_hop = parsed_via;
    let (to_net, via_addr) = (dest?, next_hop?);
    if to_net.is_v6() != via_addr.is_ipv6() {
        let family = |v6: bool| if v6 { "IPv6" } else { "IPv4" };
        let msg = format!(
            "{via_addr} is an {} address, {to_net} an {} destination: a route's gateway is of \
             its destination's family",
            family(via_addr.is_ipv6()),
            family(to_net.is_v6())
        );
        c.at(via, format!("{field}.via"), msg);
        return None;
    }
    Some(Route {
        to: to_net,
        via: via_addr,
    })
}

/// A route's destination as written: a prefix of either family, in no
/// unusable range.
fn destination_net(c: &mut Checker<'_>, to: &Spanned<String>, field: &str) -> Option<IpNet> {
    let n = match to.get_ref().parse::<IpNet>() {
        Ok(n) => n,
        Err(e) => {
            c.at(to, field, format!("bad CIDR: {e}"));
            return None;
        }
    };
    if !n.is_network() {
        let msg = format!("{n} has host bits set; did you mean {}?", n.network());
        c.at(to, field, msg);
    }
    let net = n.network();
    if let Some((range, why)) = net.unusable_within() {
        c.at(
            to,
            field,
            format!("{net} is inside {range} ({why}): no lab reaches it"),
        );
    }
    Some(net)
}
