//! `netlab capture`: packets on a node's interface, the uplink or a bridge,
//! written as standard pcap (a file, or stdout for `| tcpdump -r -` and
//! `| wireshark -k -i -`). libpcap opens the capture, compiles the filter
//! (tcpdump's syntax) and writes the file. The capture is opened inside the
//! namespace that has the interface and changes nothing there: not
//! promiscuous, no filter attached but the capture socket's own.

use std::{
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{anyhow, bail, Context as _, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::{dataplane, netns::Netns, state::LabState};

/// What `capture` was asked for.
pub struct Request {
    /// `NODE`, `NODE:IFACE`, `uplink` or a bridge's name.
    pub target: String,
    /// `None` or `-`: stdout.
    pub write: Option<PathBuf>,
    pub count: Option<u64>,
    /// tcpdump filter words, joined with spaces.
    pub filter: Vec<String>,
}

/// Where to capture: an interface in a namespace.
#[derive(Debug, PartialEq, Eq)]
pub struct Place {
    /// `None`: the namespace netlab runs in (a lab host that is not a named one).
    pub netns: Option<String>,
    pub interface: String,
}

impl Place {
    fn label(&self) -> String {
        match &self.netns {
            Some(n) => format!("{} in netns {n}", self.interface),
            None => format!("{} on the lab host", self.interface),
        }
    }
}

/// Where `target` is in lab `state`: `uplink` and bridges on the lab host,
/// anything else a node, with the interface after `:` (default: its only
/// one, or libpcap's `any` for a node with several).
pub fn resolve(state: &LabState, target: &str) -> Result<Place> {
    let lab = &state.lab;
    let on_host = |interface: String| Place {
        netns: state.host_netns.clone(),
        interface,
    };
    if target == "uplink" {
        let interface = dataplane::read_info(&lab.name)
            .map(|i| i.uplink)
            .or_else(|| lab.uplink.interface.clone())
            .ok_or_else(|| {
                anyhow!(
                    "lab {} uses no uplink (it neither masquerades nor forwards)",
                    lab.name
                )
            })?;
        return Ok(on_host(interface));
    }
    if lab.bridge(target).is_some() {
        return Ok(on_host(target.to_string()));
    }
    let (node_name, iface) = match target.split_once(':') {
        Some((n, i)) => (n, Some(i)),
        None => (target, None),
    };
    let Some(node) = lab.node(node_name) else {
        let mut names: Vec<&str> = vec!["uplink"];
        names.extend(lab.bridges.iter().map(|b| b.name.as_str()));
        names.extend(lab.nodes.iter().map(|n| n.name.as_str()));
        bail!(
            "lab {} has no node or bridge {node_name} (capture on: {})",
            lab.name,
            names.join(", ")
        );
    };
    let interface = match iface {
        Some(i) if i == "lo" || i == "any" || node.interfaces.iter().any(|x| x.name == i) => {
            i.to_string()
        }
        Some(i) => {
            let names: Vec<&str> = node.interfaces.iter().map(|x| x.name.as_str()).collect();
            bail!(
                "node {} has no interface {i} (its interfaces: {}, lo, any)",
                node.name,
                names.join(", ")
            );
        }
        None if node.interfaces.len() == 1 => node.interfaces[0].name.clone(),
        None => "any".to_string(),
    };
    Ok(Place {
        netns: Some(node.netns.clone()),
        interface,
    })
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// How often the capture loop looks at Ctrl-C when no packet comes.
const POLL_MS: i32 = 100;

/// Capture at `place` as `req` says, until COUNT packets, Ctrl-C, SIGTERM or
/// the reader of stdout going away; the file is complete at each packet.
/// Enters the namespace on the calling thread: run it before any other
/// thread exists.
pub fn run(place: &Place, req: &Request) -> Result<()> {
    if let Some(n) = &place.netns {
        let ns = Netns::open(n)?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering netns {n}"))?;
    }
    let what = || format!("capturing on {}", place.label());
    // Non-blocking, waited on here: libpcap's own wait on an idle
    // interface does not end on a signal.
    let mut cap = pcap::Capture::from_device(place.interface.as_str())
        .and_then(|c| c.promisc(false).immediate_mode(true).open())
        .and_then(|c| c.setnonblock())
        .with_context(what)?;
    if !req.filter.is_empty() {
        let filter = req.filter.join(" ");
        cap.filter(&filter, true)
            .with_context(|| format!("filter `{filter}`"))?;
    }
    let out = req.write.clone().unwrap_or_else(|| PathBuf::from("-"));
    let mut save = cap
        .savefile(&out)
        .with_context(|| format!("opening {} for the capture", out.display()))?;
    let stop = SigAction::new(
        SigHandler::Handler(on_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(sig, &stop) }.context("setting a signal handler")?;
    }
    eprintln!("netlab: {}", what());
    let mut n: u64 = 0;
    'capture: while !STOP.load(Ordering::SeqCst) {
        wait_readable(cap.as_raw_fd()).with_context(what)?;
        loop {
            if req.count.is_some_and(|c| n >= c) || STOP.load(Ordering::SeqCst) {
                break 'capture;
            }
            match cap.next_packet() {
                Ok(p) => {
                    save.write(&p);
                    n += 1;
                    // Flushed at each packet: a reader sees it now, and an
                    // end at any moment leaves whole packets only.
                    if save.flush().is_err() {
                        break 'capture; // the reader went away (SIGPIPE is ignored)
                    }
                }
                Err(pcap::Error::TimeoutExpired) => break, // none waiting
                Err(e) => return Err(e).with_context(what),
            }
        }
    }
    eprintln!("netlab: {n} packets captured");
    Ok(())
}

/// Wait until `fd` has packets, at most [`POLL_MS`] (a signal ends the
/// wait early).
fn wait_readable(fd: std::os::fd::RawFd) -> Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("waiting for packets");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::validate::parse;

    fn state() -> LabState {
        let lab = parse(
            "lab.toml",
            r#"
            name = "c"
            [[bridges]]
            name = "v-net-0"
            subnet = "192.168.15.0/24"
            gateway = "192.168.15.5"
            [[nodes]]
            name = "red"
            bridge = "v-net-0"
            address = "192.168.15.1"
            [[nodes]]
            name = "r"
            interfaces = [
              { bridge = "v-net-0", address = "192.168.15.9" },
              { bridge = "v-net-0", address = "192.168.15.10" },
            ]
            "#,
        )
        .unwrap();
        LabState {
            lab,
            host_netns: Some("c-host".into()),
            sandbox: true,
            source: None,
            enabled_host_forwarding: false,
            enabled_host_forwarding6: false,
            live_forwards: None,
        }
    }

    #[test]
    fn targets_resolve_to_an_interface_in_a_namespace() {
        let s = state();
        let at = |ns: &str, i: &str| Place {
            netns: Some(ns.into()),
            interface: i.into(),
        };
        assert_eq!(resolve(&s, "red").unwrap(), at("red", "veth-red"));
        assert_eq!(resolve(&s, "red:lo").unwrap(), at("red", "lo"));
        assert_eq!(resolve(&s, "r").unwrap(), at("r", "any"));
        assert_eq!(resolve(&s, "r:eth1").unwrap(), at("r", "eth1"));
        assert_eq!(resolve(&s, "v-net-0").unwrap(), at("c-host", "v-net-0"));
        let e = resolve(&s, "red:eth7").unwrap_err().to_string();
        assert_eq!(
            e,
            "node red has no interface eth7 (its interfaces: veth-red, lo, any)"
        );
        let e = resolve(&s, "green").unwrap_err().to_string();
        assert!(e.contains("no node or bridge green"), "{e}");
    }
}
