//! The nodes: their namespaces, and inside each one its addresses, links
//! up (`lo` too), routes and forwarding (IPv4 and IPv6 as one switch).

use std::collections::BTreeSet;

use super::{
    action::{Action, Op, Steps},
    actual::{Actual, NodeActual},
    desired::{Desired, NodeDesired},
};

pub fn delete_unwanted_namespaces(desired: &Desired, actual: &Actual, steps: &mut Steps) {
    for netns in actual.nodes.keys() {
        if !desired.nodes.contains_key(netns) {
            steps.del.push(Action::in_node(netns, Op::DeleteNamespace));
        }
    }
}

pub fn create_namespaces(desired: &Desired, actual: &Actual, steps: &mut Steps) {
    for netns in desired.nodes.keys() {
        if !actual.nodes.contains_key(netns) {
            steps.add.push(Action::in_node(netns, Op::CreateNamespace));
        }
    }
}

/// Inside every node; `fresh_links` are the (netns, link) this plan makes
/// afresh, with nothing on them yet. Routes go after every node's
/// addresses.
pub fn configure(
    desired: &Desired,
    actual: &Actual,
    fresh_links: &BTreeSet<(String, String)>,
    steps: &mut Steps,
) {
    let mut routes = Vec::new();
    for (netns, want) in &desired.nodes {
        let have = actual.nodes.get(netns);
        let readdressed = addresses(netns, want, have, fresh_links, steps);
        if !have.is_some_and(|n| n.lo_up) {
            steps
                .add
                .push(Action::in_node(netns, Op::SetLinkUp { link: "lo".into() }));
        }
        // Routes through a re-created link vanished with it, and the kernel
        // flushes routes whose gateway an address change leaves unreachable.
        let relinked = readdressed
            || want
                .addresses
                .keys()
                .any(|l| fresh_links.contains(&(netns.clone(), l.clone())));
        node_routes(netns, want, have, relinked, &mut routes);
        if have.map_or(Some(false), |n| n.forwarding) != Some(want.forwarding) {
            steps.add.push(Action::in_node(
                netns,
                Op::SetForwarding {
                    on: want.forwarding,
                },
            ));
        }
    }
    steps.add.extend(routes);
}

/// Each link's addresses (others removed) and the link up; whether an
/// address was removed.
fn addresses(
    netns: &str,
    want: &NodeDesired,
    have: Option<&NodeActual>,
    fresh_links: &BTreeSet<(String, String)>,
    steps: &mut Steps,
) -> bool {
    let mut readdressed = false;
    for (link, want_addrs) in &want.addresses {
        let fresh = fresh_links.contains(&(netns.to_string(), link.clone()));
        let have_link = if fresh {
            None
        } else {
            have.and_then(|n| n.links.get(link))
        };
        let have_addrs = have_link.map(|l| l.addresses.clone()).unwrap_or_default();
        for a in have_addrs.difference(want_addrs) {
            readdressed = true;
            steps.add.push(Action::in_node(
                netns,
                Op::DeleteAddress {
                    link: link.clone(),
                    address: *a,
                },
            ));
        }
        for a in want_addrs.difference(&have_addrs) {
            steps.add.push(Action::in_node(
                netns,
                Op::AddAddress {
                    link: link.clone(),
                    address: *a,
                },
            ));
        }
        if !have_link.is_some_and(|l| l.up) {
            steps
                .add
                .push(Action::in_node(netns, Op::SetLinkUp { link: link.clone() }));
        }
    }
    readdressed
}

/// The node's routes: unwanted ones deleted, missing ones added (all of
/// them again when `relinked`).
fn node_routes(
    netns: &str,
    want: &NodeDesired,
    have: Option<&NodeActual>,
    relinked: bool,
    routes: &mut Vec<Action>,
) {
    let have_routes = have.map(|n| n.routes.clone()).unwrap_or_default();
    // Deleted even when relinked: IPv4 flushes a route whose gateway an
    // address change leaves unreachable, IPv6 keeps it (deleting a route
    // already gone is no error).
    for r in &have_routes {
        if !want.routes.contains(r) {
            routes.push(Action::in_node(netns, Op::DeleteRoute { route: *r }));
        }
    }
    for r in &want.routes {
        if !have_routes.contains(r) || relinked {
            routes.push(Action::in_node(netns, Op::AddRoute { route: *r }));
        }
    }
}
