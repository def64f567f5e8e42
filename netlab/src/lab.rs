//! Lab lifecycle: `up` converges the system to a topology (rolling back what
//! it created if a step fails), `down` removes everything a lab owns, found by
//! its markers, and verifies that nothing is left.

use std::{
    collections::BTreeSet,
    fs,
    io::Read as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};

pub use crate::state::{known_labs, LabState, STATE_DIR};
use crate::{
    dataplane, host_facts,
    model::{
        plan::{plan, teardown, Action, Actual, Desired, Op, Place},
        topology::{self, Lab},
        SourceMap,
    },
    netns::{self, Netns},
    state::LabDir,
    system::{self, Journal, System},
    words::plural,
};

pub fn state_dir(lab: &str) -> PathBuf {
    LabDir::of(lab).path
}

pub fn read_state(lab: &str) -> Option<LabState> {
    LabDir::of(lab).read_state()
}

pub fn write_state(state: &LabState) -> Result<()> {
    LabDir::of(&state.lab.name).write_state(state)
}

/// The nameservers nodes get when their lab names none: the lab host's,
/// except in a sandbox, whose nodes cannot reach them (a resolver that never
/// answers stalls every program that looks a name up); there they get none.
pub fn default_nameservers(sandbox: bool) -> Vec<Ipv4Addr> {
    if sandbox {
        Vec::new()
    } else {
        system::host_nameservers()
    }
}

/// Load a topology file, or the embedded default lab: host `lab_host`'s
/// share of it in a lab over several hosts (see [`share_of`]).
pub fn load(file: Option<&Path>, lab_host: Option<&str>) -> Result<(Lab, Option<PathBuf>)> {
    let (lab, _, path) = load_with_sources(file)?;
    Ok((share_of(&lab, lab_host)?, path))
}

/// What this lab host runs of `lab`: all of it, or with `[[hosts]]` host
/// `lab_host`'s share (named `<lab>@<host>`).
pub fn share_of(lab: &Lab, lab_host: Option<&str>) -> Result<Lab> {
    crate::model::hosts::share(lab, lab_host).map_err(|e| anyhow!(e))
}

/// The name lab `name` runs under on lab host `lab_host`.
pub fn name_on(name: &str, lab_host: Option<&str>) -> String {
    match lab_host {
        Some(h) => crate::model::hosts::share_name(name, h),
        None => name.to_string(),
    }
}

/// Load a topology file (or the embedded default lab) with where each of
/// its fields is, so the host checks' problems name their line.
pub fn load_with_sources(file: Option<&Path>) -> Result<(Lab, SourceMap, Option<PathBuf>)> {
    match file {
        None => Ok((
            topology::default_lab(),
            SourceMap::unlocated("(default lab)"),
            None,
        )),
        Some(path) => {
            // At most one byte over the limit: enough to refuse a file that
            // is too large (or endless, like /dev/zero) without reading it.
            let mut bytes = Vec::new();
            fs::File::open(path)
                .and_then(|f| {
                    f.take(topology::MAX_FILE_BYTES as u64 + 1)
                        .read_to_end(&mut bytes)
                })
                .with_context(|| format!("reading {}", path.display()))?;
            let (lab, sources) = topology::parse_file(&path.display().to_string(), &bytes)?;
            Ok((
                lab,
                sources,
                Some(path.canonicalize().unwrap_or_else(|_| path.to_path_buf())),
            ))
        }
    }
}

/// Which lab a command means: the file's, the named one's, the only one
/// that is up (on lab host `host_netns`, when one is named), or the default
/// lab; in a lab over several hosts, host `lab_host`'s share.
pub fn resolve(
    file: Option<&Path>,
    name: Option<&str>,
    host_netns: Option<&str>,
    lab_host: Option<&str>,
) -> Result<LabState> {
    if let Some(path) = file {
        let (lab, source) = load(Some(path), lab_host)?;
        let saved = read_state(&lab.name);
        return Ok(LabState {
            host_netns: saved.as_ref().and_then(|s| s.host_netns.clone()),
            sandbox: saved.as_ref().is_some_and(|s| s.sandbox),
            enabled_host_forwarding: saved.as_ref().is_some_and(|s| s.enabled_host_forwarding),
            enabled_host_forwarding6: saved.as_ref().is_some_and(|s| s.enabled_host_forwarding6),
            live_forwards: saved.and_then(|s| s.live_forwards),
            lab,
            source,
        });
    }
    if let Some(name) = name.map(|n| name_on(n, lab_host)) {
        let name = name.as_str();
        return read_state(name)
            .ok_or_else(|| anyhow!("lab {name} is not up (no state in {STATE_DIR}/{name})"));
    }
    let mut labs = crate::state::known_states();
    if let Some(host) = host_netns {
        labs.retain(|s| s.host_netns.as_deref() == Some(host));
    }
    match labs.len() {
        1 => Ok(labs.remove(0)),
        0 => Ok(LabState {
            lab: topology::default_lab(),
            host_netns: host_netns.map(str::to_string),
            sandbox: false,
            source: None,
            enabled_host_forwarding: false,
            enabled_host_forwarding6: false,
            live_forwards: None,
        }),
        _ => {
            let names: Vec<&str> = labs.iter().map(|s| s.lab.name.as_str()).collect();
            bail!(
                "several labs are up ({}); say which with --name or -f",
                names.join(", ")
            )
        }
    }
}

pub struct Options {
    pub host_netns: Option<String>,
    pub verbose: bool,
    pub sandbox: bool,
}

/// Bring `lab` up (or converge it) with the lab host in `opts.host_netns`.
/// A failed `up` of a lab that was not up leaves nothing, its state
/// directory included; one of a lab that was up leaves it as it was.
/// What stands in the lab's way on the lab host (`sources` locates it in
/// the file) is refused before anything is made.
pub async fn up(
    lab: &Lab,
    sources: &SourceMap,
    source: Option<PathBuf>,
    opts: &Options,
) -> Result<()> {
    let host = Netns::host(opts.host_netns.as_deref())?;
    host_facts::refuse_conflicts(lab, sources, &host).await?;
    crate::links::refuse_missing(&crate::model::impair::impaired(lab))?;
    let mut sys = System::new(host).await?;
    let previous = read_state(&lab.name);
    let was_up = previous.is_some();
    let result = converge(&mut sys, lab, source.clone(), previous, opts).await;
    if result.is_err() && !was_up {
        forget_failed(&mut sys, &lab.name).await;
    }
    let (mut changes, mut lines) = result?;
    // The lab is up: a service that cannot start fails the run, but
    // takes nothing of the lab down.
    let services = crate::services::converge(lab, source.as_deref());
    if let Ok(started) = &services {
        changes += started.len();
        lines.extend(started.iter().cloned());
    }
    print_summary(lab, opts, changes, &lines);
    services
        .map(|_| ())
        .context("starting the lab's services (the lab itself is up)")
}

/// After a failed first `up` (rolled back): the dataplane this run started
/// and the state directory go, unless something of the lab is still there
/// (then `down` and `status` need the state to find it).
async fn forget_failed(sys: &mut System, name: &str) {
    if let Err(e) = dataplane::down(name, Some(&sys.host)) {
        eprintln!("netlab: removing the dataplane of the failed run: {e:#}");
    }
    let dir = LabDir::of(name);
    if let Some(s) = dir.read_state().filter(enabled_forwarding) {
        if let Err(e) = restore_host_forwarding(name, &s) {
            eprintln!("netlab: {e:#}");
        }
    }
    let nothing_left = sys.observe(name).await.is_ok_and(|a| owns_nothing(&a));
    if nothing_left {
        if let Err(e) = dir.remove() {
            eprintln!("netlab: {e:#}");
        }
    }
}

fn owns_nothing(a: &Actual) -> bool {
    a.nodes.is_empty() && a.host_links.is_empty() && a.host_routes.is_empty() && a.files.is_empty()
}

/// Converge the system to `lab`; returns how many changes it made and a
/// line for each that `up` reports beyond the count.
async fn converge(
    sys: &mut System,
    lab: &Lab,
    source: Option<PathBuf>,
    previous: Option<LabState>,
    opts: &Options,
) -> Result<(usize, Vec<String>)> {
    if let Some(prev) = &previous {
        if prev.host_netns != opts.host_netns {
            bail!(
                "lab {} is up with its host in {}; run `netlab down --name {}` first or use the same --host-netns",
                lab.name,
                prev.host_netns.as_deref().map(|n| format!("netns {n}")).unwrap_or("this namespace".into()),
                lab.name
            );
        }
    }
    // Written first, so a `down` after a crash anywhere below knows the lab.
    let live_before = previous.as_ref().and_then(|p| p.live_forwards.clone());
    let mut state = LabState {
        lab: lab.clone(),
        host_netns: opts.host_netns.clone(),
        sandbox: opts.sandbox,
        source,
        enabled_host_forwarding: previous.as_ref().is_some_and(|p| p.enabled_host_forwarding),
        enabled_host_forwarding6: previous
            .as_ref()
            .is_some_and(|p| p.enabled_host_forwarding6),
        live_forwards: live_before.clone(),
    };
    write_state(&state)?;

    let desired = Desired::from_lab(lab, &default_nameservers(opts.sandbox));
    for name in desired.nodes.keys() {
        sweep_unmounted(name)?;
    }
    // Namespaces and lab-host links under the lab's names that are not its
    // own were refused at the start of `up` (`host_facts::refuse_conflicts`,
    // under the same locks): one check, one wording.
    let actual = sys.observe(&lab.name).await?;

    let actions = plan(&desired, &actual);
    // A node that leaves the lab takes its processes with it, as in `down`:
    // otherwise they keep its namespace (and its links) alive, unowned.
    let leaving: Vec<String> = actions
        .iter()
        .filter_map(|a| a.deleted_namespace().map(str::to_string))
        .collect();
    let ended = system::end_processes_in(&leaving)?;
    let mut journal = Journal::new(&lab.name);
    journal
        .apply_all(sys, &actions, opts.verbose, |action| {
            record_host_forwarding(&mut state, action)
        })
        .await?;

    let had_dataplane = dataplane::read_info(&lab.name).is_some();
    let dp = match dataplane::up(sys, lab, opts.verbose).await {
        Ok(report) => report,
        Err(e) => {
            // A dataplane this run started goes too; one that was running
            // before keeps running.
            if !had_dataplane {
                let _ = dataplane::down(&lab.name, Some(&sys.host));
            }
            let undone = journal.rollback(sys).await;
            return Err(e.context(format!(
                "setting up the NAT dataplane (rolled back {undone} changes of this run)"
            )));
        }
    };
    let mut lines = dp.lines;
    // The tunnels open only now that the dataplane's `nl_tunnel_out` is on
    // them: the anycast gateway's own frames never cross.
    let tunnels = lab.share.as_ref().map_or(&[][..], |s| &s.tunnels[..]);
    let opened = crate::vxlan::open(sys.host_netlink(), tunnels)
        .await
        .context("setting the tunnels up")?;
    let impaired = crate::links::converge(sys, lab)
        .await
        .context("setting the links' impairments")?;
    let restored = live_before.map(|live| forward_changes(&live, &lab.forwards));
    if restored.is_some() {
        state.live_forwards = None;
        write_state(&state)?;
    }
    lines.extend(restored.iter().flatten().cloned());
    lines.extend(
        ended
            .iter()
            .map(|p| format!("ended {p} (its node left the lab)")),
    );
    let changes = actions.len()
        + usize::from(dp.changed)
        + opened
        + restored.as_ref().map_or(0, Vec::len)
        + impaired.len();
    lines.extend(impaired);
    Ok((changes, lines))
}

/// What the kernel dropped in node `node` while a link of it was down
/// (its routes through that link) made again from the lab as `up` would,
/// touching nothing outside the node. Returns how many changes it made.
pub async fn restore_node(sys: &mut System, state: &LabState, node: &str) -> Result<usize> {
    let lab = &state.lab;
    let netns = lab.netns_of(node);
    let desired = Desired::from_lab(lab, &default_nameservers(state.sandbox));
    let actual = sys.observe(&lab.name).await?;
    let here = Place::Node(netns);
    let actions: Vec<Action> = plan(&desired, &actual)
        .into_iter()
        .filter(|a| a.place == here)
        .collect();
    for a in &actions {
        sys.apply(&lab.name, a)
            .await
            .with_context(|| format!("{a}"))?;
    }
    Ok(actions.len())
}

/// Once this run turns the lab host's forwarding on, the state says so
/// (`down` turns it off again only then).
fn record_host_forwarding(state: &mut LabState, action: &Action) -> Result<()> {
    if action.place != Place::LabHost {
        return Ok(());
    }
    let flag = match action.op {
        Op::SetForwarding { on: true } => &mut state.enabled_host_forwarding,
        Op::SetIpv6Forwarding { on: true } => &mut state.enabled_host_forwarding6,
        _ => return Ok(()),
    };
    if !*flag {
        *flag = true;
        write_state(state)?;
    }
    Ok(())
}

/// What `up` does to forwards edited live (`fwd add`/`fwd del`) to bring
/// back the file's: one line per forward removed or restored.
pub fn forward_changes(live: &[topology::Forward], file: &[topology::Forward]) -> Vec<String> {
    let mut out: Vec<String> = live
        .iter()
        .filter(|f| !file.contains(f))
        .map(|f| format!("forward {f}: added live, not in the file (`up` removes it)"))
        .collect();
    out.extend(
        file.iter()
            .filter(|f| !live.contains(f))
            .map(|f| format!("forward {f}: removed live, in the file (`up` restores it)")),
    );
    out
}

fn print_summary(lab: &Lab, opts: &Options, changes: usize, lines: &[String]) {
    let where_ = match &opts.host_netns {
        Some(n) => format!(" in netns {n}"),
        None => String::new(),
    };
    if changes == 0 {
        println!("lab {} is up{where_}; nothing to change", lab.name);
    } else {
        let forwarded: usize = lab
            .forwards
            .iter()
            .map(|f| usize::from(f.port_last - f.port_first) + 1)
            .sum();
        println!(
            "lab {} is up{where_}: {}, {}, {} ({})",
            lab.name,
            plural(lab.nodes.len(), "node"),
            plural(lab.bridges.len(), "bridge"),
            plural(forwarded, "forwarded port"),
            plural(changes, "change")
        );
    }
    for line in lines {
        println!("  {line}");
    }
}

/// A file in /run/netns that is not a mounted namespace (a crash between
/// creating it and mounting it) blocks creating the namespace: remove it.
fn sweep_unmounted(name: &str) -> Result<()> {
    let path = netns::netns_path(name);
    if path.exists() && !netns::exists(name) {
        netns::delete(name)?;
    }
    Ok(())
}

/// A kill of `up` between making a node's /etc/netns directory and writing
/// its files (marked, so `down` finds them) leaves the directory empty, or a
/// file in it empty: neither holds anything of anyone's, so both go.
fn sweep_etc_dir(netns: &str) {
    let dir = Path::new(crate::model::plan::NETNS_ETC).join(netns);
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.metadata().is_ok_and(|m| m.is_file() && m.len() == 0) {
            let _ = fs::remove_file(e.path());
        }
    }
    let _ = fs::remove_dir(&dir);
}

/// What `down` did.
#[derive(Default)]
pub struct DownReport {
    pub removed: usize,
    pub ended: Vec<String>,
}

/// Remove everything lab `name` owns. `known` (a topology) adds the names of
/// namespaces to sweep when a crash left unmounted files behind.
pub async fn down(
    name: &str,
    known: Option<&Lab>,
    host_netns: Option<&str>,
    verbose: bool,
) -> Result<DownReport> {
    let saved = read_state(name);
    let host_name = host_netns
        .map(str::to_string)
        .or_else(|| saved.as_ref().and_then(|s| s.host_netns.clone()));
    // The services first, each as a whole process group (a child it put
    // in another namespace too) and named by its command.
    let mut report = DownReport {
        ended: crate::services::stop_all(name)?,
        ..DownReport::default()
    };
    let host = match &host_name {
        Some(n) if !netns::exists(n) => None, // the lab host itself is gone; so are its links
        other => Some(Netns::host(other.as_deref())?),
    };
    // The dataplane first: programs stop translating before links go.
    report.removed += dataplane::down(name, host.as_ref())?;

    let mut errors = Vec::new();
    if let Some(host) = host {
        let mut sys = System::new(host).await?;
        let actual = sys.observe(name).await?;
        let owned_ns: Vec<String> = actual.nodes.keys().cloned().collect();
        report.ended.extend(system::end_processes_in(&owned_ns)?);
        for action in teardown(name, &actual) {
            if verbose {
                println!("  {action}");
            }
            match sys.apply(name, &action).await {
                Ok(_) => report.removed += 1,
                Err(e) => errors.push(format!("{action}: {e:#}")),
            }
        }
    } else {
        // Without the lab host, node namespaces are still found by marker.
        let owned = system::namespaces_marked(&crate::model::plan::owner_alias(name)).await?;
        report.ended.extend(system::end_processes_in(&owned)?);
        for n in owned {
            netns::delete(&n)?;
            report.removed += 1;
        }
        for path in system::marked_files(name).keys() {
            let _ = fs::remove_file(path);
            if let Some(d) = path.parent() {
                let _ = fs::remove_dir(d);
            }
            report.removed += 1;
        }
    }
    // Links the lab left in other namespaces (its host namespace unknown).
    let skip: BTreeSet<String> = host_name.iter().cloned().collect();
    for (ns, link) in System::stray_host_links(name, &skip).await? {
        if verbose {
            println!("  delete link {link} in netns {ns}");
        }
        report.removed += 1;
    }
    let known = known
        .cloned()
        .or_else(|| saved.as_ref().map(|s| s.lab.clone()));
    if let Some(lab) = &known {
        for n in &lab.nodes {
            sweep_unmounted(&n.netns)?;
            sweep_etc_dir(&n.netns);
        }
    }
    if !errors.is_empty() {
        bail!(
            "could not remove everything of lab {name}:\n  {}",
            errors.join("\n  ")
        );
    }
    if let Some(s) = saved.as_ref().filter(|s| enabled_forwarding(s)) {
        restore_host_forwarding(name, s)?;
    }
    LabDir::of(name).remove()?;

    let left = leftovers(name, host_name.as_deref()).await?;
    if !left.is_empty() {
        bail!("lab {name} still has: {}", left.join(", "));
    }
    Ok(report)
}

/// Whether `up` turned forwarding of either family on in the lab host.
fn enabled_forwarding(state: &LabState) -> bool {
    state.enabled_host_forwarding || state.enabled_host_forwarding6
}

/// Turn IPv4 and IPv6 forwarding off again in the lab host, each if `up`
/// turned it on there, unless another lab still uses that host.
fn restore_host_forwarding(name: &str, state: &LabState) -> Result<()> {
    let shared = crate::state::known_states()
        .iter()
        .any(|other| other.lab.name != name && other.host_netns == state.host_netns);
    if shared {
        return Ok(());
    }
    let host = match &state.host_netns {
        Some(n) if !netns::exists(n) => return Ok(()),
        other => Netns::host(other.as_deref())?,
    };
    if state.enabled_host_forwarding {
        host.write_sysctl("net/ipv4/ip_forward", "0")
            .context("turning IPv4 forwarding off again in the lab host")?;
    }
    if state.enabled_host_forwarding6 {
        host.write_sysctl("net/ipv6/conf/all/forwarding", "0")
            .context("turning IPv6 forwarding off again in the lab host")?;
    }
    Ok(())
}

/// What lab `name` still owns anywhere (empty after a successful `down`).
pub async fn leftovers(name: &str, host_netns: Option<&str>) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let host = match host_netns {
        Some(n) if !netns::exists(n) => None,
        other => Some(Netns::host(other)?),
    };
    if let Some(host) = host {
        let actual = System::new(host).await?.observe(name).await?;
        left.extend(actual.nodes.keys().map(|n| format!("netns {n}")));
        left.extend(actual.host_links.keys().map(|l| format!("link {l}")));
        left.extend(actual.files.keys().map(|p| p.display().to_string()));
    }
    let dir = LabDir::of(name);
    if dir.exists() {
        left.push(dir.path.display().to_string());
    }
    left.extend(dataplane::leftovers(name));
    Ok(left)
}
