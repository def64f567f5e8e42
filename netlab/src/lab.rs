//! Lab lifecycle: `up` converges the system to a topology (rolling back what
//! it created if a step fails), `down` removes everything a lab owns, found by
//! its markers, and verifies that nothing is left.

use std::{
    collections::BTreeSet,
    fs,
    io::Read as _,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::{
    dataplane,
    model::{
        plan::{plan, teardown, Action, Actual, Desired},
        topology::{self, Lab},
    },
    netns::{self, Netns},
    system::{self, System},
};

/// Per-lab runtime state: what `up` was given, so `down`, `status`, `exec`
/// and `fwd` work without repeating it. `down` does not need it.
pub const STATE_DIR: &str = "/run/netlab";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    pub lab: Lab,
    pub host_netns: Option<String>,
    pub sandbox: bool,
    pub source: Option<PathBuf>,
    /// `up` turned IPv4 forwarding on in the lab host: `down` turns it off
    /// again when no other lab on that host is left.
    #[serde(default)]
    pub enabled_host_forwarding: bool,
}

pub fn state_dir(lab: &str) -> PathBuf {
    Path::new(STATE_DIR).join(lab)
}

fn state_path(lab: &str) -> PathBuf {
    state_dir(lab).join("state.json")
}

pub fn read_state(lab: &str) -> Option<LabState> {
    let text = fs::read_to_string(state_path(lab)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn write_state(state: &LabState) -> Result<()> {
    let dir = state_dir(&state.lab.name);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join("state.json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, state_path(&state.lab.name)).context("saving the lab state")?;
    Ok(())
}

/// Labs with a state directory.
pub fn known_labs() -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(STATE_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Load a topology file, or the embedded default lab.
pub fn load(file: Option<&Path>) -> Result<(Lab, Option<PathBuf>)> {
    match file {
        None => Ok((topology::default_lab(), None)),
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
            let (lab, _sources) = topology::parse_file(&path.display().to_string(), &bytes)?;
            Ok((
                lab,
                Some(path.canonicalize().unwrap_or_else(|_| path.to_path_buf())),
            ))
        }
    }
}

/// Which lab a command means: the file's, the named one's, the only one
/// that is up, or the default lab.
pub fn resolve(file: Option<&Path>, name: Option<&str>) -> Result<LabState> {
    if let Some(path) = file {
        let (lab, source) = load(Some(path))?;
        let saved = read_state(&lab.name);
        return Ok(LabState {
            host_netns: saved.as_ref().and_then(|s| s.host_netns.clone()),
            sandbox: saved.as_ref().is_some_and(|s| s.sandbox),
            enabled_host_forwarding: saved.as_ref().is_some_and(|s| s.enabled_host_forwarding),
            lab,
            source,
        });
    }
    if let Some(name) = name {
        return read_state(name)
            .ok_or_else(|| anyhow!("lab {name} is not up (no state in {STATE_DIR}/{name})"));
    }
    let labs = known_labs();
    match labs.as_slice() {
        [only] => read_state(only).ok_or_else(|| anyhow!("the state of lab {only} is unreadable")),
        [] => Ok(LabState {
            lab: topology::default_lab(),
            host_netns: None,
            sandbox: false,
            source: None,
            enabled_host_forwarding: false,
        }),
        many => bail!(
            "several labs are up ({}); say which with --name or -f",
            many.join(", ")
        ),
    }
}

pub struct Options {
    pub host_netns: Option<String>,
    pub verbose: bool,
    pub sandbox: bool,
}

/// Bring `lab` up (or converge it) with the lab host in `opts.host_netns`.
pub async fn up(lab: &Lab, source: Option<PathBuf>, opts: &Options) -> Result<()> {
    let host = Netns::host(opts.host_netns.as_deref())?;
    let mut sys = System::new(host).await?;
    let previous = read_state(&lab.name);
    let existed = previous.is_some();
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
    let mut state = LabState {
        lab: lab.clone(),
        host_netns: opts.host_netns.clone(),
        sandbox: opts.sandbox,
        source,
        enabled_host_forwarding: previous.is_some_and(|p| p.enabled_host_forwarding),
    };
    write_state(&state)?;

    let desired = Desired::from_lab(lab, &system::host_nameservers());
    for name in desired.nodes.keys() {
        sweep_unmounted(name)?;
    }
    let actual = sys.observe(&lab.name).await?;
    let want_netns: BTreeSet<String> = desired.nodes.keys().cloned().collect();
    let want_links: BTreeSet<String> = desired
        .bridges
        .keys()
        .chain(desired.host_veths.keys())
        .cloned()
        .collect();
    let checked = system::check_no_foreign(
        &lab.name,
        &actual,
        &want_netns,
        &want_links,
        sys.host_netlink(),
    )
    .await;
    if let Err(e) = checked {
        if !existed && actual == Actual::default() {
            let _ = fs::remove_dir_all(state_dir(&lab.name));
        }
        return Err(e);
    }

    let actions = plan(&desired, &actual);
    let mut journal: Vec<Action> = Vec::new();
    for action in &actions {
        if opts.verbose {
            println!("  {action}");
        }
        match sys.apply(&lab.name, action).await {
            Ok(undo) => {
                journal.extend(undo);
                if *action == Action::EnableHostForwarding && !state.enabled_host_forwarding {
                    state.enabled_host_forwarding = true;
                    write_state(&state)?;
                }
            }
            Err(e) => {
                let undone = rollback(&mut sys, &lab.name, journal).await;
                if !existed
                    && sys
                        .observe(&lab.name)
                        .await
                        .is_ok_and(|a| a == Actual::default())
                {
                    let _ = fs::remove_dir_all(state_dir(&lab.name));
                }
                return Err(e.context(format!(
                    "{action} (rolled back {undone} changes of this run)"
                )));
            }
        }
    }

    let had_dataplane = dataplane::read_info(&lab.name).is_some();
    let dp = match dataplane::up(&sys, lab, opts.verbose).await {
        Ok(report) => report,
        Err(e) => {
            // A dataplane this run started goes too; one that was running
            // before keeps running.
            if !had_dataplane {
                let _ = dataplane::down(&lab.name, Some(&sys.host));
            }
            let undone = rollback(&mut sys, &lab.name, journal).await;
            return Err(e.context(format!(
                "setting up the NAT dataplane (rolled back {undone} changes of this run)"
            )));
        }
    };

    let where_ = match &opts.host_netns {
        Some(n) => format!(" in netns {n}"),
        None => String::new(),
    };
    if actions.is_empty() && !dp.changed {
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
            plural(actions.len() + usize::from(dp.changed), "change")
        );
    }
    for line in dp.lines {
        println!("  {line}");
    }
    Ok(())
}

/// Undo a run's changes, newest first; returns how many were undone.
async fn rollback(sys: &mut System, lab: &str, journal: Vec<Action>) -> usize {
    let mut n = 0;
    for undo in journal.into_iter().rev() {
        match sys.apply(lab, &undo).await {
            Ok(_) => n += 1,
            Err(e) => eprintln!("netlab: rollback step failed: {undo}: {e:#}"),
        }
    }
    n
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
    let mut report = DownReport::default();
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
        report.ended = system::end_processes_in(&owned_ns)?;
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
        report.ended = system::end_processes_in(&owned)?;
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
        }
    }
    if !errors.is_empty() {
        bail!(
            "could not remove everything of lab {name}:\n  {}",
            errors.join("\n  ")
        );
    }
    if let Some(s) = saved.as_ref().filter(|s| s.enabled_host_forwarding) {
        restore_host_forwarding(name, s)?;
    }
    let _ = fs::remove_dir_all(state_dir(name));

    let left = leftovers(name, host_name.as_deref()).await?;
    if !left.is_empty() {
        bail!("lab {name} still has: {}", left.join(", "));
    }
    Ok(report)
}

/// Turn IPv4 forwarding off again in the lab host `up` turned it on in,
/// unless another lab still uses that host.
fn restore_host_forwarding(name: &str, state: &LabState) -> Result<()> {
    let shared = known_labs()
        .iter()
        .filter(|other| other.as_str() != name)
        .filter_map(|other| read_state(other))
        .any(|other| other.host_netns == state.host_netns);
    if shared {
        return Ok(());
    }
    match &state.host_netns {
        Some(n) if !netns::exists(n) => Ok(()),
        other => Netns::host(other.as_deref())?
            .write_sysctl("net/ipv4/ip_forward", "0")
            .context("turning IPv4 forwarding off again in the lab host"),
    }
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
    if state_dir(name).exists() {
        left.push(state_dir(name).display().to_string());
    }
    left.extend(dataplane::leftovers(name));
    Ok(left)
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
