//! The files a lab writes into /etc/netns/<node>/: `hosts` and
//! `resolv.conf`, which `ip netns exec` bind-mounts over /etc's.

use std::net::Ipv4Addr;

use super::marks::file_marker;
use crate::model::types::Lab;

/// `/etc/hosts` for every node: every node by name (its first address), and
/// `<node>-<interface>` for each of its addresses.
pub fn hosts_file(lab: &Lab) -> String {
    let mut s = file_marker(&lab.name);
    s.push_str("\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for n in &lab.nodes {
        for (k, i) in n.interfaces.iter().enumerate() {
            if k == 0 {
                s.push_str(&format!(
                    "{}\t{} {}-{}\n",
                    i.address.addr, n.name, n.name, i.name
                ));
            } else {
                s.push_str(&format!("{}\t{}-{}\n", i.address.addr, n.name, i.name));
            }
        }
    }
    for b in &lab.bridges {
        if let Some(gw) = b.gateway {
            s.push_str(&format!("{gw}\t{}-gateway\n", b.name));
        }
    }
    s
}

pub fn resolv_conf(lab: &Lab, host_nameservers: &[Ipv4Addr]) -> String {
    let mut s = file_marker(&lab.name);
    s.push('\n');
    let servers: Vec<Ipv4Addr> = match &lab.dns.nameservers {
        Some(list) => list.clone(),
        // A loopback resolver (systemd-resolved's 127.0.0.53) is not there
        // inside a node's own network namespace.
        None => host_nameservers
            .iter()
            .copied()
            .filter(|a| !a.is_loopback())
            .collect(),
    };
    if !lab.dns.search.is_empty() {
        s.push_str(&format!("search {}\n", lab.dns.search.join(" ")));
    }
    for ns in servers {
        s.push_str(&format!("nameserver {ns}\n"));
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
}
