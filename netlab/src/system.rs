//! The effects side of the control plane: observe what a lab owns (the
//! [`Actual`] the planner compares against) and carry out plan actions over
//! netlink, each returning the action that undoes it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use rtnetlink::{packet_route::route::RouteProtocol, Handle};

use crate::{
    model::{
        impair::ifb_name,
        net::IpNet,
        plan::{
            file_marker, owner_alias, owner_group, Action, Actual, LinkKind, LinkState, NodeActual,
            Op, Place, NETNS_ETC,
        },
        types::{HostPort, Tunnel},
    },
    netlink::{self, Link, RTPROT_NETLAB},
    netns::{self, Netns},
    procs,
};

/// The sysctls of IPv6 in a namespace the lab creates (a node's, a
/// sandbox's), each set for every interface (`all`) and those made later
/// (`default`): IPv6 on; no duplicate address detection, which would keep
/// each address (the link-local ones too) tentative for a second or two
/// after `up` (the lab assigns every address itself); no router
/// advertisements taken (the routes are static).
const NETNS_IPV6_SYSCTLS: &[(&str, &str)] = &[
    ("disable_ipv6", "0"),
    ("accept_dad", "0"),
    ("accept_ra", "0"),
];

/// Set [`NETNS_IPV6_SYSCTLS`] in the namespace the calling thread is in
/// (never the real host's: only in namespaces netlab has just made). A
/// kernel without IPv6 has none of them: nothing to do there.
fn ipv6_defaults_in_current_netns() -> Result<()> {
    if !Path::new("/proc/sys/net/ipv6").exists() {
        return Ok(());
    }
    for scope in ["all", "default"] {
        for (key, value) in NETNS_IPV6_SYSCTLS {
            let path = format!("/proc/sys/net/ipv6/conf/{scope}/{key}");
            fs::write(&path, value).with_context(|| format!("writing {path}"))?;
        }
    }
    Ok(())
}

/// The same for one link the lab owns (on the lab host, a bridge given an
/// IPv6 address), in namespace `ns`.
fn ipv6_on_link(ns: &Netns, link: &str) -> Result<()> {
    for (key, value) in NETNS_IPV6_SYSCTLS {
        ns.write_sysctl(&format!("net/ipv6/conf/{link}/{key}"), value)?;
    }
    Ok(())
}

/// Whether IPv6 forwarding is on in `ns` (`None`: a kernel without IPv6).
fn ipv6_forwarding(ns: &Netns) -> Option<bool> {
    ns.read_sysctl(IPV6_FORWARDING).ok().map(|v| v == "1")
}

const IPV6_FORWARDING: &str = "net/ipv6/conf/all/forwarding";

/// Mark the namespace the calling thread is in as `alias`'s (on its `lo`),
/// bring `lo` up and set IPv6's defaults. Runs on a plain thread, so it
/// brings its own runtime.
pub fn mark_current_netns(alias: &str) -> Result<()> {
    ipv6_defaults_in_current_netns().context("setting IPv6 up in the new namespace")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting a runtime for netlink")?;
    let alias = alias.to_string();
    rt.block_on(async move {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(conn);
        let lo = netlink::link_by_name(&handle, "lo")
            .await?
            .ok_or_else(|| anyhow!("the new namespace has no lo"))?;
        netlink::set_alias(&handle, lo.index, &alias)
            .await
            .context("marking lo")?;
        netlink::set_up(&handle, lo.index)
            .await
            .context("setting lo up")?;
        Ok(())
    })
}

/// The marker on a namespace's `lo`, if any.
pub async fn netns_marker(ns: &Netns) -> Result<Option<String>> {
    let handle = ns.netlink().await?;
    Ok(netlink::link_by_name(&handle, "lo")
        .await?
        .and_then(|l| l.alias))
}

/// Named namespaces (mounted) whose `lo` carries `alias`.
pub async fn namespaces_marked(alias: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (name, mounted) in netns::list()? {
        if !mounted {
            continue;
        }
        let Ok(ns) = Netns::open(&name) else { continue };
        if netns_marker(&ns).await.ok().flatten().as_deref() == Some(alias) {
            out.push(name);
        }
    }
    Ok(out)
}

pub struct System {
    pub host: Netns,
    host_nl: Handle,
    nodes: HashMap<String, Handle>,
}

impl System {
    pub async fn new(host: Netns) -> Result<System> {
        let host_nl = host.netlink().await?;
        Ok(System {
            host,
            host_nl,
            nodes: HashMap::new(),
        })
    }

    pub fn host_netlink(&self) -> &Handle {
        &self.host_nl
    }

    /// A netlink handle in node namespace `netns` (opened once per run).
    pub async fn node(&mut self, netns: &str) -> Result<Handle> {
        if let Some(h) = self.nodes.get(netns) {
            return Ok(h.clone());
        }
        let h = Netns::open(netns)?.netlink().await?;
        self.nodes.insert(netns.to_string(), h.clone());
        Ok(h)
    }

    /// Forget a node's handle (its socket would keep a deleted namespace alive).
    fn forget(&mut self, netns: &str) {
        self.nodes.remove(netns);
    }

    /// Everything lab `lab` owns, found by its markers.
    pub async fn observe(&mut self, lab: &str) -> Result<Actual> {
        let alias = owner_alias(lab);
        let group = owner_group(lab);
        let mut actual = Actual::default();

        for netns in namespaces_marked(&alias).await? {
            let handle = self.node(&netns).await?;
            let ns = Netns::open(&netns)?;
            // A router forwards both families (IPv6 where the kernel has it).
            let v4 = ns.read_sysctl("net/ipv4/ip_forward")? == "1";
            let v6 = ipv6_forwarding(&ns).unwrap_or(v4);
            let mut node = NodeActual {
                forwarding: (v4 == v6).then_some(v4),
                ..Default::default()
            };
            let links = netlink::links(&handle)
                .await
                .with_context(|| format!("in netns {netns}"))?;
            let addrs = netlink::all_addresses(&handle)
                .await
                .with_context(|| format!("in netns {netns}"))?;
            for l in &links {
                if l.name == "lo" {
                    node.lo_up = l.up;
                    continue;
                }
                // The IFB holding an interface's inbound impairment is the
                // links layer's, not a link of the plan's.
                if links.iter().any(|o| ifb_name(&o.name) == l.name) {
                    continue;
                }
                node.links
                    .insert(l.name.clone(), link_state(l, &links, &addrs));
            }
            node.routes = netlink::managed_routes(&handle, RouteProtocol::Static).await?;
            actual.nodes.insert(netns, node);
        }

        let links = netlink::links(&self.host_nl)
            .await
            .context("on the lab host")?;
        let addrs = netlink::all_addresses(&self.host_nl)
            .await
            .context("on the lab host")?;
        let mut owned_subnets: Vec<IpNet> = Vec::new();
        for l in links
            .iter()
            .filter(|l| l.group == group || l.alias.as_deref() == Some(&alias))
        {
            let state = link_state(l, &links, &addrs);
            if state.kind == LinkKind::Bridge {
                owned_subnets.extend(state.addresses.iter().map(|a| a.network()));
            }
            actual.host_links.insert(l.name.clone(), state);
        }
        let tunnels: BTreeSet<String> = actual
            .host_links
            .iter()
            .filter(|(_, l)| l.kind == LinkKind::Vxlan)
            .map(|(n, _)| n.clone())
            .collect();
        actual.tunnels = crate::vxlan::states(&self.host_nl, &tunnels).await?;
        actual.host_routes =
            netlink::managed_routes(&self.host_nl, RouteProtocol::Other(RTPROT_NETLAB))
                .await?
                .into_iter()
                .filter(|r| owned_subnets.iter().any(|s| s.contains(r.via)))
                .collect();
        actual.host_forwarding = self.host.read_sysctl("net/ipv4/ip_forward")? == "1";
        actual.host_forwarding6 = ipv6_forwarding(&self.host).unwrap_or(false);
        actual.files = marked_files(lab);
        Ok(actual)
    }

    /// The netlink handle of the place an action runs in.
    async fn handle(&mut self, place: &Place) -> Result<Handle> {
        match place {
            Place::LabHost => Ok(self.host_nl.clone()),
            Place::Node(netns) => self.node(netns).await,
        }
    }

    /// A link that must be there, by name, in `place`.
    async fn link(&mut self, place: &Place, name: &str) -> Result<Link> {
        let h = self.handle(place).await?;
        netlink::link_by_name(&h, name).await?.ok_or_else(|| {
            let at = match place {
                Place::LabHost => format!("on {}", self.host.label()),
                Place::Node(netns) => format!("in netns {netns}"),
            };
            anyhow!("link {name} is missing {at}")
        })
    }

    /// Carry out one action; returns what undoes it, if anything needs
    /// undoing. A plan runs through a [`Journal`], which keeps the undos;
    /// `down` calls this directly (best effort, nothing to undo).
    pub async fn apply(&mut self, lab: &str, action: &Action) -> Result<Option<Action>> {
        let place = &action.place;
        let undo = |op| {
            Some(Action {
                place: place.clone(),
                op,
            })
        };
        Ok(match &action.op {
            Op::CreateNamespace | Op::DeleteNamespace => self.apply_namespace(lab, action)?,
            Op::WriteFile { path, content } => undo(write_file(path, content)?),
            Op::RemoveFile { path } => {
                remove_file_and_empty_dir(path)?;
                None
            }
            Op::SetForwarding { on } => {
                let value = if *on { "1" } else { "0" };
                match place {
                    Place::LabHost => self.host.write_sysctl("net/ipv4/ip_forward", value)?,
                    Place::Node(netns) => {
                        let ns = Netns::open(netns)?;
                        ns.write_sysctl("net/ipv4/ip_forward", value)?;
                        if ipv6_forwarding(&ns).is_some() {
                            ns.write_sysctl(IPV6_FORWARDING, value)?;
                        }
                    }
                }
                None
            }
            Op::SetIpv6Forwarding { on } => {
                let value = if *on { "1" } else { "0" };
                self.host.write_sysctl(IPV6_FORWARDING, value)?;
                None
            }
            Op::CreateBridge { name, mac } => {
                let h = self.handle(place).await?;
                netlink::create_bridge(&h, name, owner_group(lab), *mac).await?;
                let l = self.link(place, name).await?;
                netlink::set_alias(&h, l.index, &owner_alias(lab)).await?;
                undo(Op::DeleteLink { name: name.clone() })
            }
            Op::CreateVeth { .. } => self.create_veth(lab, action).await?,
            Op::CreateVxlan { tunnel } => self.create_vxlan(lab, place, tunnel).await?,
            Op::CreateHostPort { port } => self.create_host_port(lab, port).await?,
            Op::AddAddress { link, address } => {
                let h = self.handle(place).await?;
                let l = self.link(place, link).await?;
                if address.is_v6() {
                    let ns = match place {
                        Place::LabHost => self.host.try_clone()?,
                        Place::Node(netns) => Netns::open(netns)?,
                    };
                    ipv6_on_link(&ns, link)?;
                }
                netlink::add_address(&h, l.index, *address).await?;
                undo(Op::DeleteAddress {
                    link: link.clone(),
                    address: *address,
                })
            }
            Op::AddRoute { route } => {
                let h = self.handle(place).await?;
                netlink::add_route(&h, route, route_protocol(place)).await?;
                undo(Op::DeleteRoute { route: *route })
            }
            _ => {
                self.apply_link_change(action).await?;
                None
            }
        })
    }

    /// The link changes that need no undo: deletions, a new controller, up.
    async fn apply_link_change(&mut self, action: &Action) -> Result<()> {
        let place = &action.place;
        let h = self.handle(place).await?;
        match &action.op {
            Op::DeleteLink { name } => {
                if let Some(l) = netlink::link_by_name(&h, name).await? {
                    netlink::delete_link(&h, l.index).await?;
                }
            }
            Op::DeleteAddress { link, address } => match place {
                Place::LabHost => {
                    let l = self.link(place, link).await?;
                    netlink::delete_address(&h, l.index, *address).await?;
                }
                Place::Node(_) => {
                    if let Some(l) = netlink::link_by_name(&h, link).await? {
                        netlink::delete_address(&h, l.index, *address).await?;
                    }
                }
            },
            Op::DeleteRoute { route } => {
                netlink::delete_route(&h, route, route_protocol(place)).await?;
            }
            Op::SetController { name, bridge } => {
                let l = self.link(place, name).await?;
                let br = self.link(place, bridge).await?;
                netlink::set_controller(&h, l.index, br.index).await?;
            }
            Op::SetLinkUp { link } => {
                let l = self.link(place, link).await?;
                netlink::set_up(&h, l.index).await?;
            }
            other => unreachable!("apply_link_change got {other:?}"),
        }
        Ok(())
    }

    /// A node's namespace itself, created marked as the lab's.
    fn apply_namespace(&mut self, lab: &str, action: &Action) -> Result<Option<Action>> {
        let Place::Node(netns) = &action.place else {
            bail!("{action}: a namespace is a node's");
        };
        Ok(match action.op {
            Op::CreateNamespace => {
                let marker = owner_alias(lab);
                netns::create(netns, move || mark_current_netns(&marker))?;
                Some(Action::in_node(netns, Op::DeleteNamespace))
            }
            _ => {
                self.forget(netns);
                netns::delete(netns)?;
                None
            }
        })
    }

    /// A veth pair with its peer in another namespace; one on a bridge is
    /// marked, attached and set up, or deleted again if that fails.
    async fn create_veth(&mut self, lab: &str, action: &Action) -> Result<Option<Action>> {
        let Op::CreateVeth {
            name,
            peer_netns,
            peer_name,
            bridge,
            mtu,
        } = &action.op
        else {
            unreachable!("create_veth got {action}");
        };
        let place = &action.place;
        let h = self.handle(place).await?;
        let peer = Netns::open(peer_netns)?;
        let peer_fd = std::os::fd::AsRawFd::as_raw_fd(&peer);
        netlink::create_veth(&h, name, owner_group(lab), peer_name, peer_fd, *mtu).await?;
        let undo = Action {
            place: place.clone(),
            op: Op::DeleteLink { name: name.clone() },
        };
        let Some(bridge) = bridge else {
            return Ok(Some(undo));
        };
        let l = self.link(place, name).await?;
        let br = self.link(place, bridge).await?;
        let alias = owner_alias(lab);
        let configure = async {
            netlink::set_alias(&h, l.index, &alias).await?;
            netlink::set_controller(&h, l.index, br.index).await?;
            netlink::set_up(&h, l.index).await
        };
        if let Err(e) = configure.await {
            let _ = netlink::delete_link(&h, l.index).await;
            return Err(e);
        }
        Ok(Some(undo))
    }

    /// A host port (see [`HostPort`]); deleted again if any of it fails.
    async fn create_host_port(&mut self, lab: &str, port: &HostPort) -> Result<Option<Action>> {
        let place = Place::LabHost;
        let h = self.host_nl.clone();
        netlink::create_veth_pair(&h, &port.name, owner_group(lab), &port.peer, port.mtu)
            .await
            .with_context(|| format!("creating host port {}", port.name))?;
        let end = self.link(&place, &port.name).await?;
        let configure = async {
            let peer = self.link(&place, &port.peer).await?;
            let br = self.link(&place, &port.bridge).await?;
            let alias = owner_alias(lab);
            netlink::set_alias(&h, end.index, &alias).await?;
            netlink::set_alias(&h, peer.index, &alias).await?;
            netlink::set_controller(&h, peer.index, br.index).await?;
            netlink::set_up(&h, peer.index).await?;
            let address = crate::model::Ipv4Net::new(port.address, 32).context("a /32")?;
            netlink::add_address(&h, end.index, address.into()).await?;
            netlink::set_up(&h, end.index).await?;
            // The bridge holds no host port's address, but the kernel
            // answers ARP for any of the host's addresses on any
            // interface: without this the bridge would answer for the host
            // port with the anycast MAC, which every host has.
            self.host
                .write_sysctl(&format!("net/ipv4/conf/{}/arp_ignore", port.bridge), "1")
        };
        if let Err(e) = configure.await {
            let _ = netlink::delete_link(&h, end.index).await;
            return Err(e);
        }
        Ok(Some(Action {
            place,
            op: Op::DeleteLink {
                name: port.name.clone(),
            },
        }))
    }

    /// A VXLAN device: marked, on its bridge, flooding to every remote,
    /// left down (`up` opens it once its program is on it, see
    /// `vxlan::open`); deleted again if any of that fails.
    async fn create_vxlan(
        &mut self,
        lab: &str,
        place: &Place,
        tunnel: &Tunnel,
    ) -> Result<Option<Action>> {
        let h = self.handle(place).await?;
        crate::vxlan::create(&h, tunnel, owner_group(lab)).await?;
        let l = self.link(place, &tunnel.name).await?;
        let br = self.link(place, &tunnel.bridge).await?;
        let configure = async {
            netlink::set_alias(&h, l.index, &owner_alias(lab)).await?;
            netlink::set_controller(&h, l.index, br.index).await?;
            crate::vxlan::suppress_neighbour_flooding(&h, l.index).await?;
            for r in &tunnel.remotes {
                crate::vxlan::append_flood_entry(&h, l.index, *r).await?;
            }
            Ok(())
        };
        if let Err(e) = configure.await {
            let _ = netlink::delete_link(&h, l.index).await;
            return Err(e);
        }
        Ok(Some(Action {
            place: place.clone(),
            op: Op::DeleteLink {
                name: tunnel.name.clone(),
            },
        }))
    }

    /// Lab-host links with `lab`'s markers in every other named namespace
    /// (labs whose host namespace is not known any more).
    pub async fn stray_host_links(
        lab: &str,
        skip: &BTreeSet<String>,
    ) -> Result<Vec<(String, String)>> {
        let alias = owner_alias(lab);
        let group = owner_group(lab);
        let mut out = Vec::new();
        for (name, mounted) in netns::list()? {
            if !mounted || skip.contains(&name) {
                continue;
            }
            let Ok(ns) = Netns::open(&name) else { continue };
            let Ok(h) = ns.netlink().await else { continue };
            for l in netlink::links(&h).await.unwrap_or_default() {
                if l.group == group || l.alias.as_deref() == Some(&alias) {
                    netlink::delete_link(&h, l.index)
                        .await
                        .with_context(|| format!("deleting link {} in netns {name}", l.name))?;
                    out.push((name.clone(), l.name));
                }
            }
        }
        Ok(out)
    }
}

fn link_state(l: &Link, all: &[Link], addrs: &[(u32, IpNet)]) -> LinkState {
    LinkState {
        kind: l.kind,
        up: l.up,
        controller: l
            .controller
            .and_then(|c| all.iter().find(|x| x.index == c))
            .map(|c| c.name.clone()),
        addresses: addrs
            .iter()
            .filter(|(i, _)| *i == l.index)
            .map(|(_, a)| *a)
            .collect(),
    }
}

/// Files under /etc/netns that start with the lab's marker.
pub fn marked_files(lab: &str) -> BTreeMap<PathBuf, String> {
    let marker = file_marker(lab);
    let mut out = BTreeMap::new();
    let Ok(dirs) = fs::read_dir(NETNS_ETC) else {
        return out;
    };
    for dir in dirs.flatten() {
        let Ok(files) = fs::read_dir(dir.path()) else {
            continue;
        };
        for f in files.flatten() {
            if let Ok(content) = fs::read_to_string(f.path()) {
                if content.lines().next() == Some(marker.as_str()) {
                    out.insert(f.path(), content);
                }
            }
        }
    }
    out
}

/// One run's record of what it changed: it applies a plan's actions in
/// order through [`System`], keeps what undoes each, and on a failure undoes
/// the run, newest change first.
pub struct Journal {
    lab: String,
    undo: Vec<Action>,
}

impl Journal {
    pub fn new(lab: &str) -> Journal {
        Journal {
            lab: lab.to_string(),
            undo: Vec::new(),
        }
    }

    /// Apply `actions` in order (each printed first when `verbose`), and
    /// `applied` after each one done; on a failure of either, roll back and
    /// fail.
    pub async fn apply_all(
        &mut self,
        sys: &mut System,
        actions: &[Action],
        verbose: bool,
        mut applied: impl FnMut(&Action) -> Result<()>,
    ) -> Result<()> {
        for action in actions {
            if verbose {
                println!("  {action}");
            }
            let step = match sys.apply(&self.lab, action).await {
                Ok(undo) => {
                    self.undo.extend(undo);
                    applied(action)
                }
                Err(e) => Err(e),
            };
            if let Err(e) = step {
                let undone = self.rollback(sys).await;
                return Err(e.context(format!(
                    "{action} (rolled back {undone} changes of this run)"
                )));
            }
        }
        Ok(())
    }

    /// Undo what this run changed, newest first; returns how many changes
    /// were undone (a failed step is reported and skipped).
    pub async fn rollback(&mut self, sys: &mut System) -> usize {
        let mut n = 0;
        while let Some(undo) = self.undo.pop() {
            match sys.apply(&self.lab, &undo).await {
                Ok(_) => n += 1,
                Err(e) => eprintln!("netlab: rollback step failed: {undo}: {e:#}"),
            }
        }
        n
    }
}

/// Marked routes: the lab host's carry netlab's protocol (so `observe`
/// tells them from the host's own), a node's are plain static ones.
fn route_protocol(place: &Place) -> RouteProtocol {
    match place {
        Place::LabHost => RouteProtocol::Other(RTPROT_NETLAB),
        Place::Node(_) => RouteProtocol::Static,
    }
}

/// Write `content` to `path`; returns what puts back what was there.
fn write_file(path: &Path, content: &str) -> Result<Op> {
    let before = fs::read_to_string(path).ok();
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    Ok(match before {
        Some(old) => Op::WriteFile {
            path: path.to_path_buf(),
            content: old,
        },
        None => Op::RemoveFile {
            path: path.to_path_buf(),
        },
    })
}

fn remove_file_and_empty_dir(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    if let Some(dir) = path.parent() {
        // Only succeeds when empty: other files there are someone else's.
        let _ = fs::remove_dir(dir);
    }
    Ok(())
}

/// The lab host's nameservers, for nodes of labs that name none.
pub fn host_nameservers() -> Vec<Ipv4Addr> {
    fs::read_to_string("/etc/resolv.conf")
        .map(|s| crate::model::plan::parse_nameservers(&s))
        .unwrap_or_default()
}

/// End the processes running in `namespaces`; returns `netns: pid (comm)`
/// lines for what was ended.
pub fn end_processes_in(namespaces: &[String]) -> Result<Vec<String>> {
    let mut inodes = Vec::new();
    let mut names = BTreeMap::new();
    for n in namespaces {
        if let Ok(ns) = Netns::open(n) {
            let ino = ns.inode()?;
            inodes.push(ino);
            names.insert(ino, n.clone());
        }
    }
    let found = procs::in_namespaces(&inodes);
    let mut ended = Vec::new();
    let mut all = Vec::new();
    for (ino, list) in &found {
        for p in list {
            ended.push(format!(
                "{} (pid {}) in netns {}",
                p.command, p.pid, names[ino]
            ));
            all.push(p.clone());
        }
    }
    if !all.is_empty() {
        procs::end(&all, Duration::from_secs(3));
    }
    Ok(ended)
}
