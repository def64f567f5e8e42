//! Reads what the view shows from the system (effects): which labs are up
//! on a lab host, their interfaces' kernel counters (netlink, in the lab
//! host's and each node's namespace) and the dataplane's pinned maps.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};

use super::{
    graph::Live,
    metrics::{FlowCount, ForwardFigure, LabFigures, LinkFigure, Table},
};
use crate::{
    dataplane::{
        self,
        commands::FlowRow,
        fwd_counters::{self, ForwardTotals},
        pins::LabPins,
    },
    model::topology::{Attachment, Forward},
    netns::Netns,
    state::{self, LabState},
};

/// The labs up on lab host `host_netns` (`None`: this namespace), or only
/// the one named; read afresh on each call, so labs may come and go.
pub fn labs_on(host_netns: Option<&str>, name: Option<&str>) -> Vec<LabState> {
    state::known_states()
        .into_iter()
        .filter(|s| s.host_netns.as_deref() == host_netns)
        .filter(|s| name.is_none_or(|n| s.lab.name == n))
        .collect()
}

/// The lab host's name for the lab's uplink, if its dataplane is up.
fn uplink_name(state: &LabState) -> Option<String> {
    dataplane::read_info(&state.lab.name)
        .map(|i| i.uplink)
        .or_else(|| state.lab.uplink.interface.clone())
}

struct Counters {
    up: bool,
    rx_bytes: u64,
    tx_bytes: u64,
    rx_packets: u64,
    tx_packets: u64,
}

/// Every link of `ns` by name, with its counters.
async fn counters_in(ns: &Netns) -> Result<BTreeMap<String, Counters>> {
    let handle = ns.netlink().await?;
    let msgs = crate::netlink::link_messages(&handle)
        .await
        .with_context(|| format!("listing the links of {}", ns.label()))?;
    let mut out = BTreeMap::new();
    for m in &msgs {
        let mut name = None;
        let mut c = Counters {
            up: m.header.flags.contains(LinkFlags::Up),
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Stats64(s) => {
                    (c.rx_bytes, c.tx_bytes) = (s.rx_bytes, s.tx_bytes);
                    (c.rx_packets, c.tx_packets) = (s.rx_packets, s.tx_packets);
                }
                _ => {}
            }
        }
        if let Some(n) = name {
            out.insert(n, c);
        }
    }
    Ok(out)
}

fn figure(place: &str, interface: &str, role: &str, c: &Counters) -> LinkFigure {
    LinkFigure {
        place: place.into(),
        interface: interface.into(),
        role: role.into(),
        up: c.up,
        rx_bytes: c.rx_bytes,
        tx_bytes: c.tx_bytes,
        rx_packets: c.rx_packets,
        tx_packets: c.tx_packets,
    }
}

/// The lab's interfaces with the kernel's counters: the lab host's uplink,
/// bridges and bridge ports, and every node's interfaces. A namespace that
/// is gone contributes nothing.
pub async fn link_figures(state: &LabState) -> Result<Vec<LinkFigure>> {
    let lab = &state.lab;
    let mut out = Vec::new();
    let host = Netns::host(state.host_netns.as_deref())?;
    let on_host = counters_in(&host).await?;
    let mut wanted: Vec<(String, &str)> = Vec::new();
    if let Some(u) = uplink_name(state) {
        wanted.push((u, "uplink"));
    }
    wanted.extend(lab.bridges.iter().map(|b| (b.name.clone(), "bridge")));
    for i in lab.nodes.iter().flat_map(|n| &n.interfaces) {
        if let Attachment::Bridge { host_name, .. } = &i.attachment {
            wanted.push((host_name.clone(), "port"));
        }
    }
    for (name, role) in &wanted {
        if let Some(c) = on_host.get(name) {
            out.push(figure("lab-host", name, role, c));
        }
    }
    for n in &lab.nodes {
        let Ok(ns) = Netns::open(&n.netns) else {
            continue;
        };
        let Ok(links) = counters_in(&ns).await else {
            continue;
        };
        for i in &n.interfaces {
            if let Some(c) = links.get(&i.name) {
                out.push(figure(&n.name, &i.name, "node", c));
            }
        }
    }
    Ok(out)
}

/// What the picture shows of a lab that is up.
pub fn graph_live(state: &LabState, links: &[LinkFigure]) -> Live {
    let uplink = dataplane::read_info(&state.lab.name).map(|i| (i.uplink, i.uplink_address));
    let links = links
        .iter()
        .filter(|l| l.role == "node")
        .map(|l| ((l.place.clone(), l.interface.clone()), l.up))
        .collect();
    Live { uplink, links }
}

/// The lab as the picture shows it: the file's, with the live forwards.
pub fn drawn_lab(state: &LabState) -> crate::model::Lab {
    let mut lab = state.lab.clone();
    lab.forwards = state.forwards().to_vec();
    lab
}

/// The outside port of a flow's original destination (`addr:port`).
fn dst_port(row: &FlowRow) -> Option<u16> {
    row.original.dst.rsplit_once(':')?.1.parse().ok()
}

/// Each forward's live flows (from `rows`) and its totals (`totals`, in
/// the order of `forwards`; empty when they cannot be read).
fn forward_figures(
    forwards: &[Forward],
    rows: &[FlowRow],
    totals: &[Option<ForwardTotals>],
) -> Vec<ForwardFigure> {
    forwards
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mine: Vec<&FlowRow> = rows
                .iter()
                .filter(|r| matches!(r.kind, "dnat" | "hairpin"))
                .filter(|r| r.protocol == f.proto.to_string())
                .filter(|r| dst_port(r).is_some_and(|p| (f.port_first..=f.port_last).contains(&p)))
                .collect();
            ForwardFigure {
                forward: format!("{}/{} -> {}", f.proto, f.ports_text(), f.target_text()),
                flows: mine.len() as u64,
                packets: mine.iter().map(|r| r.packets + r.reply_packets).sum(),
                bytes: mine.iter().map(|r| r.bytes + r.reply_bytes).sum(),
                total: totals.get(i).copied().flatten(),
            }
        })
        .collect()
}

fn flow_counts(rows: &[FlowRow]) -> Vec<FlowCount> {
    let mut by: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for r in rows {
        *by.entry((r.protocol, r.kind)).or_default() += 1;
    }
    by.into_iter()
        .map(|((p, k), n)| FlowCount {
            protocol: p.into(),
            kind: k.into(),
            flows: n,
        })
        .collect()
}

/// Everything `/metrics` says about one lab. Parts that cannot be read (no
/// dataplane, a namespace gone) are left out rather than failing the scrape.
pub async fn lab_figures(state: &LabState) -> LabFigures {
    let name = &state.lab.name;
    let mut f = LabFigures {
        lab: name.clone(),
        links: link_figures(state).await.unwrap_or_default(),
        ..LabFigures::default()
    };
    let Some(info) = dataplane::read_info(name) else {
        return f;
    };
    if let Ok(stats) = dataplane::commands::read_stats(name) {
        f.stats = stats.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    }
    if let Ok(rows) = dataplane::commands::flows(name) {
        let totals = fwd_counters::totals(name, state.forwards()).unwrap_or_default();
        f.flows = flow_counts(&rows);
        f.forwards = forward_figures(state.forwards(), &rows, &totals);
    }
    let pins = LabPins::new(name);
    let max = state.lab.nat.max_flows;
    if let Ok(entries) = pins.flow_count() {
        f.tables.push(Table {
            family: "ipv4",
            entries: entries as u64,
            limit: u64::from(dataplane::flow_limit(max)),
            capacity: u64::from(max),
        });
    }
    if info.uplink_address6.is_some() {
        if let Ok(entries) = pins.flow_count6() {
            f.tables.push(Table {
                family: "ipv6",
                entries: entries as u64,
                limit: u64::from(dataplane::flow_limit6(max)),
                capacity: u64::from(netlab_common::FLOW6_ENTRIES),
            });
        }
    }
    f
}
