//! The eBPF NAT dataplane, user side: load the programs, fill their maps from
//! the lab, attach them to the uplink and the bridges, and pin everything
//! under `/sys/fs/bpf/netlab/<lab>/` so it outlives the CLI.
//!
//! Re-running `up` loads the new programs against the pinned maps and swaps
//! them into the pinned TCX links atomically, so live flows survive.

pub mod attach;
pub mod commands;
pub mod contents;
pub mod features;
pub mod fill;
pub mod forwarded_ports;
pub mod fwd_counters;
pub mod pins;

use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use anyhow::{anyhow, Context as _, Result};
use aya::EbpfLoader;
use netlab_common::{addr_from_octets, names, NodePort};
use serde::{Deserialize, Serialize};

use crate::{
    model::{
        host_conflicts,
        topology::{Attachment, Forward, Lab},
    },
    netlink,
    state::LabDir,
    system::System,
};

pub use commands::{fwd_command, log_command, nat_command, stats_command};
pub use contents::{
    default_config, flow_limit, flow_limit6, forward_entries, LabHostIfaces, MapContents,
};
pub use fill::fill_maps;

use contents::StableDigest;

/// The compiled programs (built by netlab's build.rs through aya-build).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netlab"));

pub use netlab_common::names::{
    PROG_BRIDGE_IN, PROG_BRIDGE_IN6, PROG_GC, PROG_GC6, PROG_HOST_PORT_IN, PROG_LOCAL_OUT,
    PROG_LOCAL_OUT6, PROG_NODE_IN, PROG_NODE_IN6, PROG_NODE_NEW, PROG_TUNNEL_OUT, PROG_UPLINK_IN,
    PROG_UPLINK_IN6, PROG_UPLINK_OUT, PROG_UPLINK_OUT6,
};

/// Each program's slot in the `TAILS` program array.
pub const TAIL_SLOTS: [(&str, u32); 12] = [
    (PROG_NODE_NEW, netlab_common::tail::NODE_NEW),
    (PROG_GC, netlab_common::tail::GC),
    (PROG_UPLINK_IN, netlab_common::tail::UPLINK_IN),
    (PROG_UPLINK_OUT, netlab_common::tail::UPLINK_OUT),
    (PROG_BRIDGE_IN, netlab_common::tail::BRIDGE_IN),
    (PROG_LOCAL_OUT, netlab_common::tail::LOCAL_OUT),
    (PROG_UPLINK_OUT6, netlab_common::tail::UPLINK_OUT6),
    (PROG_UPLINK_IN6, netlab_common::tail::UPLINK_IN6),
    (PROG_BRIDGE_IN6, netlab_common::tail::BRIDGE_IN6),
    (PROG_NODE_IN6, netlab_common::tail::NODE_IN6),
    (PROG_LOCAL_OUT6, netlab_common::tail::LOCAL_OUT6),
    (PROG_GC6, netlab_common::tail::GC6),
];

/// The lab host's loopback, where `nl_local_out` takes the host's own
/// connections to its forwards.
const LOOPBACK: &str = "lo";

/// The sysctl that lets `lo` take the replies `nl_bridge_in` hands it: they
/// carry the uplink address as source, which the lab host's routing would
/// otherwise refuse as a martian (local) source.
const LO_ACCEPT_LOCAL: &str = "net/ipv4/conf/lo/accept_local";

/// What `up` attached, kept in the lab's state directory (bpffs holds only
/// BPF objects).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DataplaneInfo {
    /// Identifies the program build, so `up` can say when it swapped in new ones.
    pub object: String,
    pub uplink: String,
    pub uplink_ifindex: u32,
    pub uplink_address: Ipv4Addr,
    /// The IPv6 address NAT66 translates to, if the uplink has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_address6: Option<Ipv6Addr>,
    pub hooks: Vec<attach::Hook>,
    pub features: features::Features,
    pub fast_path: bool,
    /// Digest of what `up` wrote into the maps (configuration, subnets,
    /// forwards, node ports): a change there is a change to report.
    #[serde(default)]
    pub maps_digest: String,
    /// `up` turned the lab host's `lo` `accept_local` on (see
    /// `LO_ACCEPT_LOCAL`); `down` turns it off again.
    #[serde(default)]
    pub set_lo_accept_local: bool,
}

pub fn read_info(lab: &str) -> Option<DataplaneInfo> {
    LabDir::of(lab).read_dataplane()
}

pub struct UpReport {
    pub changed: bool,
    pub lines: Vec<String>,
}

/// Loads another build of the programs instead of the embedded one (for
/// upgrade tests and for trying a rebuilt dataplane on a live lab).
pub const OBJECT_ENV: &str = "NETLAB_EBPF_OBJECT";

fn object_override() -> Option<PathBuf> {
    std::env::var_os(OBJECT_ENV).map(PathBuf::from)
}

fn object_id() -> String {
    match object_override().and_then(|p| fs::read(p).ok()) {
        Some(bytes) => StableDigest::new().bytes(&bytes).hex(),
        None => StableDigest::new().bytes(EBPF_OBJECT).hex(),
    }
}

/// Whether the lab has anything for the dataplane to do.
pub fn needed(lab: &Lab) -> bool {
    lab.needs_nat()
}

/// The uplink: the named interface or the default route's, its index and
/// address, resolved by the model's rule (the one `up` checked the lab
/// against before making anything).
async fn resolve_uplink(sys: &System, lab: &Lab) -> Result<UplinkFacts> {
    let facts = crate::host_facts::gather(&sys.host).await?;
    let uplink = host_conflicts::resolve_uplink(lab, &facts)
        .map_err(|(field, why)| anyhow!("{field}: {why}"))?;
    let link = netlink::link_by_name(sys.host_netlink(), &uplink.interface)
        .await?
        .ok_or_else(|| anyhow!("the uplink {} vanished", uplink.interface))?;
    Ok(UplinkFacts {
        name: uplink.interface,
        ifindex: link.index,
        address: uplink.address,
        address6: uplink.address6,
    })
}

/// For the fast path: each node on a bridge of the lab host, by address,
/// with the lab-host end of its veth (name and port entry); and by IPv6
/// address on a bridge with a `gateway6`.
async fn node_ports(lab: &Lab, host_links: &[netlink::Link]) -> Result<NodePorts> {
    let (mut out, mut out6) = (Vec::new(), Vec::new());
    for n in &lab.nodes {
        let mut node_links = None;
        for i in &n.interfaces {
            let Attachment::Bridge { bridge, host_name } = &i.attachment else {
                continue;
            };
            let Some(b) = lab.bridge(bridge).filter(|b| b.gateway.is_some()) else {
                continue;
            };
            let host_end = host_links
                .iter()
                .find(|l| &l.name == host_name)
                .ok_or_else(|| anyhow!("link {host_name} is missing"))?;
            let gateway = host_links
                .iter()
                .find(|l| &l.name == bridge)
                .ok_or_else(|| anyhow!("bridge {bridge} is missing"))?;
            if node_links.is_none() {
                let h = crate::netns::Netns::open(&n.netns)?.netlink().await?;
                node_links = Some(
                    netlink::links(&h)
                        .await
                        .with_context(|| format!("in netns {}", n.netns))?,
                );
            }
            let node_end = node_links
                .as_ref()
                .and_then(|ls| ls.iter().find(|l| l.name == i.name))
                .ok_or_else(|| anyhow!("link {} is missing in netns {}", i.name, n.netns))?;
            let (Some(node_mac), Some(gateway_mac)) = (node_end.mac, gateway.mac) else {
                continue;
            };
            let port = NodePort {
                ifindex: host_end.index,
                node_mac,
                gateway_mac,
            };
            if let Some(a6) = i.address6.filter(|_| b.gateway6.is_some()) {
                out6.push((a6.addr.octets(), port));
            }
            out.push((
                addr_from_octets(i.address.addr.octets()),
                host_name.clone(),
                port,
            ));
        }
    }
    Ok((out, out6))
}

/// The fast path's node ports by IPv4 address (with the port's name) and
/// by IPv6 address.
type NodePorts = (Vec<(u32, String, NodePort)>, Vec<([u8; 16], NodePort)>);

/// Turn the lab host's `lo` `accept_local` on (see `LO_ACCEPT_LOCAL`).
/// Returns whether netlab owns the setting: it set it now or, on this lab
/// host, before (this lab or another); the last lab to go down then turns
/// it off again. A setting netlab found on is left alone.
fn enable_lo_accept_local(
    sys: &System,
    lab: &str,
    previous: Option<&DataplaneInfo>,
) -> Result<bool> {
    let ours = previous.is_some_and(|p| p.set_lo_accept_local)
        || other_labs_on(lab, &sys.host).any(|i| i.set_lo_accept_local)
        || sys.host.read_sysctl(LO_ACCEPT_LOCAL)? != "1";
    if ours {
        sys.host.write_sysctl(LO_ACCEPT_LOCAL, "1")?;
    }
    Ok(ours)
}

/// The uplink as `up` resolved it.
struct UplinkFacts {
    name: String,
    ifindex: u32,
    address: Ipv4Addr,
    address6: Option<Ipv6Addr>,
}

/// The map contents of `lab` on the lab host `sys` (its bridges' and the
/// uplink's interface indexes, the nodes' ports for the fast path).
async fn map_contents(
    sys: &System,
    lab: &Lab,
    uplink: &UplinkFacts,
    fast_path: bool,
) -> Result<MapContents> {
    let links = netlink::links(sys.host_netlink()).await?;
    let mut bridge_ifindex = std::collections::HashMap::new();
    for b in lab.host_subnets() {
        bridge_ifindex.insert(b.name.clone(), ifindex_of(&links, "bridge", &b.name)?);
    }
    // Host ports carry lab traffic too; their /32 subnet entries name them.
    for p in lab.share.iter().flat_map(|s| &s.host_ports) {
        bridge_ifindex.insert(p.name.clone(), ifindex_of(&links, "host port", &p.name)?);
    }
    let mut tunnel_ifindex = std::collections::HashMap::new();
    for t in lab.share.iter().flat_map(|s| &s.tunnels) {
        tunnel_ifindex.insert(t.name.clone(), ifindex_of(&links, "tunnel", &t.name)?);
    }
    let uplink_is_veth = links
        .iter()
        .any(|l| l.index == uplink.ifindex && l.kind == crate::model::plan::LinkKind::Veth);
    let (node_ports, node_ports6) = if fast_path {
        node_ports(lab, &links).await?
    } else {
        Default::default()
    };
    let host = LabHostIfaces {
        bridge_ifindex,
        uplink_ifindex: uplink.ifindex,
        uplink_address: uplink.address,
        uplink_address6: uplink.address6,
        uplink_is_veth,
        node_ports,
        node_ports6,
        tunnel_ifindex,
    };
    Ok(MapContents::of_lab(lab, &host, fast_path))
}

/// Where each program goes: the uplink both ways, each node's bridge port
/// (fast path), each bridge, each host port, each tunnel (egress), and the
/// lab host's `lo`.
fn hooks_for(lab: &Lab, uplink: &str, node_ports: &[(u32, String, NodePort)]) -> Vec<attach::Hook> {
    use attach::{Direction, Hook};
    let mut hooks = vec![
        Hook::new(PROG_UPLINK_IN, uplink, Direction::Ingress),
        Hook::new(PROG_UPLINK_OUT, uplink, Direction::Egress),
    ];
    for (_, port_name, _) in node_ports {
        hooks.push(Hook::new(PROG_NODE_IN, port_name, Direction::Ingress));
    }
    for b in lab.host_subnets() {
        hooks.push(Hook::new(PROG_BRIDGE_IN, &b.name, Direction::Ingress));
    }
    for p in lab.share.iter().flat_map(|s| &s.host_ports) {
        hooks.push(Hook::new(PROG_HOST_PORT_IN, &p.name, Direction::Ingress));
    }
    for t in lab.share.iter().flat_map(|s| &s.tunnels) {
        hooks.push(Hook::new(PROG_TUNNEL_OUT, &t.name, Direction::Egress));
    }
    hooks.push(Hook::new(PROG_LOCAL_OUT, LOOPBACK, Direction::Egress));
    hooks
}

/// Load the programs (the embedded object or `$NETLAB_EBPF_OBJECT`) with
/// the lab's state maps taken from their pins.
fn load_object(dir: &pins::LabPins, max_flows: u32) -> Result<aya::Ebpf> {
    let mut loader = EbpfLoader::new();
    for (map, path) in dir.state_map_paths() {
        loader.map_pin_path(map, path);
    }
    loader.map_max_entries(names::NAT_FLOWS, max_flows);
    match object_override() {
        Some(path) => loader.load_file(&path).with_context(|| {
            format!(
                "loading the eBPF programs from {} (${OBJECT_ENV})",
                path.display()
            )
        }),
        None => loader
            .load(EBPF_OBJECT)
            .context("loading the eBPF programs (is this netlab built with its eBPF object?)"),
    }
}

/// Load, fill, attach and pin the dataplane for `lab` (or converge it).
pub async fn up(sys: &System, lab: &Lab, verbose: bool) -> Result<UpReport> {
    let previous = read_info(&lab.name);
    if !needed(lab) {
        let removed = down(&lab.name, Some(&sys.host))?;
        return Ok(UpReport {
            changed: removed > 0,
            lines: vec!["dataplane: none needed (no masquerade, no forwards)".into()],
        });
    }
    // Before anything is made: a kernel the programs cannot run on is
    // refused with one line, and the fast path needs helpers of its own.
    let features = sys.host.run(features::probe)?;
    let fast_path = lab.nat.fast_path && features.fast_path;
    let uplink = resolve_uplink(sys, lab).await?;
    let contents = map_contents(sys, lab, &uplink, fast_path).await?;
    let hooks = hooks_for(lab, &uplink.name, &contents.node_ports);
    let digest = contents.digest();
    let lab_name = lab.name.clone();
    let max_flows = lab.nat.max_flows;
    let previous_hooks: Vec<attach::Hook> = previous
        .as_ref()
        .map(|p| p.hooks.clone())
        .unwrap_or_default();
    let probed = features.clone();
    let ipv6 = uplink.address6.is_some();
    let (hooks, notes) = sys.host.run(move || {
        pins::ensure_bpffs()?;
        let dir = pins::LabPins::new(&lab_name);
        dir.create()?;
        let notes = dir.drop_incompatible_maps(max_flows)?;
        let mut ebpf = load_object(&dir, max_flows)?;
        fill_maps(&mut ebpf, &contents)?;
        let hooks = attach::attach_all(
            &mut ebpf,
            &dir,
            &lab_name,
            hooks,
            &previous_hooks,
            &probed,
            ipv6,
        )?;
        Ok((hooks, notes))
    })?;
    let set_lo_accept_local = enable_lo_accept_local(sys, &lab.name, previous.as_ref())?;
    let info = DataplaneInfo {
        object: object_id(),
        uplink: uplink.name.clone(),
        uplink_ifindex: uplink.ifindex,
        uplink_address: uplink.address,
        uplink_address6: uplink.address6,
        hooks,
        features,
        fast_path,
        maps_digest: digest,
        set_lo_accept_local,
    };
    LabDir::of(&lab.name).write_dataplane(&info)?;
    let lines = up_lines(&info, notes, verbose.then(|| pins::LabPins::new(&lab.name)));
    Ok(UpReport {
        changed: previous.as_ref() != Some(&info),
        lines,
    })
}

/// What `up` says about the dataplane it attached.
fn up_lines(info: &DataplaneInfo, notes: Vec<String>, pins: Option<pins::LabPins>) -> Vec<String> {
    let mut lines = notes;
    let modes: Vec<String> = info
        .hooks
        .iter()
        .map(|h| format!("{} {}", h.interface, h.direction.as_str()))
        .collect();
    let address6 = info
        .uplink_address6
        .map(|a| format!(" and {a}"))
        .unwrap_or_default();
    lines.push(format!(
        "NAT: uplink {} {}{address6}, programs on {} ({})",
        info.uplink,
        info.uplink_address,
        modes.join(", "),
        info.hooks.first().map(|h| h.mode.as_str()).unwrap_or("-")
    ));
    if let Some(pins) = pins {
        lines.push(format!("pinned under {}", pins.root.display()));
    }
    lines
}

/// Detach and unpin everything of `lab`'s dataplane; returns how many
/// objects went. Other programs on the same interfaces stay. `host` is the
/// lab host's namespace (netlink filters live there), if it still exists.
pub fn down(lab: &str, host: Option<&crate::netns::Netns>) -> Result<usize> {
    let info = read_info(lab);
    let mut removed = 0;
    if let (Some(info), Some(host)) = (&info, host) {
        let hooks = info.hooks.clone();
        removed += host.run(move || Ok(attach::detach_netlink(&hooks)))?;
        if info.set_lo_accept_local && other_labs_on(lab, host).next().is_none() {
            host.write_sysctl(LO_ACCEPT_LOCAL, "0")?;
        }
    }
    removed += pins::LabPins::new(lab).remove()?;
    LabDir::of(lab).remove_dataplane();
    Ok(removed)
}

/// The dataplanes of the labs other than `lab` on the lab host `host`.
fn other_labs_on<'a>(
    lab: &'a str,
    host: &'a crate::netns::Netns,
) -> impl Iterator<Item = DataplaneInfo> + 'a {
    crate::state::known_labs()
        .into_iter()
        .filter_map(move |other| {
            let elsewhere = LabDir::of(&other)
                .read_state()
                .is_none_or(|s| s.host_netns != host.name);
            if other == lab || elsewhere {
                return None;
            }
            read_info(&other)
        })
}

/// What of `lab`'s dataplane is still there.
pub fn leftovers(lab: &str) -> Vec<String> {
    let dir = pins::LabPins::new(lab);
    if dir.root.exists() {
        vec![dir.root.display().to_string()]
    } else {
        Vec::new()
    }
}

/// Why the fast path is on or off.
fn fast_path_why(info: &DataplaneInfo) -> String {
    if info.fast_path || !info.features.fast_path {
        info.features.fast_path_why.clone()
    } else {
        "`[nat] fast_path = false`".into()
    }
}

/// Status for `netlab status`: where each program sits and why, the fast
/// path, table sizes, and the packets through each of `forwards` (the live
/// forwards), in their order.
pub fn status(lab: &str, forwards: &[Forward]) -> Result<serde_json::Value> {
    let Some(info) = read_info(lab) else {
        return Ok(serde_json::Value::Null);
    };
    let dir = pins::LabPins::new(lab);
    Ok(serde_json::json!({
        "uplink": info.uplink,
        "uplink_address": info.uplink_address,
        "uplink_address6": info.uplink_address6,
        "kernel": info.features.kernel,
        "attach": if info.features.tcx { "tcx" } else { "netlink" },
        "attach_why": info.features.tcx_why,
        "hooks": info.hooks,
        "fast_path": info.fast_path,
        "fast_path_why": fast_path_why(&info),
        "btf": info.features.btf,
        "flow_entries": dir.flow_count().ok(),
        "flow_entries6": dir.flow_count6().ok(),
        "forward_ports": dir.forward_count().ok(),
        "forward_counters": forward_counters_json(lab, forwards),
        // The digest of the maps' description `up` wrote (`MapContents`).
        "maps_digest": info.maps_digest,
        "pins": dir.root,
    }))
}

/// Each forward's totals since it was made (`null`: not counted), or
/// `null` when the counters cannot be read.
fn forward_counters_json(lab: &str, forwards: &[Forward]) -> serde_json::Value {
    let Ok(totals) = fwd_counters::totals(lab, forwards) else {
        return serde_json::Value::Null;
    };
    let rows: Vec<_> = forwards
        .iter()
        .zip(totals)
        .map(|(f, t)| serde_json::json!({ "forward": f.to_string(), "totals": t }))
        .collect();
    serde_json::json!(rows)
}

/// What `status` adds to the line of the `i`th live forward: its packets
/// and bytes each way, as `status_json`'s dataplane `v` has them.
pub fn forward_counts_text(v: &serde_json::Value, i: usize) -> String {
    let t = &v["forward_counters"][i]["totals"];
    let n = |k: &str| t[k].as_u64().unwrap_or(0);
    if t.is_null() {
        return String::new();
    }
    format!(
        "  in: {} packets, {} B; out: {} packets, {} B",
        n("packets_in"),
        n("bytes_in"),
        n("packets_out"),
        n("bytes_out")
    )
}

pub fn status_lines(v: &serde_json::Value) -> Vec<String> {
    if v.is_null() {
        return vec!["dataplane: not attached".into()];
    }
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
    let n = |k: &str, one: &str, many: &str| match v[k].as_u64() {
        Some(n) => crate::words::count(n, one, many),
        None => format!("? {many}"),
    };
    let address6 = v["uplink_address6"]
        .as_str()
        .map(|a| format!(" and {a}"))
        .unwrap_or_default();
    let mut out = vec![
        format!(
            "dataplane: uplink {} {}{address6}, {}{}, {}",
            s("uplink"),
            s("uplink_address"),
            n("flow_entries", "flow entry", "flow entries"),
            match v["flow_entries6"].as_u64() {
                Some(n) if n > 0 => format!(" (and {n} IPv6)"),
                _ => String::new(),
            },
            n("forward_ports", "forwarded port", "forwarded ports")
        ),
        format!("  attached as {}: {}", s("attach"), s("attach_why")),
    ];
    for h in v["hooks"].as_array().into_iter().flatten() {
        out.push(format!(
            "  {:<14} on {} {}",
            h["program"].as_str().unwrap_or("?"),
            h["interface"].as_str().unwrap_or("?"),
            h["direction"].as_str().unwrap_or("?")
        ));
    }
    out.push(if v["fast_path"].as_bool() == Some(true) {
        format!("  fast path: on (established flows are translated at the node's veth and the uplink and skip the bridge and the lab host's stack; {})", s("fast_path_why"))
    } else {
        format!("  fast path: off ({}): every packet takes the bridge and the lab host's routing", s("fast_path_why"))
    });
    out
}

/// The index of the lab host's link `name` (a `what` of the lab's), which
/// `up` made before the dataplane.
fn ifindex_of(links: &[netlink::Link], what: &str, name: &str) -> Result<u32> {
    links
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.index)
        .ok_or_else(|| anyhow!("{what} {name} is missing"))
}

#[cfg(test)]
mod tests {
    use super::StableDigest;

    #[test]
    fn dataplane_digest_is_fnv1a_and_stable_across_builds() {
        // The published FNV-1a 64 test vectors: any other value means a
        // digest stored by an older netlab no longer compares equal.
        assert_eq!(StableDigest::new().hex(), "cbf29ce484222325");
        assert_eq!(StableDigest::new().bytes(b"a").hex(), "af63dc4c8601ec8c");
        assert_eq!(
            StableDigest::new().bytes(b"foobar").hex(),
            "85944171f73967e8"
        );
        let split = |a: &[u8], b: &[u8]| StableDigest::new().field(a).field(b).hex();
        assert_ne!(split(b"ab", b"c"), split(b"a", b"bc"));
    }
}
