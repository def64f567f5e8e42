//! rtnetlink requests netlab makes, on a handle opened in some namespace
//! (see [`crate::netns::Netns::netlink`]).

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::RawFd,
};

use anyhow::{Context as _, Result};
use futures::TryStreamExt as _;
use rtnetlink::{
    packet_route::{
        address::{AddressAttribute, AddressHeaderFlags},
        link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol},
    },
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::model::{
    net::{IpNet, Ipv4Net, Ipv6Net},
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
    Ok(all_addresses(handle)
        .await?
        .into_iter()
        .filter_map(|(i, a)| match a {
            IpNet::V4(a) => Some((i, a)),
            IpNet::V6(_) => None,
        })
        .collect())
}

/// IPv4 and IPv6 addresses by link index, but the IPv6 link-local ones
/// (the kernel gives every link one; no lab sets or removes them).
pub async fn all_addresses(handle: &Handle) -> Result<Vec<(u32, IpNet)>> {
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
            // IPv6 has no IFA_LOCAL: its IFA_ADDRESS is the address.
            let net = match attr {
                AddressAttribute::Local(IpAddr::V4(a)) => {
                    Ipv4Net::new(*a, m.header.prefix_len).map(IpNet::V4)
                }
                AddressAttribute::Address(IpAddr::V6(a)) if !a.is_unicast_link_local() => {
                    Ipv6Net::new(*a, m.header.prefix_len).map(IpNet::V6)
                }
                _ => None,
            };
            out.extend(net.map(|n| (m.header.index, n)));
        }
    }
    Ok(out)
}

#[derive(Clone, Debug)]
pub struct RouteEntry {
    /// Of the family the routes were listed for.
    pub to: IpNet,
    pub via: Option<IpAddr>,
    pub oif: Option<u32>,
    pub protocol: RouteProtocol,
    pub table: u32,
}

fn route_from_message(m: &RouteMessage, v6: bool) -> RouteEntry {
    let mut dst = if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let mut via = None;
    let mut oif = None;
    let mut table = u32::from(m.header.table);
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = (*a).into(),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = (*a).into(),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => via = Some((*a).into()),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => via = Some((*a).into()),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    let len = m.header.destination_prefix_length;
    let to = match dst {
        IpAddr::V4(a) => IpNet::V4(Ipv4Net::new(a, len).unwrap_or(Ipv4Net {
            addr: a,
            prefix_len: 32,
        })),
        IpAddr::V6(a) => IpNet::V6(Ipv6Net::new(a, len).unwrap_or(Ipv6Net {
            addr: a,
            prefix_len: 128,
        })),
    };
    RouteEntry {
        to,
        via,
        oif,
        protocol: m.header.protocol,
        table,
    }
}

/// IPv4 routes of the main table.
pub async fn routes(handle: &Handle) -> Result<Vec<RouteEntry>> {
    main_table(
        handle,
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        false,
    )
    .await
}

/// IPv6 routes of the main table.
pub async fn routes6(handle: &Handle) -> Result<Vec<RouteEntry>> {
    main_table(handle, RouteMessageBuilder::<Ipv6Addr>::new().build(), true).await
}

async fn main_table(handle: &Handle, req: RouteMessage, v6: bool) -> Result<Vec<RouteEntry>> {
    let msgs: Vec<_> = handle
        .route()
        .get(req)
        .execute()
        .try_collect()
        .await
        .map_err(nl)
        .context("listing routes")?;
    let main = u32::from(RouteMessage::default().header.table);
    Ok(msgs
        .iter()
        .map(|m| route_from_message(m, v6))
        .filter(|r| r.table == main || r.table == 254)
        .collect())
}

/// Gatewayed routes of either family with the given protocol, as the
/// plan sees them.
pub async fn managed_routes(
    handle: &Handle,
    protocol: RouteProtocol,
) -> Result<BTreeSet<RouteSpec>> {
    let mut all = routes(handle).await?;
    all.extend(routes6(handle).await?);
    Ok(all
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

/// An address on link `index`; an IPv6 one without duplicate address
/// detection (IFA_F_NODAD), so that it is usable at once rather than
/// tentative for a second or two: the lab assigns its addresses itself.
pub async fn add_address(handle: &Handle, index: u32, address: IpNet) -> Result<()> {
    let mut req = handle
        .address()
        .add(index, address.addr(), address.prefix_len());
    if address.is_v6() {
        req.message_mut().header.flags = AddressHeaderFlags::Nodad;
    }
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(e) if is_errno(&e, libc::EEXIST) => Ok(()),
        Err(e) => Err(nl(e)),
    }
}

pub async fn delete_address(handle: &Handle, index: u32, address: IpNet) -> Result<()> {
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
        let matches = m.header.prefix_len == address.prefix_len()
            && m.attributes.iter().any(|a| match a {
                AddressAttribute::Local(x @ IpAddr::V4(_)) => *x == address.addr(),
                AddressAttribute::Address(x @ IpAddr::V6(_)) => *x == address.addr(),
                _ => false,
            });
        if matches {
            handle.address().del(m).execute().await.map_err(nl)?;
        }
    }
    Ok(())
}

fn route_message(route: &RouteSpec, protocol: RouteProtocol) -> Result<RouteMessage> {
    let mut msg = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.to.addr(), route.to.prefix_len())
        .and_then(|b| b.gateway(route.via))
        .with_context(|| format!("route {route}"))?
        .build();
    msg.header.protocol = protocol;
    Ok(msg)
}

pub async fn add_route(handle: &Handle, route: &RouteSpec, protocol: RouteProtocol) -> Result<()> {
    match handle
        .route()
        .add(route_message(route, protocol)?)
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
        .del(route_message(route, protocol)?)
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
        .filter(|r| r.to.prefix_len() == 0)
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
