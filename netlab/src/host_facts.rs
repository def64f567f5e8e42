//! The lab host's facts, gathered for the model's host checks
//! ([`crate::model::host_conflicts`]): its routes (as `ip route` shows
//! them), interfaces and addresses, the named namespaces and whose they are
//! (netlab's mark), its listening sockets and who holds them, its
//! `ip_local_port_range`, its default route's interface, and the uplinks
//! other labs on it translate on. Reading only; nothing here changes the host.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::{Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context as _, Result};

use crate::{
    model::{
        host_conflicts::{self, HostFacts, InterfaceFact, Listener, Owned, RouteFact},
        plan::{owner_alias, owner_group},
        IpNet, Lab, Proto, SourceMap,
    },
    netlink::{self, Link, RouteEntry},
    netns::{self, Netns},
    state, system,
};

/// Fail with the file's problems (exit code 2, like the file's own) when
/// anything on the lab host `host` stands in `lab`'s way.
pub async fn refuse_conflicts(lab: &Lab, sources: &SourceMap, host: &Netns) -> Result<()> {
    let facts = gather(host)
        .await
        .with_context(|| format!("reading the facts of {}", host.label()))?;
    let problems = host_conflicts::find(lab, sources, &facts);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(sources.error(problems).into())
    }
}

/// Everything the host checks need about the lab host `host`.
pub async fn gather(host: &Netns) -> Result<HostFacts> {
    let handle = host.netlink().await?;
    let links = netlink::links(&handle).await?;
    let addresses = netlink::all_addresses(&handle).await?;
    let known = state::known_labs();
    let owner_of = |l: &Link| link_owner(l, &known);
    let name_of = |index: u32| links.iter().find(|l| l.index == index);

    let mut all_routes = netlink::routes(&handle).await?;
    all_routes.extend(netlink::routes6(&handle).await?);
    let routes = all_routes
        .iter()
        .map(|r| {
            let dev = r.oif.and_then(name_of);
            RouteFact {
                destination: r.to,
                shown: route_shown(r, dev.map(|l| l.name.as_str())),
                owner: dev.and_then(owner_of),
            }
        })
        .collect();
    let interfaces = links
        .iter()
        .map(|l| InterfaceFact {
            name: l.name.clone(),
            owner: owner_of(l),
            addresses: addresses
                .iter()
                .filter_map(|(i, a)| match a {
                    IpNet::V4(a) if *i == l.index => Some(*a),
                    _ => None,
                })
                .collect(),
            addresses6: addresses
                .iter()
                .filter_map(|(i, a)| match a {
                    IpNet::V6(a) if *i == l.index => Some(*a),
                    _ => None,
                })
                .collect(),
        })
        .collect();
    let default_route_interface = netlink::default_route_interface(&handle)
        .await?
        .and_then(name_of)
        .map(|l| l.name.clone());
    Ok(HostFacts {
        routes,
        interfaces,
        namespaces: namespaces().await?,
        listeners: listeners(host)?,
        ip_local_port_range: port_range(host)?,
        default_route_interface,
        nat_uplinks: nat_uplinks(host),
    })
}

/// The lab a lab-host link belongs to: its alias (`netlab:<lab>`), or its
/// link group (set atomically at creation) matched against the labs known here.
fn link_owner(link: &Link, known_labs: &[String]) -> Option<String> {
    if let Some(lab) = link.alias.as_deref().and_then(lab_of_mark) {
        return Some(lab.to_string());
    }
    known_labs
        .iter()
        .find(|lab| link.group != 0 && owner_group(lab) == link.group)
        .cloned()
}

/// `netlab:<lab>` -> `<lab>`.
fn lab_of_mark(mark: &str) -> Option<&str> {
    let prefix = owner_alias("");
    mark.strip_prefix(prefix.as_str()).filter(|l| !l.is_empty())
}

/// A route as `ip route` prints it (the parts a user recognises it by).
fn route_shown(r: &RouteEntry, dev: Option<&str>) -> String {
    let mut out = if r.to.prefix_len() == 0 {
        "default".to_string()
    } else {
        r.to.to_string()
    };
    if let Some(via) = r.via {
        out += &format!(" via {via}");
    }
    if let Some(dev) = dev {
        out += &format!(" dev {dev}");
    }
    match u8::from(r.protocol) {
        3 => {} // boot: `ip route` leaves it out
        2 => out += " proto kernel",
        4 => out += " proto static",
        16 => out += " proto dhcp",
        netlink::RTPROT_NETLAB => out += " proto 148 (netlab)",
        p => out += &format!(" proto {p}"),
    }
    out
}

/// The named namespaces, each with the lab whose mark its `lo` carries. A
/// file in /run/netns that is not mounted (a crash between creating and
/// mounting it) is no namespace: `up` sweeps it. One that goes away while
/// this looks (another run's `down`) counts as nobody's.
async fn namespaces() -> Result<Vec<Owned>> {
    let mut out = Vec::new();
    for (name, _) in netns::list()?.into_iter().filter(|(_, mounted)| *mounted) {
        let owner = match Netns::open(&name) {
            Ok(ns) => system::netns_marker(&ns).await.ok().flatten(),
            Err(_) => None,
        };
        out.push(Owned {
            owner: owner.as_deref().and_then(lab_of_mark).map(str::to_string),
            name,
        });
    }
    Ok(out)
}

fn port_range(host: &Netns) -> Result<(u16, u16)> {
    let text = host.read_sysctl("net/ipv4/ip_local_port_range")?;
    parse_port_range(&text).with_context(|| format!("reading ip_local_port_range `{text}`"))
}

fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) => Some((lo, hi)),
        _ => None,
    }
}

/// The part of a lab's dataplane record (`dataplane::DataplaneInfo`, read
/// here by field so the dataplane, which asks this module, is not asked back).
#[derive(serde::Deserialize)]
struct TranslatesOn {
    uplink: String,
}

/// Uplinks that labs living on this lab host translate on (their dataplane
/// state), with the lab.
fn nat_uplinks(host: &Netns) -> Vec<Owned> {
    state::known_states()
        .into_iter()
        .filter(|s| s.host_netns == host.name)
        .filter_map(|s| {
            let info: TranslatesOn = state::LabDir::of(&s.lab.name).read_dataplane()?;
            Some(Owned {
                name: info.uplink,
                owner: Some(s.lab.name),
            })
        })
        .collect()
}

/// A socket line of /proc/net/{tcp,udp}{,6}: what listens, by inode.
#[derive(Debug, PartialEq, Eq)]
struct Socket {
    proto: Proto,
    port: u16,
    address: Option<Ipv4Addr>,
    inode: u64,
}

/// The lab host's TCP listeners and bound UDP sockets, each with the
/// process that holds it (`sshd (pid 812)`).
fn listeners(host: &Netns) -> Result<Vec<Listener>> {
    // /proc/thread-self/net is the namespace of the thread reading it (which
    // entered the lab host), unlike /proc/self/net (the main thread's).
    let tables = host.run(|| {
        let mut out = Vec::new();
        for (file, proto) in [
            ("tcp", Proto::Tcp),
            ("tcp6", Proto::Tcp),
            ("udp", Proto::Udp),
            ("udp6", Proto::Udp),
        ] {
            let path = format!("/proc/thread-self/net/{file}");
            // No IPv6 in the namespace: no tcp6/udp6 file.
            if let Ok(text) = fs::read_to_string(&path) {
                out.push((proto, file.ends_with('6'), text));
            }
        }
        Ok(out)
    })?;
    let sockets: Vec<Socket> = tables
        .iter()
        .flat_map(|(proto, v6, text)| parse_sockets(*proto, *v6, text))
        .collect();
    let inodes: BTreeSet<u64> = sockets.iter().map(|s| s.inode).collect();
    let holders = socket_holders(&inodes);
    let mut out: Vec<Listener> = sockets
        .into_iter()
        .map(|s| Listener {
            proto: s.proto,
            port: s.port,
            address: s.address,
            process: holders
                .get(&s.inode)
                .cloned()
                .unwrap_or_else(|| "a process netlab cannot see".into()),
        })
        .collect();
    out.sort_by_key(|l| (l.proto, l.port, l.address));
    out.dedup();
    Ok(out)
}

/// TCP sockets in LISTEN (state 0A) and UDP sockets bound but not
/// connected (state 07) of one /proc/net table. An IPv6 socket counts for
/// IPv4 when it is bound to `::` (dual-stack) or a v4-mapped address.
fn parse_sockets(proto: Proto, v6: bool, text: &str) -> Vec<Socket> {
    let listening = match proto {
        Proto::Tcp => "0A",
        Proto::Udp => "07",
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != listening {
                return None;
            }
            let (addr, port) = cols[1].split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok().filter(|p| *p != 0)?;
            let address = if v6 { v6_as_v4(addr)? } else { v4(addr)? };
            Some(Socket {
                proto,
                port,
                address,
                inode: cols[9].parse().ok()?,
            })
        })
        .collect()
}

/// /proc/net/tcp's address: a u32 in host byte order, in hex. `None`
/// inside: every address.
fn v4(hex: &str) -> Option<Option<Ipv4Addr>> {
    let raw = u32::from_str_radix(hex, 16).ok()?;
    let a = Ipv4Addr::from(raw.to_ne_bytes());
    Some((!a.is_unspecified()).then_some(a))
}

/// /proc/net/tcp6's address: four such u32. `::` is every address (IPv4
/// too); a v4-mapped one is that IPv4 address; any other is not IPv4's
/// (outer `None`).
fn v6_as_v4(hex: &str) -> Option<Option<Ipv4Addr>> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(4).enumerate() {
        let word = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let a = Ipv6Addr::from(bytes);
    if a.is_unspecified() {
        return Some(None);
    }
    a.to_ipv4_mapped().map(Some)
}

/// Who holds each socket inode: `comm (pid N)`, from /proc/*/fd.
fn socket_holders(inodes: &BTreeSet<u64>) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    if inodes.is_empty() {
        return out;
    }
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Some(inode) = fs::read_link(fd.path()).ok().and_then(|l| {
                let l = l.to_string_lossy().into_owned();
                l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
            }) else {
                continue;
            };
            if inodes.contains(&inode) && !out.contains_key(&inode) {
                let comm = fs::read_to_string(p.path().join("comm")).unwrap_or_default();
                out.insert(inode, format!("{} (pid {pid})", comm.trim()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_listeners_are_read_with_their_address_and_inode() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n\
   1: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0 100 0 0 10 0\n\
   2: 0100007F:0016 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 18 1 0 100 0 0 10 0\n";
        let got = parse_sockets(Proto::Tcp, false, text);
        assert_eq!(
            got,
            vec![
                Socket {
                    proto: Proto::Tcp,
                    port: 8081,
                    address: None,
                    inode: 4242
                },
                Socket {
                    proto: Proto::Tcp,
                    port: 22,
                    address: Some(Ipv4Addr::LOCALHOST),
                    inode: 17
                },
            ],
            "the established connection (st 01) is no listener"
        );
    }

    #[test]
    fn ipv6_sockets_count_for_ipv4_only_when_dual_stack_or_mapped() {
        let line = |addr: &str| {
            format!("hdr\n 0: {addr}:0050 00000000000000000000000000000000:0000 07 0:0 0:0 0 0 0 99 2\n")
        };
        let any = "00000000000000000000000000000000";
        let mapped = "0000000000000000FFFF00000100007F"; // ::ffff:127.0.0.1
        let global = "B80D0120000000000000000001000000"; // 2001:db8::1
        let udp = |a: &str| parse_sockets(Proto::Udp, true, &line(a));
        assert_eq!(udp(any)[0].address, None);
        assert_eq!(udp(mapped)[0].address, Some(Ipv4Addr::LOCALHOST));
        assert!(udp(global).is_empty());
    }

    #[test]
    fn routes_read_as_ip_route_shows_them() {
        let r = |to: &str, via: Option<&str>, proto: u8| RouteEntry {
            to: to.parse().unwrap(),
            via: via.map(|v| v.parse().unwrap()),
            oif: Some(2),
            protocol: proto.into(),
            table: 254,
        };
        assert_eq!(
            route_shown(&r("198.51.100.0/24", None, 2), Some("eth0")),
            "198.51.100.0/24 dev eth0 proto kernel"
        );
        assert_eq!(
            route_shown(&r("0.0.0.0/0", Some("198.51.100.2"), 3), Some("eth0")),
            "default via 198.51.100.2 dev eth0"
        );
    }

    #[test]
    fn marks_name_their_lab() {
        assert_eq!(lab_of_mark("netlab:nu2"), Some("nu2"));
        assert_eq!(lab_of_mark("netlab:"), None);
        assert_eq!(lab_of_mark("something else"), None);
        let link = |alias: Option<&str>, group: u32| Link {
            index: 3,
            name: "x".into(),
            kind: crate::model::plan::LinkKind::Bridge,
            up: true,
            controller: None,
            alias: alias.map(str::to_string),
            group,
            mac: None,
        };
        let known = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            link_owner(&link(Some("netlab:a"), 0), &known).as_deref(),
            Some("a")
        );
        assert_eq!(
            link_owner(&link(None, owner_group("b")), &known).as_deref(),
            Some("b")
        );
        assert_eq!(link_owner(&link(None, 0), &known), None);
    }

    #[test]
    fn port_range_reads_two_numbers() {
        assert_eq!(parse_port_range("32768\t60999"), Some((32768, 60999)));
        assert_eq!(parse_port_range("x"), None);
    }
}
