//! Services: the commands of a node's `run = [...]`, kept running inside the
//! node after `up`. Each is started as `netlab exec` runs things (the node's
//! namespace and /etc/netns files), in a session of its own, so it outlives
//! the netlab process; its output is appended to a log in the lab's state
//! directory and its pid and start time are recorded there, so a later run
//! finds it (and never signals another process that got its pid).
//!
//! `up` leaves a service whose command is unchanged and still running alone,
//! stops one whose command changed or went, and starts (again) one that is
//! not running. `down` stops them all.

use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::{model::topology::Lab, procs, state::LabDir};

/// How long a stopped service gets after SIGTERM before SIGKILL.
pub const GRACE: Duration = Duration::from_secs(3);

/// One started service, as recorded in the lab's state directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub node: String,
    pub command: String,
    /// The session (and process group) leader: `sh` that runs the command
    /// and writes its exit code.
    pub pid: i32,
    pub start_time: u64,
    pub log: PathBuf,
    pub exit_file: PathBuf,
}

/// Where a service is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceState {
    Running {
        pid: i32,
    },
    /// With its exit code when it ran to its end (128+N: killed by signal N).
    Exited {
        code: Option<i32>,
    },
}

impl Service {
    pub fn state(&self) -> ServiceState {
        // The group: a command that outlives the shell that ran it (killed
        // by hand, say) still runs the service.
        if procs::group_running(self.pid, self.start_time) {
            return ServiceState::Running { pid: self.pid };
        }
        let code = fs::read_to_string(&self.exit_file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        ServiceState::Exited { code }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state(), ServiceState::Running { .. })
    }

    fn label(&self) -> String {
        format!("service `{}` in node {}", self.command, self.node)
    }
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceState::Running { pid } => write!(f, "running (pid {pid})"),
            ServiceState::Exited { code: Some(c) } => write!(f, "exited (code {c})"),
            ServiceState::Exited { code: None } => f.write_str("exited"),
        }
    }
}

/// A file name for the service `command` of `node`: the same for the same
/// command (so a restart appends to its log), another for another.
pub fn key(node: &str, command: &str) -> String {
    // FNV-1a: stable across builds and runs, unlike std's hasher.
    let hash = command.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{node}-{:08x}", hash as u32)
}

/// The recorded services of lab `lab` (none when it has no record).
pub fn recorded(lab: &str) -> Vec<Service> {
    LabDir::of(lab).read_services().unwrap_or_default()
}

/// The services the lab file asks for: (node, command) in file order.
fn wanted(lab: &Lab) -> Vec<(&str, &str)> {
    lab.nodes
        .iter()
        .flat_map(|n| n.run.iter().map(move |c| (n.name.as_str(), c.as_str())))
        .collect()
}

/// What `up` would do to the services: one line per change.
pub fn drift(lab: &Lab) -> Vec<String> {
    let have = recorded(&lab.name);
    let mut out: Vec<String> = have
        .iter()
        .filter(|s| s.is_running() && !wanted(lab).contains(&(&s.node, &s.command)))
        .map(|s| format!("stop {}", s.label()))
        .collect();
    for (node, command) in wanted(lab) {
        let running = have
            .iter()
            .any(|s| s.node == node && s.command == command && s.is_running());
        if !running {
            out.push(format!("start service `{command}` in node {node}"));
        }
    }
    out
}

/// Bring the services to what `lab` asks for, after the lab converged;
/// `source` is the lab file (its directory is the services' working
/// directory). Returns one line per change.
pub fn converge(lab: &Lab, source: Option<&Path>) -> Result<Vec<String>> {
    let dir = LabDir::of(&lab.name);
    let want = wanted(lab);
    let mut lines = Vec::new();
    let mut kept: Vec<Service> = Vec::new();
    let mut exited: Vec<Service> = Vec::new();
    for s in recorded(&lab.name) {
        let still_wanted = want.contains(&(&s.node, &s.command));
        if still_wanted && s.is_running() {
            kept.push(s);
        } else if still_wanted {
            exited.push(s);
        } else if procs::end_group(s.pid, s.start_time, GRACE) {
            lines.push(format!(
                "stopped {} (its command changed or went)",
                s.label()
            ));
        }
    }
    dir.write_services(&kept)?;
    let cwd = source
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.path.clone());
    for (node, command) in want {
        if kept.iter().any(|s| s.node == node && s.command == command) {
            continue;
        }
        let before = exited
            .iter()
            .find(|s| s.node == node && s.command == command);
        let s = start(&dir, &lab.name, node, command, &cwd)?;
        lines.push(match before {
            Some(b) => format!(
                "restarted {} (it had {}), pid {}",
                s.label(),
                b.state(),
                s.pid
            ),
            None => format!("started {}, pid {}", s.label(), s.pid),
        });
        kept.push(s);
        dir.write_services(&kept)?;
    }
    Ok(lines)
}

/// `sh` that runs the command (`$1`) as a child and writes its exit code to
/// `$2` when it ends (a stop ends this shell too, and nothing is written).
const WRAPPER: &str = r#"sh -c "$1"; echo $? > "$2""#;

/// Start `command` inside `node` of lab `lab_name` (whose state is written):
/// `netlab exec` in a new session, output appended to the service's log.
fn start(dir: &LabDir, lab_name: &str, node: &str, command: &str, cwd: &Path) -> Result<Service> {
    let key = key(node, command);
    let (log, exit_file) = (dir.service_log(&key), dir.service_exit(&key));
    let what = || format!("starting service `{command}` in node {node}");
    fs::create_dir_all(log.parent().expect("a log has a directory")).with_context(what)?;
    let _ = fs::remove_file(&exit_file);
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    writeln!(out, "--- netlab: starting `{command}` in node {node}")?;
    let exe = std::env::current_exe().context("finding the netlab binary")?;
    let mut cmd = Command::new(&exe);
    cmd.args(["exec", "--name", lab_name, node, "--", "sh", "-c", WRAPPER])
        .args(["netlab-service", command])
        .arg(&exit_file)
        .env("NETLAB", &exe)
        .env("NETLAB_LAB", lab_name)
        .env("NETLAB_NODE", node)
        .env_remove("NETLAB_HOST_NETNS")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(Into::into));
    }
    let child = cmd.spawn().with_context(what)?;
    let pid = child.id() as i32;
    // Not waited for: it lives on after netlab exits. Its start time is
    // fixed at fork, and its /proc entry stays (a zombie at worst) while
    // this process has not reaped it.
    let start_time = procs::stat_of(pid)
        .map(|s| s.start_time)
        .with_context(what)?;
    Ok(Service {
        node: node.to_string(),
        command: command.to_string(),
        pid,
        start_time,
        log,
        exit_file,
    })
}

/// Stop every service of lab `lab` (for `down`): one line per service
/// that was running.
pub fn stop_all(lab: &str) -> Result<Vec<String>> {
    let dir = LabDir::of(lab);
    let mut lines = Vec::new();
    for s in recorded(lab) {
        if procs::end_group(s.pid, s.start_time, GRACE) {
            lines.push(format!("{} (pid {})", s.label(), s.pid));
        }
    }
    if dir.exists() {
        dir.write_services(&Vec::<Service>::new())?;
    }
    Ok(lines)
}

/// The logs of `node`'s services, in the order of the lab file.
pub fn logs_of(lab: &Lab, node: &str) -> Vec<PathBuf> {
    let have = recorded(&lab.name);
    lab.node(node)
        .map(|n| {
            n.run
                .iter()
                .filter_map(|c| have.iter().find(|s| s.node == node && &s.command == c))
                .map(|s| s.log.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_keeps_its_key_and_another_gets_another() {
        let a = key("blue", "python3 -m http.server 8000");
        assert_eq!(a, key("blue", "python3 -m http.server 8000"));
        assert_ne!(a, key("blue", "python3 -m http.server 8001"));
        assert_ne!(a, key("red", "python3 -m http.server 8000"));
        assert!(
            a.starts_with("blue-") && a.len() == "blue-".len() + 8,
            "{a}"
        );
    }

    #[test]
    fn states_read_as_status_prints_them() {
        assert_eq!(
            ServiceState::Running { pid: 7 }.to_string(),
            "running (pid 7)"
        );
        assert_eq!(
            ServiceState::Exited { code: Some(3) }.to_string(),
            "exited (code 3)"
        );
        assert_eq!(ServiceState::Exited { code: None }.to_string(), "exited");
    }
}
