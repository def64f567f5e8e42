//! `netlab bench --perf DIR`: a CPU profile of the whole machine (perf,
//! `cpu-clock` with call chains) around every measurement, and from it
//! where the CPU time went: the eBPF programs with the helpers and maps they
//! call, netfilter's hooks (conntrack, NAT, rules), the bridge, user space
//! (the load tools and servers), idle, and the rest of the kernel. The
//! connection metrics turn it into µs of CPU per connection, per mode.

use std::{
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

/// Samples per second and CPU; with `cpu-clock` an idle CPU is sampled too,
/// so the shares of a recording add up to its window times the CPUs.
const FREQUENCY: &str = "1999";

/// The categories, in the order they are shown.
pub const CATEGORIES: [&str; 7] = [
    "ebpf",
    "netfilter",
    "bridge",
    "other_kernel",
    "user",
    "idle",
    "profiler",
];

/// The categories that are not the measured work: what the CPUs did not
/// do, and perf itself (starting, reading every process's maps).
pub const NOT_BUSY: [&str; 2] = ["idle", "profiler"];

/// perf recording every CPU until [`Recording::stop`].
pub struct Recording {
    child: Child,
    path: PathBuf,
    started: Instant,
}

/// Start recording into `dir/<name>.data`.
pub fn start(dir: &Path, name: &str) -> Result<Recording> {
    let path = dir.join(format!("{name}.data"));
    let started = Instant::now();
    let child = Command::new("perf")
        .args([
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-F",
            FREQUENCY,
            "-a",
            "-g",
            "-o",
        ])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `perf record` (Debian's linux-perf, installed by cargo xtask setup)")?;
    // perf opens an event on every CPU before it samples: let it, so the
    // measurement's first packets are in the profile.
    std::thread::sleep(Duration::from_millis(300));
    Ok(Recording {
        child,
        path,
        started,
    })
}

impl Recording {
    /// Stop recording; the profile's CPU seconds per category.
    pub fn stop(mut self) -> Result<Value> {
        let seconds = self.started.elapsed().as_secs_f64();
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                // perf ends on the SIGINT it was sent, having written its file.
                let interrupted =
                    status.signal() == Some(libc::SIGINT) || status.code() == Some(130);
                if !status.success() && !interrupted {
                    bail!(
                        "perf record into {} ended with {status}",
                        self.path.display()
                    );
                }
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "perf record into {} did not stop in 30 s",
                    self.path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let report = Command::new("perf")
            .args([
                "report",
                "--children",
                "--sort",
                "comm,sym",
                "--stdio",
                "-q",
                "-g",
                "none",
            ])
            .args(["--percent-limit", "0", "-i"])
            .arg(&self.path)
            .stderr(Stdio::null())
            .output()
            .with_context(|| format!("perf report of {}", self.path.display()))?;
        let text = String::from_utf8_lossy(&report.stdout);
        let shares = shares(&text);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu_seconds = seconds * cpus as f64;
        let categories: serde_json::Map<String, Value> = shares
            .iter()
            .map(|(k, pct)| (k.to_string(), json!(pct / 100.0 * cpu_seconds)))
            .collect();
        Ok(json!({
            "file": self.path.display().to_string(),
            "seconds": seconds,
            "cpus": cpus,
            "cpu_seconds": categories,
        }))
    }
}

/// One line of `perf report --children --sort comm,sym -g none`:
/// children %, self %, the command, and the symbol (`[.]` for any in user
/// space).
fn line(l: &str) -> Option<(f64, f64, &str, &str)> {
    let mut it = l.split_whitespace();
    let children = it.next()?.strip_suffix('%')?.parse().ok()?;
    let own = it.next()?.strip_suffix('%')?.parse().ok()?;
    let comm = it.next()?;
    let (mark, sym) = l.split_once(" [")?.1.split_once(']')?;
    Some((
        children,
        own,
        comm,
        if mark == "." { "[.]" } else { sym.trim() },
    ))
}

/// A lab program's own symbol, `bpf_prog_<tag>_nl_…` (an entry or
/// tail-called program); its subprograms (`bpf_loop` callbacks) run
/// inside it and are counted there.
fn is_entry_program(sym: &str) -> bool {
    sym.strip_prefix("bpf_prog_")
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(_, name)| name.starts_with("nl_"))
}

fn is_idle(sym: &str) -> bool {
    sym.contains("safe_halt")
        || sym.ends_with("_idle")
        || sym.contains("idle_poll")
        || sym == "mwait_idle_with_hints"
}

/// Percent of all samples per category. The programs and netfilter's
/// hooks are counted with what they call (neither nests in the other: a
/// redirect is carried out after the program returns, a hook's verdict is
/// acted on by its caller); the bridge, user space and the idle loop by
/// their own functions (the bridge's frames go up the stack from inside
/// it, and interrupts run on top of the idle loop); the rest of the kernel
/// is what is left.
pub fn shares(report: &str) -> Vec<(&'static str, f64)> {
    let (mut ebpf, mut netfilter, mut bridge, mut user, mut idle) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut profiler = 0.0;
    for (children, own, comm, sym) in report.lines().filter_map(line) {
        if comm == "perf" {
            profiler += own;
        } else if is_entry_program(sym) {
            ebpf += children;
        } else if sym == "nf_hook_slow" {
            netfilter += children;
        } else if sym.starts_with("br_") {
            bridge += own;
        } else if sym == "[.]" {
            user += own;
        } else if is_idle(sym) {
            idle += own;
        }
    }
    let other = (100.0 - ebpf - netfilter - bridge - user - idle - profiler).max(0.0);
    let values = [ebpf, netfilter, bridge, other, user, idle, profiler];
    CATEGORIES.into_iter().zip(values).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_count_programs_and_hooks_with_their_callees_and_the_rest_by_itself() {
        let report = "\
    40.00%    40.00%  swapper  [k] pv_native_safe_halt
    12.00%     3.00%  wrk  [k] bpf_prog_6deef7357e7b4530_nl_node_in
     8.00%     0.50%  wrk  [k] bpf_prog_0123456789abcdef_nl_uplink_in
     4.00%     0.20%  wrk  [k] bpf_prog_4919422d66b160ea_search_step
     9.00%     1.00%  wrk  [k] nf_hook_slow
     2.00%     2.00%  wrk  [k] nf_conntrack_in
     5.00%     1.50%  wrk  [k] br_handle_frame
     1.00%     1.00%  wrk  [k] br_forward
    60.00%     0.00%  wrk  [k] entry_SYSCALL_64
     6.00%     6.00%  nginx  [.] 0x00000000000123
     4.00%     4.00%  nginx  [.] ngx_http_process_request
     5.00%     5.00%  perf  [k] perf_event_mmap_output
";
        let s: std::collections::BTreeMap<_, _> = shares(report).into_iter().collect();
        assert_eq!(s["ebpf"], 20.0);
        assert_eq!(s["netfilter"], 9.0);
        assert_eq!(s["bridge"], 2.5);
        assert_eq!(s["user"], 10.0);
        assert_eq!(s["idle"], 40.0);
        assert_eq!(s["profiler"], 5.0);
        assert!((s["other_kernel"] - 13.5).abs() < 1e-9, "{s:?}");
        assert!(line("# Overhead  Command").is_none());
    }
}
