//! The third-party tools users measure with, beside the bench's own
//! generators: nginx answers HTTP, wrk opens new connections against it
//! (`Connection: close`: every request is a connection of its own),
//! sockperf measures UDP ping-pong latency, iperf3 sends 64-byte UDP
//! datagrams. Their servers run in the sandbox's namespaces only; every
//! client run is bounded by `timeout`.

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Serialize;

use super::modes::tool;

/// nginx's port, in the wan (node→wan) and in the node (the forwards' target).
pub const NGINX_PORT: u16 = 8080;
/// The ports nginx listens on from `NGINX_PORT` on: each DNAT measurement
/// reaches the node at one of its own (see [`dnat_port`]).
pub const NGINX_PORTS: u16 = 12;

/// The node port of the DNAT measurement through `forwards` forwards
/// (inside the NAT range or not). wrk on the wan side reuses its source
/// ports, so connections of two measurements, to different forwarded ports
/// of one node port, would meet at the node as the same four-tuple, which it
/// holds in TIME_WAIT for a minute after the first and may refuse (PAWS):
/// a measurement of the node's TCP stack, the same in every mode, not of
/// the NAT. A node port per measurement keeps them apart.
pub fn dnat_port(forwards: usize, inside_nat_range: bool) -> u16 {
    let slot = 1 + 2 * forwards.max(1).ilog10() as u16 + u16::from(inside_nat_range);
    NGINX_PORT + slot.min(NGINX_PORTS - 1)
}
/// sockperf's server in the wan (UDP).
pub const SOCKPERF_PORT: u16 = 11111;
/// wrk's connections and threads (the figures users quote run 32 connections).
const WRK_CONNECTIONS: u32 = 32;
const WRK_THREADS: u32 = 2;

/// nginx's configuration: one worker per CPU, a 3-byte answer, no access
/// log, every path under `dir` (the compiled-in ones may not be writable).
fn nginx_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    let listen: String = (port..port + NGINX_PORTS)
        .map(|p| {
            format!("    listen {p} reuseport backlog=4096;\n    listen [::]:{p} reuseport backlog=4096;\n")
        })
        .collect();
    format!(
        "daemon off;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         server {{\n{listen}    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
    )
}

/// A server in netns `ns` (its own process group: a Ctrl-C meant for the
/// bench reaches it only through the bench's teardown).
fn spawn_in(ns: &str, args: &[&str]) -> Result<Child> {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting `{}` in netns {ns}", args.join(" ")))
}

/// nginx in `ns`, configured and logging under `dir` (which it gets to itself).
pub fn start_nginx(ns: &str, dir: &Path) -> Result<Child> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let conf = dir.join("nginx.conf");
    fs::write(&conf, nginx_conf(dir, NGINX_PORT))
        .with_context(|| format!("writing {}", conf.display()))?;
    let (conf, prefix, log) = (
        conf.display().to_string(),
        format!("{}/", dir.display()),
        dir.join("error.log").display().to_string(),
    );
    spawn_in(ns, &["nginx", "-p", &prefix, "-e", &log, "-c", &conf])
}

/// sockperf's UDP server in `ns`.
pub fn start_sockperf(ns: &str) -> Result<Child> {
    let port = SOCKPERF_PORT.to_string();
    spawn_in(ns, &["sockperf", "server", "-i", "0.0.0.0", "-p", &port])
}

#[derive(Clone, Debug, Serialize)]
pub struct WrkResult {
    /// Requests/s wrk reports: with `Connection: close`, new connections/s.
    pub per_second: f64,
    pub requests: u64,
    /// Socket errors (connect, read, write, timeout) and non-2xx answers.
    pub errors: u64,
    /// wrk's own split of them: `connect 0, read 3, …`.
    pub error_kinds: String,
    pub seconds: u32,
}

/// wrk from `ns` against `target` for `seconds`, a new connection per request.
pub fn wrk(ns: &str, target: SocketAddr, seconds: u32) -> Result<WrkResult> {
    let url = format!("http://{target}/");
    let (c, t, d) = (
        WRK_CONNECTIONS.to_string(),
        WRK_THREADS.to_string(),
        format!("{seconds}s"),
    );
    let args = [
        "netns",
        "exec",
        ns,
        "wrk",
        "-c",
        &c,
        "-t",
        &t,
        "-d",
        &d,
        "--timeout",
        "2s",
        "-H",
        "Connection: close",
        &url,
    ];
    let limit = Duration::from_secs(u64::from(seconds) + 15);
    let out = tool("ip", &args, None, limit).with_context(|| format!("wrk in netns {ns}"))?;
    parse_wrk(&out, seconds).with_context(|| format!("wrk in netns {ns} printed: {out}"))
}

fn parse_wrk(out: &str, seconds: u32) -> Result<WrkResult> {
    let field = |line: &str, name: &str| -> u64 {
        line.split(',')
            .find_map(|p| p.trim().strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let mut r = WrkResult {
        per_second: f64::NAN,
        requests: 0,
        errors: 0,
        error_kinds: String::new(),
        seconds,
    };
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.per_second = v.trim().parse().context("Requests/sec")?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            r.errors += ["connect", "read", "write", "timeout"]
                .iter()
                .map(|n| field(rest, n))
                .sum::<u64>();
            r.error_kinds = rest.trim().to_string();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>().unwrap_or(0);
            r.error_kinds += &format!(" non-2xx {}", v.trim());
        } else if line.contains(" requests in ") {
            r.requests = line.split_whitespace().next().unwrap_or("0").parse()?;
        }
    }
    if !r.per_second.is_finite() {
        bail!("no Requests/sec line");
    }
    Ok(r)
}

#[derive(Clone, Debug, Serialize)]
pub struct SockperfResult {
    /// sockperf's latency (half a round trip), µs.
    pub p50_us: f64,
    pub p99_us: f64,
    pub observations: u64,
}

/// sockperf ping-pong from `ns` to the wan's server at `wan` for `seconds`.
pub fn sockperf(ns: &str, wan: IpAddr, seconds: u32) -> Result<SockperfResult> {
    let (addr, port, t) = (
        wan.to_string(),
        SOCKPERF_PORT.to_string(),
        seconds.to_string(),
    );
    let args = [
        "netns",
        "exec",
        ns,
        "sockperf",
        "ping-pong",
        "-i",
        &addr,
        "-p",
        &port,
        "-t",
        &t,
    ];
    let limit = Duration::from_secs(u64::from(seconds) + 15);
    let out = tool("ip", &args, None, limit).with_context(|| format!("sockperf in netns {ns}"))?;
    parse_sockperf(&out).with_context(|| format!("sockperf in netns {ns} printed: {out}"))
}

fn parse_sockperf(out: &str) -> Result<SockperfResult> {
    let percentile = |p: &str| -> Result<f64> {
        let needle = format!("percentile {p} =");
        let line = out
            .lines()
            .find(|l| l.contains(&needle))
            .ok_or_else(|| anyhow!("no {p} percentile"))?;
        let v = line.rsplit('=').next().unwrap_or("").trim();
        v.parse().with_context(|| format!("percentile {p}: {v}"))
    };
    let observations = out
        .lines()
        .find_map(|l| {
            let rest = l.split("Total ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0);
    Ok(SockperfResult {
        p50_us: percentile("50.000")?,
        p99_us: percentile("99.000")?,
        observations,
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct IperfUdpResult {
    /// Datagrams/s the server received.
    pub received_pps: f64,
    pub sent: u64,
    pub lost: u64,
}

/// iperf3 UDP, 64-byte datagrams as fast as it can send, from the node to
/// the wan's iperf3 server on `port`.
pub fn iperf3_udp(ns: &str, wan: IpAddr, port: u16, seconds: u32) -> Result<IperfUdpResult> {
    let (addr, port, t) = (wan.to_string(), port.to_string(), seconds.to_string());
    let args = [
        "netns", "exec", ns, "iperf3", "-c", &addr, "-p", &port, "-u", "-l", "64", "-b", "0", "-t",
        &t, "-J",
    ];
    let limit = Duration::from_secs(u64::from(seconds) + 20);
    let out = tool("ip", &args, None, limit).with_context(|| format!("iperf3 -u in netns {ns}"))?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("iperf3 -u in netns {ns} printed no JSON"))?;
    let sum = &v["end"]["sum"];
    let (sent, lost, secs) = (
        sum["packets"].as_u64(),
        sum["lost_packets"].as_u64(),
        sum["seconds"].as_f64(),
    );
    match (sent, lost, secs) {
        (Some(sent), Some(lost), Some(secs)) if secs > 0.0 && lost <= sent => Ok(IperfUdpResult {
            received_pps: (sent - lost) as f64 / secs,
            sent,
            lost,
        }),
        _ => bail!("iperf3 -u in netns {ns}: no packet counts in its report ({sum})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_gives_rate_requests_and_errors() {
        let out = "Running 2s test @ http://198.51.100.1:8080/\n  2 threads and 32 connections\n  \
                   48005 requests in 2.02s, 6.64MB read\n  Socket errors: connect 0, read 3, write 0, timeout 2\n\
                   Non-2xx or 3xx responses: 1\nRequests/sec:  23811.65\nTransfer/sec:      3.29MB\n";
        let r = parse_wrk(out, 2).unwrap();
        assert_eq!(r.requests, 48005);
        assert_eq!(r.errors, 6);
        assert_eq!(
            r.error_kinds,
            "connect 0, read 3, write 0, timeout 2 non-2xx 1"
        );
        assert!((r.per_second - 23811.65).abs() < 1e-6);
        assert!(parse_wrk("nothing", 2).is_err());
    }

    #[test]
    fn sockperf_output_gives_percentiles() {
        let out = "sockperf: \u{1b}[2;35mTotal 187340 observations\u{1b}[0m; each percentile contains 1873.40 observations\n\
                   sockperf: ---> percentile 99.000 =    7.518\n\
                   sockperf: ---> percentile 50.000 =    4.029\n";
        let r = parse_sockperf(out).unwrap();
        assert_eq!(r.observations, 187340);
        assert!((r.p50_us - 4.029).abs() < 1e-9 && (r.p99_us - 7.518).abs() < 1e-9);
        assert!(parse_sockperf("sockperf: nothing").is_err());
    }

    #[test]
    fn nginx_conf_keeps_every_path_in_its_directory() {
        let c = nginx_conf(Path::new("/tmp/nb"), 8080);
        assert!(c.contains("listen 8080 reuseport"));
        assert!(c.contains("listen 8091 reuseport"));
        let ports: std::collections::BTreeSet<u16> = [(1, false), (1000, false), (1000, true)]
            .into_iter()
            .chain([(10_000, false), (10_000, true)])
            .map(|(n, inside)| dnat_port(n, inside))
            .collect();
        assert_eq!(ports.len(), 5, "{ports:?}");
        assert!(ports.iter().all(|p| (8081..8092).contains(p)), "{ports:?}");
        for key in [
            "pid",
            "error_log",
            "client_body_temp_path",
            "proxy_temp_path",
        ] {
            let line = c.lines().find(|l| l.trim_start().starts_with(key)).unwrap();
            assert!(line.contains("/tmp/nb/"), "{line}");
        }
    }
}
