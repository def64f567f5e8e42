//! Output of the read-mostly commands: `status`, `check`, and the dataplane
//! commands `fwd`, `nat`, `stats`. The CLI binary stays a thin parser.

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::json;

use crate::{
    dataplane::{self, commands::FwdRequest},
    lab::{self, LabState},
    lock,
    model::{
        plan::{plan, Actual, Desired},
        topology::{Attachment, Lab},
    },
    netns::{self, Netns},
    services::{self, Service},
    system::System,
};

#[derive(Subcommand)]
pub enum FwdCommand {
    /// Forward PORT (or a range a-b) on the uplink address to NODE[:PORT].
    Add {
        /// `tcp` or `udp`.
        protocol: String,
        /// The outside port, or a range `a-b`.
        port: String,
        /// NODE, NODE:PORT, NODE:A-B or an address inside the lab.
        to: String,
        /// Forward even a port the lab host itself listens on (its service
        /// then no longer gets connections from the outside on the uplink).
        #[arg(long)]
        take_host_port: bool,
        /// IPv4 only: not on the uplink's IPv6 address (a forward applies
        /// to both families where its target has an IPv6 address).
        #[arg(long)]
        no_ipv6: bool,
    },
    /// Remove the forward of PORT (or the range it starts).
    Del {
        /// `tcp` or `udp`.
        protocol: String,
        /// The outside port.
        port: String,
    },
    /// List the live forwards.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `netlab link`: a running lab's links, changed live until the next `up`.
#[derive(Subcommand)]
pub enum LinkCommand {
    /// Impair a link end (both directions unless --direction); values add
    /// to what it has, in tc's units.
    Set {
        /// NODE (a node with one interface) or NODE:IFACE.
        target: String,
        /// Added delay each way (`40ms`, `250us`, `1s`).
        #[arg(long, value_name = "TIME")]
        delay: Option<String>,
        /// Random variation of the delay (needs a delay).
        #[arg(long, value_name = "TIME")]
        jitter: Option<String>,
        /// Packets lost (`1%`, `0.1%`).
        #[arg(long, value_name = "PERCENT")]
        loss: Option<String>,
        /// Bandwidth (`20mbit`, `500kbit`, `1mbps` for bytes).
        #[arg(long, value_name = "RATE")]
        rate: Option<String>,
        /// Packets with a bit flipped.
        #[arg(long, value_name = "PERCENT")]
        corrupt: Option<String>,
        /// Packets sent twice.
        #[arg(long, value_name = "PERCENT")]
        duplicate: Option<String>,
        /// Packets sent at once, ahead of the delayed rest (needs a delay).
        #[arg(long, value_name = "PERCENT")]
        reorder: Option<String>,
        /// Remove every impairment (of --direction, or both).
        #[arg(long)]
        clear: bool,
        /// `in` (to the node) or `out` (from it); both when not given.
        #[arg(long, value_parser = ["in", "out"])]
        direction: Option<String>,
    },
    /// Take the node's end of the link down (a pulled cable).
    Down {
        /// NODE (a node with one interface) or NODE:IFACE.
        target: String,
    },
    /// Bring it up again.
    Up {
        /// NODE (a node with one interface) or NODE:IFACE.
        target: String,
    },
    /// Each link end: its state and impairments (and how they are made).
    Show {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum NatCommand {
    /// Live translations, like `conntrack -L`.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn print_check(lab: &Lab) {
    println!("lab {} is valid", lab.name);
    for h in &lab.hosts {
        let dev = h
            .interface
            .as_ref()
            .map(|i| format!(" on {i}"))
            .unwrap_or_default();
        println!("  host {} underlay {}{dev}", h.name, h.underlay);
    }
    for b in &lab.bridges {
        let gw = b
            .gateway_net()
            .map(|g| g.to_string())
            .unwrap_or_else(|| "no gateway".into());
        let v6 = match (b.subnet6, b.gateway6_net()) {
            (Some(s), Some(g)) => format!(" {s} ({g})"),
            (Some(s), None) => format!(" {s} (no gateway6)"),
            _ => String::new(),
        };
        println!(
            "  bridge {} {} ({gw}{}{}){v6}",
            b.name,
            b.subnet,
            if b.masquerade { ", masquerade" } else { "" },
            if b.routed { ", routed" } else { "" }
        );
        let hosts = crate::model::hosts::hosts_on_bridge(lab, &b.name);
        if let (Some(vni), true) = (b.vni, hosts.len() > 1) {
            let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
            println!(
                "    stretched over {} by VXLAN VNI {vni}, udp/{}, node links mtu {}",
                names.join(", "),
                lab.vxlan.port,
                lab.vxlan.mtu
            );
        }
    }
    for n in &lab.nodes {
        let ifs: Vec<String> = n
            .interfaces
            .iter()
            .map(|i| format!("{} {}{}", i.name, i.address, address6_text(i)))
            .collect();
        let gw = default_routes_text(n, ", default via");
        let on = n
            .host
            .as_ref()
            .map(|h| format!(" on host {h}"))
            .unwrap_or_default();
        println!(
            "  node {} (netns {}{on}): {}{gw}",
            n.name,
            n.netns,
            ifs.join(", ")
        );
        for command in &n.run {
            println!("    runs `{command}`");
        }
    }
    for i in crate::model::impair::impaired(lab) {
        let qdisc = i.impair.qdisc().map_or("", |q| q.kind());
        println!("  impair {i}: {} ({qdisc})", i.impair);
    }
    for f in &lab.forwards {
        println!("  forward {f}");
    }
}

/// What `status` found: the lab as its state says, and the system as it is.
pub struct Observed<'a> {
    pub state: &'a LabState,
    pub host_netns: Option<String>,
    pub up: bool,
    pub actual: Option<Actual>,
    /// What `netlab up` would do to the system.
    pub drift: Vec<String>,
    /// How the live forwards differ from the file's.
    pub forward_drift: Vec<String>,
    pub dataplane: serde_json::Value,
    /// The services `up` started (see [`services`]).
    pub services: Vec<Service>,
    /// Each link end's state and impairments (see [`crate::links`]).
    pub links: Vec<crate::links::LinkView>,
    /// The share's tunnels to the other lab hosts (see [`crate::vxlan`]).
    pub tunnels: Vec<crate::vxlan::TunnelView>,
}

impl Observed<'_> {
    /// Node `node`'s services as the file lists them: command, and the
    /// service started for it (`None`: not started).
    fn services_of(&self, node: &str) -> Vec<(&str, Option<&Service>)> {
        let Some(n) = self.state.lab.node(node) else {
            return Vec::new();
        };
        n.run
            .iter()
            .map(|c| {
                let s = self
                    .services
                    .iter()
                    .find(|s| s.node == node && &s.command == c);
                (c.as_str(), s)
            })
            .collect()
    }

    pub fn converged(&self) -> bool {
        self.up && self.drift.is_empty() && self.forward_drift.is_empty()
    }
}

/// Look at lab `state` on its lab host (`host_override` if given, which must
/// exist).
pub async fn observe<'a>(state: &'a LabState, host_override: Option<&str>) -> Result<Observed<'a>> {
    if let Some(n) = host_override.filter(|n| !netns::exists(n)) {
        bail!("network namespace {n} does not exist");
    }
    let lab = &state.lab;
    let host_netns = host_override
        .map(str::to_string)
        .or_else(|| state.host_netns.clone());
    let saved = lab::read_state(&lab.name);
    let mut links = Vec::new();
    let mut tunnels = Vec::new();
    let (actual, mut drift) = if host_netns.as_deref().is_none_or(netns::exists) {
        let mut sys = System::new(Netns::host(host_netns.as_deref())?).await?;
        let actual = sys.observe(&lab.name).await?;
        if saved.is_some() {
            links = crate::links::view(&mut sys, lab).await?;
        }
        let wanted = lab.share.as_ref().map_or(&[][..], |s| &s.tunnels[..]);
        tunnels = crate::vxlan::view(sys.host_netlink(), wanted).await?;
        let sandbox = saved.as_ref().is_some_and(|s| s.sandbox);
        let desired = Desired::from_lab(lab, &lab::default_nameservers(sandbox));
        let drift = plan(&desired, &actual)
            .iter()
            .map(|a| a.to_string())
            .collect();
        (Some(actual), drift)
    } else {
        let gone = format!(
            "the lab host namespace {} is gone",
            host_netns.clone().unwrap_or_default()
        );
        (None, vec![gone])
    };
    if saved.is_some() {
        drift.extend(services::drift(lab));
        drift.extend(crate::links::drift(lab));
    }
    let forward_drift = state
        .live_forwards
        .as_deref()
        .map(|live| lab::forward_changes(live, &lab.forwards))
        .unwrap_or_default();
    Ok(Observed {
        state,
        host_netns,
        up: saved.is_some(),
        actual,
        drift,
        forward_drift,
        dataplane: dataplane::status(&lab.name, state.forwards())?,
        services: services::recorded(&lab.name),
        links,
        tunnels,
    })
}

/// `netlab status`; returns whether the lab is up and converged.
pub async fn status(state: &LabState, host_override: Option<&str>, json_out: bool) -> Result<bool> {
    let seen = observe(state, host_override).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&status_json(&seen))?);
    } else {
        print_status(&seen);
    }
    Ok(seen.converged())
}

pub fn status_json(seen: &Observed) -> serde_json::Value {
    let lab = &seen.state.lab;
    let nodes: Vec<_> = lab
        .nodes
        .iter()
        .map(|n| {
            let have = seen.actual.as_ref().and_then(|a| a.nodes.get(&n.netns));
            json!({
                "name": n.name,
                "netns": n.netns,
                "present": have.is_some(),
                "interfaces": n.interfaces.iter().map(|i| {
                    let l = have.and_then(|h| h.links.get(&i.name));
                    json!({
                        "name": i.name,
                        "address": i.address,
                        "address6": i.address6,
                        "up": l.is_some_and(|l| l.up),
                        "attachment": i.attachment,
                    })
                }).collect::<Vec<_>>(),
                "gateway": n.gateway,
                "gateway6": n.gateway6,
                "routes": n.routes,
                "forwarding": n.forwarding,
                "services": seen.services_of(&n.name).iter().map(|(c, s)| service_json(c, *s)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "lab": lab.name,
        "up": seen.up,
        "source": seen.state.source.as_ref().map(|p| p.display().to_string()),
        "host_netns": seen.host_netns,
        "sandbox": seen.state.sandbox,
        "bridges": lab.bridges,
        "nodes": nodes,
        "cables": lab.cables,
        "forwards": lab.forwards,
        "live_forwards": seen.state.forwards(),
        "forwards_drift": seen.forward_drift,
        "converged": seen.converged(),
        "drift": seen.drift,
        "dataplane": seen.dataplane,
        "links": seen.links,
        "share": lab.share.as_ref().map(|s| json!({ "lab": s.lab, "host": s.host })),
        "host_ports": lab.share.as_ref().map_or(&[][..], |s| &s.host_ports[..]),
        "tunnels": seen.tunnels,
    })
}

fn service_json(command: &str, s: Option<&Service>) -> serde_json::Value {
    let Some(s) = s else {
        return json!({ "command": command, "state": "not started" });
    };
    let (state, pid, code) = match s.state() {
        services::ServiceState::Running { pid } => ("running", Some(pid), None),
        services::ServiceState::Exited { code } => ("exited", None, code),
    };
    json!({
        "command": command,
        "state": state,
        "pid": pid,
        "exit_code": code,
        "log": s.log,
    })
}

fn link_state(l: Option<&crate::model::plan::LinkState>) -> &'static str {
    match l {
        Some(l) if l.up => "up",
        Some(_) => "down",
        None => "missing",
    }
}

/// ` <address6>` of an interface that has one, else nothing.
fn address6_text(i: &crate::model::types::Interface) -> String {
    i.address6.map(|a| format!(" {a}")).unwrap_or_default()
}

/// `<lead> <gateway>[, <gateway6>]` for a node with default routes, else nothing.
fn default_routes_text(n: &crate::model::types::Node, lead: &str) -> String {
    let v6 = n.gateway6.map(std::net::IpAddr::from);
    let gws: Vec<String> = n
        .gateway
        .map(std::net::IpAddr::from)
        .into_iter()
        .chain(v6)
        .map(|g| g.to_string())
        .collect();
    if gws.is_empty() {
        String::new()
    } else {
        format!("{lead} {}", gws.join(", "))
    }
}

pub fn print_status(seen: &Observed) {
    let (state, lab) = (seen.state, &seen.state.lab);
    if !seen.up {
        println!("lab {} is not up", lab.name);
        return;
    }
    let where_ = match &seen.host_netns {
        Some(n) => format!(
            "lab host: netns {n}{}",
            if state.sandbox { " (sandbox)" } else { "" }
        ),
        None => "lab host: this namespace".to_string(),
    };
    println!("lab {} ({where_})", lab.name);
    if let Some(src) = &state.source {
        println!("  file: {}", src.display());
    }
    let actual = seen.actual.as_ref();
    for b in &lab.bridges {
        let mut gw = b
            .gateway_net()
            .map(|g| g.to_string())
            .unwrap_or_else(|| "no gateway".into());
        if let Some(g6) = b.gateway6_net() {
            gw = format!("{gw} {g6}");
        }
        let l = actual.and_then(|a| a.host_links.get(&b.name));
        println!("  bridge {:<10} {gw:<18} {}", b.name, link_state(l));
    }
    if let Some(s) = &lab.share {
        println!("  host {} of lab {}", s.host, s.lab);
    }
    for t in &seen.tunnels {
        println!("  tunnel {t}");
    }
    for p in lab.share.iter().flat_map(|s| &s.host_ports) {
        let l = actual.and_then(|a| a.host_links.get(&p.name));
        println!(
            "  host port {} {}/32 on bridge {} (peer {}) {}",
            p.name,
            p.address,
            p.bridge,
            p.peer,
            link_state(l)
        );
    }
    for n in &lab.nodes {
        let have = actual.and_then(|a| a.nodes.get(&n.netns));
        let ifs: Vec<String> = n
            .interfaces
            .iter()
            .map(|i| {
                let st = link_state(have.and_then(|h| h.links.get(&i.name)));
                let via = match &i.attachment {
                    Attachment::Bridge { bridge, .. } => format!("on {bridge}"),
                    Attachment::Cable { peer_node, .. } => format!("to {peer_node}"),
                };
                format!("{} {}{} {via} {st}", i.name, i.address, address6_text(i))
            })
            .collect();
        let gw = default_routes_text(n, "; default via");
        let missing = if have.is_none() {
            " [namespace missing]"
        } else {
            ""
        };
        println!(
            "  node {:<8} netns {:<10} {}{gw}{missing}",
            n.name,
            n.netns,
            ifs.join(", ")
        );
        let impaired = seen
            .links
            .iter()
            .filter(|l| l.node == n.name && (l.out.is_some() || l.inbound.is_some()));
        for line in crate::links::view_lines(&impaired.cloned().collect::<Vec<_>>()) {
            println!("    link {line}");
        }
        for (command, s) in seen.services_of(&n.name) {
            let run = s.map_or("not started".to_string(), |s| s.state().to_string());
            println!("    service `{command}`: {run}");
        }
    }
    for (i, f) in state.forwards().iter().enumerate() {
        let live_only = if lab.forwards.contains(f) {
            ""
        } else {
            "  [live only]"
        };
        let counts = dataplane::forward_counts_text(&seen.dataplane, i);
        println!("  forward {f}{live_only}{counts}");
    }
    for line in dataplane::status_lines(&seen.dataplane) {
        println!("  {line}");
    }
    print_convergence(seen);
}

fn print_convergence(seen: &Observed) {
    if seen.converged() {
        println!("  converged: yes");
        return;
    }
    if !seen.drift.is_empty() {
        println!("  converged: no; `netlab up` would:");
    } else {
        println!("  converged: no");
    }
    for d in &seen.drift {
        println!("    {d}");
    }
    if !seen.forward_drift.is_empty() {
        println!("  live forwards differ from the file (`netlab fwd` since `up`):");
        for d in &seen.forward_drift {
            println!("    {d}");
        }
    }
}

/// `netlab list`: every lab with state on this machine, observed on its
/// lab host.
pub async fn list(json_out: bool) -> Result<()> {
    let mut rows = Vec::new();
    for state in crate::state::known_states() {
        let converged = match observe(&state, None).await {
            Ok(seen) => seen.converged(),
            Err(_) => false,
        };
        rows.push(json!({
            "lab": state.lab.name,
            "host_netns": state.host_netns,
            "sandbox": state.sandbox,
            "nodes": state.lab.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
            "up": true,
            "converged": converged,
        }));
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no labs are up");
    }
    for r in &rows {
        let host = match r["host_netns"].as_str() {
            Some(n) if r["sandbox"] == true => format!("netns {n} (sandbox)"),
            Some(n) => format!("netns {n}"),
            None => "this namespace".into(),
        };
        let nodes: Vec<&str> = r["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str())
            .collect();
        println!(
            "{:<16} host {host:<28} up, {}; nodes: {}",
            r["lab"].as_str().unwrap_or("?"),
            if r["converged"] == true {
                "converged"
            } else {
                "not converged"
            },
            nodes.join(" ")
        );
    }
    Ok(())
}

/// `netlab fwd`: resolves the lab, and holds its lock while editing.
pub async fn fwd(cmd: FwdCommand, name: Option<&str>, host_netns: Option<&str>) -> Result<()> {
    let req = match cmd {
        FwdCommand::Add {
            protocol,
            port,
            to,
            take_host_port,
            no_ipv6,
        } => FwdRequest::Add {
            protocol,
            port,
            to,
            take_host_port,
            ipv6: !no_ipv6,
        },
        FwdCommand::Del { protocol, port } => FwdRequest::Del { protocol, port },
        FwdCommand::List { json } => FwdRequest::List { json },
    };
    let changes = !matches!(req, FwdRequest::List { .. });
    let (state, _lock) = lab_to_change(name, host_netns, "netlab fwd", changes)?;
    dataplane::fwd_command(state, req).await
}

/// The lab `name` names; when the command changes it, held under the lab's
/// lock and read again under it (another run may have changed it meanwhile).
fn lab_to_change(
    name: Option<&str>,
    host_netns: Option<&str>,
    command: &str,
    changes: bool,
) -> Result<(lab::LabState, Option<lock::RunLock>)> {
    let state = lab::resolve(None, name, host_netns, None)?;
    if !changes {
        return Ok((state, None));
    }
    let lock = lock::acquire(
        &lock::Scope::Lab(state.lab.name.clone()),
        command,
        lock::WAIT_BOUND,
    )?;
    let state = lab::read_state(&state.lab.name).unwrap_or(state);
    Ok((state, Some(lock)))
}

/// `netlab link`: resolves the lab, and holds its lock while changing it.
pub async fn link(cmd: LinkCommand, name: Option<&str>, host_netns: Option<&str>) -> Result<()> {
    use crate::{links, model::impair::Direction};
    let changes = !matches!(cmd, LinkCommand::Show { .. });
    let (state, _lock) = lab_to_change(name, host_netns, "netlab link", changes)?;
    let host = Netns::host(host_netns.or(state.host_netns.as_deref()))?;
    let mut sys = System::new(host).await?;
    let lab = &state.lab;
    match cmd {
        LinkCommand::Set {
            target,
            delay,
            jitter,
            loss,
            rate,
            corrupt,
            duplicate,
            reorder,
            clear,
            direction,
        } => {
            let values = [
                ("delay", delay),
                ("jitter", jitter),
                ("loss", loss),
                ("rate", rate),
                ("corrupt", corrupt),
                ("duplicate", duplicate),
                ("reorder", reorder),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect::<Vec<_>>();
            if values.is_empty() && !clear {
                bail!("nothing to set: give --delay, --loss, --rate, ... or --clear");
            }
            let direction = direction.map(|d| {
                if d == "in" {
                    Direction::In
                } else {
                    Direction::Out
                }
            });
            let change = links::LiveSet {
                values,
                clear,
                direction,
            };
            for line in links::set_live(&mut sys, lab, &target, &change).await? {
                println!("{line}");
            }
        }
        LinkCommand::Down { target } => {
            println!("{}", links::set_state(&mut sys, lab, &target, false).await?)
        }
        LinkCommand::Up { target } => {
            println!("{}", links::set_state(&mut sys, lab, &target, true).await?);
            // The kernel took the routes through the link away with it.
            let (node, _) = links::resolve_target(lab, &target)?;
            lab::restore_node(&mut sys, &state, &node).await?;
        }
        LinkCommand::Show { json } => {
            let views = links::view(&mut sys, lab).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                for line in links::view_lines(&views) {
                    println!("{line}");
                }
            }
        }
    }
    Ok(())
}

pub async fn nat(cmd: NatCommand, name: Option<&str>, host_netns: Option<&str>) -> Result<()> {
    let NatCommand::List { json } = cmd;
    let state = lab::resolve(None, name, host_netns, None)?;
    dataplane::nat_command(&state, json).await
}

pub async fn stats(state: &LabState, json_out: bool, verbose: bool) -> Result<()> {
    dataplane::stats_command(state, json_out, verbose).await
}

/// `netlab logs NODE [-f]`: what the node's services wrote (each start
/// begins with a `--- netlab: starting` line); `follow` keeps printing what
/// they write until Ctrl-C, the reader going away, or the lab going down.
pub async fn logs(state: &LabState, node: &str, follow: bool) -> Result<()> {
    use std::io::{Read as _, Seek as _, Write as _};
    let lab = &state.lab;
    let Some(n) = lab.node(node) else {
        bail!("lab {} has no node {node}", lab.name);
    };
    let files = services::logs_of(lab, node);
    if files.is_empty() {
        if n.run.is_empty() {
            bail!("node {node} runs no services (`run = [...]` in the lab file)");
        }
        bail!(
            "node {node}'s services have not been started (is lab {} up?)",
            lab.name
        );
    }
    let mut offsets = vec![0u64; files.len()];
    let mut out = std::io::stdout().lock();
    loop {
        for (path, offset) in files.iter().zip(offsets.iter_mut()) {
            let Ok(mut f) = std::fs::File::open(path) else {
                continue;
            };
            let mut chunk = Vec::new();
            f.seek(std::io::SeekFrom::Start(*offset))?;
            f.read_to_end(&mut chunk)?;
            *offset += chunk.len() as u64;
            if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
                return Ok(()); // the reader went away
            }
        }
        if !follow || !crate::state::LabDir::of(&lab.name).exists() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
