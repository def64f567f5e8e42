//! The programs alone, through `BPF_PROG_TEST_RUN`: nanoseconds per packet
//! as the kernel times them, with fresh maps (uplink 198.51.100.2 and
//! 2001:db8::2, 192.168.15.0/24 and fd00:15::/64 masqueraded, tcp/80 forwarded to
//! 192.168.15.2:80, as the program tests set them up), once with
//! `fast_path` on and once off.
//!
//! The kernel runs a program `repeat` times on the *same* skb, and a NAT
//! rewrite persists from one run to the next: from the second run on the
//! program sees an already translated packet and takes another path. So
//! each translating case is timed as many separate runs with `repeat` = 1
//! (each on a fresh copy of its frame; "new flow" cases on distinct source
//! ports, so every run really creates a flow), and the median of the
//! kernel's durations is reported, raw and minus what a single timed run
//! costs the harness (measured as the difference between single runs and
//! one long `repeat` run of a packet the program passes untouched, which
//! does stay the same from run to run).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    programs::{SchedClassifier, TestRun, TestRunOptions},
    Ebpf, EbpfLoader,
};
use netlab_common::{addr_from_octets, NodePort, IPPROTO_TCP, SUBNET_MASQUERADE};
use serde::Serialize;

use crate::dataplane::{
    default_config, fill_maps, MapContents, EBPF_OBJECT, PROG_NODE_IN, PROG_UPLINK_IN,
    PROG_UPLINK_OUT,
};

const RED: [u8; 4] = [192, 168, 15, 1];
const BLUE: [u8; 4] = [192, 168, 15, 2];
const UPLINK: [u8; 4] = [198, 51, 100, 2];
const REMOTE: [u8; 4] = [198, 51, 100, 1];
/// The masqueraded IPv6 subnet, a node in it, a host outside.
const LAB6: [u8; 16] = [0xfd, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const RED6: [u8; 16] = [0xfd, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const REMOTE6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const UPLINK6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
/// Runs of the untouched packet in one `repeat` run.
const LONG_REPEAT: u32 = 200_000;
/// New flows per "new flow" case (a fifth of the NAT port range).
const NEW_FLOWS: usize = 4_000;

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub case: &'static str,
    pub program: &'static str,
    pub fast_path: bool,
    /// The programs' verdicts over the runs (pass = TC_ACT_UNSPEC).
    pub verdicts: String,
    pub runs: usize,
    pub repeat: u32,
    /// Kernel-reported ns per run: median, 10th and 90th percentile.
    pub ns_median: f64,
    pub ns_p10: f64,
    pub ns_p90: f64,
    /// The median minus the harness's cost of a single timed run.
    pub ns_net: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Micro {
    pub rows: Vec<Row>,
    /// What a single timed run costs beyond the program, by fast_path.
    pub overhead_ns: BTreeMap<String, f64>,
    pub method: &'static str,
}

/// An Ethernet frame with an IPv4/TCP packet, checksums right.
fn tcp_frame(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(payload);
    let pseudo: u32 = [src, dst]
        .iter()
        .flat_map(|a| {
            [
                u16::from_be_bytes([a[0], a[1]]),
                u16::from_be_bytes([a[2], a[3]]),
            ]
        })
        .map(u32::from)
        .sum::<u32>()
        + u32::from(IPPROTO_TCP)
        + t.len() as u32;
    let c = netlab_ebpf::checksum(&t, pseudo);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + t.len()) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = IPPROTO_TCP;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = netlab_ebpf::checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&ip);
    f.extend_from_slice(&t);
    f
}

/// An Ethernet frame with an IPv6/UDP packet behind a destination options
/// header (the programs walk it; no checksum, which they do not read).
fn udp6_frame(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd];
    let mut ip = vec![0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(8u16 + 16).to_be_bytes());
    ip[6] = 60; // destination options
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src);
    ip[24..40].copy_from_slice(&dst);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 16, 0, 0]);
    f.extend_from_slice(&[0x42; 8]);
    f
}

/// Source port of a frame built by [`udp6_frame`] (after the program).
fn sport6(frame: &[u8]) -> Result<u16> {
    let b = frame.get(62..64).context("IPv6 frame too short")?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

/// Source port of a frame built by [`tcp_frame`] (after the program).
fn sport(frame: &[u8]) -> Result<u16> {
    let ihl = usize::from(frame.get(14).context("short frame")? & 0x0f) * 4;
    let at = 14 + ihl;
    Ok(u16::from_be_bytes([
        *frame.get(at).context("short frame")?,
        *frame.get(at + 1).context("short frame")?,
    ]))
}

fn verdict_name(rc: u32) -> String {
    match rc {
        u32::MAX => "pass".into(),
        0 => "ok".into(),
        2 => "drop".into(),
        7 => "redirect".into(),
        n => format!("rc {n}"),
    }
}

struct Programs {
    ebpf: Ebpf,
    fast_path: bool,
}

fn na(a: [u8; 4]) -> u32 {
    addr_from_octets(a)
}

impl Programs {
    /// The programs with fresh maps, set up as the program tests do.
    fn new(fast_path: bool) -> Result<Programs> {
        let mut ebpf = EbpfLoader::new()
            .load(EBPF_OBJECT)
            .context("loading netlab's eBPF object")?;
        crate::dataplane::attach::load_every_program(&mut ebpf)?;
        let config = netlab_common::NatConfig {
            uplink_addr6: UPLINK6,
            ..default_config(na(UPLINK), fast_path)
        };
        let mut contents = MapContents::with_config(config)
            .subnet([192, 168, 15, 0].into(), 24, SUBNET_MASQUERADE, 1)
            .subnet6(LAB6.into(), 64, SUBNET_MASQUERADE, 1)
            .forward(IPPROTO_TCP, 80, BLUE.into(), 80);
        if fast_path {
            for (i, node) in [RED, BLUE].into_iter().enumerate() {
                let port = NodePort {
                    ifindex: 1,
                    node_mac: [0x02, 0xaa, 0, 0, 0, i as u8 + 1],
                    gateway_mac: [0x02, 0xbb, 0, 0, 0, 1],
                };
                contents = contents.node_port(node.into(), port);
            }
        }
        fill_maps(&mut ebpf, &contents)?;
        Ok(Programs { ebpf, fast_path })
    }

    fn has(&self, prog: &str) -> bool {
        self.ebpf.program(prog).is_some()
    }

    /// One test run: verdict, kernel-reported time per run, output frame.
    fn run(&mut self, prog: &str, frame: &[u8], repeat: u32) -> Result<(u32, f64, Vec<u8>)> {
        let p: &mut SchedClassifier = self
            .ebpf
            .program_mut(prog)
            .with_context(|| format!("program {prog}"))?
            .try_into()?;
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        opts.repeat = repeat;
        let r = p
            .test_run(opts)
            .with_context(|| format!("BPF_PROG_TEST_RUN of {prog}"))?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, r.duration.as_nanos() as f64, out))
    }

    /// Time `frames` (one run each); the row's numbers.
    fn time(
        &mut self,
        case: &'static str,
        prog: &'static str,
        frames: impl Iterator<Item = Vec<u8>>,
        overhead: f64,
    ) -> Result<Row> {
        let mut ns = Vec::new();
        let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
        for f in frames {
            let (rc, t, _) = self.run(prog, &f, 1)?;
            ns.push(t);
            *verdicts.entry(verdict_name(rc)).or_default() += 1;
        }
        if ns.is_empty() {
            bail!("no runs for {case}");
        }
        ns.sort_by(f64::total_cmp);
        let pct = |q: f64| ns[((ns.len() - 1) as f64 * q).round() as usize];
        let median = pct(0.5);
        Ok(Row {
            case,
            program: prog,
            fast_path: self.fast_path,
            verdicts: verdict_text(&verdicts),
            runs: ns.len(),
            repeat: 1,
            ns_median: median,
            ns_p10: pct(0.1),
            ns_p90: pct(0.9),
            ns_net: (median - overhead).max(0.0),
        })
    }
}

fn verdict_text(v: &BTreeMap<String, usize>) -> String {
    if v.len() == 1 {
        return v.keys().next().cloned().unwrap_or_default();
    }
    v.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every case, with `runs` timed runs each, for fast_path on and off.
pub fn run(runs: usize) -> Result<Micro> {
    let runs = runs.max(10);
    let mut rows = Vec::new();
    let mut overhead_ns = BTreeMap::new();
    for fast in [true, false] {
        let (r, o) =
            cases(fast, runs).with_context(|| format!("the programs with fast_path = {fast}"))?;
        rows.extend(r);
        overhead_ns.insert(format!("fast_path={fast}"), o);
    }
    Ok(Micro {
        rows,
        overhead_ns,
        method: "BPF_PROG_TEST_RUN; translating cases: median of single runs (repeat = 1) on fresh frames, \
                 minus the harness's cost of a single timed run; pass-through: one run with a long repeat",
    })
}

fn cases(fast: bool, runs: usize) -> Result<(Vec<Row>, f64)> {
    let mut p = Programs::new(fast)?;
    let payload = [0x42u8; 32];
    let mut rows = Vec::new();

    // The lab host's own packet: passed untouched, so repeat is exact.
    let own = tcp_frame(UPLINK, REMOTE, 50000, 80, ACK, &payload);
    let (rc, long, out) = p.run(PROG_UPLINK_OUT, &own, LONG_REPEAT)?;
    if out != own {
        bail!("the lab host's own packet was changed by {PROG_UPLINK_OUT}");
    }
    let single = p.time(
        "pass-through, single runs",
        PROG_UPLINK_OUT,
        std::iter::repeat_n(own.clone(), runs),
        0.0,
    )?;
    let overhead = (single.ns_median - long).max(0.0);
    rows.push(repeated_row(
        "pass-through (lab host's own)",
        PROG_UPLINK_OUT,
        fast,
        rc,
        long,
    ));

    rows.extend(ipv6_rows(&mut p, fast, runs, overhead)?);

    // SNAT, new flows: a SYN from a distinct node port each run (ports
    // outside the NAT range, as a node's ephemeral ports are: each gets a
    // random outside port).
    let n_new = runs.min(NEW_FLOWS);
    rows.push(p.time(
        "SNAT new flow (SYN)",
        PROG_UPLINK_OUT,
        (0..n_new).map(|i| tcp_frame(RED, REMOTE, 40000 + i as u16, 80, SYN, b"")),
        overhead,
    )?);
    // The first of them again (its flow exists: this learns its outside
    // port), then answered: established.
    let syn = tcp_frame(RED, REMOTE, 40000, 80, SYN, b"");
    let (_, _, out) = p.run(PROG_UPLINK_OUT, &syn, 1)?;
    let ext = sport(&out)?;
    if ext == 40000 || out == syn {
        return Err(anyhow!("the SYN of flow 40000 was not translated"));
    }
    let synack = tcp_frame(REMOTE, UPLINK, 80, ext, SYN | ACK, b"");
    p.run(PROG_UPLINK_IN, &synack, 1)?;
    let est = tcp_frame(RED, REMOTE, 40000, 80, ACK, &payload);
    rows.push(p.time(
        "SNAT established (uplink egress)",
        PROG_UPLINK_OUT,
        std::iter::repeat_n(est.clone(), runs),
        overhead,
    )?);
    if p.has(PROG_NODE_IN) {
        rows.push(p.time(
            "SNAT established (node veth, fast path)",
            PROG_NODE_IN,
            std::iter::repeat_n(est.clone(), runs),
            overhead,
        )?);
    }
    let reply = tcp_frame(REMOTE, UPLINK, 80, ext, ACK, &payload);
    rows.push(p.time(
        "reverse NAT (reply in)",
        PROG_UPLINK_IN,
        std::iter::repeat_n(reply, runs),
        overhead,
    )?);

    // DNAT: SYNs to the forwarded port from distinct outside ports.
    rows.push(p.time(
        "DNAT new flow (SYN)",
        PROG_UPLINK_IN,
        (0..n_new).map(|i| tcp_frame(REMOTE, UPLINK, 1024 + i as u16, 80, SYN, b"")),
        overhead,
    )?);
    let synack = tcp_frame(BLUE, REMOTE, 80, 1024, SYN | ACK, b"");
    p.run(PROG_UPLINK_OUT, &synack, 1)?;
    let ack = tcp_frame(REMOTE, UPLINK, 1024, 80, ACK, &payload);
    rows.push(p.time(
        "DNAT established (in)",
        PROG_UPLINK_IN,
        std::iter::repeat_n(ack, runs),
        overhead,
    )?);
    let back = tcp_frame(BLUE, REMOTE, 80, 1024, ACK, &payload);
    rows.push(p.time(
        "DNAT reply (out)",
        PROG_UPLINK_OUT,
        std::iter::repeat_n(back, runs),
        overhead,
    )?);
    Ok((rows, overhead))
}

/// IPv6: the lab host's own passes untouched (so repeat is exact); a
/// node's UDP is masqueraded (NAT66): new flows from distinct ports, an
/// established flow out, its replies in.
fn ipv6_rows(p: &mut Programs, fast: bool, runs: usize, overhead: f64) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let case = "IPv6 pass-through (lab host's own)";
    let frame = udp6_frame(UPLINK6, REMOTE6, 40960, 53);
    let (rc, ns, out) = p.run(PROG_UPLINK_OUT, &frame, LONG_REPEAT)?;
    if rc != u32::MAX || out != frame {
        bail!("{case}: {PROG_UPLINK_OUT} returned {rc} or changed the packet");
    }
    rows.push(repeated_row(case, PROG_UPLINK_OUT, fast, rc, ns));
    rows.push(p.time(
        "IPv6 SNAT new flow (UDP)",
        PROG_UPLINK_OUT,
        (0..runs.min(NEW_FLOWS)).map(|i| udp6_frame(RED6, REMOTE6, 20000 + i as u16, 53)),
        overhead,
    )?);
    let first = udp6_frame(RED6, REMOTE6, 20000, 53);
    let (_, _, out) = p.run(PROG_UPLINK_OUT, &first, 1)?;
    let ext = sport6(&out)?;
    if out[22..38] != UPLINK6 {
        bail!("IPv6 flow 20000 was not masqueraded");
    }
    rows.push(p.time(
        "IPv6 SNAT established (uplink egress)",
        PROG_UPLINK_OUT,
        std::iter::repeat_n(first, runs),
        overhead,
    )?);
    rows.push(p.time(
        "IPv6 reverse NAT (reply in)",
        PROG_UPLINK_IN,
        std::iter::repeat_n(udp6_frame(REMOTE6, UPLINK6, 53, ext), runs),
        overhead,
    )?);
    Ok(rows)
}

/// The row of a packet timed in one long `repeat` run (it is not changed,
/// so every run sees the same packet): `ns` per run.
fn repeated_row(case: &'static str, program: &'static str, fast: bool, rc: u32, ns: f64) -> Row {
    Row {
        case,
        program,
        fast_path: fast,
        verdicts: verdict_name(rc),
        runs: 1,
        repeat: LONG_REPEAT,
        ns_median: ns,
        ns_p10: ns,
        ns_p90: ns,
        ns_net: ns,
    }
}

/// The micro-benchmark as a table.
pub fn table(m: &Micro) -> String {
    let mut t = String::from(
        "\nmicro-benchmark: the programs alone (BPF_PROG_TEST_RUN), ns per packet, median (net of the harness)\n",
    );
    t.push_str(&format!(
        "{:<42} {:<14} {:>20} {:>20}\n",
        "case", "program", "fast_path=true", "fast_path=false"
    ));
    let mut cases: Vec<(&str, &str)> = Vec::new();
    for r in &m.rows {
        if !cases.contains(&(r.case, r.program)) {
            cases.push((r.case, r.program));
        }
    }
    for (case, program) in cases {
        let cell = |fast: bool| {
            m.rows
                .iter()
                .find(|r| r.case == case && r.program == program && r.fast_path == fast)
                .map(|r| {
                    format!(
                        "{:>6.0} ({:.0}) {}",
                        r.ns_net,
                        r.ns_median,
                        short_verdict(&r.verdicts)
                    )
                })
                .unwrap_or_else(|| "-".into())
        };
        t.push_str(&format!(
            "{case:<42} {program:<14} {:>20} {:>20}\n",
            cell(true),
            cell(false)
        ));
    }
    let o: Vec<String> = m
        .overhead_ns
        .iter()
        .map(|(k, v)| format!("{k}: {v:.0} ns"))
        .collect();
    t.push_str(&format!(
        "(in brackets: raw median of single runs; a single timed run costs the harness {}; \
         the kernel reruns a program on the same skb, so only the untouched pass-through is timed with repeat)\n",
        o.join(", ")
    ));
    t
}

fn short_verdict(v: &str) -> String {
    if v.contains(',') {
        "mixed".into()
    } else {
        v.to_string()
    }
}

/// Every case ran and took time.
pub fn check(m: &Micro) -> Result<()> {
    let bad: Vec<String> = m
        .rows
        .iter()
        .filter(|r| r.ns_median.is_nan() || r.ns_median <= 0.0 || r.runs == 0)
        .map(|r| format!("{} (fast_path={})", r.case, r.fast_path))
        .collect();
    if !bad.is_empty() {
        bail!("the micro-benchmark has no time for: {}", bad.join(", "));
    }
    Ok(())
}
