//! The steps of a plan: one [`Action`] each — an [`Op`] and the [`Place`]
//! it runs in — what it says in `--verbose` and in errors, and the two
//! lists a plan is built in.

use std::{fmt, path::PathBuf};

use super::desired::RouteSpec;
use crate::model::{
    net::IpNet,
    types::{HostPort, Tunnel},
};

/// Where an action runs: the lab host's namespace, or a node's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// The lab host (also where files under /etc/netns are written: the
    /// file system is the machine's, not a namespace's).
    LabHost,
    Node(String),
}

/// What an action does, wherever it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// The place's namespace itself (a node).
    CreateNamespace,
    DeleteNamespace,
    /// With `mac`, the bridge's address is set (an anycast gateway's).
    CreateBridge {
        name: String,
        mac: Option<[u8; 6]>,
    },
    /// A VXLAN device, marked, on its bridge, with a flooding entry per
    /// remote, up.
    CreateVxlan {
        tunnel: Tunnel,
    },
    /// A host port: its peer marked, on its bridge and up; its own end
    /// marked, with its `/32` address, up; ARP on the bridge answered only
    /// for the bridge's own addresses.
    CreateHostPort {
        port: HostPort,
    },
    /// A veth pair with `name` here and `peer_name` in netns `peer_netns`;
    /// with a bridge, `name` is attached to it, marked and set up.
    CreateVeth {
        name: String,
        peer_netns: String,
        peer_name: String,
        bridge: Option<String>,
        /// Both ends' MTU (the kernel's default when `None`).
        mtu: Option<u32>,
    },
    DeleteLink {
        name: String,
    },
    SetController {
        name: String,
        bridge: String,
    },
    SetLinkUp {
        link: String,
    },
    /// An IPv6 one is usable at once (no duplicate address detection), on
    /// a link with IPv6 on and router advertisements ignored.
    AddAddress {
        link: String,
        address: IpNet,
    },
    DeleteAddress {
        link: String,
        address: IpNet,
    },
    AddRoute {
        route: RouteSpec,
    },
    DeleteRoute {
        route: RouteSpec,
    },
    /// IPv4 forwarding; in a node, IPv6 forwarding too.
    SetForwarding {
        on: bool,
    },
    /// IPv6 forwarding on the lab host (net.ipv6.conf.all.forwarding).
    SetIpv6Forwarding {
        on: bool,
    },
    WriteFile {
        path: PathBuf,
        content: String,
    },
    RemoveFile {
        path: PathBuf,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    pub place: Place,
    pub op: Op,
}

impl Action {
    pub fn on_host(op: Op) -> Action {
        Action {
            place: Place::LabHost,
            op,
        }
    }

    pub fn in_node(netns: &str, op: Op) -> Action {
        Action {
            place: Place::Node(netns.to_string()),
            op,
        }
    }

    /// The namespace this action deletes, if it deletes one.
    pub fn deleted_namespace(&self) -> Option<&str> {
        match (&self.place, &self.op) {
            (Place::Node(netns), Op::DeleteNamespace) => Some(netns),
            _ => None,
        }
    }

    /// Whether this action takes something away (a namespace, link or file).
    pub fn removes(&self) -> bool {
        matches!(
            self.op,
            Op::DeleteNamespace | Op::DeleteLink { .. } | Op::RemoveFile { .. }
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let netns = match &self.place {
            Place::LabHost => None,
            Place::Node(n) => Some(n.as_str()),
        };
        // Where the words name the place: nodes always; the lab host only
        // where the action could be mistaken for a node's.
        let at = match netns {
            Some(n) => format!(" in netns {n}"),
            None => " on the lab host".to_string(),
        };
        let host_at = if netns.is_some() { at.as_str() } else { "" };
        match &self.op {
            Op::CreateNamespace => write!(f, "create namespace {}", netns.unwrap_or("?")),
            Op::DeleteNamespace => write!(f, "delete namespace {}", netns.unwrap_or("?")),
            Op::CreateBridge { name, .. } => write!(f, "create bridge {name}{host_at}"),
            Op::CreateVxlan { tunnel: t } => {
                let remotes: Vec<String> = t.remotes.iter().map(|r| r.to_string()).collect();
                write!(
                    f,
                    "create vxlan {} (VNI {}, port {}, from {} to {}) on bridge {}",
                    t.name,
                    t.vni,
                    t.port,
                    t.local,
                    remotes.join(", "),
                    t.bridge
                )
            }
            Op::CreateHostPort { port: p } => write!(
                f,
                "create host port {} ({}/32, peer {} on bridge {})",
                p.name, p.address, p.peer, p.bridge
            ),
            Op::CreateVeth {
                name,
                peer_netns,
                peer_name,
                bridge: Some(bridge),
                ..
            } => write!(
                f,
                "create veth {peer_name} in netns {peer_netns} (peer {name} on bridge {bridge})"
            ),
            Op::CreateVeth {
                name,
                peer_netns,
                peer_name,
                bridge: None,
                ..
            } => write!(
                f,
                "create veth {name}{at} (peer {peer_name} in netns {peer_netns})"
            ),
            Op::DeleteLink { name } => write!(f, "delete link {name}{at}"),
            Op::SetController { name, bridge } => {
                write!(f, "attach {name} to bridge {bridge}{host_at}")
            }
            Op::SetLinkUp { link } => write!(f, "set {link} up{host_at}"),
            Op::AddAddress { link, address } => {
                write!(f, "add address {address} to {link}{host_at}")
            }
            Op::DeleteAddress { link, address } => {
                write!(f, "delete address {address} from {link}{host_at}")
            }
            Op::AddRoute { route } => write!(f, "add route {route}{at}"),
            Op::DeleteRoute { route } => write!(f, "delete route {route}{at}"),
            Op::SetForwarding { on } => {
                let on = if *on { "on" } else { "off" };
                let family = if netns.is_some() {
                    "IPv4 and IPv6"
                } else {
                    "IPv4"
                };
                write!(f, "turn {family} forwarding {on}{at}")
            }
            Op::SetIpv6Forwarding { on } => {
                let on = if *on { "on" } else { "off" };
                write!(f, "turn IPv6 forwarding {on}{at}")
            }
            Op::WriteFile { path, .. } => write!(f, "write {}", path.display()),
            Op::RemoveFile { path } => write!(f, "remove {}", path.display()),
        }
    }
}

/// A plan as the sections build it: deletions go first (so that names and
/// addresses are free again), then everything else, each list in the order
/// the sections add to it.
#[derive(Default)]
pub struct Steps {
    pub del: Vec<Action>,
    pub add: Vec<Action>,
}

impl Steps {
    pub fn into_actions(mut self) -> Vec<Action> {
        self.del.extend(self.add);
        self.del
    }
}
