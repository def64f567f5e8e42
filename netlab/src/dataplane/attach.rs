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
    /// Netlink filters only: the lab's priority and handle, and whether
    /// netlab added the interface's clsact qdisc (then `down` removes it
    /// once no filter is left on it).
    pub priority: u16,
    pub handle: u32,
    #[serde(default)]
    pub created_qdisc: bool,
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
            created_qdisc: false,
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

/// Put every loaded program that has a slot into `TAILS`: the tail-only
/// ones, and the hooks `nl_gc` hands packets back to.
pub fn wire_tails(ebpf: &mut Ebpf) -> Result<()> {
    for (name, slot) in super::TAIL_SLOTS {
        let Some(fd) = ebpf
            .program(name)
            .and_then(|p| p.fd().ok())
            .map(|fd| fd.try_clone())
            .transpose()?
        else {
            continue;
        };
        let mut array: aya::maps::ProgramArray<_> =
            aya::maps::ProgramArray::try_from(ebpf.map_mut("TAILS").context("map TAILS")?)?;
        array
            .set(slot, &fd, 0)
            .with_context(|| format!("putting {name} into TAILS"))?;
    }
    Ok(())
}

/// Load (verify) every program of the object and fill `TAILS`, for runs
/// through `BPF_PROG_TEST_RUN` (the fuzz harness, the micro-benchmark):
/// fresh maps, nothing attached.
pub fn load_every_program(ebpf: &mut Ebpf) -> Result<()> {
    let names: BTreeSet<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    load_programs(ebpf, &names)
}

/// Load (verify) those of `names` not loaded yet, then fill `TAILS` with
/// every loaded program that has a slot.
pub fn load_programs(ebpf: &mut Ebpf, names: &BTreeSet<String>) -> Result<()> {
    for name in names {
        let prog = program(ebpf, name)?;
        if prog.fd().is_err() {
            prog.load().with_context(|| {
                format!("loading program {name} (the kernel's verifier refused it)")
            })?;
        }
    }
    wire_tails(ebpf)
}

/// Who hands packets to whom by tail call: a program, the programs it
/// reaches with any packet, and those it reaches only with IPv6 packets
/// (for a lab that translates IPv6). `nl_gc` hands the packet back to the
/// program it came from, which is loaded already.
const TAIL_CALLS: [(&str, &[&str], &[&str]); 10] = [
    (
        super::PROG_UPLINK_OUT,
        &[super::PROG_GC],
        &[super::PROG_UPLINK_OUT6],
    ),
    (
        super::PROG_UPLINK_IN,
        &[super::PROG_GC],
        &[super::PROG_UPLINK_IN6],
    ),
    (
        super::PROG_BRIDGE_IN,
        &[super::PROG_GC],
        &[super::PROG_BRIDGE_IN6],
    ),
    (
        super::PROG_NODE_IN,
        &[super::PROG_NODE_NEW],
        &[super::PROG_NODE_IN6],
    ),
    (super::PROG_NODE_NEW, &[super::PROG_GC], &[]),
    (
        super::PROG_LOCAL_OUT,
        &[super::PROG_GC],
        &[super::PROG_LOCAL_OUT6],
    ),
    (super::PROG_UPLINK_OUT6, &[super::PROG_GC6], &[]),
    (super::PROG_UPLINK_IN6, &[super::PROG_GC6], &[]),
    (super::PROG_BRIDGE_IN6, &[super::PROG_GC6], &[]),
    (super::PROG_LOCAL_OUT6, &[super::PROG_GC6], &[]),
];

/// `programs` and every program they reach by tail call, the IPv6 ones
/// only with `ipv6`: what must be loaded for them to run.
pub fn with_tail_targets<'a>(
    programs: impl IntoIterator<Item = &'a str>,
    ipv6: bool,
) -> BTreeSet<String> {
    let mut todo: Vec<&str> = programs.into_iter().collect();
    let mut all = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !all.insert(name.to_string()) {
            continue;
        }
        for (from, any, v6) in TAIL_CALLS {
            if from == name {
                todo.extend(any.iter().copied());
                if ipv6 {
                    todo.extend(v6.iter().copied());
                }
            }
        }
    }
    all
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    let p: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} is missing from the eBPF object"))?
        .try_into()?;
    Ok(p)
}

/// Attach (or swap in) every hook; pin programs and links; detach the
/// lab's links that are no longer wanted. The IPv6 programs are loaded
/// only for a lab that translates IPv6 (`ipv6`). Runs in the lab host's
/// namespace.
pub fn attach_all(
    ebpf: &mut Ebpf,
    pins: &LabPins,
    lab: &str,
    hooks: Vec<Hook>,
    previous: &[Hook],
    features: &Features,
    ipv6: bool,
) -> Result<Vec<Hook>> {
    let (tcx, why) = (features.tcx, features.tcx_why.clone());
    // Interfaces whose clsact qdisc netlab added (in an earlier run or this one).
    let mut our_qdiscs: BTreeSet<String> = previous
        .iter()
        .filter(|h| h.created_qdisc)
        .map(|h| h.interface.clone())
        .collect();
    // Programs only reached by tail call are loaded, pinned and wired into
    // the program array, never attached.
    let names = with_tail_targets(hooks.iter().map(|h| h.program.as_str()), ipv6);
    load_programs(ebpf, &names)?;
    let mut done = Vec::new();
    for mut hook in hooks {
        hook.why = why.clone();
        let prog = program(ebpf, &hook.program)?;
        let what = || {
            format!(
                "attaching {} to {} {}",
                hook.program,
                hook.interface,
                hook.direction.as_str()
            )
        };
        if tcx {
            hook.mode = Mode::Tcx;
            attach_tcx(prog, pins, &hook).with_context(what)?;
        } else {
            hook.mode = Mode::Netlink;
            hook.priority = netlink_priority(lab);
            hook.handle = 1;
            hook.created_qdisc = attach_netlink(prog, &hook, our_qdiscs.contains(&hook.interface))
                .with_context(what)?;
            if hook.created_qdisc {
                our_qdiscs.insert(hook.interface.clone());
            }
        }
        done.push(hook);
    }
    // Replacing the pin (the new programs are in the links by now)
    // releases the previous load's array, which the kernel then empties:
    // the old programs it held go with it.
    let tails_pin = pins.tails().join("TAILS");
    let _ = fs::remove_file(&tails_pin);
    ebpf.map("TAILS")
        .context("map TAILS")?
        .pin(&tails_pin)
        .context("pinning TAILS")?;
    for name in &names {
        let path = pins.progs().join(name);
        let _ = fs::remove_file(&path);
        program(ebpf, name)?
            .pin(&path)
            .with_context(|| format!("pinning program {name}"))?;
    }
    // Tail-only programs an earlier `up` loaded and this one did not (the
    // lab no longer translates IPv6).
    for (name, _) in super::TAIL_SLOTS {
        if !names.contains(name) {
            let _ = fs::remove_file(pins.progs().join(name));
        }
    }
    // Netlink filters of hooks that went away.
    let gone: Vec<Hook> = previous
        .iter()
        .filter(|h| h.mode == Mode::Netlink)
        .filter(|h| {
            !done.iter().any(|d| {
                d.mode == Mode::Netlink && d.interface == h.interface && d.direction == h.direction
            })
        })
        .cloned()
        .collect();
    detach_netlink(&gone);
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

/// Attach `hook` as a netlink filter; returns whether netlab's clsact qdisc
/// is on the interface (made now or, `ours`, earlier).
fn attach_netlink(prog: &mut SchedClassifier, hook: &Hook, ours: bool) -> Result<bool> {
    let created = match tc::qdisc_add_clsact(&hook.interface) {
        Ok(()) => true,
        // Already there (ours or someone else's) is fine.
        Err(tc::TcError::AlreadyAttached) => ours,
        Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => ours,
        Err(e) => return Err(e).context("adding the clsact qdisc"),
    };
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
    Ok(created)
}

/// Remove the lab's netlink filters (TCX links go with their pins), and the
/// clsact qdiscs netlab added once nothing else is filtered there. Runs in
/// the lab host's namespace; returns how many objects went.
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
    let ours: BTreeSet<&str> = hooks
        .iter()
        .filter(|h| h.mode == Mode::Netlink && h.created_qdisc)
        .map(|h| h.interface.as_str())
        .collect();
    for ifname in ours {
        if remove_clsact_if_empty(ifname).unwrap_or(false) {
            n += 1;
        }
    }
    n
}

/// Delete `ifname`'s clsact qdisc when it holds no filter any more.
fn remove_clsact_if_empty(ifname: &str) -> Result<bool> {
    use futures::TryStreamExt as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let ifname = ifname.to_string();
    rt.block_on(async move {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        let Some(link) = crate::netlink::link_by_name(&handle, &ifname).await? else {
            return Ok(false);
        };
        let index = link.index as i32;
        for ingress in [true, false] {
            let mut tc = handle.traffic_filter(index);
            let req = tc.get();
            let req = if ingress { req.ingress() } else { req.egress() };
            let filters: Vec<_> = req
                .execute()
                .try_collect()
                .await
                .map_err(crate::netlink::nl)?;
            if !filters.is_empty() {
                return Ok(false);
            }
        }
        let mut qdisc = handle.qdisc();
        let mut del = qdisc.del(index);
        // clsact: parent TC_H_CLSACT, handle ffff:0.
        del.message_mut().header.parent = 0xffff_fff1.into();
        del.message_mut().header.handle = 0xffff_0000.into();
        del.execute().await.map_err(crate::netlink::nl)?;
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn an_ipv4_lab_loads_no_ipv6_program() {
        let hooks = [
            PROG_UPLINK_OUT,
            PROG_UPLINK_IN,
            PROG_BRIDGE_IN,
            PROG_NODE_IN,
            PROG_LOCAL_OUT,
        ];
        let mut want = set(&hooks);
        want.extend(set(&[PROG_GC, PROG_NODE_NEW]));
        assert_eq!(with_tail_targets(hooks, false), want);
        want.extend(set(netlab_common::names::IPV6_PROGRAMS));
        assert_eq!(with_tail_targets(hooks, true), want);
    }

    #[test]
    fn tail_targets_are_followed_to_their_own_targets() {
        // nl_node_in reaches nl_gc only through nl_node_new.
        let want = set(&[PROG_NODE_IN, PROG_NODE_NEW, PROG_GC]);
        assert_eq!(with_tail_targets([PROG_NODE_IN], false), want);
        assert_eq!(
            with_tail_targets([PROG_HOST_PORT_IN], true),
            set(&[PROG_HOST_PORT_IN])
        );
    }
}
