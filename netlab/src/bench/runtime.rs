//! What the lab's programs cost while a metric runs, from the kernel's own
//! run-time statistics (`BPF_ENABLE_STATS`): each entry program's number of
//! runs and time spent, tail calls included (a tail call runs inside its
//! caller's accounting). The statistics are on only while `netlab bench`
//! holds the descriptor that turned them on; the kernel turns them off when
//! the last such descriptor closes.

use std::{collections::BTreeMap, fs, os::fd::OwnedFd};

use anyhow::{Context as _, Result};
use aya::programs::ProgramInfo;
use serde_json::{json, Value};

use crate::dataplane::pins::LabPins;

/// Turn the kernel's run-time statistics on for as long as the result lives.
pub fn enable() -> Result<OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("turning on the kernel's BPF run-time statistics (BPF_ENABLE_STATS)")
}

/// Runs and nanoseconds so far, per entry program of a lab.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot(BTreeMap<String, (u64, u64)>);

/// The lab's pinned entry programs, as the kernel counts them now.
pub fn snapshot(lab: &str) -> Result<Snapshot> {
    let dir = LabPins::new(lab).progs();
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let info = ProgramInfo::from_pin(&path)
            .with_context(|| format!("reading program {}", path.display()))?;
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        out.insert(name, (info.run_count(), info.run_time().as_nanos() as u64));
    }
    Ok(Snapshot(out))
}

/// What ran between two snapshots: per program, its runs and ns per run.
pub fn between(before: &Snapshot, after: &Snapshot) -> Value {
    let mut programs = serde_json::Map::new();
    for (name, &(runs, ns)) in &after.0 {
        let (runs0, ns0) = before.0.get(name).copied().unwrap_or((0, 0));
        let (runs, ns) = (runs.saturating_sub(runs0), ns.saturating_sub(ns0));
        if runs > 0 {
            programs.insert(name.clone(), json!({ "runs": runs, "ns": ns }));
        }
    }
    Value::Object(programs)
}

/// Per program, over several measurements of `between`: total runs, ns per
/// run, and ns per `unit` when each measurement says how many units it did
/// (connections, requests).
pub fn summarize(measurements: &[(Value, Option<u64>)]) -> Vec<Cost> {
    let mut sums: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut units = 0u64;
    for (programs, n) in measurements {
        units += n.unwrap_or(0);
        for (name, v) in programs.as_object().into_iter().flatten() {
            let s = sums.entry(name.clone()).or_default();
            s.0 += v["runs"].as_u64().unwrap_or(0);
            s.1 += v["ns"].as_u64().unwrap_or(0);
        }
    }
    sums.into_iter()
        .filter(|(_, (runs, _))| *runs > 0)
        .map(|(program, (runs, ns))| Cost {
            ns_per_run: ns as f64 / runs as f64,
            runs_per_unit: (units > 0).then(|| runs as f64 / units as f64),
            ns_per_unit: (units > 0).then(|| ns as f64 / units as f64),
            program,
            runs,
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cost {
    pub program: String,
    pub runs: u64,
    pub ns_per_run: f64,
    pub runs_per_unit: Option<f64>,
    pub ns_per_unit: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(v: &[(&str, u64, u64)]) -> Snapshot {
        Snapshot(
            v.iter()
                .map(|(n, r, t)| (n.to_string(), (*r, *t)))
                .collect(),
        )
    }

    #[test]
    fn between_keeps_what_ran_and_summarize_adds_it_up() {
        let a = snap(&[("nl_uplink_out", 10, 1_000), ("nl_node_in", 5, 500)]);
        let b = snap(&[
            ("nl_uplink_out", 110, 31_000),
            ("nl_node_in", 5, 500),
            ("nl_new", 4, 400),
        ]);
        let d = between(&a, &b);
        assert_eq!(d["nl_uplink_out"], json!({"runs": 100, "ns": 30_000}));
        assert!(d.get("nl_node_in").is_none(), "{d}");
        assert_eq!(d["nl_new"], json!({"runs": 4, "ns": 400}));
        let costs = summarize(&[(d.clone(), Some(10)), (d, Some(10))]);
        let up = costs.iter().find(|c| c.program == "nl_uplink_out").unwrap();
        assert_eq!(up.runs, 200);
        assert_eq!(up.ns_per_run, 300.0);
        assert_eq!(up.runs_per_unit, Some(10.0));
        assert_eq!(up.ns_per_unit, Some(3_000.0));
        assert_eq!(summarize(&[(json!({}), None)]), vec![]);
    }
}
