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
        net::Ipv4Net,
        plan::{
            file_marker, owner_alias, owner_group, Action, Actual, LinkKind, LinkState, NodeActual,
            NETNS_ETC,
        },
    },
    netlink::{self, Link, RTPROT_NETLAB},
    netns::{self, Netns},
    procs,
};

/// Mark the namespace the calling thread is in as `alias`'s (on its `lo`)
/// and bring `lo` up. Runs on a plain thread, so it brings its own runtime.
pub fn mark_current_netns(alias: &str) -> Result<()> {
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

    async fn node(&mut self, netns: &str) -> Result<Handle> {
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
            let mut node = NodeActual {
                forwarding: ns.read_sysctl("net/ipv4/ip_forward")? == "1",
                ..Default::default()
            };
            let links = netlink::links(&handle)
                .await
                .with_context(|| format!("in netns {netns}"))?;
            let addrs = netlink::addresses(&handle)
                .await
                .with_context(|| format!("in netns {netns}"))?;
            for l in &links {
                if l.name == "lo" {
                    node.lo_up = l.up;
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
        let addrs = netlink::addresses(&self.host_nl)
            .await
            .context("on the lab host")?;
        let mut owned_subnets: Vec<Ipv4Net> = Vec::new();
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
        actual.host_routes =
            netlink::managed_routes(&self.host_nl, RouteProtocol::Other(RTPROT_NETLAB))
                .await?
                .into_iter()
                .filter(|r| owned_subnets.iter().any(|s| s.contains(r.via)))
                .collect();
        actual.host_forwarding = self.host.read_sysctl("net/ipv4/ip_forward")? == "1";
        actual.files = marked_files(lab);
        Ok(actual)
    }

    /// Carry out one action; returns what undoes it, if anything needs undoing.
    pub async fn apply(&mut self, lab: &str, action: &Action) -> Result<Option<Action>> {
        match action {
            Action::DeleteHostLink { .. }
            | Action::CreateBridge { .. }
            | Action::CreateHostVeth { .. }
            | Action::SetController { .. }
            | Action::AddHostAddress { .. }
            | Action::DeleteHostAddress { .. }
            | Action::SetHostLinkUp { .. }
            | Action::DeleteHostRoute { .. }
            | Action::AddHostRoute { .. }
            | Action::EnableHostForwarding => self.apply_on_host(lab, action).await,
            Action::DeleteNodeLink { .. }
            | Action::CreateCable { .. }
            | Action::AddNodeAddress { .. }
            | Action::DeleteNodeAddress { .. }
            | Action::SetNodeLinkUp { .. }
            | Action::AddNodeRoute { .. }
            | Action::DeleteNodeRoute { .. }
            | Action::SetNodeForwarding { .. } => self.apply_in_node(lab, action).await,
            // Listed, not `_`: a new kind of action must be given a place.
            Action::DeleteNamespace { .. }
            | Action::CreateNamespace { .. }
            | Action::RemoveFile { .. }
            | Action::WriteFile { .. } => self.apply_namespace_or_file(lab, action).await,
        }
    }

    /// Actions on the lab host: its links, addresses, routes, forwarding.
    async fn apply_on_host(&mut self, lab: &str, action: &Action) -> Result<Option<Action>> {
        let alias = owner_alias(lab);
        let group = owner_group(lab);
        let undo = match action {
            Action::DeleteHostLink { name } => {
                if let Some(l) = netlink::link_by_name(&self.host_nl, name).await? {
                    netlink::delete_link(&self.host_nl, l.index).await?;
                }
                None
            }
            Action::DeleteHostRoute { route } => {
                netlink::delete_route(&self.host_nl, route, RouteProtocol::Other(RTPROT_NETLAB))
                    .await?;
                None
            }
            Action::CreateBridge { name } => {
                netlink::create_bridge(&self.host_nl, name, group).await?;
                let l = self.host_link(name).await?;
                netlink::set_alias(&self.host_nl, l.index, &alias).await?;
                Some(Action::DeleteHostLink { name: name.clone() })
            }
            Action::CreateHostVeth {
                name,
                bridge,
                netns,
                ifname,
            } => {
                let ns = Netns::open(netns)?;
                netlink::create_veth(
                    &self.host_nl,
                    name,
                    group,
                    ifname,
                    std::os::fd::AsRawFd::as_raw_fd(&ns),
                )
                .await?;
                let undo = Action::DeleteHostLink { name: name.clone() };
                let l = self.host_link(name).await?;
                let br = self.host_link(bridge).await?;
                let configure = async {
                    netlink::set_alias(&self.host_nl, l.index, &alias).await?;
                    netlink::set_controller(&self.host_nl, l.index, br.index).await?;
                    netlink::set_up(&self.host_nl, l.index).await
                };
                if let Err(e) = configure.await {
                    let _ = netlink::delete_link(&self.host_nl, l.index).await;
                    return Err(e);
                }
                Some(undo)
            }
            Action::SetController { name, bridge } => {
                let l = self.host_link(name).await?;
                let br = self.host_link(bridge).await?;
                netlink::set_controller(&self.host_nl, l.index, br.index).await?;
                None
            }
            Action::AddHostAddress { link, address } => {
                let l = self.host_link(link).await?;
                netlink::add_address(&self.host_nl, l.index, *address).await?;
                Some(Action::DeleteHostAddress {
                    link: link.clone(),
                    address: *address,
                })
            }
            Action::DeleteHostAddress { link, address } => {
                let l = self.host_link(link).await?;
                netlink::delete_address(&self.host_nl, l.index, *address).await?;
                None
            }
            Action::SetHostLinkUp { name } => {
                let l = self.host_link(name).await?;
                netlink::set_up(&self.host_nl, l.index).await?;
                None
            }
            Action::EnableHostForwarding => {
                self.host.write_sysctl("net/ipv4/ip_forward", "1")?;
                None
            }
            Action::AddHostRoute { route } => {
                netlink::add_route(&self.host_nl, route, RouteProtocol::Other(RTPROT_NETLAB))
                    .await?;
                Some(Action::DeleteHostRoute { route: *route })
            }
            other => unreachable!("apply_on_host got {other}"),
        };
        Ok(undo)
    }

    /// Actions inside a node's namespace.
    async fn apply_in_node(&mut self, lab: &str, action: &Action) -> Result<Option<Action>> {
        let group = owner_group(lab);
        let undo = match action {
            Action::DeleteNodeLink { netns, name } => {
                let h = self.node(netns).await?;
                if let Some(l) = netlink::link_by_name(&h, name).await? {
                    netlink::delete_link(&h, l.index).await?;
                }
                None
            }
            Action::CreateCable { cable } => {
                let a = self.node(&cable.a_netns).await?;
                let b_ns = Netns::open(&cable.b_netns)?;
                netlink::create_veth(
                    &a,
                    &cable.a_ifname,
                    group,
                    &cable.b_ifname,
                    std::os::fd::AsRawFd::as_raw_fd(&b_ns),
                )
                .await?;
                Some(Action::DeleteNodeLink {
                    netns: cable.a_netns.clone(),
                    name: cable.a_ifname.clone(),
                })
            }
            Action::AddNodeAddress {
                netns,
                link,
                address,
            } => {
                let h = self.node(netns).await?;
                let l = node_link(&h, netns, link).await?;
                netlink::add_address(&h, l.index, *address).await?;
                Some(Action::DeleteNodeAddress {
                    netns: netns.clone(),
                    link: link.clone(),
                    address: *address,
                })
            }
            Action::DeleteNodeAddress {
                netns,
                link,
                address,
            } => {
                let h = self.node(netns).await?;
                if let Some(l) = netlink::link_by_name(&h, link).await? {
                    netlink::delete_address(&h, l.index, *address).await?;
                }
                None
            }
            Action::SetNodeLinkUp { netns, link } => {
                let h = self.node(netns).await?;
                let l = node_link(&h, netns, link).await?;
                netlink::set_up(&h, l.index).await?;
                None
            }
            Action::AddNodeRoute { netns, route } => {
                let h = self.node(netns).await?;
                netlink::add_route(&h, route, RouteProtocol::Static).await?;
                Some(Action::DeleteNodeRoute {
                    netns: netns.clone(),
                    route: *route,
                })
            }
            Action::DeleteNodeRoute { netns, route } => {
                let h = self.node(netns).await?;
                netlink::delete_route(&h, route, RouteProtocol::Static).await?;
                None
            }
            Action::SetNodeForwarding { netns, on } => {
                Netns::open(netns)?
                    .write_sysctl("net/ipv4/ip_forward", if *on { "1" } else { "0" })?;
                None
            }
            other => unreachable!("apply_in_node got {other}"),
        };
        Ok(undo)
    }

    /// Namespaces themselves, and files under /etc/netns.
    async fn apply_namespace_or_file(
        &mut self,
        lab: &str,
        action: &Action,
    ) -> Result<Option<Action>> {
        let alias = owner_alias(lab);
        let undo = match action {
            Action::DeleteNamespace { netns } => {
                self.forget(netns);
                netns::delete(netns)?;
                None
            }
            Action::RemoveFile { path } => {
                remove_file_and_empty_dir(path)?;
                None
            }
            Action::CreateNamespace { netns } => {
                let marker = alias.clone();
                netns::create(netns, move || mark_current_netns(&marker))?;
                Some(Action::DeleteNamespace {
                    netns: netns.clone(),
                })
            }
            Action::WriteFile { path, content } => {
                let before = fs::read_to_string(path).ok();
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
                Some(match before {
                    Some(old) => Action::WriteFile {
                        path: path.clone(),
                        content: old,
                    },
                    None => Action::RemoveFile { path: path.clone() },
                })
            }
            other => unreachable!("apply_namespace_or_file got {other}"),
        };
        Ok(undo)
    }

    async fn host_link(&self, name: &str) -> Result<Link> {
        netlink::link_by_name(&self.host_nl, name)
            .await?
            .ok_or_else(|| anyhow!("link {name} is missing on {}", self.host.label()))
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

async fn node_link(h: &Handle, netns: &str, name: &str) -> Result<Link> {
    netlink::link_by_name(h, name)
        .await?
        .ok_or_else(|| anyhow!("link {name} is missing in netns {netns}"))
}

fn link_state(l: &Link, all: &[Link], addrs: &[(u32, Ipv4Net)]) -> LinkState {
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

/// Fail unless none of `netns` exist outside the lab and none of `links`
/// exist on the lab host without the lab's marker: `up` never adopts or
/// clobbers what it did not create.
pub async fn check_no_foreign(
    lab: &str,
    actual: &Actual,
    want_netns: &BTreeSet<String>,
    want_links: &BTreeSet<String>,
    host: &Handle,
) -> Result<()> {
    for n in want_netns {
        if !actual.nodes.contains_key(n) && netns::exists(n) {
            bail!(
                "network namespace {n} exists and does not belong to lab {lab}; remove it (`ip netns del {n}`) \
                 or set `netns_prefix` in the lab file"
            );
        }
    }
    let links = netlink::links(host).await?;
    for l in want_links {
        if !actual.host_links.contains_key(l) && links.iter().any(|x| &x.name == l) {
            bail!("interface {l} exists on the lab host and does not belong to lab {lab}; rename it in the lab file");
        }
    }
    Ok(())
}
