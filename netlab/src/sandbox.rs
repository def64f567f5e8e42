//! `--sandbox`: a throwaway lab host. A namespace stands in for the lab host
//! and its uplink leads to a "wan" namespace standing in for the outside
//! world (198.51.100.0/24 and 203.0.113.0/24, the documentation ranges, and
//! 2001:db8:100::/64 for IPv6), where a small HTTP server answers. Nothing
//! touches the real host's network.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::unix::process::CommandExt as _,
    process::Stdio,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    model::{
        net::{IpNet, Ipv4Net, Ipv6Net},
        plan::RouteSpec,
    },
    netlink,
    netns::{self, Netns},
    system,
};

pub const UPLINK_IFNAME: &str = "eth0";
pub const HOST_UPLINK_ADDR: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::new(198, 51, 100, 2),
    prefix_len: 24,
};
pub const WAN_ADDR: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::new(198, 51, 100, 1),
    prefix_len: 24,
};
/// A second outside address, on the wan side's loopback (an RFC 5780 STUN
/// server needs two). The rest of 203.0.113.0/24 is free for tests that put
/// more networks behind the wan side.
pub const WAN_ADDR2: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::new(203, 0, 113, 1),
    prefix_len: 32,
};
/// The uplink's IPv6 address and the wan side's (2001:db8::/32, the
/// documentation prefix): what the lab's IPv6 is translated to, once the
/// dataplane translates IPv6.
pub const HOST_UPLINK_ADDR6: Ipv6Net = Ipv6Net {
    addr: Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2),
    prefix_len: 64,
};
pub const WAN_ADDR6: Ipv6Net = Ipv6Net {
    addr: Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1),
    prefix_len: 64,
};
pub const HTTP_PORT: u16 = 80;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    pub host: String,
    pub wan: String,
}

impl Sandbox {
    pub fn of(lab: &str) -> Sandbox {
        Sandbox {
            host: format!("{lab}-host"),
            wan: format!("{lab}-wan"),
        }
    }

    pub fn marker(lab: &str) -> String {
        format!("netlab-sandbox:{lab}")
    }
}

/// Create the sandbox of lab `lab` if it is not there yet.
pub async fn ensure(lab: &str) -> Result<Sandbox> {
    let sb = Sandbox::of(lab);
    let marker = Sandbox::marker(lab);
    let mut fresh = false;
    for name in [&sb.host, &sb.wan] {
        if netns::exists(name) {
            let ns = Netns::open(name)?;
            if system::netns_marker(&ns).await?.as_deref() != Some(marker.as_str()) {
                bail!("network namespace {name} exists and is not lab {lab}'s sandbox; remove it or rename the lab");
            }
        } else {
            let m = marker.clone();
            netns::create(name, move || system::mark_current_netns(&m))
                .with_context(|| format!("creating the sandbox namespace {name}"))?;
            fresh = true;
        }
    }
    let host = Netns::open(&sb.host)?;
    let wan = Netns::open(&sb.wan)?;
    let host_nl = host.netlink().await?;
    let wan_nl = wan.netlink().await?;
    if netlink::link_by_name(&host_nl, UPLINK_IFNAME)
        .await?
        .is_none()
    {
        netlink::create_veth(
            &host_nl,
            UPLINK_IFNAME,
            0,
            UPLINK_IFNAME,
            std::os::fd::AsRawFd::as_raw_fd(&wan),
            None,
        )
        .await
        .context("creating the sandbox uplink")?;
        let h = netlink::link_by_name(&host_nl, UPLINK_IFNAME)
            .await?
            .context("sandbox uplink")?;
        let w = netlink::link_by_name(&wan_nl, UPLINK_IFNAME)
            .await?
            .context("sandbox wan link")?;
        for (nl, index, addr) in [
            (&host_nl, h.index, IpNet::from(HOST_UPLINK_ADDR)),
            (&wan_nl, w.index, WAN_ADDR.into()),
            (&host_nl, h.index, HOST_UPLINK_ADDR6.into()),
            (&wan_nl, w.index, WAN_ADDR6.into()),
        ] {
            netlink::add_address(nl, index, addr).await?;
        }
        let lo = netlink::link_by_name(&wan_nl, "lo")
            .await?
            .context("wan lo")?;
        netlink::add_address(&wan_nl, lo.index, WAN_ADDR2.into()).await?;
        netlink::set_up(&host_nl, h.index).await?;
        netlink::set_up(&wan_nl, w.index).await?;
        for via in [WAN_ADDR.addr.into(), WAN_ADDR6.addr.into()] {
            let default = RouteSpec {
                to: IpNet::default_for(via),
                via,
            };
            netlink::add_route(
                &host_nl,
                &default,
                rtnetlink::packet_route::route::RouteProtocol::Static,
            )
            .await
            .with_context(|| format!("adding the sandbox host's route {default}"))?;
        }
    }
    if fresh {
        start_http_server(&sb.wan).context("starting the sandbox's HTTP server")?;
    }
    Ok(sb)
}

/// Remove lab `lab`'s sandbox and every process in it; returns the ended
/// processes and how many namespaces went.
pub async fn remove(lab: &str) -> Result<(Vec<String>, usize)> {
    let marker = Sandbox::marker(lab);
    let owned = system::namespaces_marked(&marker).await?;
    let ended = system::end_processes_in(&owned)?;
    for n in &owned {
        netns::delete(n)?;
    }
    Ok((ended, owned.len()))
}

/// The sandbox's namespaces that still exist.
pub async fn leftovers(lab: &str) -> Result<Vec<String>> {
    system::namespaces_marked(&Sandbox::marker(lab)).await
}

fn start_http_server(wan: &str) -> Result<()> {
    let exe = std::env::current_exe().context("finding the netlab executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "serve-http",
        "--netns",
        wan,
        "--port",
        &HTTP_PORT.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .process_group(0);
    cmd.spawn().context("spawning `netlab serve-http`")?;
    // Return once it answers, so the lab is usable when `up` returns.
    let ns = Netns::open(wan)?;
    for _ in 0..200 {
        let up = ns.run(|| Ok(std::net::TcpStream::connect(("127.0.0.1", HTTP_PORT)).is_ok()))?;
        if up {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("the HTTP server in netns {wan} did not start listening")
}
