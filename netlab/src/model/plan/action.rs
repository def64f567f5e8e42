//! The steps of a plan: one [`Action`] each, what it says in `--verbose`
//! and in errors, and the two lists a plan is built in.

use std::{fmt, path::PathBuf};

use serde::Serialize;

use super::desired::{CableVeth, RouteSpec};
use crate::model::net::Ipv4Net;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    DeleteNamespace {
        netns: String,
    },
    DeleteHostLink {
        name: String,
    },
    DeleteNodeLink {
        netns: String,
        name: String,
    },
    DeleteHostRoute {
        route: RouteSpec,
    },
    RemoveFile {
        path: PathBuf,
    },
    CreateNamespace {
        netns: String,
    },
    CreateBridge {
        name: String,
    },
    CreateHostVeth {
        name: String,
        bridge: String,
        netns: String,
        ifname: String,
    },
    SetController {
        name: String,
        bridge: String,
    },
    CreateCable {
        cable: CableVeth,
    },
    AddHostAddress {
        link: String,
        address: Ipv4Net,
    },
    DeleteHostAddress {
        link: String,
        address: Ipv4Net,
    },
    SetHostLinkUp {
        name: String,
    },
    AddNodeAddress {
        netns: String,
        link: String,
        address: Ipv4Net,
    },
    DeleteNodeAddress {
        netns: String,
        link: String,
        address: Ipv4Net,
    },
    SetNodeLinkUp {
        netns: String,
        link: String,
    },
    AddNodeRoute {
        netns: String,
        route: RouteSpec,
    },
    DeleteNodeRoute {
        netns: String,
        route: RouteSpec,
    },
    SetNodeForwarding {
        netns: String,
        on: bool,
    },
    EnableHostForwarding,
    AddHostRoute {
        route: RouteSpec,
    },
    WriteFile {
        path: PathBuf,
        content: String,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::DeleteNamespace { netns } => write!(f, "delete namespace {netns}"),
            Action::DeleteHostLink { name } => write!(f, "delete link {name} on the lab host"),
            Action::DeleteNodeLink { netns, name } => {
                write!(f, "delete link {name} in netns {netns}")
            }
            Action::DeleteHostRoute { route } => write!(f, "delete route {route} on the lab host"),
            Action::RemoveFile { path } => write!(f, "remove {}", path.display()),
            Action::CreateNamespace { netns } => write!(f, "create namespace {netns}"),
            Action::CreateBridge { name } => write!(f, "create bridge {name}"),
            Action::CreateHostVeth {
                name,
                bridge,
                netns,
                ifname,
            } => {
                write!(
                    f,
                    "create veth {ifname} in netns {netns} (peer {name} on bridge {bridge})"
                )
            }
            Action::SetController { name, bridge } => write!(f, "attach {name} to bridge {bridge}"),
            Action::CreateCable { cable } => write!(
                f,
                "create veth {} in netns {} (peer {} in netns {})",
                cable.a_ifname, cable.a_netns, cable.b_ifname, cable.b_netns
            ),
            Action::AddHostAddress { link, address } => {
                write!(f, "add address {address} to {link}")
            }
            Action::DeleteHostAddress { link, address } => {
                write!(f, "delete address {address} from {link}")
            }
            Action::SetHostLinkUp { name } => write!(f, "set {name} up"),
            Action::AddNodeAddress {
                netns,
                link,
                address,
            } => {
                write!(f, "add address {address} to {link} in netns {netns}")
            }
            Action::DeleteNodeAddress {
                netns,
                link,
                address,
            } => {
                write!(f, "delete address {address} from {link} in netns {netns}")
            }
            Action::SetNodeLinkUp { netns, link } => write!(f, "set {link} up in netns {netns}"),
            Action::AddNodeRoute { netns, route } => {
                write!(f, "add route {route} in netns {netns}")
            }
            Action::DeleteNodeRoute { netns, route } => {
                write!(f, "delete route {route} in netns {netns}")
            }
            Action::SetNodeForwarding { netns, on } => {
                write!(
                    f,
                    "turn IPv4 forwarding {} in netns {netns}",
                    if *on { "on" } else { "off" }
                )
            }
            Action::EnableHostForwarding => write!(f, "turn IPv4 forwarding on on the lab host"),
            Action::AddHostRoute { route } => write!(f, "add route {route} on the lab host"),
            Action::WriteFile { path, .. } => write!(f, "write {}", path.display()),
        }
    }
}

/// The actions that turn `actual` into `desired`, in an order that works:
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
