//! The labs' figures in Prometheus' text exposition format (version 0.0.4),
//! pure: what [`super::live`] read goes in, text comes out.
//!
//! Written here rather than with a client library: the figures are read
//! afresh on every scrape as absolute values (per-CPU sums of the
//! programs' counters, the kernel's link counters), which the libraries'
//! increment-only counters do not model, and the format is small.
//! Every family appears once, with its HELP and TYPE, samples of every lab
//! under it (label `lab`); counters end in `_total`, sizes are in base units.

use std::fmt::Write as _;

use serde::Serialize;

use crate::dataplane::fwd_counters::ForwardTotals;

/// One lab's figures, as read on one scrape.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LabFigures {
    pub lab: String,
    /// The programs' counters summed over CPUs (empty without a dataplane).
    pub stats: Vec<(String, u64)>,
    /// Live flows by (protocol, kind).
    pub flows: Vec<FlowCount>,
    /// The flow tables, IPv4's and (in a lab that translates IPv6) IPv6's.
    pub tables: Vec<Table>,
    pub forwards: Vec<ForwardFigure>,
    pub links: Vec<LinkFigure>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowCount {
    pub protocol: String,
    pub kind: String,
    pub flows: u64,
}

/// The flow table: entries in use (two per flow), the level where new
/// flows are refused, and its size.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Table {
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    pub entries: u64,
    pub limit: u64,
    pub capacity: u64,
}

/// A forward's live flows and their packets (both directions), and what
/// the programs counted through it since it was made (`None`: not counted).
#[derive(Clone, Debug, Serialize)]
pub struct ForwardFigure {
    pub forward: String,
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub total: Option<ForwardTotals>,
}

/// An interface of the lab and the kernel's counters for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkFigure {
    /// `lab-host` or the node's name.
    pub place: String,
    pub interface: String,
    /// `uplink`, `bridge`, `port` (a bridge port on the lab host) or `node`.
    pub role: String,
    pub up: bool,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

struct Family {
    name: String,
    kind: Kind,
    help: String,
    samples: Vec<(Vec<(&'static str, String)>, u64)>,
}

#[derive(Default)]
struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    fn add(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        labels: Vec<(&'static str, String)>,
        v: u64,
    ) {
        let i = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    name: name.into(),
                    kind,
                    help: help.into(),
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        self.families[i].samples.push((labels, v));
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {} {kind}", f.name);
            for (labels, v) in &f.samples {
                let labels: Vec<String> = labels
                    .iter()
                    .map(|(k, val)| format!("{k}=\"{}\"", escape_label(val)))
                    .collect();
                let _ = writeln!(out, "{}{{{}}} {v}", f.name, labels.join(","));
            }
        }
        out
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Where a counter of `stats` goes: (family, help, extra label).
fn stat_family(stat: &str) -> (String, String, Vec<(&'static str, String)>) {
    // Translations and new flows by address family: IPv6's counters are
    // the same families with `family="ipv6"` (a drop's reason says it).
    let family = |s: &str| -> (String, Vec<(&'static str, String)>) {
        let v6 = s
            .strip_prefix("v6_")
            .map(str::to_string)
            .or_else(|| s.contains("_v6").then(|| s.replacen("_v6", "", 1)));
        match v6 {
            Some(plain) => (plain, vec![("family", "ipv6".into())]),
            None => (s.into(), vec![("family", "ipv4".into())]),
        }
    };
    if let Some(rest) = stat.strip_prefix("drop_") {
        let help = "Packets the programs dropped, by reason.";
        return (
            "netlab_dropped_packets_total".into(),
            help.into(),
            vec![("reason", rest.into())],
        );
    }
    if let Some(rest) = stat.strip_prefix("translated_") {
        let (direction, mut labels) = family(rest);
        labels.insert(0, ("direction", direction));
        let help = "Packets the programs translated, by direction and address family.";
        return (
            "netlab_translated_packets_total".into(),
            help.into(),
            labels,
        );
    }
    if let Some(rest) = stat.strip_prefix("fast_path_") {
        let help = "Packets of established flows that skipped the bridge and the lab host's stack.";
        return (
            "netlab_fast_path_packets_total".into(),
            help.into(),
            vec![("direction", rest.into())],
        );
    }
    if let Some(kind) = stat
        .strip_prefix("new_")
        .and_then(|s| s.strip_suffix("_flows"))
    {
        let (kind, mut labels) = family(kind);
        labels.insert(0, ("kind", kind));
        let help = "Flows the programs created, by kind and address family.";
        return ("netlab_new_flows_total".into(), help.into(), labels);
    }
    let help = format!("The programs' counter {stat}, summed over CPUs.");
    (format!("netlab_{stat}_total"), help, Vec::new())
}

/// The text for a scrape of `labs`.
pub fn exposition(labs: &[LabFigures]) -> String {
    let mut e = Exposition::default();
    for l in labs {
        let lab = || vec![("lab", l.lab.clone())];
        e.add(
            "netlab_lab_up",
            Kind::Gauge,
            "1 for each lab that is up.",
            lab(),
            1,
        );
        for (stat, v) in &l.stats {
            let (name, help, extra) = stat_family(stat);
            let mut labels = lab();
            labels.extend(extra);
            e.add(&name, Kind::Counter, &help, labels, *v);
        }
        for f in &l.flows {
            let mut labels = lab();
            labels.push(("protocol", f.protocol.clone()));
            labels.push(("kind", f.kind.clone()));
            e.add(
                "netlab_nat_flows",
                Kind::Gauge,
                "Live NAT flows, by protocol and kind.",
                labels,
                f.flows,
            );
        }
        add_tables(&mut e, l);
        add_forwards(&mut e, l);
        add_links(&mut e, l);
    }
    e.text()
}

fn add_forwards(e: &mut Exposition, l: &LabFigures) {
    for f in &l.forwards {
        let labels = vec![("lab", l.lab.clone()), ("forward", f.forward.clone())];
        if let Some(t) = f.total {
            add_forward_totals(e, &labels, &t);
        }
        e.add(
            "netlab_forward_flows",
            Kind::Gauge,
            "Live flows through each forward.",
            labels.clone(),
            f.flows,
        );
        e.add(
            "netlab_forward_flow_packets",
            Kind::Gauge,
            "Packets (both directions) of the live flows through each forward.",
            labels.clone(),
            f.packets,
        );
        e.add(
            "netlab_forward_flow_bytes",
            Kind::Gauge,
            "Bytes (both directions) of the live flows through each forward.",
            labels,
            f.bytes,
        );
    }
}

/// The programs' cumulative counts through a forward, by direction.
fn add_forward_totals(e: &mut Exposition, labels: &[(&'static str, String)], t: &ForwardTotals) {
    const PACKETS: &str = "Packets through each forward since it was made, by direction \
        (in: to its target, out: its replies); kept across up and program upgrades.";
    const BYTES: &str = "Bytes (Ethernet frames) through each forward since it was made, \
        by direction (in: to its target, out: its replies); kept across up and program upgrades.";
    let figures = [
        ("netlab_forward_packets_total", PACKETS, "in", t.packets_in),
        (
            "netlab_forward_packets_total",
            PACKETS,
            "out",
            t.packets_out,
        ),
        ("netlab_forward_bytes_total", BYTES, "in", t.bytes_in),
        ("netlab_forward_bytes_total", BYTES, "out", t.bytes_out),
    ];
    for (name, help, direction, v) in figures {
        let mut labels = labels.to_vec();
        labels.push(("direction", direction.to_string()));
        e.add(name, Kind::Counter, help, labels, v);
    }
}

fn add_tables(e: &mut Exposition, l: &LabFigures) {
    for t in &l.tables {
        add_table(e, &l.lab, t);
    }
}

fn add_table(e: &mut Exposition, lab: &str, t: &Table) {
    let lab = || vec![("lab", lab.to_string()), ("family", t.family.to_string())];
    e.add(
        "netlab_nat_table_entries",
        Kind::Gauge,
        "Entries in the flow table (two per flow).",
        lab(),
        t.entries,
    );
    e.add(
        "netlab_nat_table_limit_entries",
        Kind::Gauge,
        "Entries at which new flows are refused (drop_table_full).",
        lab(),
        t.limit,
    );
    e.add(
        "netlab_nat_table_capacity_entries",
        Kind::Gauge,
        "Size of the flow table in entries.",
        lab(),
        t.capacity,
    );
}

fn add_links(e: &mut Exposition, l: &LabFigures) {
    for k in &l.links {
        let labels = vec![
            ("lab", l.lab.clone()),
            ("place", k.place.clone()),
            ("interface", k.interface.clone()),
            ("role", k.role.clone()),
        ];
        let figures = [
            (
                "netlab_link_receive_bytes_total",
                "Bytes the interface received (kernel link counters).",
                k.rx_bytes,
            ),
            (
                "netlab_link_transmit_bytes_total",
                "Bytes the interface sent (kernel link counters).",
                k.tx_bytes,
            ),
            (
                "netlab_link_receive_packets_total",
                "Packets the interface received (kernel link counters).",
                k.rx_packets,
            ),
            (
                "netlab_link_transmit_packets_total",
                "Packets the interface sent (kernel link counters).",
                k.tx_packets,
            ),
        ];
        for (name, help, v) in figures {
            e.add(name, Kind::Counter, help, labels.clone(), v);
        }
        e.add(
            "netlab_link_up",
            Kind::Gauge,
            "1 when the interface is up.",
            labels,
            u64::from(k.up),
        );
    }
}

/// The Content-Type of [`exposition`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(lab: &str) -> LabFigures {
        LabFigures {
            lab: lab.into(),
            stats: netlab_common::stat::NAMES
                .iter()
                .enumerate()
                .map(|(i, n)| (n.to_string(), i as u64 * 10))
                .collect(),
            flows: vec![FlowCount {
                protocol: "tcp".into(),
                kind: "snat".into(),
                flows: 3,
            }],
            tables: vec![Table {
                family: "ipv4",
                entries: 6,
                limit: 200_000,
                capacity: 262_144,
            }],
            forwards: vec![ForwardFigure {
                forward: "tcp/80 -> blue:80".into(),
                flows: 1,
                packets: 12,
                bytes: 900,
                total: Some(ForwardTotals {
                    packets_in: 30,
                    bytes_in: 3000,
                    packets_out: 20,
                    bytes_out: 20000,
                }),
            }],
            links: vec![LinkFigure {
                place: "red".into(),
                interface: "eth0".into(),
                role: "node".into(),
                up: true,
                rx_bytes: 100,
                tx_bytes: 200,
                rx_packets: 1,
                tx_packets: 2,
            }],
        }
    }

    #[test]
    fn every_stats_counter_is_a_total_counter() {
        let text = exposition(&[figures("a")]);
        for (i, name) in netlab_common::stat::NAMES.iter().enumerate() {
            let (family, _, extra) = stat_family(name);
            assert!(family.ends_with("_total"), "{family}");
            let labels: String = extra.iter().map(|(k, v)| format!(",{k}=\"{v}\"")).collect();
            let labels = format!("lab=\"a\"{labels}");
            let line = format!("{family}{{{labels}}} {}", i * 10);
            assert!(text.lines().any(|l| l == line), "{line} missing");
            assert!(text.contains(&format!("# TYPE {family} counter\n")));
        }
        assert!(text.contains("netlab_dropped_packets_total{lab=\"a\",reason=\"table_full\"} 160"));
        // IPv6's translations are the same family, labelled by address family.
        for (family, labels) in [
            (
                "netlab_translated_packets_total",
                "direction=\"out\",family=\"ipv4\"",
            ),
            (
                "netlab_translated_packets_total",
                "direction=\"out\",family=\"ipv6\"",
            ),
            ("netlab_new_flows_total", "kind=\"snat\",family=\"ipv6\""),
        ] {
            assert!(
                text.contains(&format!("{family}{{lab=\"a\",{labels}}} ")),
                "{family} {labels}"
            );
        }
    }

    #[test]
    fn each_family_once_with_every_lab_under_it() {
        let text = exposition(&[figures("a"), figures("b")]);
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "a family appears twice");
        for lab in ["a", "b"] {
            assert!(text.contains(&format!(
                "netlab_nat_flows{{lab=\"{lab}\",protocol=\"tcp\",kind=\"snat\"}} 3"
            )));
            assert!(text.contains(&format!(
                "netlab_link_receive_bytes_total{{lab=\"{lab}\",place=\"red\",interface=\"eth0\",role=\"node\"}} 100"
            )));
        }
        assert!(text.contains("netlab_nat_table_limit_entries{lab=\"a\",family=\"ipv4\"} 200000"));
        assert!(text
            .contains("netlab_forward_flow_packets{lab=\"a\",forward=\"tcp/80 -> blue:80\"} 12"));
    }

    #[test]
    fn forward_totals_are_counters_by_direction() {
        let text = exposition(&[figures("a")]);
        let f = "lab=\"a\",forward=\"tcp/80 -> blue:80\"";
        for (family, direction, v) in [
            ("netlab_forward_packets_total", "in", 30),
            ("netlab_forward_packets_total", "out", 20),
            ("netlab_forward_bytes_total", "in", 3000),
            ("netlab_forward_bytes_total", "out", 20000),
        ] {
            let line = format!("{family}{{{f},direction=\"{direction}\"}} {v}");
            assert!(text.lines().any(|l| l == line), "{line} missing");
            assert!(text.contains(&format!("# TYPE {family} counter\n")));
        }
        let mut uncounted = figures("a");
        uncounted.forwards[0].total = None;
        let text = exposition(&[uncounted]);
        assert!(!text.contains("netlab_forward_packets_total"));
        assert!(text.contains("netlab_forward_flows{"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn no_labs_no_samples() {
        assert_eq!(exposition(&[]), "");
    }
}
