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
    stat_of(pid).is_none_or(|s| s.state == 'Z')
}

/// What `/proc/PID/stat` says of a process that netlab needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `Z`, ...
    pub state: char,
    /// Its process group.
    pub pgrp: i32,
    /// Clock ticks after boot when it started (field 22): with the pid,
    /// what tells a process from a later one that got the same pid.
    pub start_time: u64,
}

pub fn stat_of(pid: i32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The fields after the command (which may hold spaces and parentheses,
/// hence the last `)`): field 3 is the state, 5 the group, 22 the start.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Whether process `pid` that started at `start_time` still runs (not a
/// zombie, not another process that got its pid since).
pub fn is_running(pid: i32, start_time: u64) -> bool {
    stat_of(pid).is_some_and(|s| s.state != 'Z' && s.start_time == start_time)
}

/// The live (non-zombie) processes of process group `pgrp`.
pub fn group_members(pgrp: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat_of(*pid).is_some_and(|s| s.pgrp == pgrp && s.state != 'Z'))
        .collect()
}

/// Whether process group `pgrp`, whose leader started at `leader_start`,
/// still has a live process: the leader, or (once it is gone) the rest of
/// the group. The kernel gives no new process a pid that is still some
/// group's id, so a group whose leader's pid is free is that leader's; a
/// pid taken by a process with another start time means the group is gone.
pub fn group_running(pgrp: i32, leader_start: u64) -> bool {
    match stat_of(pgrp) {
        Some(s) if s.start_time != leader_start => false,
        Some(s) if s.state != 'Z' => true,
        _ => !group_members(pgrp).is_empty(),
    }
}

/// End process group `pgrp` (as [`group_running`] knows it; a group that is
/// gone is left alone): SIGTERM, SIGKILL to whatever is left after `grace`,
/// then a bounded wait until none is left. Returns whether it was running.
pub fn end_group(pgrp: i32, leader_start: u64, grace: Duration) -> bool {
    if !group_running(pgrp, leader_start) {
        return false;
    }
    let group = Pid::from_raw(pgrp);
    let _ = nix::sys::signal::killpg(group, Signal::SIGTERM);
    let deadline = std::time::Instant::now() + grace;
    while !group_members(pgrp).is_empty() && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    if !group_members(pgrp).is_empty() {
        let _ = nix::sys::signal::killpg(group, Signal::SIGKILL);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !group_members(pgrp).is_empty() && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_with_spaces_and_parentheses() {
        let text =
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                state: 'S',
                pgrp: 4242,
                start_time: 987654
            })
        );
        assert_eq!(parse_stat("12 (x) S 1"), None);
    }

    #[test]
    fn this_process_runs_and_a_wrong_start_time_is_another_process() {
        let me = std::process::id() as i32;
        let st = stat_of(me).unwrap();
        assert!(is_running(me, st.start_time));
        assert!(!is_running(me, st.start_time + 1));
    }
}
