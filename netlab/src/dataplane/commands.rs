//! `netlab fwd`, `netlab nat list`, `netlab stats` and `netlab log`: they
//! work on the pinned maps of a live lab, never reloading programs.

use std::{
    mem::size_of,
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use netlab_common::{
    addr_octets, event, names, port_from_net, stat, Flow6Key, Flow6Value, FlowKey, FlowValue,
    Forward6Target, ForwardCounter, ForwardKey, ForwardTarget, NatConfig, CONFIG_LOG, DIR_ORIGINAL,
    HOOK_BRIDGE_INGRESS, HOOK_UPLINK_EGRESS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
    IPPROTO_UDP, STATE_FIN_ORIGINAL, STATE_FIN_REPLY, STATE_REPLIED, STATE_RST,
};
use serde::Serialize;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use super::{forward_entries, pins::LabPins};
use crate::{
    model::{
        host_conflicts,
        topology::{parse_port_range, ConfigError, Forward, Lab, Problem, Proto},
    },
    state::{LabDir, LabState},
};

/// A `netlab fwd` request, as plain values (the CLI parses into these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FwdRequest {
    Add {
        protocol: String,
        port: String,
        to: String,
        /// Forward a port the lab host listens on anyway.
        take_host_port: bool,
        /// Over IPv6 too (where the target has an IPv6 address).
        ipv6: bool,
    },
    Del {
        protocol: String,
        port: String,
    },
    List {
        json: bool,
    },
}

/// `state` (as the CLI resolved it) if its lab is up with a dataplane.
fn live(state: &LabState) -> Result<()> {
    if LabDir::of(&state.lab.name).read_state().is_none() {
        bail!("lab {} is not up", state.lab.name);
    }
    if super::read_info(&state.lab.name).is_none() {
        bail!(
            "lab {} has no NAT dataplane (no masquerade and no forwards)",
            state.lab.name
        );
    }
    Ok(())
}

fn parse_proto(protocol: &str) -> Result<Proto> {
    Proto::parse(protocol)
        .ok_or_else(|| usage_error("protocol", format!("`{protocol}` is not `tcp` or `udp`")))
}

fn usage_error(field: &str, message: String) -> anyhow::Error {
    ConfigError {
        source_name: "command line".into(),
        problems: vec![Problem {
            line: None,
            field: field.into(),
            message,
        }],
    }
    .into()
}

fn forwards_map(lab: &str) -> Result<HashMap<aya::maps::MapData, ForwardKey, ForwardTarget>> {
    Ok(HashMap::try_from(LabPins::new(lab).open("FORWARD_RULES")?)?)
}

/// Make the dataplane's forwards `forwards`, each keeping its counter if
/// it stays (a dataplane made before forwards were counted has no
/// counters: its forwards go uncounted until the next `up`).
fn write_forwards(lab: &Lab, forwards: &[Forward]) -> Result<()> {
    let pins = LabPins::new(&lab.name);
    let mut rules = forwards_map(&lab.name)?;
    let mut counters: Option<PerCpuArray<_, ForwardCounter>> =
        match pins.map(names::FORWARD_COUNTERS).exists() {
            true => Some(PerCpuArray::try_from(pins.open(names::FORWARD_COUNTERS)?)?),
            false => None,
        };
    super::fwd_counters::sync_forwards(&mut rules, counters.as_mut(), &forward_entries(forwards))?;
    // The bitmap the port search reads (a dataplane made before it reads
    // FORWARD_RULES instead, and has no such map).
    if pins.map(names::FORWARDED_PORTS).exists() {
        let mut bitmap: Array<_, u64> = Array::try_from(pins.open(names::FORWARDED_PORTS)?)?;
        super::forwarded_ports::sync(&rules, &mut bitmap)?;
    }
    // The IPv6 side (a dataplane made before it has no such map).
    if pins.map(names::FORWARD6_RULES).exists() {
        let mut rules6: HashMap<_, ForwardKey, Forward6Target> =
            HashMap::try_from(pins.open(names::FORWARD6_RULES)?)?;
        let want = super::fwd_counters::with_counters6(
            &rules,
            &super::contents::forward6_entries(lab, forwards),
        )?;
        super::fill::sync_entries(&mut rules6, names::FORWARD6_RULES, &want)?;
    }
    Ok(())
}

/// `netlab fwd`: edits the live forwards (the dataplane's map and the
/// state's `live_forwards`), never the lab's file or its `state.lab`.
pub async fn fwd_command(mut state: LabState, req: FwdRequest) -> Result<()> {
    live(&state)?;
    match req {
        FwdRequest::Add {
            protocol,
            port,
            to,
            take_host_port,
            ipv6,
        } => {
            let proto = parse_proto(&protocol)?;
            let ports = parse_port_range(&port).map_err(|e| usage_error("port", e))?;
            let mut live = live_lab(&state);
            let mut fwd = live
                .resolve_forward(proto, ports, &to)
                .map_err(|e| usage_error("to", e))?;
            fwd.take_host_port = take_host_port;
            fwd.ipv6 = ipv6;
            refuse_host_port(&state, &fwd).await?;
            live.add_forward(fwd.clone())
                .map_err(|e| usage_error("port", e))?;
            write_forwards(&live, &live.forwards).context("adding the forward to FORWARD_RULES")?;
            println!("forward {fwd} added to lab {}", state.lab.name);
            save_live_forwards(&mut state, live.forwards)
        }
        FwdRequest::Del { protocol, port } => {
            let proto = parse_proto(&protocol)?;
            let ports = parse_port_range(&port).map_err(|e| usage_error("port", e))?;
            let mut live = live_lab(&state);
            let removed = live
                .remove_forward_ports(proto, ports)
                .map_err(|e| anyhow!("lab {}: {e}", state.lab.name))?;
            write_forwards(&live, &live.forwards)
                .context("removing the forward from FORWARD_RULES")?;
            println!(
                "forward {} removed from lab {} (connections through it live on until idle)",
                removed.removed, state.lab.name
            );
            for kept in &removed.kept {
                println!("  kept: {kept}");
            }
            save_live_forwards(&mut state, live.forwards)
        }
        FwdRequest::List { json } => list_forwards(&state, json),
    }
}

/// Refuse a forward of a port the lab host listens on (naming who), as
/// `up` does for the file's forwards, unless it says `take_host_port`.
async fn refuse_host_port(state: &LabState, fwd: &Forward) -> Result<()> {
    let host = crate::netns::Netns::host(state.host_netns.as_deref())?;
    let facts = crate::host_facts::gather(&host).await?;
    let uplink = super::read_info(&state.lab.name).map(|i| i.uplink_address);
    match host_conflicts::forward_conflict(fwd, uplink, &facts) {
        None => Ok(()),
        Some(why) => Err(usage_error(
            "port",
            format!("{why} (on the command line: `fwd add --take-host-port`)"),
        )),
    }
}

/// The lab as the dataplane has it: the file's, with the live forwards
/// (what `fwd` checks against and edits; `state.lab` stays the file's).
fn live_lab(state: &LabState) -> crate::model::topology::Lab {
    let mut live = state.lab.clone();
    live.forwards = state.forwards().to_vec();
    live
}

fn save_live_forwards(state: &mut LabState, forwards: Vec<Forward>) -> Result<()> {
    state.live_forwards = (forwards != state.lab.forwards).then_some(forwards);
    LabDir::of(&state.lab.name).write_state(state)
}

fn list_forwards(state: &LabState, json: bool) -> Result<()> {
    let map = forwards_map(&state.lab.name)?;
    let live: std::collections::HashMap<ForwardKey, ForwardTarget> =
        map.iter().filter_map(|r| r.ok()).collect();
    let rows: Vec<(&Forward, bool)> = state
        .forwards()
        .iter()
        .map(|f| {
            let complete = forward_entries(std::slice::from_ref(f))
                .iter()
                .flatten()
                .all(|(k, v)| live.get(k).is_some_and(|l| l.same_target(v)));
            (f, complete)
        })
        .collect();
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|(f, live)| {
                json!({
                    "protocol": f.proto,
                    "port": f.ports_text(),
                    "to": f.target_text(),
                    "target_address": f.target_addr,
                    "live": live,
                    "in_file": state.lab.forwards.contains(f),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if rows.is_empty() {
        println!("lab {} has no forwards", state.lab.name);
    } else {
        for (f, live) in rows {
            println!("{f}{}", if live { "" } else { "  [not in the dataplane]" });
        }
    }
    Ok(())
}

fn now_coarse_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

fn proto_name(p: u8) -> &'static str {
    match p {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_ICMP => "icmp",
        _ => "?",
    }
}

fn state_name(proto: u8, s: u8) -> &'static str {
    if proto == IPPROTO_TCP {
        if s & STATE_RST != 0 {
            "CLOSE"
        } else if s & STATE_FIN_ORIGINAL != 0 && s & STATE_FIN_REPLY != 0 {
            "TIME_WAIT"
        } else if s & (STATE_FIN_ORIGINAL | STATE_FIN_REPLY) != 0 {
            "FIN_WAIT"
        } else if s & STATE_REPLIED != 0 {
            "ESTABLISHED"
        } else {
            "SYN_SENT"
        }
    } else if s & STATE_REPLIED != 0 {
        "REPLIED"
    } else {
        "UNREPLIED"
    }
}

#[derive(Serialize)]
pub struct Endpoints {
    pub src: String,
    pub dst: String,
}

fn endpoint(addr: u32, port: u16, proto: u8) -> String {
    let ip = Ipv4Addr::from(addr_octets(addr));
    if proto == IPPROTO_ICMP {
        let id = port_from_net(port);
        if id == 0 {
            ip.to_string()
        } else {
            format!("{ip} id={id}")
        }
    } else {
        format!("{ip}:{}", port_from_net(port))
    }
}

#[derive(Serialize)]
/// One live flow, as `nat list` shows it.
pub struct FlowRow {
    pub protocol: &'static str,
    pub kind: &'static str,
    pub state: &'static str,
    pub original: Endpoints,
    pub translated: Endpoints,
    pub reply: Option<Endpoints>,
    pub age_s: u64,
    pub idle_s: u64,
    pub expires_s: u64,
    pub packets: u64,
    pub bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
}

/// The live flows of `lab` (expired ones left out), sorted.
pub fn flows(lab: &str) -> Result<Vec<FlowRow>> {
    let pins = LabPins::new(lab);
    let table: HashMap<_, FlowKey, FlowValue> = HashMap::try_from(pins.open("NAT_FLOWS")?)?;
    let cfg: Array<_, NatConfig> = Array::try_from(pins.open("CONFIG")?)?;
    let cfg = cfg.get(&0, 0).context("reading CONFIG")?;
    let entries: std::collections::HashMap<FlowKey, FlowValue> =
        table.iter().filter_map(|r| r.ok()).collect();
    let now = now_coarse_ns();
    let mut rows = Vec::new();
    for (k, v) in &entries {
        if v.dir != DIR_ORIGINAL {
            continue;
        }
        let peer = entries.get(&FlowKey::peer_of(v, k.proto));
        let last = v
            .last_seen_ns
            .max(peer.map(|p| p.last_seen_ns).unwrap_or(0));
        let timeout =
            u64::from(netlab_ebpf::flow_timeout_secs(&cfg, k.proto, v.state)) * 1_000_000_000;
        let expires = (last + timeout).saturating_sub(now);
        if expires == 0 {
            continue;
        }
        rows.push(FlowRow {
            protocol: proto_name(k.proto),
            kind: netlab_common::kind_name(v.kind),
            state: state_name(k.proto, v.state),
            original: Endpoints {
                src: endpoint(k.src_addr, k.src_port, k.proto),
                dst: endpoint(k.dst_addr, k.dst_port, k.proto),
            },
            translated: Endpoints {
                src: endpoint(v.src_addr, v.src_port, k.proto),
                dst: endpoint(v.dst_addr, v.dst_port, k.proto),
            },
            reply: peer.map(|p| Endpoints {
                src: endpoint(p.src_addr, p.src_port, k.proto),
                dst: endpoint(p.dst_addr, p.dst_port, k.proto),
            }),
            age_s: now.saturating_sub(v.created_ns) / 1_000_000_000,
            idle_s: now.saturating_sub(last) / 1_000_000_000,
            expires_s: expires / 1_000_000_000,
            packets: v.packets,
            bytes: v.bytes,
            reply_packets: peer.map(|p| p.packets).unwrap_or(0),
            reply_bytes: peer.map(|p| p.bytes).unwrap_or(0),
        });
    }
    rows.extend(flows6(&pins, &cfg, now)?);
    rows.sort_by(|a, b| {
        (a.protocol, &a.original.src, &a.original.dst).cmp(&(
            b.protocol,
            &b.original.src,
            &b.original.dst,
        ))
    });
    Ok(rows)
}

/// The live IPv6 flows (`NAT6_FLOWS`; none in a dataplane made before it).
fn flows6(pins: &LabPins, cfg: &NatConfig, now: u64) -> Result<Vec<FlowRow>> {
    if !pins.map(names::NAT6_FLOWS).exists() {
        return Ok(Vec::new());
    }
    let table: HashMap<_, Flow6Key, Flow6Value> = HashMap::try_from(pins.open(names::NAT6_FLOWS)?)?;
    let entries: std::collections::HashMap<Flow6Key, Flow6Value> =
        table.iter().filter_map(|r| r.ok()).collect();
    let mut rows = Vec::new();
    for (k, v) in entries.iter().filter(|(_, v)| v.dir == DIR_ORIGINAL) {
        let timeout =
            u64::from(netlab_ebpf::flow_timeout_secs(cfg, k.proto, v.state)) * 1_000_000_000;
        let expires = (v.last_seen_ns + timeout).saturating_sub(now);
        if expires == 0 {
            continue;
        }
        let peer = entries.get(&v.peer);
        let ep = |a: [u8; 16], port: u16| endpoint6(a, port, k.proto);
        // Masquerade rewrites the source going out; a forward, the
        // destination coming in; hairpin, both.
        let to = Endpoints {
            src: ep(k.src_addr, k.src_port),
            dst: ep(v.addr, v.port),
        };
        let (kind, translated) = match v.hook {
            HOOK_UPLINK_EGRESS => {
                let port = if k.proto == IPPROTO_ICMPV6 {
                    0
                } else {
                    k.dst_port
                };
                let src = ep(v.addr, v.port);
                (
                    "snat",
                    Endpoints {
                        src,
                        dst: ep(k.dst_addr, port),
                    },
                )
            }
            HOOK_BRIDGE_INGRESS => {
                let src = ep(cfg.uplink_addr6, v.hairpin_sport);
                ("hairpin", Endpoints { src, ..to })
            }
            _ => ("dnat", to),
        };
        rows.push(FlowRow {
            protocol: proto_name6(k.proto),
            kind,
            state: state_name(k.proto, v.state),
            original: Endpoints {
                src: ep(k.src_addr, k.src_port),
                dst: ep(k.dst_addr, k.dst_port),
            },
            translated,
            reply: Some(Endpoints {
                src: ep(v.peer.src_addr, v.peer.src_port),
                dst: ep(v.peer.dst_addr, v.peer.dst_port),
            }),
            age_s: now.saturating_sub(v.created_ns) / 1_000_000_000,
            idle_s: now.saturating_sub(v.last_seen_ns) / 1_000_000_000,
            expires_s: expires / 1_000_000_000,
            packets: v.packets,
            bytes: v.bytes,
            reply_packets: peer.map(|p| p.packets).unwrap_or(0),
            reply_bytes: peer.map(|p| p.bytes).unwrap_or(0),
        });
    }
    Ok(rows)
}

fn proto_name6(p: u8) -> &'static str {
    if p == IPPROTO_ICMPV6 {
        "icmp6"
    } else {
        proto_name(p)
    }
}

/// `[addr]:port`, or for echo `addr id=N` (the identifier on the side
/// that chose it).
fn endpoint6(addr: [u8; 16], port: u16, proto: u8) -> String {
    let ip = std::net::Ipv6Addr::from(addr);
    if proto == IPPROTO_ICMPV6 {
        match port_from_net(port) {
            0 => ip.to_string(),
            id => format!("{ip} id={id}"),
        }
    } else {
        format!("[{ip}]:{}", port_from_net(port))
    }
}

/// `netlab nat list`.
pub async fn nat_command(state: &LabState, json: bool) -> Result<()> {
    live(state)?;
    let rows = flows(&state.lab.name)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for r in &rows {
        println!(
            "{:<4} {:<7} {:<11} {} -> {}  as {} -> {}  {} pkts {} B / {} pkts {} B  idle {}s expires {}s",
            r.protocol,
            r.kind,
            r.state,
            r.original.src,
            r.original.dst,
            r.translated.src,
            r.translated.dst,
            r.packets,
            r.bytes,
            r.reply_packets,
            r.reply_bytes,
            r.idle_s,
            r.expires_s
        );
    }
    println!("{} flows", rows.len());
    Ok(())
}

/// Per-CPU counters summed, by name.
pub fn read_stats(lab: &str) -> Result<Vec<(&'static str, u64)>> {
    let stats: PerCpuArray<_, u64> = PerCpuArray::try_from(LabPins::new(lab).open("STATS")?)?;
    let mut out = Vec::new();
    for (i, name) in stat::NAMES.iter().enumerate() {
        let values = stats
            .get(&(i as u32), 0)
            .with_context(|| format!("reading counter {name}"))?;
        out.push((*name, values.iter().sum()));
    }
    Ok(out)
}

/// `stats --json`: the counters by name.
pub fn stats_json(stats: &[(&'static str, u64)]) -> serde_json::Value {
    stats
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

pub async fn stats_command(state: &LabState, json_out: bool, follow_log: bool) -> Result<()> {
    let lab = &state.lab.name;
    if super::read_info(lab).is_none() {
        bail!("lab {lab} has no NAT dataplane up");
    }
    let stats = read_stats(lab)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&stats_json(&stats))?);
    } else {
        for (k, v) in &stats {
            println!("{k:<24} {v}");
        }
    }
    if follow_log {
        log_command(lab, None).await?;
    }
    Ok(())
}

/// One line of `netlab log` for an event of the programs (the format
/// README documents; `[DEBUG]` as the aya-log lines it replaces had it).
pub fn event_line(e: &event::Event) -> String {
    let at = |addr: u32, port: u16| {
        format!(
            "{}:{}",
            Ipv4Addr::from(addr_octets(addr)),
            port_from_net(port)
        )
    };
    let (k, t) = (&e.opening, &e.translated);
    line(
        e.what,
        [
            at(k.src_addr, k.src_port),
            at(k.dst_addr, k.dst_port),
            at(t.src_addr, t.src_port),
            at(t.dst_addr, t.dst_port),
        ],
        k.proto,
        port_from_net(k.dst_port),
    )
}

/// [`event_line`] for an IPv6 flow's event (addresses in brackets).
pub fn event_line6(e: &event::Event6) -> String {
    let at =
        |addr: &[u8; 16], port: u16| format!("[{}]:{}", Ipv6Addr::from(*addr), port_from_net(port));
    let (k, t) = (&e.opening, &e.translated);
    line(
        e.what,
        [
            at(&k.src_addr, k.src_port),
            at(&k.dst_addr, k.dst_port),
            at(&t.src_addr, t.src_port),
            at(&t.dst_addr, t.dst_port),
        ],
        k.proto,
        port_from_net(k.dst_port),
    )
}

/// An event's line from its endpoints as written: the packet's source and
/// destination, then as translated; its protocol and destination port.
fn line(what: u32, [src, dst, to_src, to_dst]: [String; 4], proto: u8, dport: u16) -> String {
    match (what, event::new_flow_place(what)) {
        (_, Some(place)) => {
            format!(
                "[DEBUG] new {place}: {src} -> {dst} as {to_src} -> {to_dst}, ip protocol {proto}"
            )
        }
        (event::NO_MAPPING, None) => format!("[DEBUG] no mapping for {src} -> port {dport}"),
        (event::NO_FREE_PORT, None) => format!("[DEBUG] no free port for {src}"),
        (what, None) => format!("[DEBUG] event {what} of a newer netlab's programs"),
    }
}

/// Print every event waiting in the ring (IPv4's and IPv6's, told apart
/// by their size).
fn print_events(ring: &mut RingBuf<MapData>) {
    while let Some(item) = ring.next() {
        if let Ok(e) = bytemuck::try_pod_read_unaligned::<event::Event>(&item) {
            println!("{}", event_line(&e));
        } else if let Ok(e) = bytemuck::try_pod_read_unaligned::<event::Event6>(&item) {
            println!("{}", event_line6(&e));
        } else {
            eprintln!(
                "netlab: an event of {} bytes, neither {} nor {}",
                item.len(),
                size_of::<event::Event>(),
                size_of::<event::Event6>()
            );
        }
    }
}

/// Stream the programs' events (their `FLOW_EVENTS` ring buffer) until
/// Ctrl-C or `duration`. Turns the programs' events on while it runs.
pub async fn log_command(lab: &str, duration: Option<Duration>) -> Result<()> {
    let pins = LabPins::new(lab);
    let ring = RingBuf::try_from(pins.open(names::FLOW_EVENTS)?)
        .with_context(|| format!("lab {lab}'s {} map", names::FLOW_EVENTS))?;
    let mut cfg: Array<_, NatConfig> = Array::try_from(pins.open("CONFIG")?)?;
    let set_log = |cfg: &mut Array<_, NatConfig>, on: bool| -> Result<()> {
        let mut c = cfg.get(&0, 0)?;
        c.flags = if on {
            c.flags | CONFIG_LOG
        } else {
            c.flags & !CONFIG_LOG
        };
        cfg.set(0, c, 0)?;
        Ok(())
    };
    // Listen before saying so: a Ctrl-C that comes before the listener
    // kills the process, and one that comes between two short-lived
    // listeners (a `ctrl_c()` per turn of the loop) is lost, leaving a
    // `netlab log` that no Ctrl-C ends.
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    set_log(&mut cfg, true)?;
    eprintln!("netlab: streaming lab {lab}'s dataplane log (Ctrl-C to stop)");
    // SAFETY: the ring owns its map's fd, and the AsyncFd owns the ring.
    let mut fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)
    }
    .map_err(|e| anyhow!("watching the events ring buffer: {e}"))?;
    let until = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    let result = loop {
        tokio::select! {
            _ = interrupt.recv() => break Ok(()),
            _ = terminate.recv() => break Ok(()),
            _ = &mut until => break Ok(()),
            ready = fd.readable_mut() => match ready {
                Ok(mut guard) => {
                    print_events(guard.get_inner_mut());
                    guard.clear_ready();
                }
                Err(e) => break Err(anyhow::Error::from(e)),
            },
        }
    };
    set_log(&mut cfg, false)?;
    print_events(fd.get_mut());
    result
}

#[cfg(test)]
mod tests {
    use netlab_common::{addr_from_octets, port_to_net, FlowKey, IPPROTO_TCP};

    use super::*;

    fn key(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> FlowKey {
        let (s, d) = (addr_from_octets(src), addr_from_octets(dst));
        FlowKey::new(s, d, port_to_net(sport), port_to_net(dport), IPPROTO_TCP)
    }

    #[test]
    fn events_read_as_readme_documents() {
        let new_flow = event::Event {
            what: event::NEW_SNAT_NODE,
            opening: key([192, 168, 15, 1], 40000, [198, 51, 100, 1], 80),
            translated: key([198, 51, 100, 2], 12345, [198, 51, 100, 1], 80),
            ..Default::default()
        };
        assert_eq!(
            event_line(&new_flow),
            "[DEBUG] new snat flow (node port, fast path): 192.168.15.1:40000 -> \
             198.51.100.1:80 as 198.51.100.2:12345 -> 198.51.100.1:80, ip protocol 6"
        );
        let dropped = event::Event {
            what: event::NO_MAPPING,
            opening: key([198, 51, 100, 1], 5000, [198, 51, 100, 2], 33000),
            ..Default::default()
        };
        assert_eq!(
            event_line(&dropped),
            "[DEBUG] no mapping for 198.51.100.1:5000 -> port 33000"
        );
        let no_port = event::Event {
            what: event::NO_FREE_PORT,
            ..dropped
        };
        assert_eq!(
            event_line(&no_port),
            "[DEBUG] no free port for 198.51.100.1:5000"
        );
    }

    #[test]
    fn ipv6_events_read_with_their_addresses_in_brackets() {
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap().octets();
        let key = |src: &str, sport: u16, dst: &str, dport: u16| {
            Flow6Key::new(
                a(src),
                a(dst),
                port_to_net(sport),
                port_to_net(dport),
                IPPROTO_TCP,
            )
        };
        let new_flow = event::Event6 {
            what: event::NEW_SNAT_OUT,
            opening: key("fd00:15::1", 40000, "2001:db8:100::1", 80),
            translated: key("2001:db8:100::2", 12345, "2001:db8:100::1", 80),
            ..Default::default()
        };
        assert_eq!(
            event_line6(&new_flow),
            "[DEBUG] new snat flow (uplink egress): [fd00:15::1]:40000 -> \
             [2001:db8:100::1]:80 as [2001:db8:100::2]:12345 -> [2001:db8:100::1]:80, \
             ip protocol 6"
        );
        let no_port = event::Event6 {
            what: event::NO_FREE_PORT,
            ..new_flow
        };
        assert_eq!(
            event_line6(&no_port),
            "[DEBUG] no free port for [fd00:15::1]:40000"
        );
    }

    #[test]
    fn every_new_flow_place_has_a_line() {
        for what in event::NEW_SNAT_OUT..=event::NEW_LOCAL {
            assert!(event::new_flow_place(what).is_some(), "{what}");
        }
    }
}
