//! The VXLAN devices of a lab over several hosts, over netlink: made with
//! their flooding entries (one all-zeros forwarding entry per remote host,
//! as `bridge fdb append` makes: head-end replication, no multicast), and
//! read back for the plan and `status`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use anyhow::{Context as _, Result};
use futures::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    packet_core::{
        NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST,
    },
    packet_route::{
        link::{InfoBridgePort, InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage},
        neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
        },
        AddressFamily, RouteNetlinkMessage,
    },
    Handle, LinkBridgePort, LinkVxlan,
};

use crate::{
    model::{plan::TunnelState, types::Tunnel},
    netlink::{self, nl},
};

/// Make tunnel `t` (without its bridge or flooding entries): learning on,
/// so that unicast goes to the one host a MAC address was seen behind.
pub async fn create(handle: &Handle, t: &Tunnel, group: u32) -> Result<()> {
    let mut b = LinkVxlan::new(&t.name, t.vni)
        .port(t.port)
        .local(t.local)
        .learning(true)
        .mtu(t.mtu)
        .append_extra_attribute(LinkAttribute::Group(group));
    if let Some(dev) = &t.interface {
        let l = netlink::link_by_name(handle, dev)
            .await?
            .with_context(|| format!("underlay interface {dev} of tunnel {}", t.name))?;
        b = b.dev(l.index);
    }
    handle
        .link()
        .add(b.build())
        .execute()
        .await
        .map_err(nl)
        .with_context(|| format!("creating VXLAN device {} (VNI {})", t.name, t.vni))
}

/// Keep ARP and ND the bridge can answer on this host: with neighbour
/// suppression on the tunnel's bridge port, a request for an address of the
/// bridge itself (the anycast gateway) is not flooded into the tunnel, and
/// one for a neighbour the host knows is answered here (as EVPN fabrics do).
pub async fn suppress_neighbour_flooding(handle: &Handle, index: u32) -> Result<()> {
    let msg = LinkBridgePort::new(index)
        .append_info_data(InfoBridgePort::NeighSupress(true))
        .build();
    // A port's options go in RTM_NEWLINK (RTM_SETLINK ignores them).
    handle
        .link()
        .set_port(msg)
        .execute()
        .await
        .map_err(nl)
        .context("turning neighbour suppression on")
}

/// Set each of `tunnels` up that is not: `up` does it after the dataplane
/// put `nl_tunnel_out` on them, so not even what the bridge sends as the
/// port comes up (its first IGMP and MLD reports) crosses to the other
/// hosts. Returns how many it set up.
pub async fn open(handle: &Handle, tunnels: &[Tunnel]) -> Result<usize> {
    let mut opened = 0;
    for t in tunnels {
        let l = netlink::link_by_name(handle, &t.name)
            .await?
            .with_context(|| format!("VXLAN device {} is missing", t.name))?;
        if !l.up {
            netlink::set_up(handle, l.index)
                .await
                .with_context(|| format!("setting VXLAN device {} up", t.name))?;
            opened += 1;
        }
    }
    Ok(opened)
}

/// Flood broadcast and unknown unicast of device `index` to `remote` too.
pub async fn append_flood_entry(handle: &Handle, index: u32, remote: Ipv4Addr) -> Result<()> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(vec![0; 6]));
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            remote,
        )));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(msg));
    // APPEND: several remotes under the one all-zeros address.
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
    let mut replies = handle.clone().request(req).map_err(nl)?;
    while let Some(m) = replies.next().await {
        if let NetlinkPayload::Error(e) = m.payload {
            if e.code.is_some() {
                return Err(nl(rtnetlink::Error::NetlinkError(e)))
                    .with_context(|| format!("adding the flooding entry to {remote}"));
            }
        }
    }
    Ok(())
}

/// The VXLAN devices among `names` as the kernel has them.
pub async fn states(
    handle: &Handle,
    names: &BTreeSet<String>,
) -> Result<BTreeMap<String, TunnelState>> {
    let mut out = BTreeMap::new();
    let mut index_of = BTreeMap::new();
    for m in netlink::link_messages(handle).await? {
        if let Some((name, state)) = state_of(&m).filter(|(n, _)| names.contains(n)) {
            index_of.insert(m.header.index, name.clone());
            out.insert(name, state);
        }
    }
    if out.is_empty() {
        return Ok(out);
    }
    let mut get = handle.neighbours().get();
    get = get.set_address_family(AddressFamily::Bridge);
    let entries: Vec<NeighbourMessage> = get
        .execute()
        .try_collect()
        .await
        .map_err(nl)
        .context("listing forwarding entries")?;
    for e in entries {
        let Some(state) = index_of.get(&e.header.ifindex).and_then(|n| out.get_mut(n)) else {
            continue;
        };
        let zero = e.attributes.iter().any(
            |a| matches!(a, NeighbourAttribute::LinkLayerAddress(l) if l.iter().all(|b| *b == 0)),
        );
        for a in e.attributes.iter().filter(|_| zero) {
            // In a bridge-family message the parser leaves the address raw.
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(r)) => {
                    state.remotes.insert(*r);
                }
                NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                    state.remotes.insert(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

fn state_of(m: &LinkMessage) -> Option<(String, TunnelState)> {
    let mut name = None;
    let mut mtu = 0;
    let mut info = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Mtu(v) => mtu = *v,
            LinkAttribute::LinkInfo(infos) => {
                info = infos.iter().find_map(|i| match i {
                    LinkInfo::Data(InfoData::Vxlan(v)) => Some(v.clone()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    let info = info?;
    let mut s = TunnelState {
        vni: 0,
        port: 0,
        local: None,
        mtu,
        remotes: BTreeSet::new(),
    };
    for i in info {
        match i {
            InfoVxlan::Id(v) => s.vni = v,
            InfoVxlan::Port(p) => s.port = p,
            InfoVxlan::Local(a) => s.local = Some(a),
            _ => {}
        }
    }
    Some((name?, s))
}

/// A tunnel as `status` shows it: the share's, with the device's state
/// and counters (inner frames, as the bridge sees them).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TunnelView {
    #[serde(flatten)]
    pub tunnel: Tunnel,
    /// `up`, `down`, `missing`, or `differs` (not as the file says).
    pub state: &'static str,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// Each of `tunnels` as the lab host has it.
pub async fn view(handle: &Handle, tunnels: &[Tunnel]) -> Result<Vec<TunnelView>> {
    let names: BTreeSet<String> = tunnels.iter().map(|t| t.name.clone()).collect();
    let have = states(handle, &names).await?;
    let msgs = netlink::link_messages(handle).await?;
    let mut out = Vec::new();
    for t in tunnels {
        let mut v = TunnelView {
            tunnel: t.clone(),
            state: "missing",
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
        };
        let msg = msgs.iter().find(|m| {
            m.attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfName(n) if *n == t.name))
        });
        if let (Some(m), Some(s)) = (msg, have.get(&t.name)) {
            let up = m
                .header
                .flags
                .contains(rtnetlink::packet_route::link::LinkFlags::Up);
            v.state = match (*s == TunnelState::of(t), up) {
                (false, _) => "differs",
                (true, true) => "up",
                (true, false) => "down",
            };
            for a in &m.attributes {
                if let LinkAttribute::Stats64(c) = a {
                    (v.rx_packets, v.rx_bytes) = (c.rx_packets, c.rx_bytes);
                    (v.tx_packets, v.tx_bytes) = (c.tx_packets, c.tx_bytes);
                }
            }
        }
        out.push(v);
    }
    Ok(out)
}

impl std::fmt::Display for TunnelView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.tunnel;
        let remotes: Vec<String> = t.remotes.iter().map(|r| r.to_string()).collect();
        write!(
            f,
            "{} VNI {} udp/{} {} -> {} on {} (mtu {}) {}: rx {} pkts {} B, tx {} pkts {} B",
            t.name,
            t.vni,
            t.port,
            t.local,
            remotes.join(", "),
            t.bridge,
            t.mtu,
            self.state,
            self.rx_packets,
            self.rx_bytes,
            self.tx_packets,
            self.tx_bytes
        )
    }
}
