//! The observed state: what the lab owns right now, as the effects layer
//! finds it, and what it would find once a plan has succeeded.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::PathBuf,
};

use serde::Serialize;

use super::desired::{Desired, RouteSpec};
use crate::model::{net::IpNet, types::Tunnel};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    Bridge,
    Veth,
    Vxlan,
    Other,
}

/// A VXLAN device as the kernel has it: what the plan compares with a [`Tunnel`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TunnelState {
    pub vni: u32,
    pub port: u16,
    pub local: Option<Ipv4Addr>,
    pub mtu: u32,
    /// The remotes of its all-zeros (flooding) forwarding entries.
    pub remotes: BTreeSet<Ipv4Addr>,
}

impl TunnelState {
    pub fn of(t: &Tunnel) -> TunnelState {
        TunnelState {
            vni: t.vni,
            port: t.port,
            local: Some(t.local),
            mtu: t.mtu,
            remotes: t.remotes.iter().copied().collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkState {
    pub kind: LinkKind,
    pub up: bool,
    pub controller: Option<String>,
    /// Its addresses but the IPv6 link-local one the kernel gives it.
    pub addresses: BTreeSet<IpNet>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeActual {
    /// Every link but `lo`.
    pub links: BTreeMap<String, LinkState>,
    pub lo_up: bool,
    /// Routes netlab manages (protocol static) in the main table.
    pub routes: BTreeSet<RouteSpec>,
    /// IPv4 and IPv6 forwarding both on or both off; `None`: one on, one
    /// off (a node made by a netlab that knew only IPv4).
    pub forwarding: Option<bool>,
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
    /// net.ipv6.conf.all.forwarding on the lab host.
    pub host_forwarding6: bool,
    /// Files carrying the lab's marker.
    pub files: BTreeMap<PathBuf, String>,
    /// The owned VXLAN devices on the lab host, by name.
    pub tunnels: BTreeMap<String, TunnelState>,
}

/// What the system looks like once every action of a plan for `desired`
/// has succeeded: what `observe` would find on a converged lab host. The
/// planner's tests and the topology fuzz target check plans against it.
pub fn converged(desired: &Desired) -> Actual {
    let mut a = Actual {
        host_forwarding: true,
        host_forwarding6: desired.host_forwarding6,
        ..Default::default()
    };
    for (name, gw) in &desired.bridges {
        a.host_links.insert(
            name.clone(),
            LinkState {
                kind: LinkKind::Bridge,
                up: true,
                controller: None,
                addresses: gw.clone(),
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
                                addresses: addr.clone(),
                            },
                        )
                    })
                    .collect(),
                lo_up: true,
                routes: n.routes.clone(),
                forwarding: Some(n.forwarding),
            },
        );
    }
    for (name, t) in &desired.tunnels {
        a.host_links.insert(
            name.clone(),
            LinkState {
                kind: LinkKind::Vxlan,
                up: true,
                controller: Some(t.bridge.clone()),
                addresses: BTreeSet::new(),
            },
        );
        a.tunnels.insert(name.clone(), TunnelState::of(t));
    }
    for (name, p) in &desired.host_ports {
        a.host_links
            .insert(name.clone(), super::host_ports::end_state(p));
        a.host_links
            .insert(p.peer.clone(), super::host_ports::peer_state(p));
    }
    a.host_routes = desired.host_routes.clone();
    a.files = desired.files.clone();
    a
}
