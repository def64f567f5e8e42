//! The desired state: what the lab host and the nodes should hold for a
//! [`Lab`], in the shape the planner compares with what it finds.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use serde::Serialize;

use super::{
    etc_files::{hosts_file, resolv_conf},
    marks::NETNS_ETC,
};
use crate::model::{
    net::IpNet,
    types::{Attachment, HostPort, Lab, Tunnel},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RouteSpec {
    /// Of `via`'s family.
    pub to: IpNet,
    pub via: IpAddr,
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.to.prefix_len() == 0 {
            write!(f, "default via {}", self.via)
        } else {
            write!(f, "{} via {}", self.to, self.via)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostVeth {
    pub bridge: String,
    pub netns: String,
    pub ifname: String,
    /// Set on a bridge stretched between hosts (it must fit in the tunnel).
    pub mtu: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct CableVeth {
    pub a_netns: String,
    pub a_ifname: String,
    pub b_netns: String,
    pub b_ifname: String,
}

/// What a node namespace should contain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeDesired {
    /// veth name → its addresses (an IPv4 one, and an IPv6 one on a
    /// dual-stack link).
    pub addresses: BTreeMap<String, BTreeSet<IpNet>>,
    pub routes: BTreeSet<RouteSpec>,
    pub forwarding: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Desired {
    pub lab: String,
    /// netns → contents.
    pub nodes: BTreeMap<String, NodeDesired>,
    /// Bridge name → the lab host's addresses on it (none, or its
    /// `gateway` and/or `gateway6`).
    pub bridges: BTreeMap<String, BTreeSet<IpNet>>,
    /// Lab-host end name → where its peer lives.
    pub host_veths: BTreeMap<String, HostVeth>,
    pub cables: BTreeSet<CableVeth>,
    pub host_routes: BTreeSet<RouteSpec>,
    /// The lab host forwards IPv6 (a bridge has a `gateway6`).
    pub host_forwarding6: bool,
    pub files: BTreeMap<PathBuf, String>,
    /// The VXLAN devices stretching bridges to other hosts, by name.
    pub tunnels: BTreeMap<String, Tunnel>,
    /// Bridge → the MAC address it must have: on a stretched bridge with a
    /// gateway, the same on every host (an anycast gateway).
    pub bridge_macs: BTreeMap<String, [u8; 6]>,
    /// The lab host's ports on stretched bridges, by the name of their
    /// lab-host end.
    pub host_ports: BTreeMap<String, HostPort>,
}

impl Desired {
    /// `offered_nameservers`: the nameservers the lab host offers its nodes,
    /// used when the lab names none (see [`resolv_conf`]).
    pub fn from_lab(lab: &Lab, offered_nameservers: &[Ipv4Addr]) -> Desired {
        let mut d = Desired {
            lab: lab.name.clone(),
            host_forwarding6: lab.routes_ipv6(),
            ..Default::default()
        };
        for b in &lab.bridges {
            let v4 = b.gateway_net().map(IpNet::from);
            let gateways = v4.into_iter().chain(b.gateway6_net().map(IpNet::from));
            d.bridges.insert(b.name.clone(), gateways.collect());
        }
        for t in lab.share.iter().flat_map(|s| &s.tunnels) {
            d.tunnels.insert(t.name.clone(), t.clone());
            if let Some(b) = lab.bridge(&t.bridge).filter(|b| b.gateway.is_some()) {
                d.bridge_macs
                    .insert(b.name.clone(), crate::model::hosts::anycast_mac(t.vni));
            }
        }
        for p in lab.share.iter().flat_map(|s| &s.host_ports) {
            d.host_ports.insert(p.name.clone(), p.clone());
        }
        let mtus: BTreeMap<String, u32> = d
            .tunnels
            .values()
            .map(|t| (t.bridge.clone(), t.mtu))
            .collect();
        for n in &lab.nodes {
            let mut nd = NodeDesired {
                forwarding: n.forwarding,
                ..Default::default()
            };
            for i in &n.interfaces {
                let v6 = i.address6.map(IpNet::from);
                let addresses = std::iter::once(i.address.into()).chain(v6);
                nd.addresses.insert(i.name.clone(), addresses.collect());
                if let Attachment::Bridge { bridge, host_name } = &i.attachment {
                    let mtu = mtus.get(bridge).copied();
                    d.host_veths.insert(
                        host_name.clone(),
                        HostVeth {
                            bridge: bridge.clone(),
                            netns: n.netns.clone(),
                            ifname: i.name.clone(),
                            mtu,
                        },
                    );
                }
            }
            let v6 = n.gateway6.map(IpAddr::from);
            for gw in n.gateway.map(IpAddr::from).into_iter().chain(v6) {
                nd.routes.insert(RouteSpec {
                    to: IpNet::default_for(gw),
                    via: gw,
                });
            }
            for r in &n.routes {
                nd.routes.insert(RouteSpec {
                    to: r.to,
                    via: r.via,
                });
            }
            d.nodes.insert(n.netns.clone(), nd);
        }
        for c in &lab.cables {
            d.cables.insert(CableVeth {
                a_netns: lab.netns_of(&c.a.node),
                a_ifname: c.a.interface.clone(),
                b_netns: lab.netns_of(&c.b.node),
                b_ifname: c.b.interface.clone(),
            });
        }
        for r in &lab.host_routes {
            d.host_routes.insert(RouteSpec {
                to: r.to.into(),
                via: r.via.into(),
            });
        }
        for r in &lab.host_routes6 {
            d.host_routes.insert(RouteSpec {
                to: r.to.into(),
                via: r.via.into(),
            });
        }
        let hosts = hosts_file(lab);
        let resolv = resolv_conf(lab, offered_nameservers);
        for n in &lab.nodes {
            let dir = PathBuf::from(NETNS_ETC).join(&n.netns);
            d.files.insert(dir.join("hosts"), hosts.clone());
            d.files.insert(dir.join("resolv.conf"), resolv.clone());
        }
        d
    }
}
