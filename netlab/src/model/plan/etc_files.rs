//! The files a lab writes into /etc/netns/<node>/: `hosts` and
//! `resolv.conf`, which `ip netns exec` bind-mounts over /etc's.

use std::net::{IpAddr, Ipv4Addr};

use super::marks::file_marker;
use crate::model::types::Lab;

/// `/etc/hosts` for every node: every node by name (its first address of
/// each family), and `<node>-<interface>` for each of its addresses; a
/// name with addresses of both families resolves to both (`getent ahosts`).
pub fn hosts_file(lab: &Lab) -> String {
    let mut s = file_marker(&lab.name);
    s.push_str("\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let remote = lab.share.iter().flat_map(|s| &s.remote_nodes);
    for n in lab.nodes.iter().chain(remote) {
        let first6 = n.primary_address6();
        for (k, i) in n.interfaces.iter().enumerate() {
            let iface = format!("{}-{}", n.name, i.name);
            let name4 = if k == 0 {
                format!("{} ", n.name)
            } else {
                String::new()
            };
            s.push_str(&format!("{}\t{name4}{iface}\n", i.address.addr));
            if let Some(a6) = i.address6 {
                let primary = first6 == Some(a6.addr);
                let name6 = if primary {
                    format!("{} ", n.name)
                } else {
                    String::new()
                };
                s.push_str(&format!("{}\t{name6}{iface}\n", a6.addr));
            }
        }
    }
    for b in &lab.bridges {
        let gw6 = b.gateway6.map(IpAddr::from);
        for gw in b.gateway.map(IpAddr::from).into_iter().chain(gw6) {
            s.push_str(&format!("{gw}\t{}-gateway\n", b.name));
        }
    }
    s
}

/// What a resolv.conf without a nameserver says instead, so that lookups
/// fail at once: glibc then asks 127.0.0.1:53, where nothing listens in a
/// node (its `lo` is up, so the query is refused at once; measured: 3 ms
/// for `getent ahosts` in a fresh namespace), and the options bound the wait
/// to one second should `lo` be down (without them: 10 s).
pub const NO_NAMESERVER: &str =
    "# no nameserver: names outside /etc/hosts do not resolve, at once\n\
                                 options timeout:1 attempts:1\n";

/// The nodes' resolv.conf: the lab's `[dns]` nameservers, or else those
/// the lab host offers its nodes (`offered`, decided by the caller: none in
/// a sandbox, whose nodes reach no resolver). Loopback ones are left out of
/// `offered` (systemd-resolved's 127.0.0.53 is not there inside a node).
/// Without any, [`NO_NAMESERVER`]: programs never wait on a resolver that
/// is not there.
pub fn resolv_conf(lab: &Lab, offered: &[Ipv4Addr]) -> String {
    let mut s = file_marker(&lab.name);
    s.push('\n');
    let servers: Vec<Ipv4Addr> = match &lab.dns.nameservers {
        Some(list) => list.clone(),
        None => offered
            .iter()
            .copied()
            .filter(|a| !a.is_loopback())
            .collect(),
    };
    if !lab.dns.search.is_empty() {
        s.push_str(&format!("search {}\n", lab.dns.search.join(" ")));
    }
    for ns in &servers {
        s.push_str(&format!("nameserver {ns}\n"));
    }
    if servers.is_empty() {
        s.push_str(NO_NAMESERVER);
    }
    s
}

/// Nameservers listed in a resolv.conf text.
pub fn parse_nameservers(resolv: &str) -> Vec<Ipv4Addr> {
    resolv
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::{plan::marks::file_marker, validate::default_lab};

    #[test]
    fn dns_files_name_every_node() {
        let lab = default_lab();
        let hosts = hosts_file(&lab);
        assert!(hosts.starts_with(&file_marker("netlab")));
        assert!(hosts.contains("192.168.15.1\tred red-veth-red\n"));
        assert!(hosts.contains("192.168.15.2\tblue blue-veth-blue\n"));
        assert!(hosts.contains("192.168.15.5\tv-net-0-gateway\n"));
        // Both families under each name.
        assert!(hosts.contains("fdec:60cc:b1bd:15::1\tred red-veth-red\n"));
        assert!(hosts.contains("fdec:60cc:b1bd:15::2\tblue blue-veth-blue\n"));
        assert!(hosts.contains("fdec:60cc:b1bd:15::5\tv-net-0-gateway\n"));
        let resolv = resolv_conf(
            &lab,
            &["127.0.0.53".parse().unwrap(), "10.1.1.1".parse().unwrap()],
        );
        assert!(resolv.contains("nameserver 10.1.1.1\n"));
        assert!(!resolv.contains("127.0.0.53"));
        assert_eq!(
            parse_nameservers("# x\nnameserver 1.1.1.1\nnameserver ::1\n nameserver 9.9.9.9 \n"),
            vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(9, 9, 9, 9)]
        );
    }

    #[test]
    fn nodes_never_wait_on_a_missing_nameserver() {
        let lab = default_lab();
        // Nothing offered (a sandbox), or only a loopback resolver that is
        // not inside the node: no nameserver line, and a bounded wait.
        for offered in [vec![], vec![Ipv4Addr::new(127, 0, 0, 53)]] {
            let resolv = resolv_conf(&lab, &offered);
            assert!(!resolv.contains("nameserver "), "{resolv}");
            assert!(resolv.ends_with(NO_NAMESERVER), "{resolv}");
            assert!(
                resolv.contains("options timeout:1 attempts:1\n"),
                "{resolv}"
            );
        }
        // A lab that names its nameservers gets exactly those.
        let mut named = default_lab();
        named.dns.nameservers = Some(vec![Ipv4Addr::new(10, 0, 0, 53)]);
        let resolv = resolv_conf(&named, &[]);
        assert!(resolv.contains("nameserver 10.0.0.53\n"));
        assert!(!resolv.contains("options"), "{resolv}");
    }
}
