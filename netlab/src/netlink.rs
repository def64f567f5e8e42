//! rtnetlink requests netlab makes, on a handle opened in some namespace
//! (see [`crate::netns::Netns::netlink`]).

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    os::fd::RawFd,
};

use anyhow::{Context as _, Result};
use futures::TryStreamExt as _;
use rtnetlink::{
    packet_route::{
        address::AddressAttribute,
        link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol},
    },
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::model::{
    net::Ipv4Net,
    plan::{LinkKind, RouteSpec},
};

/// Route protocol number netlab marks lab-host routes with (nodes' routes use
/// `static`: a node's namespace is the lab's own).
pub const RTPROT_NETLAB: u8 = 148;

#[derive(Clone, Debug)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    pub up: bool,
    pub controller: Option<u32>,
    pub alias: Option<String>,
    pub group: u32,
    pub mac: Option<[u8; 6]>,
}

fn link_from_message(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: LinkKind::Other,
        up: msg.header.flags.contains(LinkFlags::Up),
        controller: None,
        alias: None,
        group: 0,
        mac: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
            LinkAttribute::Group(g) => link.group = *g,
            LinkAttribute::Controller(c) => link.controller = Some(*c),
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(a);
                link.mac = Some(mac);
            }
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = match kind {
                            InfoKind::Bridge => LinkKind::Bridge,
                            InfoKind::Veth => LinkKind::Veth,
                            InfoKind::Vxlan => LinkKind::Vxlan,
                            _ => LinkKind::Other,
                        };
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// Every link the handle's namespace has, as the kernel describes it
/// (attributes and counters).
pub async fn link_messages(handle: &Handle) -> Result<Vec<LinkMessage>> {
    handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl)
        .context("listing links")
}

pub async fn links(handle: &Handle) -> Result<Vec<Link>> {
    let msgs = link_messages(handle).await?;
    Ok(msgs.iter().map(link_from_message).collect())
}

pub async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<Link>> {
    Ok(links(handle).await?.into_iter().find(|l| l.name == name))
}

/// IPv4 addresses by link index.
pub async fn addresses(handle: &Handle) -> Result<Vec<(u32, Ipv4Net)>> {
    let msgs: Vec<_> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl)
        .context("listing addresses")?;
    let mut out = Vec::new();
    for m in msgs {
        for attr in &m.attributes {
            // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the
            // peer on point-to-point links).
            if let AddressAttribute::Local(IpAddr::V4(a)) = attr {
                if let Some(net) = Ipv4Net::new(*a, m.header.prefix_len) {
                    out.push((m.header.index, net));
                }
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Debug)]
pub struct RouteEntry {
    pub to: Ipv4Net,
    pub via: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub protocol: RouteProtocol,
    pub table: u32,
}

fn route_from_message(m: &RouteMessage) -> RouteEntry {
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut via = None;
    let mut oif = None;
    let mut table = u32::from(m.header.table);
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => via = Some(*a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    RouteEntry {
        to: Ipv4Net::new(dst, m.header.destination_prefix_length).unwrap_or(Ipv4Net {
            addr: dst,
            prefix_len: 32,
        }),
        via,
        oif,
        protocol: m.header.protocol,
        table,
    }
}

/// IPv4 routes of the main table.
pub async fn routes(handle: &Handle) -> Result<Vec<RouteEntry>> {
    let req = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let msgs: Vec<_> = handle
        .route()
        .get(req)
        .execute()
        .try_collect()
        .await
        .map_err(nl)
        .context("listing routes")?;
    Ok(msgs
        .iter()
        .map(route_from_message)
        .filter(|r| r.table == u32::from(RouteMessage::default().header.table) || r.table == 254)
        .collect())
}

/// Gatewayed routes with the given protocol, as the plan sees them.
pub async fn managed_routes(
    handle: &Handle,
    protocol: RouteProtocol,
) -> Result<BTreeSet<RouteSpec>> {
    Ok(routes(handle)
        .await?
        .into_iter()
        .filter(|r| r.protocol == protocol)
        .filter_map(|r| r.via.map(|via| RouteSpec { to: r.to, via }))
        .collect())
}

/// A bridge; with `mac`, its address is that one for good (else the
/// kernel picks one, and changes it with its ports).
pub async fn create_bridge(
    handle: &Handle,
    name: &str,
    group: u32,
    mac: Option<[u8; 6]>,
) -> Result<()> {
    let mut b = LinkBridge::new(name).append_extra_attribute(LinkAttribute::Group(group));
    if let Some(mac) = mac {
        b = b.append_extra_attribute(LinkAttribute::Address(mac.to_vec()));
    }
    let msg = b.build();
    handle.link().add(msg).execute().await.map_err(nl)
}

/// A veth pair: `name` here, `peer` created directly inside the namespace
/// `peer_netns_fd` (so the peer's name never has to be free here).
pub async fn create_veth(
    handle: &Handle,
    name: &str,
    group: u32,
    peer: &str,
    peer_netns_fd: RawFd,
    mtu: Option<u32>,
) -> Result<()> {
    let mut peer_msg = LinkUnspec::new_with_name(peer).setns_by_fd(peer_netns_fd);
    let mut b = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(name.to_string())
        .append_extra_attribute(LinkAttribute::Group(group));
    if let Some(mtu) = mtu {
        peer_msg = peer_msg.mtu(mtu);
        b = b.mtu(mtu);
    }
    let msg = b
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())))
        .build();
    handle.link().add(msg).execute().await.map_err(nl)
}

/// A veth pair with both ends here.
pub async fn create_veth_pair(
    handle: &Handle,
    name: &str,
    group: u32,
    peer: &str,
    mtu: u32,
) -> Result<()> {
    let peer_msg = LinkUnspec::new_with_name(peer).mtu(mtu).build();
    let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(name.to_string())
        .append_extra_attribute(LinkAttribute::Group(group))
        .mtu(mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
        .build();
    handle.link().add(msg).execute().await.map_err(nl)
}

pub async fn set_alias(handle: &Handle, index: u32, alias: &str) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index)
        .alias(alias.to_string())
        .build();
    handle.link().set(msg).execute().await.map_err(nl)
}

pub async fn set_up(handle: &Handle, index: u32) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index).up().build();
    handle.link().set(msg).execute().await.map_err(nl)
}

/// Set a link administratively up or down.
pub async fn set_state(handle: &Handle, index: u32, up: bool) -> Result<()> {
    let b = LinkUnspec::new_with_index(index);
    let msg = if up { b.up() } else { b.down() }.build();
    handle.link().set(msg).execute().await.map_err(nl)
}

pub async fn set_controller(handle: &Handle, index: u32, controller: u32) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index)
        .controller(controller)
        .build();
    handle.link().set(msg).execute().await.map_err(nl)
}

pub async fn delete_link(handle: &Handle, index: u32) -> Result<()> {
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
        Err(e) => Err(nl(e)),
    }
}

pub async fn add_address(handle: &Handle, index: u32, address: Ipv4Net) -> Result<()> {
    match handle
        .address()
        .add(index, IpAddr::V4(address.addr), address.prefix_len)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
        Err(e) => Err(nl(e)),
    }
}

pub async fn delete_address(handle: &Handle, index: u32, address: Ipv4Net) -> Result<()> {
    let msgs: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl)
        .context("listing addresses")?;
    for m in msgs {
        let matches = m.header.prefix_len == address.prefix_len
            && m.attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Local(IpAddr::V4(x)) if *x == address.addr));
        if matches {
            handle.address().del(m).execute().await.map_err(nl)?;
        }
    }
    Ok(())
}

fn route_message(route: &RouteSpec, protocol: RouteProtocol) -> RouteMessage {
    let mut msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.to.addr, route.to.prefix_len)
        .gateway(route.via)
        .build();
    msg.header.protocol = protocol;
    msg
}

pub async fn add_route(handle: &Handle, route: &RouteSpec, protocol: RouteProtocol) -> Result<()> {
    match handle
        .route()
        .add(route_message(route, protocol))
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
        Err(e) => Err(nl(e)),
    }
}

pub async fn delete_route(
    handle: &Handle,
    route: &RouteSpec,
    protocol: RouteProtocol,
) -> Result<()> {
    match handle
        .route()
        .del(route_message(route, protocol))
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if is_errno(&e, libc::ESRCH) => Ok(()),
        Err(e) => Err(nl(e)),
    }
}

/// The interface of the default route (the uplink when none is named).
pub async fn default_route_interface(handle: &Handle) -> Result<Option<u32>> {
    Ok(routes(handle)
        .await?
        .into_iter()
        .filter(|r| r.to.prefix_len == 0)
        .find_map(|r| r.oif))
}

pub fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| c.get().abs()) == Some(errno),
        _ => false,
    }
}

/// A netlink error as the errno it carries ("File exists (os error 17)"),
/// which says more to a user than the message wrapper around it.
pub fn nl(e: rtnetlink::Error) -> anyhow::Error {
    match &e {
        rtnetlink::Error::NetlinkError(m) => match m.code {
            Some(code) => std::io::Error::from_raw_os_error(code.get().abs()).into(),
            None => anyhow::Error::new(e),
        },
        _ => anyhow::Error::new(e),
    }
}
