//! Attaching the programs: TCX links (kernel 6.6+), pinned so they outlive
//! the CLI and swapped atomically on re-`up`; netlink clsact filters on older
//! kernels, with a priority and handle of the lab's own so `down` removes
//! exactly those and leaves everyone else's filters alone.

use std::{collections::BTreeSet, fs};

use anyhow::{anyhow, Context as _, Result};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    Ebpf,
};
use serde::{Deserialize, Serialize};

use super::{features::Features, pins::LabPins};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    fn tc(self) -> TcAttachType {
        match self {
            Direction::Ingress => TcAttachType::Ingress,
            Direction::Egress => TcAttachType::Egress,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Tcx,
    Netlink,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Tcx => "tcx",
            Mode::Netlink => "netlink",
        }
    }
}

/// One program on one interface and direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub program: String,
    pub interface: String,
    pub direction: Direction,
    pub mode: Mode,
    /// Why this attach mode (for `netlab status`).
    pub why: String,
    /// Netlink filters only: the lab's priority and handle.
    pub priority: u16,
    pub handle: u32,
}

impl Hook {
    pub fn new(program: &str, interface: &str, direction: Direction) -> Hook {
        Hook {
            program: program.to_string(),
            interface: interface.to_string(),
            direction,
            mode: Mode::Tcx,
            why: String::new(),
            priority: 0,
            handle: 0,
        }
    }

    fn pin_name(&self) -> String {
        format!("{}-{}", self.interface, self.direction.as_str())
    }
}

/// The netlink filter priority of a lab: its own, so its filters are told
/// apart from anyone else's on the same interface.
pub fn netlink_priority(lab: &str) -> u16 {
    let g = crate::model::plan::owner_group(lab);
    0x4000 | (g & 0x1fff) as u16
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    let p: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} is missing from the eBPF object"))?
        .try_into()?;
    Ok(p)
}

/// Attach (or swap in) every hook; pin programs and links; detach the
/// lab's links that are no longer wanted. Runs in the lab host's namespace.
pub fn attach_all(
    ebpf: &mut Ebpf,
    pins: &LabPins,
    lab: &str,
    hooks: Vec<Hook>,
    features: &Features,
) -> Result<Vec<Hook>> {
    let (tcx, why) = (features.tcx, features.tcx_why.clone());
    let names: BTreeSet<String> = hooks.iter().map(|h| h.program.clone()).collect();
    for name in &names {
        program(ebpf, name)?.load().with_context(|| {
            format!("loading program {name} (the kernel's verifier refused it)")
        })?;
    }
    let mut done = Vec::new();
    for mut hook in hooks {
        hook.why = why.clone();
        let prog = program(ebpf, &hook.program)?;
        if tcx {
            hook.mode = Mode::Tcx;
            attach_tcx(prog, pins, &hook).with_context(|| {
                format!(
                    "attaching {} to {} {}",
                    hook.program,
                    hook.interface,
                    hook.direction.as_str()
                )
            })?;
        } else {
            hook.mode = Mode::Netlink;
            hook.priority = netlink_priority(lab);
            hook.handle = 1;
            attach_netlink(prog, &hook).with_context(|| {
                format!(
                    "attaching {} to {} {}",
                    hook.program,
                    hook.interface,
                    hook.direction.as_str()
                )
            })?;
        }
        done.push(hook);
    }
    for name in &names {
        let path = pins.progs().join(name);
        let _ = fs::remove_file(&path);
        program(ebpf, name)?
            .pin(&path)
            .with_context(|| format!("pinning program {name}"))?;
    }
    // Links of hooks that went away (a removed bridge, a changed uplink).
    let wanted: BTreeSet<String> = done
        .iter()
        .filter(|h| h.mode == Mode::Tcx)
        .map(|h| h.pin_name())
        .collect();
    if let Ok(entries) = fs::read_dir(pins.links()) {
        for e in entries.flatten() {
            if !wanted.contains(&e.file_name().to_string_lossy().to_string()) {
                fs::remove_file(e.path())
                    .with_context(|| format!("unpinning {}", e.path().display()))?;
            }
        }
    }
    Ok(done)
}

fn attach_tcx(prog: &mut SchedClassifier, pins: &LabPins, hook: &Hook) -> Result<()> {
    let pin = pins.links().join(hook.pin_name());
    if pin.exists() {
        // Swap the new program into the pinned link: one atomic update, no
        // moment without NAT.
        let swapped = PinnedLink::from_pin(&pin)
            .map_err(anyhow::Error::from)
            .and_then(|old| {
                SchedClassifierLink::try_from(FdLink::from(old)).map_err(anyhow::Error::from)
            })
            .and_then(|link| prog.attach_to_link(link).map_err(anyhow::Error::from));
        match swapped {
            // The pin keeps the link; our handle to it can go.
            Ok(id) => {
                drop(prog.take_link(id)?);
                return Ok(());
            }
            // A link whose interface was deleted and re-created is defunct.
            Err(_) => {
                fs::remove_file(&pin).with_context(|| format!("unpinning {}", pin.display()))?
            }
        }
    }
    let id = prog.attach_with_options(
        &hook.interface,
        hook.direction.tc(),
        TcAttachOptions::TcxOrder(LinkOrder::default()),
    )?;
    let link: FdLink = prog.take_link(id)?.try_into()?;
    link.pin(&pin)
        .with_context(|| format!("pinning {}", pin.display()))?;
    Ok(())
}

fn attach_netlink(prog: &mut SchedClassifier, hook: &Hook) -> Result<()> {
    if let Err(e) = tc::qdisc_add_clsact(&hook.interface) {
        // Already there (ours or someone else's) is fine.
        if !matches!(&e, tc::TcError::AlreadyAttached) && !e.to_string().contains("exists") {
            return Err(e).context("adding the clsact qdisc");
        }
    }
    let handle = TcHandle::from(hook.handle);
    let existing = SchedClassifierLink::attached(
        &hook.interface,
        hook.direction.tc(),
        hook.priority,
        handle,
        None,
    )?;
    // Replace our own filter when it is there, create it otherwise.
    let id = match prog.attach_to_link(existing) {
        Ok(id) => id,
        Err(_) => prog.attach_with_options(
            &hook.interface,
            hook.direction.tc(),
            TcAttachOptions::Netlink(NlOptions {
                priority: hook.priority,
                handle,
                classid: None,
            }),
        )?,
    };
    // Netlink filters stay without a process; forget ours without detaching.
    std::mem::forget(prog.take_link(id)?);
    Ok(())
}

/// Remove the lab's netlink filters (TCX links go with their pins).
/// Runs in the lab host's namespace.
pub fn detach_netlink(hooks: &[Hook]) -> usize {
    let mut n = 0;
    for h in hooks.iter().filter(|h| h.mode == Mode::Netlink) {
        let link = SchedClassifierLink::attached(
            &h.interface,
            h.direction.tc(),
            h.priority,
            TcHandle::from(h.handle),
            None,
        );
        if let Ok(link) = link {
            if aya::programs::links::Link::detach(link).is_ok() {
                n += 1;
            }
        }
    }
    n
}
