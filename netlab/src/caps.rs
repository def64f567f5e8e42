//! Capability checks, so a user without them gets one line naming what is
//! missing instead of a netlink EPERM from somewhere deep inside.

use std::fs;

use anyhow::{bail, Result};

pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_BPF: u32 = 39;

fn name(cap: u32) -> &'static str {
    match cap {
        CAP_NET_ADMIN => "CAP_NET_ADMIN",
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN",
        CAP_BPF => "CAP_BPF",
        _ => "a capability",
    }
}

fn effective() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Fail with "`what` needs CAP_X (run as root)" when any of `caps` is missing.
pub fn require(what: &str, caps: &[u32]) -> Result<()> {
    let eff = effective();
    let missing: Vec<&str> = caps
        .iter()
        .filter(|c| eff & (1 << **c) == 0)
        .map(|c| name(*c))
        .collect();
    if !missing.is_empty() {
        bail!(CapabilityError(format!(
            "netlab {what} needs {} (run it as root)",
            missing.join(" and ")
        )));
    }
    Ok(())
}

/// A missing privilege: reported as one line, exit code 1.
#[derive(Debug)]
pub struct CapabilityError(pub String);

impl std::fmt::Display for CapabilityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CapabilityError {}
