//! Processes running inside a lab's namespaces. A namespace whose name is
//! removed lives on while a process is still in it, and so do its links, so
//! `down` ends them first and says which it ended.

use std::{collections::BTreeMap, fs, thread, time::Duration};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    pub command: String,
}

fn netns_inode_of(pid: i32) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let s = link.to_string_lossy();
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

fn command_of(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Processes whose network namespace is one of `inodes`, by inode.
pub fn in_namespaces(inodes: &[u64]) -> BTreeMap<u64, Vec<Process>> {
    let me = std::process::id() as i32;
    let mut out: BTreeMap<u64, Vec<Process>> = BTreeMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Some(ino) = netns_inode_of(pid) {
            if inodes.contains(&ino) {
                out.entry(ino).or_default().push(Process {
                    pid,
                    command: command_of(pid),
                });
            }
        }
    }
    out
}

/// SIGTERM, then SIGKILL for whatever is still there after `grace`.
pub fn end(processes: &[Process], grace: Duration) {
    for p in processes {
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGTERM);
    }
    let deadline = std::time::Instant::now() + grace;
    let alive = |p: &Process| kill(Pid::from_raw(p.pid), None).is_ok() && !is_zombie(p.pid);
    while processes.iter().any(alive) && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    for p in processes.iter().filter(|p| alive(p)) {
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
    }
    // Wait (bounded) until the kernel has reaped them, so their namespace
    // references are gone when we return.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while processes.iter().any(alive) && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
