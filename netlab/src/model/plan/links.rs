//! Links: the veths between the lab host's bridges and the nodes, the cables
//! between nodes, and the links the lab owns but no longer wants. A veth is
//! there only when both of its ends are where they belong; otherwise what
//! is left of it goes and it is made afresh.

use std::collections::BTreeSet;

use super::{
    action::{Action, Op, Steps},
    actual::{Actual, LinkKind, LinkState},
    desired::{CableVeth, Desired},
};

/// The veths this plan makes afresh.
pub struct Fresh<'d> {
    /// Lab-host end names.
    pub host_veths: BTreeSet<&'d str>,
    pub cables: BTreeSet<&'d CableVeth>,
}

impl Fresh<'_> {
    /// The node ends of the fresh veths: (netns, link).
    pub fn node_links(&self, desired: &Desired) -> BTreeSet<(String, String)> {
        let host_veths = desired
            .host_veths
            .iter()
            .filter(|(name, _)| self.host_veths.contains(name.as_str()))
            .map(|(_, v)| (v.netns.clone(), v.ifname.clone()));
        let cables = self.cables.iter().flat_map(|c| {
            [
                (c.a_netns.clone(), c.a_ifname.clone()),
                (c.b_netns.clone(), c.b_ifname.clone()),
            ]
        });
        host_veths.chain(cables).collect()
    }
}

fn node_link<'a>(actual: &'a Actual, netns: &str, name: &str) -> Option<&'a LinkState> {
    actual.nodes.get(netns).and_then(|n| n.links.get(name))
}

/// Delete the links that are wrong or unwanted (node links only in
/// namespaces that stay); returns the veths to make afresh.
pub fn delete_unwanted<'d>(desired: &'d Desired, actual: &Actual, steps: &mut Steps) -> Fresh<'d> {
    let mut doomed: BTreeSet<(String, String)> = BTreeSet::new();
    let fresh = Fresh {
        host_veths: host_veths(desired, actual, &mut doomed, steps),
        cables: cables(desired, actual, &mut doomed),
    };
    // Links in kept namespaces that nothing wants any more.
    for (netns, node) in &actual.nodes {
        let Some(want) = desired.nodes.get(netns) else {
            continue;
        };
        for name in node.links.keys() {
            if !want.addresses.contains_key(name) {
                doomed.insert((netns.clone(), name.clone()));
            }
        }
    }
    for (netns, name) in &doomed {
        if desired.nodes.contains_key(netns) {
            steps.del.push(Action::in_node(
                netns,
                Op::DeleteLink { name: name.clone() },
            ));
        }
    }
    // Lab-host links the lab owns but no longer wants (veths before bridges).
    let mut unwanted: Vec<(&String, &LinkState)> = actual
        .host_links
        .iter()
        .filter(|(name, _)| {
            !desired.host_veths.contains_key(*name)
                && !desired.bridges.contains_key(*name)
                && !desired.tunnels.contains_key(*name)
                && !desired
                    .host_ports
                    .iter()
                    .any(|(end, p)| end == *name || p.peer == **name)
        })
        .collect();
    unwanted.sort_by_key(|(_, l)| l.kind == LinkKind::Bridge);
    for (name, _) in unwanted {
        steps
            .del
            .push(Action::on_host(Op::DeleteLink { name: name.clone() }));
    }
    fresh
}

/// The lab-host veths to make afresh; a whole one on the wrong bridge is
/// moved, the ends of a broken one go (node ends into `doomed`).
fn host_veths<'d>(
    desired: &'d Desired,
    actual: &Actual,
    doomed: &mut BTreeSet<(String, String)>,
    steps: &mut Steps,
) -> BTreeSet<&'d str> {
    let mut fresh = BTreeSet::new();
    for (name, want) in &desired.host_veths {
        let host_end = actual.host_links.get(name);
        let node_end = node_link(actual, &want.netns, &want.ifname);
        let host_ok = host_end.is_some_and(|l| l.kind == LinkKind::Veth);
        let node_ok = node_end.is_some_and(|l| l.kind == LinkKind::Veth);
        if host_ok && node_ok {
            if host_end.and_then(|l| l.controller.as_deref()) != Some(want.bridge.as_str()) {
                steps.add.push(Action::on_host(Op::SetController {
                    name: name.clone(),
                    bridge: want.bridge.clone(),
                }));
            }
            continue;
        }
        if host_end.is_some() {
            steps
                .del
                .push(Action::on_host(Op::DeleteLink { name: name.clone() }));
        }
        if node_end.is_some() {
            doomed.insert((want.netns.clone(), want.ifname.clone()));
        }
        fresh.insert(name.as_str());
    }
    fresh
}

/// The cables to make afresh; the ends of broken ones go into `doomed`.
fn cables<'d>(
    desired: &'d Desired,
    actual: &Actual,
    doomed: &mut BTreeSet<(String, String)>,
) -> BTreeSet<&'d CableVeth> {
    let mut fresh = BTreeSet::new();
    for cable in &desired.cables {
        let a = node_link(actual, &cable.a_netns, &cable.a_ifname);
        let b = node_link(actual, &cable.b_netns, &cable.b_ifname);
        if a.is_some_and(|l| l.kind == LinkKind::Veth)
            && b.is_some_and(|l| l.kind == LinkKind::Veth)
        {
            continue;
        }
        if a.is_some() {
            doomed.insert((cable.a_netns.clone(), cable.a_ifname.clone()));
        }
        if b.is_some() {
            doomed.insert((cable.b_netns.clone(), cable.b_ifname.clone()));
        }
        fresh.insert(cable);
    }
    fresh
}

/// Make the fresh veths and cables; set the lab-host ends of the others up.
pub fn create(desired: &Desired, actual: &Actual, fresh: &Fresh<'_>, steps: &mut Steps) {
    for (name, want) in &desired.host_veths {
        if fresh.host_veths.contains(name.as_str()) {
            steps.add.push(Action::on_host(Op::CreateVeth {
                name: name.clone(),
                peer_netns: want.netns.clone(),
                peer_name: want.ifname.clone(),
                bridge: Some(want.bridge.clone()),
                mtu: want.mtu,
            }));
        } else if !actual.host_links.get(name).is_some_and(|l| l.up) {
            steps
                .add
                .push(Action::on_host(Op::SetLinkUp { link: name.clone() }));
        }
    }
    for cable in &fresh.cables {
        steps.add.push(Action::in_node(
            &cable.a_netns,
            Op::CreateVeth {
                name: cable.a_ifname.clone(),
                peer_netns: cable.b_netns.clone(),
                peer_name: cable.b_ifname.clone(),
                bridge: None,
                mtu: None,
            },
        ));
    }
}
