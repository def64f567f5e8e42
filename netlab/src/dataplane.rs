//! The eBPF NAT dataplane (placeholder until the programs land).

use anyhow::Result;

use crate::{model::topology::Lab, system::System};

pub struct UpReport {
    pub changed: bool,
    pub lines: Vec<String>,
}

pub async fn up(_sys: &System, _lab: &Lab, _verbose: bool) -> Result<UpReport> {
    Ok(UpReport {
        changed: false,
        lines: Vec::new(),
    })
}

pub fn down(_lab: &str) -> Result<usize> {
    Ok(0)
}

pub fn leftovers(_lab: &str) -> Vec<String> {
    Vec::new()
}

pub fn status(_lab: &str) -> Result<serde_json::Value> {
    Ok(serde_json::Value::Null)
}

pub fn status_lines(_v: &serde_json::Value) -> Vec<String> {
    Vec::new()
}

pub async fn fwd_command(_cmd: crate::cli::FwdCommand) -> Result<()> {
    anyhow::bail!("not yet")
}

pub async fn nat_command(_cmd: crate::cli::NatCommand) -> Result<()> {
    anyhow::bail!("not yet")
}

pub async fn stats_command(_s: &crate::lab::LabState, _j: bool, _v: bool) -> Result<()> {
    anyhow::bail!("not yet")
}
