//! The observed state: what the lab owns right now, as the effects layer
//! finds it, and what it would find once a plan has succeeded.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use serde::Serialize;

use super::desired::{Desired, RouteSpec};
use crate::model::net::Ipv4Net;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    Bridge,
    Veth,
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkState {
    pub kind: LinkKind,
    pub up: bool,
    pub controller: Option<String>,
    pub addresses: BTreeSet<Ipv4Net>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeActual {
    /// Every link but `lo`.
    pub links: BTreeMap<String, LinkState>,
    pub lo_up: bool,
    /// Routes netlab manages (protocol static) in the main table.
    pub routes: BTreeSet<RouteSpec>,
    pub forwarding: bool,
}

/// What the lab owns right now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Actual {
    /// Owned namespaces and what they hold.
    pub nodes: BTreeMap<String, NodeActual>,
    /// Owned links on the lab host.
    pub host_links: BTreeMap<String, LinkState>,
    /// netlab-managed routes on the lab host.
    pub host_routes: BTreeSet<RouteSpec>,
    pub host_forwarding: bool,
    /// Files carrying the lab's marker.
    pub files: BTreeMap<PathBuf, String>,
}

/// What the system looks like once every action of a plan for `desired`
/// has succeeded: what `observe` would find on a converged lab host. The
/// planner's tests and the topology fuzz target check plans against it.
pub fn converged(desired: &Desired) -> Actual {
    let mut a = Actual {
        host_forwarding: true,
        ..Default::default()
    };
    for (name, gw) in &desired.bridges {
        a.host_links.insert(
            name.clone(),
            LinkState {
                kind: LinkKind::Bridge,
                up: true,
                controller: None,
                addresses: gw.iter().copied().collect(),
            },
        );
    }
    for (name, v) in &desired.host_veths {
        a.host_links.insert(
            name.clone(),
            LinkState {
                kind: LinkKind::Veth,
                up: true,
                controller: Some(v.bridge.clone()),
                addresses: BTreeSet::new(),
            },
        );
    }
    for (netns, n) in &desired.nodes {
        a.nodes.insert(
            netns.clone(),
            NodeActual {
                links: n
                    .addresses
                    .iter()
                    .map(|(l, addr)| {
                        (
                            l.clone(),
                            LinkState {
                                kind: LinkKind::Veth,
                                up: true,
                                controller: None,
                                addresses: [*addr].into(),
                            },
                        )
                    })
                    .collect(),
                lo_up: true,
                routes: n.routes.clone(),
                forwarding: n.forwarding,
            },
        );
    }
    a.host_routes = desired.host_routes.clone();
    a.files = desired.files.clone();
    a
}
