//! Results: samples per metric and mode, their medians and spreads, the
//! ratios between modes, the terminal table and the JSON.

use std::{collections::BTreeMap, fmt::Write as _, io::Write as _, path::Path};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use super::{Mode, Profile};

/// What is measured; `Wrk`/`Sockperf`/`Iperf3` variants are the same
/// paths measured by third-party tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    Tcp,
    Udp,
    UdpIperf3,
    Crr,
    CrrWrk,
    LatencyP50,
    LatencyP99,
    LatencySockperf,
    /// New connections node→wan while N forwards sit inside the NAT's port range.
    CrrBeside(usize),
    CrrWrkBeside(usize),
    /// Connections/s through N forwards, to the last one (inside the NAT's
    /// port range or above it).
    Dnat(usize, bool),
    DnatWrk(usize, bool),
    /// The same measurement over IPv6 (iptables mode: ip6tables).
    V6(&'static Metric),
}

fn in_range_suffix(inside: bool, sep: &str) -> String {
    if inside {
        format!("{sep}inside the NAT range")
    } else {
        String::new()
    }
}

impl Metric {
    pub fn key(self) -> String {
        let range = |inside: bool| if inside { "_in_range" } else { "" };
        match self {
            Metric::Tcp => "tcp_throughput".into(),
            Metric::Udp => "udp_packets".into(),
            Metric::UdpIperf3 => "udp_packets_iperf3".into(),
            Metric::Crr => "tcp_connections".into(),
            Metric::CrrWrk => "tcp_connections_wrk".into(),
            Metric::LatencyP50 => "latency_p50".into(),
            Metric::LatencyP99 => "latency_p99".into(),
            Metric::LatencySockperf => "latency_p50_sockperf".into(),
            Metric::CrrBeside(n) => format!("tcp_connections_beside_{n}_forwards"),
            Metric::CrrWrkBeside(n) => format!("tcp_connections_beside_{n}_forwards_wrk"),
            Metric::Dnat(n, i) => format!("dnat_{n}_forwards{}", range(i)),
            Metric::DnatWrk(n, i) => format!("dnat_{n}_forwards{}_wrk", range(i)),
            Metric::V6(m) => format!("{}_v6", m.key()),
        }
    }

    pub fn label(self) -> String {
        let forwards = |n: usize| {
            if n == 1 {
                "1 forward".to_string()
            } else {
                format!("{n} forwards (last)")
            }
        };
        match self {
            Metric::Tcp => "TCP throughput node→wan".into(),
            Metric::Udp => "UDP 64-byte packets node→wan".into(),
            Metric::UdpIperf3 => "UDP 64-byte packets node→wan (iperf3, received)".into(),
            Metric::Crr => "new TCP connections node→wan".into(),
            Metric::CrrWrk => {
                "new TCP connections node→wan (wrk → nginx, Connection: close)".into()
            }
            Metric::LatencyP50 => "request/response latency p50".into(),
            Metric::LatencyP99 => "request/response latency p99".into(),
            Metric::LatencySockperf => {
                "UDP ping-pong latency p50 (sockperf, half a round trip)".into()
            }
            Metric::CrrBeside(n) => {
                format!("new TCP connections node→wan, {n} forwards inside the NAT range")
            }
            Metric::CrrWrkBeside(n) => {
                format!(
                    "new TCP connections node→wan (wrk → nginx), {n} forwards inside the NAT range"
                )
            }
            Metric::Dnat(n, i) => {
                format!("DNAT wan→node, {}{}", forwards(n), in_range_suffix(i, ", "))
            }
            Metric::DnatWrk(n, i) => {
                format!(
                    "DNAT wan→node (wrk → nginx), {}{}",
                    forwards(n),
                    in_range_suffix(i, ", ")
                )
            }
            Metric::V6(m) => format!("{}, IPv6", m.label()),
        }
    }

    /// Short name for the chart.
    pub fn short(self) -> String {
        let range = |inside: bool| if inside { " in" } else { "" };
        match self {
            Metric::Tcp => "TCP Gbit/s".into(),
            Metric::Udp => "UDP pps".into(),
            Metric::UdpIperf3 => "UDP iperf3".into(),
            Metric::Crr => "conn/s".into(),
            Metric::CrrWrk => "conn/s wrk".into(),
            Metric::LatencyP50 => "lat p50".into(),
            Metric::LatencyP99 => "lat p99".into(),
            Metric::LatencySockperf => "lat sockperf".into(),
            Metric::CrrBeside(n) => format!("conn/s +{n}f"),
            Metric::CrrWrkBeside(n) => format!("wrk +{n}f"),
            Metric::Dnat(n, i) => format!("DNAT {n}{}", range(i)),
            Metric::DnatWrk(n, i) => format!("DNAT wrk {n}{}", range(i)),
            Metric::V6(m) => format!("{} v6", m.short()),
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::Tcp => "Gbit/s",
            Metric::Udp | Metric::UdpIperf3 => "Mpps",
            Metric::Crr
            | Metric::CrrWrk
            | Metric::CrrBeside(_)
            | Metric::CrrWrkBeside(_)
            | Metric::Dnat(..)
            | Metric::DnatWrk(..) => "conn/s",
            Metric::LatencyP50 | Metric::LatencyP99 | Metric::LatencySockperf => "µs",
            Metric::V6(m) => m.unit(),
        }
    }

    pub fn higher_is_better(self) -> bool {
        match self {
            Metric::LatencyP50 | Metric::LatencyP99 | Metric::LatencySockperf => false,
            Metric::V6(m) => m.higher_is_better(),
            _ => true,
        }
    }

    /// This measurement over IPv6, for those the bench makes over IPv6
    /// too: the third-party tools that speak it (iperf3, wrk; not the
    /// sockperf of Debian 12, 3.7, which has no IPv6), the own connection
    /// and ping-pong generators, and DNAT through one forward.
    pub fn ipv6(self) -> Option<Metric> {
        let m: &'static Metric = match self {
            Metric::Tcp => &Metric::Tcp,
            Metric::UdpIperf3 => &Metric::UdpIperf3,
            Metric::Crr => &Metric::Crr,
            Metric::CrrWrk => &Metric::CrrWrk,
            Metric::LatencyP50 => &Metric::LatencyP50,
            Metric::LatencyP99 => &Metric::LatencyP99,
            Metric::Dnat(1, false) => &Metric::Dnat(1, false),
            Metric::DnatWrk(1, false) => &Metric::DnatWrk(1, false),
            _ => return None,
        };
        Some(Metric::V6(m))
    }

    pub fn all(p: &Profile) -> Vec<Metric> {
        super::Kind::all(p)
            .into_iter()
            .flat_map(super::Kind::metrics)
            .collect()
    }
}

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Half the range over the rounds, in percent of the median.
    pub spread_pct: f64,
}

/// How many connections (or requests) a measurement's details say it made.
fn units_of(details: &Value) -> Option<u64> {
    details["connections"]
        .as_u64()
        .or(details["requests"].as_u64())
}

pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    let (min, max) = (v[0], v[n - 1]);
    let spread_pct = if median != 0.0 {
        (max - min) / 2.0 / median.abs() * 100.0
    } else {
        0.0
    };
    Some(Summary {
        n,
        median,
        min,
        max,
        spread_pct,
    })
}

pub struct Results {
    pub profile: Profile,
    pub metrics: Vec<Metric>,
    pub modes: Vec<Mode>,
    samples: BTreeMap<(Metric, Mode), Vec<f64>>,
    extras: BTreeMap<(Metric, Mode), Vec<Value>>,
    pub errors: Vec<String>,
    pub dataplane: Vec<(Mode, Value)>,
    /// The NATs' own counters at the end (netlab stats, conntrack stats).
    pub counters: Vec<(Mode, Value)>,
    load_at_start: String,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// What the numbers were measured on.
pub fn machine() -> Value {
    let uname = nix::sys::utsname::uname().ok();
    json!({
        "kernel": uname.as_ref().map(|u| u.release().to_string_lossy().into_owned()),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg": loadavg(),
        "iptables": super::modes::tool("iptables", &["--version"], None, std::time::Duration::from_secs(5))
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        "iperf3": super::modes::tool("iperf3", &["--version"], None, std::time::Duration::from_secs(5))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string)),
        "netlab": env!("CARGO_PKG_VERSION"),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// Numbers with a sensible number of digits.
pub fn fmt_value(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

impl Results {
    pub fn new(profile: &Profile, modes: &[Mode]) -> Results {
        Results {
            profile: profile.clone(),
            metrics: Metric::all(profile),
            modes: modes.to_vec(),
            samples: BTreeMap::new(),
            extras: BTreeMap::new(),
            errors: Vec::new(),
            dataplane: Vec::new(),
            counters: Vec::new(),
            load_at_start: loadavg(),
        }
    }

    pub fn record(&mut self, metric: Metric, mode: Mode, value: f64, extra: Value) {
        self.samples.entry((metric, mode)).or_default().push(value);
        self.extras.entry((metric, mode)).or_default().push(extra);
    }

    pub fn error(&mut self, e: String) {
        self.errors.push(e);
    }

    pub fn summary(&self, metric: Metric, mode: Mode) -> Option<Summary> {
        summarize(self.samples.get(&(metric, mode))?)
    }

    /// median(mode) / median(base), when both were measured.
    pub fn ratio(&self, metric: Metric, mode: Mode, base: Mode) -> Option<f64> {
        if !self.modes.contains(&base) {
            return None;
        }
        let a = self.summary(metric, mode)?.median;
        let b = self.summary(metric, base)?.median;
        (b != 0.0).then(|| a / b)
    }

    /// How much better than `base` (above 1 is better, whichever way the
    /// metric points): for the chart.
    pub fn gain(&self, metric: Metric, mode: Mode, base: Mode) -> Option<f64> {
        let r = self.ratio(metric, mode, base)?;
        if metric.higher_is_better() {
            Some(r)
        } else if r != 0.0 {
            Some(1.0 / r)
        } else {
            None
        }
    }

    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "\nnetlab bench: {}, interleaved; median over rounds, spread = ± half the range",
            plural(self.profile.rounds, "round")
        );
        let _ = writeln!(
            t,
            "ratios are of medians (for latency, lower is better: a ratio below 1 is faster)\n"
        );
        let _ = writeln!(
            t,
            "{:<13} {:>12} {:>8} {:>11} {:>9} {:>8}",
            "mode", "median", "spread", "/iptables", "/route", "of veth"
        );
        let opt = |r: Option<f64>| r.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
        for &metric in &self.metrics {
            let _ = writeln!(
                t,
                "{} [{}{}]",
                metric.label(),
                metric.unit(),
                if metric.higher_is_better() {
                    ""
                } else {
                    ", lower is better"
                }
            );
            for &mode in &self.modes {
                match self.summary(metric, mode) {
                    Some(s) => {
                        let _ = writeln!(
                            t,
                            "  {:<11} {:>12} {:>7.1}% {:>11} {:>9} {:>8}",
                            mode.name(),
                            fmt_value(s.median),
                            s.spread_pct,
                            opt(self.ratio(metric, mode, Mode::Iptables)),
                            opt(self.ratio(metric, mode, Mode::Route)),
                            opt(self.ratio(metric, mode, Mode::Veth)),
                        );
                    }
                    None => {
                        let _ = writeln!(t, "  {:<11} {:>12}", mode.name(), "no data");
                    }
                }
            }
        }
        if let Some(note) = self.generator_note() {
            let _ = writeln!(t, "\n{note}");
        }
        t += &self.program_costs();
        t += &self.cpu_costs();
        for &metric in &self.metrics {
            let failed: Vec<String> = self
                .modes
                .iter()
                .filter_map(|&mode| {
                    let n: u64 = self
                        .extras
                        .get(&(metric, mode))?
                        .iter()
                        .filter_map(|e| e["errors"].as_u64())
                        .sum();
                    (n > 0).then(|| format!("{} {n}", mode.name()))
                })
                .collect();
            if !failed.is_empty() {
                let _ = writeln!(
                    t,
                    "{}: failed connections or requests over all rounds (timeouts: ours 1 s, wrk 2 s): {}",
                    metric.label(),
                    failed.join(", ")
                );
            }
        }
        for (mode, c) in &self.counters {
            let Some(map) = c.as_object() else { continue };
            let drops: Vec<String> = map
                .iter()
                .filter(|(k, v)| {
                    (k.starts_with("drop")
                        || matches!(k.as_str(), "insert_failed" | "early_drop" | "invalid"))
                        && v.as_u64().is_some_and(|n| n > 0)
                })
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(
                t,
                "{} counters at the end: {}",
                mode.name(),
                if drops.is_empty() {
                    "no drops".to_string()
                } else {
                    drops.join(", ")
                }
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(t, "\n{} measurements failed:", self.errors.len());
            for e in &self.errors {
                let _ = writeln!(t, "  {e}");
            }
        }
        let _ = writeln!(
            t,
            "load average at start {}, at end {} (other work on the machine makes numbers noisy)",
            self.load_at_start,
            loadavg()
        );
        t
    }

    /// What the lab's programs cost in each metric of the netlab modes
    /// (the kernel's run-time statistics, over all rounds): per program, ns
    /// per run and, where the metric counts connections or requests, runs
    /// and ns per connection.
    fn program_costs(&self) -> String {
        let mut t = String::new();
        for (&(metric, mode), extras) in &self.extras {
            let measured: Vec<(Value, Option<u64>)> = extras
                .iter()
                .filter(|e| e["programs"].is_object())
                .map(|e| {
                    let units = units_of(e);
                    (e["programs"].clone(), units)
                })
                .collect();
            let costs = super::runtime::summarize(&measured);
            if costs.is_empty() {
                continue;
            }
            if t.is_empty() {
                let _ = writeln!(
                    t,
                    "\nthe lab's programs while each metric ran (kernel run-time statistics, all rounds; \
                     per connection where the metric counts them):"
                );
            }
            let _ = writeln!(t, "  {} · {}", metric.label(), mode.name());
            for c in costs {
                let per_unit = match (c.runs_per_unit, c.ns_per_unit) {
                    (Some(r), Some(ns)) => format!(", {r:.1} runs = {ns:.0} ns per connection"),
                    _ => String::new(),
                };
                let _ = writeln!(
                    t,
                    "    {:<16} {:>12} runs, {:>6.0} ns/run{per_unit}",
                    c.program, c.runs, c.ns_per_run
                );
            }
        }
        t
    }

    /// Where the CPU time went in each profiled measurement (`--perf`),
    /// median over rounds: µs per connection where the metric counts
    /// connections, else % of all CPUs' time.
    fn cpu_costs(&self) -> String {
        use super::perf::{CATEGORIES, NOT_BUSY};
        let mut t = String::new();
        for (&(metric, mode), extras) in &self.extras {
            // Each round's CPU seconds per category, and what turns them
            // into the unit shown.
            let mut per_connection = false;
            let rounds: Vec<(&Value, f64)> = extras
                .iter()
                .filter_map(|e| {
                    let cpu = &e["cpu"];
                    let window = cpu["seconds"].as_f64()? * cpu["cpus"].as_f64()?;
                    let units = units_of(e);
                    per_connection = units.is_some_and(|n| n > 0);
                    let scale = match units {
                        Some(n) if n > 0 => 1e6 / n as f64,
                        _ => 100.0 / window,
                    };
                    Some((&cpu["cpu_seconds"], scale))
                })
                .collect();
            if rounds.is_empty() {
                continue;
            }
            if t.is_empty() {
                let head: String = CATEGORIES
                    .iter()
                    .chain(&["busy"])
                    .map(|c| format!("{c:>13}"))
                    .collect();
                let _ = writeln!(
                    t,
                    "\nwhere the CPU time went (perf, cpu-clock on every CPU; median over rounds):\n  \
                     {:<48}{head}",
                    "metric · mode [unit]"
                );
            }
            let median = |seconds: &dyn Fn(&Value) -> f64| {
                let v: Vec<f64> = rounds.iter().map(|(c, scale)| seconds(c) * scale).collect();
                summarize(&v).map_or(0.0, |s| s.median)
            };
            let of = |c: &Value, k: &str| c[k].as_f64().unwrap_or(0.0);
            let busy = median(&|c| {
                CATEGORIES
                    .iter()
                    .filter(|k| !NOT_BUSY.contains(k))
                    .map(|k| of(c, k))
                    .sum()
            });
            let cells: String = CATEGORIES
                .iter()
                .map(|k| median(&|c| of(c, k)))
                .chain([busy])
                .map(|x| format!("{x:>13.1}"))
                .collect();
            let unit = if per_connection {
                "µs/connection"
            } else {
                "% of CPU"
            };
            let row = format!("{} · {} [{unit}]", metric.key(), mode.name());
            let _ = writeln!(t, "  {row:<48}{cells}");
        }
        t
    }

    /// Why the UDP generator is not what limits the packet rate.
    fn generator_note(&self) -> Option<String> {
        let mut shares = Vec::new();
        let mut offered = Vec::new();
        for (&(metric, mode), extras) in &self.extras {
            if metric != Metric::Udp {
                continue;
            }
            for e in extras {
                if let Some(s) = e["generator_user_share"].as_f64() {
                    shares.push(s);
                }
                if let (Some(o), Some(d)) = (e["offered_pps"].as_f64(), e["delivered_pps"].as_f64())
                {
                    offered.push((mode, o, d));
                }
            }
        }
        let share = summarize(&shares)?;
        let best = offered.iter().map(|(_, o, _)| *o).fold(0.0f64, f64::max);
        Some(format!(
            "UDP generator: {} sender threads × sendmmsg of {} datagrams over {} flows; its own (user-space) \
             share of its CPU time is {:.1}% (median), the rest is the kernel carrying the packets; it offered up \
             to {:.2} Mpps",
            self.profile.udp_threads,
            super::traffic::UDP_BATCH,
            self.profile.udp_flows,
            share.median * 100.0,
            best / 1e6
        ))
    }

    pub fn json(&self) -> Value {
        let mut metrics = Vec::new();
        for &metric in &self.metrics {
            let mut modes = serde_json::Map::new();
            for &mode in &self.modes {
                let s = self.summary(metric, mode);
                modes.insert(
                    mode.name().into(),
                    json!({
                        "samples": self.samples.get(&(metric, mode)).cloned().unwrap_or_default(),
                        "summary": s,
                        "vs_iptables": self.ratio(metric, mode, Mode::Iptables),
                        "vs_route": self.ratio(metric, mode, Mode::Route),
                        "of_veth": self.ratio(metric, mode, Mode::Veth),
                        "details": self.extras.get(&(metric, mode)).cloned().unwrap_or_default(),
                    }),
                );
            }
            metrics.push(json!({
                "key": metric.key(),
                "label": metric.label(),
                "unit": metric.unit(),
                "higher_is_better": metric.higher_is_better(),
                "modes": modes,
            }));
        }
        let modes: Vec<Value> = self
            .modes
            .iter()
            .map(|m| {
                json!({
                    "name": m.name(),
                    "what": m.describe(),
                    "dataplane": self.dataplane.iter().find(|(d, _)| d == m).map(|(_, v)| v.clone()),
                    "counters": self.counters.iter().find(|(d, _)| d == m).map(|(_, v)| v.clone()),
                })
            })
            .collect();
        json!({
            "machine": machine(),
            "load_at_start": self.load_at_start,
            "profile": self.profile,
            "modes": modes,
            "metrics": metrics,
            "errors": self.errors,
        })
    }

    /// Every metric of every mode has a non-zero number (timing is not judged).
    pub fn check(&self) -> Result<()> {
        let mut missing = Vec::new();
        for &metric in &self.metrics {
            for &mode in &self.modes {
                let ok = self
                    .samples
                    .get(&(metric, mode))
                    .is_some_and(|v| !v.is_empty() && v.iter().all(|x| x.is_finite() && *x > 0.0));
                if !ok {
                    missing.push(format!("{} in mode {}", metric.key(), mode.name()));
                }
                // A netlab mode's traffic runs through the lab's programs.
                let ran = self.extras.get(&(metric, mode)).is_some_and(|v| {
                    v.iter().all(|e| {
                        e["programs"]
                            .as_object()
                            .is_some_and(|p| p.values().any(|c| c["runs"].as_u64() > Some(0)))
                    })
                });
                if mode.runs_programs() && !ran {
                    missing.push(format!(
                        "the programs' run-time statistics of {} in mode {}",
                        metric.key(),
                        mode.name()
                    ));
                }
            }
        }
        if !self.errors.is_empty() || !missing.is_empty() {
            bail!(
                "the bench check failed: {} failed measurements, no number for: {}",
                self.errors.len(),
                if missing.is_empty() {
                    "-".to_string()
                } else {
                    missing.join(", ")
                }
            );
        }
        Ok(())
    }
}

/// Where the human output and the JSON go: with `--json -` the JSON owns
/// stdout and the table goes to stderr.
pub struct Output {
    json: Option<std::path::PathBuf>,
}

impl Output {
    pub fn new(json: Option<&Path>) -> Output {
        Output {
            json: json.map(Path::to_path_buf),
        }
    }

    fn json_on_stdout(&self) -> bool {
        self.json.as_deref().is_some_and(|p| p == Path::new("-"))
    }

    pub fn line(&mut self, text: &str) {
        if self.json_on_stdout() {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    pub fn json(&mut self, v: &Value) -> Result<()> {
        let Some(path) = &self.json else {
            return Ok(());
        };
        let text = serde_json::to_string_pretty(v)?;
        if path == Path::new("-") {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}").context("writing the JSON to stdout")?;
        } else {
            if let Some(dir) = path.parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
            }
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing the JSON to {}", path.display()))?;
            self.line(&format!("json: {}", path.display()));
        }
        Ok(())
    }
}

pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
