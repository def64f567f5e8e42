//! `netlab bench`: netlab's eBPF NAT against iptables MASQUERADE on this
//! machine, side by side.
//!
//! Every mode gets sandboxes of its own (unique namespace names, only the
//! documentation and lab ranges 198.51.100.0/24, 203.0.113.0/24 and
//! 192.168.15.0/24); nothing of the machine's own network is touched. The
//! measurements are interleaved: each round measures every metric of every
//! mode, the mode order rotating from round to round, so slow drift of the
//! machine (other builds, thermal) spreads over all modes alike.
//!
//! - [`modes`]: the sandboxes per mode and their NAT configuration;
//! - [`traffic`]: the bench's own servers and generators (iperf3, a
//!   sendmmsg UDP flood, connect/request/response/close, ping-pong latency);
//! - [`tools`]: the same paths measured by the tools users trust (nginx and
//!   wrk with `Connection: close`, sockperf, iperf3's UDP);
//! - [`report`]: medians, spreads, ratios, the table and the JSON;
//! - [`svg`]: the chart of the ratios;
//! - [`micro`]: the programs alone through `BPF_PROG_TEST_RUN`.

pub mod micro;
pub mod modes;
pub mod perf;
pub mod report;
pub mod runtime;
pub mod svg;
pub mod tools;
pub mod traffic;

use std::{
    io::{IsTerminal as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

pub use modes::Mode;
use report::{Metric, Results};

/// What `netlab bench` was asked for.
#[derive(Clone, Debug)]
pub struct Options {
    /// Rounds (every metric of every mode once per round).
    pub rounds: Option<usize>,
    /// Modes by name (`veth,route,iptables,netlab,netlab-slow`); all when `None`.
    pub modes: Option<Vec<String>>,
    /// Shorter measurements, fewer rounds.
    pub quick: bool,
    /// Only the micro-benchmark of the programs.
    pub micro_only: bool,
    /// Where the JSON goes: a file, or stdout for `-`.
    pub json: Option<PathBuf>,
    /// The SVG chart of the ratios.
    pub chart: PathBuf,
    /// Fail unless every metric of every mode is a non-zero number.
    pub check: bool,
    /// Only these metrics (their JSON keys); all when empty.
    pub metrics: Vec<String>,
    /// Profile every measurement with perf into this directory.
    pub perf: Option<PathBuf>,
}

/// How long and how hard each measurement runs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Profile {
    pub rounds: usize,
    /// iperf3 `-t`, `-O` (seconds left out at the start) and `-P`.
    pub tcp_seconds: u32,
    pub tcp_omit: u32,
    pub tcp_streams: u32,
    /// UDP flood: flows (source ports), sender threads, payload bytes, the
    /// warm-up before counting and the counted window.
    pub udp_flows: usize,
    pub udp_threads: usize,
    pub udp_payload: usize,
    pub udp_warmup: Duration,
    pub udp_window: Duration,
    /// Connect/request/response/close: client threads, time and count
    /// bounds. Every connection node→wan takes an outside port of the NAT's
    /// 10000-32767 for the 10 s a reset flow keeps it: the count bound keeps
    /// a measurement to about a quarter of that range.
    pub crr_threads: usize,
    pub crr_window: Duration,
    pub crr_max: u64,
    /// Ping-pong: round trips and time bound.
    pub latency_round_trips: usize,
    pub latency_window: Duration,
    /// DNAT: forward counts, and the bounds of each measurement.
    pub forward_counts: Vec<usize>,
    pub dnat_window: Duration,
    pub dnat_max: u64,
    /// Micro-benchmark: test runs per case.
    pub micro_runs: usize,
    /// How long each third-party client (wrk, sockperf, iperf3 -u) runs, s.
    pub tool_seconds: u32,
    /// Only the measurements of these metrics (keys); all when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
    /// Where each measurement's perf profile goes, when profiled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perf: Option<PathBuf>,
}

impl Profile {
    pub fn new(quick: bool, rounds: Option<usize>) -> Profile {
        if quick {
            Profile {
                rounds: rounds.unwrap_or(2),
                tcp_seconds: 1,
                tcp_omit: 0,
                tcp_streams: 2,
                udp_flows: 128,
                udp_threads: 2,
                udp_payload: 18,
                udp_warmup: Duration::from_millis(200),
                udp_window: Duration::from_millis(700),
                crr_threads: 4,
                crr_window: Duration::from_millis(700),
                crr_max: 4_000,
                latency_round_trips: 3_000,
                latency_window: Duration::from_millis(400),
                forward_counts: vec![1, 1_000, 10_000],
                dnat_window: Duration::from_millis(500),
                dnat_max: 5_000,
                micro_runs: 2_000,
                tool_seconds: 1,
                only: Vec::new(),
                perf: None,
            }
        } else {
            Profile {
                rounds: rounds.unwrap_or(5),
                tcp_seconds: 3,
                tcp_omit: 1,
                tcp_streams: 2,
                udp_flows: 128,
                udp_threads: 2,
                udp_payload: 18,
                udp_warmup: Duration::from_millis(300),
                udp_window: Duration::from_secs(2),
                crr_threads: 4,
                crr_window: Duration::from_secs(2),
                crr_max: 6_000,
                latency_round_trips: 20_000,
                latency_window: Duration::from_secs(1),
                forward_counts: vec![1, 1_000, 10_000],
                dnat_window: Duration::from_millis(1_500),
                dnat_max: 12_000,
                micro_runs: 10_000,
                tool_seconds: 2,
                only: Vec::new(),
                perf: None,
            }
        }
    }

    /// Measure only `metrics` (keys as in the JSON), each checked against
    /// what a round measures.
    pub fn only(mut self, metrics: &[String]) -> Result<Profile> {
        let known: Vec<String> = Metric::all(&self).into_iter().map(Metric::key).collect();
        for m in metrics {
            if !known.contains(m) {
                bail!("no metric `{m}` (metrics: {})", known.join(", "));
            }
        }
        self.only = metrics.to_vec();
        Ok(self)
    }
}

/// What one measurement is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Udp,
    UdpIperf3,
    Crr,
    CrrWrk,
    Latency,
    LatencySockperf,
    /// New connections node→wan with N forwards inside the NAT's port range
    /// (each outbound connection's port search must skip them).
    CrrBeside(usize),
    CrrWrkBeside(usize),
    /// Connections wan→node through N forwards, inside the NAT's port
    /// range or above it.
    Dnat(usize, bool),
    DnatWrk(usize, bool),
    /// The same over IPv6 (for the kinds whose metrics have an IPv6 twin,
    /// [`Metric::ipv6`]).
    V6(&'static Kind),
}

impl Kind {
    /// Every measurement of a round, in order: kinds that share their
    /// forwards follow each other, so the forwards are loaded once.
    pub fn all(p: &Profile) -> Vec<Kind> {
        let mut kinds = vec![
            Kind::Tcp,
            Kind::Udp,
            Kind::UdpIperf3,
            Kind::Crr,
            Kind::CrrWrk,
            Kind::Latency,
            Kind::LatencySockperf,
            Kind::V6(&Kind::Tcp),
            Kind::V6(&Kind::UdpIperf3),
            Kind::V6(&Kind::Crr),
            Kind::V6(&Kind::CrrWrk),
            Kind::V6(&Kind::Latency),
        ];
        for &n in &p.forward_counts {
            kinds.extend([Kind::Dnat(n, false), Kind::DnatWrk(n, false)]);
            if n == 1 {
                kinds.extend([
                    Kind::V6(&Kind::Dnat(1, false)),
                    Kind::V6(&Kind::DnatWrk(1, false)),
                ]);
            }
            if n > 1 {
                kinds.extend([
                    Kind::CrrBeside(n),
                    Kind::CrrWrkBeside(n),
                    Kind::Dnat(n, true),
                    Kind::DnatWrk(n, true),
                ]);
            }
        }
        if !p.only.is_empty() {
            kinds.retain(|k| k.metrics().iter().any(|m| p.only.contains(&m.key())));
        }
        kinds
    }

    pub fn metrics(self) -> Vec<Metric> {
        match self {
            Kind::Tcp => vec![Metric::Tcp],
            Kind::Udp => vec![Metric::Udp],
            Kind::UdpIperf3 => vec![Metric::UdpIperf3],
            Kind::Crr => vec![Metric::Crr],
            Kind::CrrWrk => vec![Metric::CrrWrk],
            Kind::Latency => vec![Metric::LatencyP50, Metric::LatencyP99],
            Kind::LatencySockperf => vec![Metric::LatencySockperf],
            Kind::CrrBeside(n) => vec![Metric::CrrBeside(n)],
            Kind::CrrWrkBeside(n) => vec![Metric::CrrWrkBeside(n)],
            Kind::Dnat(n, i) => vec![Metric::Dnat(n, i)],
            Kind::DnatWrk(n, i) => vec![Metric::DnatWrk(n, i)],
            Kind::V6(k) => k.metrics().into_iter().filter_map(Metric::ipv6).collect(),
        }
    }

    fn label(self) -> String {
        match self {
            Kind::Tcp => "TCP throughput (iperf3)".into(),
            Kind::Latency => "ping-pong latency".into(),
            Kind::V6(k) => format!("{}, IPv6", k.label()),
            _ => self.metrics()[0].label(),
        }
    }

    /// The forwards the lab has while this is measured.
    fn forwards(self) -> Option<modes::ForwardSet> {
        use modes::ForwardSet;
        match self {
            Kind::CrrBeside(n) | Kind::CrrWrkBeside(n) => {
                Some(ForwardSet::new(n, true, traffic::NODE_PORT))
            }
            Kind::Dnat(n, inside) => Some(ForwardSet::new(n, inside, traffic::NODE_PORT)),
            Kind::DnatWrk(n, inside) => {
                Some(ForwardSet::new(n, inside, tools::dnat_port(n, inside)))
            }
            Kind::V6(k) => k.forwards(),
            _ => None,
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C, SIGTERM or SIGHUP arrived: stop measuring, clean up.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Catch the signals that would otherwise end the process before it takes
/// its sandboxes down. Blocking calls are restarted; every loop checks
/// [`interrupted`] and every wait is bounded.
fn catch_signals() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(sig, &action) }.with_context(|| format!("catching {sig}"))?;
    }
    Ok(())
}

/// The progress line on stderr: rewritten in place on a terminal, one line
/// per step otherwise.
pub struct Progress {
    started: Instant,
    tty: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub fn show(&self, text: &str) {
        let t = self.started.elapsed().as_secs();
        let line = format!("[{:>2}:{:02}] {text}", t / 60, t % 60);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    pub fn note(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K");
        }
        let _ = writeln!(err, "{text}");
    }

    fn done(&self) {
        if self.tty {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

/// `netlab bench`.
pub fn run(opts: Options) -> Result<()> {
    let started = Instant::now();
    let mut profile = Profile::new(opts.quick, opts.rounds).only(&opts.metrics)?;
    if let Some(dir) = &opts.perf {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        profile.perf = Some(dir.clone());
    }
    if profile.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let modes = match &opts.modes {
        None => Mode::ALL.to_vec(),
        Some(names) => {
            let mut modes = Vec::new();
            for n in names {
                let m = Mode::parse(n.trim())?;
                if !modes.contains(&m) {
                    modes.push(m);
                }
            }
            modes.sort();
            modes
        }
    };
    catch_signals()?;
    let progress = Progress::new();

    progress.show("micro-benchmark: the programs through BPF_PROG_TEST_RUN");
    let micro = micro::run(profile.micro_runs).context("the micro-benchmark")?;
    progress.done();
    let mut out = report::Output::new(opts.json.as_deref());
    out.line(&micro::table(&micro));
    if opts.micro_only {
        let json = serde_json::json!({
            "machine": report::machine(),
            "micro": micro,
            "seconds": started.elapsed().as_secs_f64(),
        });
        out.json(&json)?;
        if opts.check {
            micro::check(&micro)?;
        }
        return Ok(());
    }
    check_interrupted()?;

    let mut results = Results::new(&profile, &modes);
    let _run_time_stats = runtime::enable()?;
    let mut bench = modes::Bench::new()?;
    let measured = measure_all(&mut bench, &profile, &modes, &mut results, &progress);
    results.dataplane = bench.dataplane.clone();
    results.counters = bench.counters();
    progress.show("taking the sandboxes down");
    let teardown = bench.teardown();
    progress.done();
    measured?;
    teardown?;
    let seconds = started.elapsed().as_secs_f64();

    out.line(&results.table());
    let chart = svg::chart(&results);
    if let Some(dir) = opts.chart.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating {} for the chart", dir.display()))?;
        }
    }
    std::fs::write(&opts.chart, chart)
        .with_context(|| format!("writing the chart {}", opts.chart.display()))?;
    out.line(&format!(
        "chart: {}\nthe whole run took {:.0} s",
        opts.chart.display(),
        seconds
    ));
    let mut json = results.json();
    json["micro"] = serde_json::to_value(&micro)?;
    json["seconds"] = seconds.into();
    json["chart"] = opts.chart.display().to_string().into();
    out.json(&json)?;
    if opts.check {
        results.check()?;
        micro::check(&micro)?;
    }
    Ok(())
}

fn measure_all(
    bench: &mut modes::Bench,
    profile: &Profile,
    modes: &[Mode],
    results: &mut Results,
    progress: &Progress,
) -> Result<()> {
    for &mode in modes {
        progress.show(&format!("building the sandbox of mode {}", mode.name()));
        bench
            .add(mode)
            .with_context(|| format!("building the sandbox of mode {}", mode.name()))?;
        check_interrupted()?;
    }
    let kinds = Kind::all(profile);
    for round in 0..profile.rounds {
        for &kind in &kinds {
            // Rotate the order of the modes from round to round.
            let n = modes.len();
            for i in 0..n {
                let mode = modes[(i + round) % n];
                check_interrupted()?;
                progress.show(&format!(
                    "round {}/{}: {} · {}",
                    round + 1,
                    profile.rounds,
                    kind.label(),
                    mode.name()
                ));
                let env = bench.env(mode);
                let name = format!("{}-{}-{}", kind.metrics()[0].key(), mode.name(), round + 1);
                match measure(env, kind, profile, &name) {
                    Ok(samples) => {
                        for (metric, value, extra) in samples {
                            results.record(metric, mode, value, extra);
                        }
                    }
                    Err(e) => {
                        check_interrupted()?;
                        let msg = format!(
                            "round {}: {} in mode {}: {e:#}",
                            round + 1,
                            kind.label(),
                            mode.name()
                        );
                        progress.note(&format!("netlab bench: warning: {msg}"));
                        results.error(msg);
                    }
                }
            }
        }
    }
    Ok(())
}

type Sample = (Metric, f64, serde_json::Value);

/// One measurement of `kind` in `env`; in a netlab mode, with what the
/// lab's programs ran meanwhile (`programs` in each sample's details), and
/// where the CPU time went (`cpu`) when profiled (as `name`).
fn measure(env: &mut modes::Env, kind: Kind, p: &Profile, name: &str) -> Result<Vec<Sample>> {
    let forwards = env.set_forwards(kind.forwards())?;
    let lab = env.lab.clone().filter(|_| env.mode.runs_programs());
    let before = lab.as_deref().map(runtime::snapshot).transpose()?;
    let recording = p
        .perf
        .as_deref()
        .map(|dir| perf::start(dir, name))
        .transpose()?;
    let measured = measure_traffic(env, kind, p, forwards);
    let cpu = recording.map(perf::Recording::stop).transpose()?;
    let mut samples = measured?;
    if let Some(cpu) = cpu {
        for sample in &mut samples {
            sample.2["cpu"] = cpu.clone();
        }
    }
    if let (Some(lab), Some(before)) = (lab, before) {
        let programs = runtime::between(&before, &runtime::snapshot(&lab)?);
        for sample in &mut samples {
            sample.2["programs"] = programs.clone();
        }
    }
    Ok(samples)
}

fn measure_traffic(
    env: &mut modes::Env,
    kind: Kind,
    p: &Profile,
    forwards: Option<modes::ForwardSet>,
) -> Result<Vec<Sample>> {
    let metrics = kind.metrics();
    let (kind, v6) = match kind {
        Kind::V6(k) => (*k, true),
        k => (k, false),
    };
    let wan = if v6 {
        IpAddr::V6(WAN_ADDR6)
    } else {
        IpAddr::V4(WAN_ADDR)
    };
    let to_wan = |port| SocketAddr::new(wan, port);
    let target = forwards.map(|set| env.dnat_target(set, v6));
    let one = |value: f64, extra: serde_json::Value| Ok(vec![(metrics[0], value, extra)]);
    let secs = p.tool_seconds;
    match kind {
        Kind::Tcp => {
            let bps = traffic::iperf3(&env.node_ns, wan, p.tcp_seconds, p.tcp_omit, p.tcp_streams)?;
            one(bps / 1e9, serde_json::Value::Null)
        }
        Kind::Udp => {
            let r = traffic::udp_flood(&env.node, to_wan(traffic::UDP_PORT), &env.wan_servers, p)?;
            one(r.delivered_pps / 1e6, serde_json::to_value(&r)?)
        }
        Kind::UdpIperf3 => {
            let r = tools::iperf3_udp(&env.node_ns, wan, traffic::IPERF_PORT, secs)?;
            one(r.received_pps / 1e6, serde_json::to_value(&r)?)
        }
        Kind::Crr | Kind::CrrBeside(_) => {
            let to = to_wan(traffic::CRR_PORT);
            let r = traffic::crr(&env.node, to, p.crr_threads, p.crr_window, p.crr_max, None)?;
            one(r.per_second, serde_json::to_value(&r)?)
        }
        Kind::CrrWrk | Kind::CrrWrkBeside(_) => {
            let r = tools::wrk(&env.node_ns, to_wan(tools::NGINX_PORT), secs)?;
            one(r.per_second, serde_json::to_value(&r)?)
        }
        Kind::Latency => {
            let to = to_wan(traffic::ECHO_PORT);
            let r = traffic::latency(&env.node, to, p.latency_round_trips, p.latency_window)?;
            let extra = serde_json::to_value(&r)?;
            Ok(vec![
                (metrics[0], r.p50_us, extra.clone()),
                (metrics[1], r.p99_us, extra),
            ])
        }
        Kind::LatencySockperf => {
            let r = tools::sockperf(&env.node_ns, wan, secs)?;
            one(r.p50_us, serde_json::to_value(&r)?)
        }
        Kind::Dnat(..) => {
            let to = target.context("the forwards' target")?;
            let ports = Some(env.client_ports.clone());
            let r = traffic::crr(
                &env.wan,
                to,
                p.crr_threads,
                p.dnat_window,
                p.dnat_max,
                ports,
            )?;
            let mut extra = serde_json::to_value(&r)?;
            extra["target"] = to.to_string().into();
            one(r.per_second, extra)
        }
        Kind::DnatWrk(..) => {
            let to = target.context("the forwards' target")?;
            let r = tools::wrk(&env.wan_ns, to, secs)?;
            let mut extra = serde_json::to_value(&r)?;
            extra["target"] = to.to_string().into();
            one(r.per_second, extra)
        }
        Kind::V6(_) => bail!("{} nests IPv6 in IPv6", kind.label()),
    }
}

/// The address the wan side has in every mode.
pub const WAN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Its IPv6 address (the sandbox's outside, 2001:db8:100::/64).
pub const WAN_ADDR6: Ipv6Addr = crate::sandbox::WAN_ADDR6.addr;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipv6_measurements_are_their_ipv4_twins_with_keys_of_their_own() {
        let p = Profile::new(true, None);
        let v6: Vec<Kind> = Kind::all(&p)
            .into_iter()
            .filter(|k| matches!(k, Kind::V6(_)))
            .collect();
        assert_eq!(v6.len(), 7);
        for k in v6 {
            let Kind::V6(inner) = k else { unreachable!() };
            let (ms, twins) = (k.metrics(), inner.metrics());
            assert_eq!(
                ms.len(),
                twins.len(),
                "{k:?}: a metric without an IPv6 twin"
            );
            for (m, twin) in ms.iter().zip(&twins) {
                assert_eq!(m.key(), format!("{}_v6", twin.key()));
                assert_eq!(m.label(), format!("{}, IPv6", twin.label()));
                assert_eq!(
                    (m.unit(), m.higher_is_better()),
                    (twin.unit(), twin.higher_is_better())
                );
            }
        }
        let keys: Vec<String> = Metric::all(&p).into_iter().map(Metric::key).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
        assert_eq!(Metric::LatencySockperf.ipv6(), None);
    }

    #[test]
    fn a_round_measures_only_the_metrics_asked_for() {
        let all = Profile::new(true, None);
        let keys =
            |p: &Profile| -> Vec<String> { Metric::all(p).into_iter().map(Metric::key).collect() };
        assert!(keys(&all).len() > 10, "{:?}", keys(&all));
        let wanted = ["tcp_connections_wrk".to_string(), "latency_p99".to_string()];
        let some = all.clone().only(&wanted).unwrap();
        // The ping-pong measures both percentiles: one kind, two metrics.
        assert_eq!(
            keys(&some),
            ["tcp_connections_wrk", "latency_p50", "latency_p99"]
        );
        assert_eq!(keys(&all.clone().only(&[]).unwrap()), keys(&all));
        let e = all
            .only(&["tcp_conections".to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("no metric `tcp_conections` (metrics: tcp_throughput, "),
            "{e}"
        );
    }
}
