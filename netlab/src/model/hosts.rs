//! A lab over several lab hosts: each host runs its share of the one lab
//! file (its nodes, the bridges they use, the forwards to them), and every
//! bridge with nodes on several hosts is stretched between them by a VXLAN
//! device per host with static flooding entries towards the others
//! (head-end replication, no multicast on the underlay).

use std::net::Ipv4Addr;

use super::types::{
    Attachment, Bridge, FileIndex, Forward, Host, HostPort, Lab, Node, Share, Tunnel,
};

/// The name a host's share runs under (its state, markers and pins):
/// several hosts' shares may then share one machine, as in the tests. `@`
/// is in no lab's name (so no share takes another lab's name) and, unlike
/// `.`, bpffs takes it in a pin's name.
pub fn share_name(lab: &str, host: &str) -> String {
    format!("{lab}@{host}")
}

/// A VNI from the lab's and the bridge's names (FNV-1a into 1..2^24):
/// every host computes the same one from the same file.
pub fn derived_vni(lab: &str, bridge: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in lab.bytes().chain([0]).chain(bridge.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % ((1 << 24) - 1) + 1
}

/// The MAC address of a stretched bridge on every host (locally
/// administered, from the VNI): the gateway's ARP answer is the same from
/// whichever host gives it, and a frame to it ends on the host it enters.
pub fn anycast_mac(vni: u32) -> [u8; 6] {
    let [_, a, b, c] = vni.to_be_bytes();
    [0x02, 0x4e, 0x4c, a, b, c]
}

/// The device stretching a bridge with VNI `vni` (15 characters at most).
pub fn tunnel_name(vni: u32) -> String {
    format!("vx-{vni}")
}

fn on_bridge(node: &Node, bridge: &str) -> bool {
    node.interfaces
        .iter()
        .any(|i| matches!(&i.attachment, Attachment::Bridge { bridge: b, .. } if b == bridge))
}

/// The hosts with nodes on `bridge`, or that take forwards to nodes on it
/// (through their host port), in the order of `[[hosts]]`.
pub fn hosts_on_bridge<'l>(lab: &'l Lab, bridge: &str) -> Vec<&'l Host> {
    lab.hosts
        .iter()
        .filter(|h| {
            lab.nodes
                .iter()
                .any(|n| n.host.as_deref() == Some(h.name.as_str()) && on_bridge(n, bridge))
                || host_port_bridges(lab, &h.name).any(|b| b.name == bridge)
        })
        .collect()
}

/// The host of node `node` (in the whole file).
fn node_host<'l>(lab: &'l Lab, node: &str) -> Option<&'l str> {
    lab.nodes
        .iter()
        .find(|n| n.name == node)
        .and_then(|n| n.host.as_deref())
}

/// The host that takes forward `f` on its uplink: the one the file names,
/// else its target node's.
pub fn forward_host<'l>(lab: &'l Lab, f: &'l Forward) -> Option<&'l str> {
    f.host.as_deref().or_else(|| node_host(lab, &f.node))
}

/// Whether forward `f` is taken on another host than its target node's.
pub fn forward_across(lab: &Lab, f: &Forward) -> bool {
    f.host.is_some() && f.host.as_deref() != node_host(lab, &f.node)
}

/// The bridge forward `f`'s target address is on (through a node's
/// interface on it), if any.
pub fn target_bridge<'l>(lab: &'l Lab, f: &Forward) -> Option<&'l Bridge> {
    let node = lab.nodes.iter().find(|n| n.name == f.node)?;
    node.interfaces.iter().find_map(|i| match &i.attachment {
        Attachment::Bridge { bridge, .. } if i.address.addr == f.target_addr => lab.bridge(bridge),
        _ => None,
    })
}

/// The bridges host `host` needs a host port on: those of the targets of
/// the forwards it takes across hosts.
fn host_port_bridges<'l>(lab: &'l Lab, host: &'l str) -> impl Iterator<Item = &'l Bridge> + 'l {
    lab.forwards
        .iter()
        .filter(move |f| f.host.as_deref() == Some(host) && forward_across(lab, f))
        .filter_map(move |f| target_bridge(lab, f))
}

/// Host `host`'s address on `bridge`: from the top of the subnet down,
/// passing over the gateway, one per host in the order of `[[hosts]]`
/// (every host computes the same from the same file; validation checks
/// that no node has it).
pub fn host_port_address(lab: &Lab, bridge: &Bridge, host: &str) -> Option<Ipv4Addr> {
    let index = lab.hosts.iter().position(|h| h.name == host)?;
    let net = bridge.subnet.network();
    let top = u32::from(net.broadcast()).checked_sub(1)?;
    (u32::from(net.addr) + 1..=top)
        .rev()
        .map(Ipv4Addr::from)
        .filter(|a| Some(*a) != bridge.gateway)
        .nth(index)
}

/// The names of the two ends of a host port on the bridge with VNI `vni`.
pub fn host_port_names(vni: u32) -> (String, String) {
    (format!("hp-{vni}"), format!("hpb-{vni}"))
}

/// Host `host`'s ports: one per bridge it takes forwards across hosts to.
fn host_ports(lab: &Lab, host: &str) -> Vec<HostPort> {
    let mut ports: Vec<HostPort> = Vec::new();
    for b in host_port_bridges(lab, host) {
        let (Some(vni), Some(address)) = (b.vni, host_port_address(lab, b, host)) else {
            continue;
        };
        if ports.iter().any(|p| p.bridge == b.name) {
            continue;
        }
        let (name, peer) = host_port_names(vni);
        ports.push(HostPort {
            name,
            peer,
            bridge: b.name.clone(),
            address,
            mtu: lab.vxlan.mtu,
        });
    }
    ports
}

/// What `up`, `down` and `status` work on: the whole lab when it has no
/// `[[hosts]]` (and no `host` is given), else host `host`'s share of it.
pub fn share(lab: &Lab, host: Option<&str>) -> Result<Lab, String> {
    let names = || {
        lab.hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let me = match (host, lab.hosts.is_empty()) {
        (None, true) => return Ok(lab.clone()),
        (Some(h), true) => {
            return Err(format!(
                "lab {} has no [[hosts]]: --host {h} is for a lab over several hosts",
                lab.name
            ))
        }
        (None, false) => {
            return Err(format!(
                "lab {} spans hosts {}: say which one this is with --host NAME",
                lab.name,
                names()
            ))
        }
        (Some(h), false) => lab
            .hosts
            .iter()
            .find(|k| k.name == h)
            .ok_or_else(|| format!("lab {} has no host {h} (hosts: {})", lab.name, names()))?,
    };
    let mut s = lab.clone();
    s.name = share_name(&lab.name, &me.name);
    s.nodes
        .retain(|n| n.host.as_deref() == Some(me.name.as_str()));
    let first = lab.hosts.first().map(|h| h.name.as_str());
    let host_ports = host_ports(lab, &me.name);
    // A bridge no node uses anywhere stays on the first host.
    s.bridges.retain(|b| {
        s.nodes.iter().any(|n| on_bridge(n, &b.name))
            || host_ports.iter().any(|p| p.bridge == b.name)
            || (first == Some(me.name.as_str()) && !lab.nodes.iter().any(|n| on_bridge(n, &b.name)))
    });
    let local = |node: &str| s.nodes.iter().any(|n| n.name == node);
    s.cables.retain(|c| local(&c.a.node) && local(&c.b.node));
    s.forwards
        .retain(|f| forward_host(lab, f) == Some(me.name.as_str()));
    s.host_routes
        .retain(|r| s.bridges.iter().any(|b| b.subnet.contains(r.via)));
    s.host_routes6.retain(|r| {
        s.bridges
            .iter()
            .any(|b| b.subnet6.is_some_and(|n| n.contains(r.via)))
    });
    let tunnels = s
        .bridges
        .iter()
        .filter_map(|b| {
            let remotes: Vec<_> = hosts_on_bridge(lab, &b.name)
                .into_iter()
                .filter(|h| h.name != me.name)
                .map(|h| h.underlay)
                .collect();
            let vni = b.vni?;
            (!remotes.is_empty()).then(|| Tunnel {
                name: tunnel_name(vni),
                bridge: b.name.clone(),
                vni,
                port: lab.vxlan.port,
                local: me.underlay,
                interface: me.interface.clone(),
                mtu: lab.vxlan.mtu,
                remotes,
            })
        })
        .collect();
    s.share = Some(Share {
        lab: lab.name.clone(),
        host: me.name.clone(),
        tunnels,
        file_index: FileIndex {
            nodes: positions(&lab.nodes, &s.nodes, |a, b| a.name == b.name),
            bridges: positions(&lab.bridges, &s.bridges, |a, b| a.name == b.name),
            forwards: positions(&lab.forwards, &s.forwards, |a, b| a == b),
        },
        host_ports: host_ports.clone(),
        remote_nodes: lab
            .nodes
            .iter()
            .filter(|n| n.host.as_deref() != Some(me.name.as_str()))
            .cloned()
            .collect(),
    });
    for f in s.forwards.iter_mut().filter(|f| forward_across(lab, f)) {
        f.snat = target_bridge(lab, f)
            .and_then(|b| host_ports.iter().find(|p| p.bridge == b.name))
            .map(|p| p.address);
    }
    Ok(s)
}

/// Where each of `part` is in `whole`.
fn positions<T>(whole: &[T], part: &[T], same: impl Fn(&T, &T) -> bool) -> Vec<usize> {
    part.iter()
        .filter_map(|p| whole.iter().position(|w| same(w, p)))
        .collect()
}

/// A field of a share (`nodes[0].name`) as the file has it (`nodes[1].name`),
/// so that problems found in a share name the file's line.
pub fn file_field(lab: &Lab, field: &str) -> String {
    let Some(s) = &lab.share else {
        return field.to_string();
    };
    let sections = [
        ("nodes", &s.file_index.nodes),
        ("bridges", &s.file_index.bridges),
        ("forwards", &s.file_index.forwards),
    ];
    for (section, index) in sections {
        let Some((n, tail)) = field
            .strip_prefix(section)
            .and_then(|r| r.strip_prefix('['))
            .and_then(|r| r.split_once(']'))
        else {
            continue;
        };
        if let Some(i) = n.parse::<usize>().ok().and_then(|i| index.get(i)) {
            return format!("{section}[{i}]{tail}");
        }
    }
    field.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        test_support::{err, HOSTS_AB},
        validate::parse,
    };
    use std::net::Ipv4Addr;

    /// Hosts a, b (its underlay on eth1) and c; br0 (derived VNI) stretched
    /// between n1 on a and n2 on b; br1 (VNI 77) with n3 on c alone.
    fn three_text() -> String {
        format!(
            r#"{HOSTS_AB}interface = "eth1"
[[hosts]]
name = "c"
underlay = "192.0.2.3"
[[bridges]]
name = "br0"
subnet = "192.168.15.0/24"
gateway = "192.168.15.254"
[[bridges]]
name = "br1"
subnet = "192.168.16.0/24"
gateway = "192.168.16.254"
vni = 77
[[nodes]]
name = "n1"
bridge = "br0"
address = "192.168.15.1"
[[nodes]]
name = "n2"
host = "b"
bridge = "br0"
address = "192.168.15.2"
[[nodes]]
name = "n3"
host = "c"
bridge = "br1"
address = "192.168.16.3"
[[forwards]]
protocol = "tcp"
port = 8080
to = "n2:80"
"#
        )
    }

    fn three() -> Lab {
        parse("lab.toml", &three_text()).unwrap()
    }

    #[test]
    fn nodes_default_to_the_first_host() {
        let lab = three();
        assert_eq!(lab.node("n1").unwrap().host.as_deref(), Some("a"));
        assert_eq!(lab.node("n2").unwrap().host.as_deref(), Some("b"));
        assert_eq!(
            lab.bridge("br0").unwrap().vni,
            Some(derived_vni("m", "br0"))
        );
        assert_eq!(lab.bridge("br1").unwrap().vni, Some(77));
        assert_eq!(lab.vxlan.port, 4789);
        assert_eq!(lab.vxlan.mtu, 1450);
    }

    #[test]
    fn a_share_keeps_the_ipv6_host_routes_through_its_own_bridges() {
        let text = three_text()
            .replace(
                "gateway = \"192.168.16.254\"\n",
                "gateway = \"192.168.16.254\"\nsubnet6 = \"fd00:16::/64\"\n",
            )
            .replace(
                "address = \"192.168.16.3\"\n",
                "address = \"192.168.16.3\"\naddress6 = \"fd00:16::3\"\n",
            )
            + "[[routes]]\nto = \"fd00:99::/64\"\nvia = \"fd00:16::3\"\n";
        let lab = parse("lab.toml", &text).unwrap();
        assert_eq!(lab.host_routes6.len(), 1);
        assert!(share(&lab, Some("a")).unwrap().host_routes6.is_empty());
        assert_eq!(
            share(&lab, Some("c")).unwrap().host_routes6,
            lab.host_routes6
        );
    }

    #[test]
    fn a_file_without_hosts_is_unchanged() {
        let lab = crate::model::default_lab();
        assert!(lab.hosts.is_empty());
        assert!(lab.nodes.iter().all(|n| n.host.is_none()));
        assert!(lab.bridges.iter().all(|b| b.vni.is_none()));
        assert_eq!(share(&lab, None).unwrap(), lab);
        assert!(share(&lab, Some("a")).unwrap_err().contains("no [[hosts]]"));
    }

    #[test]
    fn derived_vnis_are_stable_and_in_range() {
        assert_eq!(derived_vni("m", "br0"), derived_vni("m", "br0"));
        assert_ne!(derived_vni("m", "br0"), derived_vni("m", "br1"));
        assert_ne!(derived_vni("m", "br0"), derived_vni("m2", "br0"));
        for i in 0..1000 {
            let v = derived_vni("lab", &format!("b{i}"));
            assert!((1..1 << 24).contains(&v));
        }
    }

    #[test]
    fn each_share_has_its_nodes_bridges_forwards_and_tunnels() {
        let lab = three();
        let a = share(&lab, Some("a")).unwrap();
        assert_eq!(a.name, "m@a");
        assert_eq!(a.nodes.len(), 1);
        assert_eq!(a.bridges.len(), 1, "br1 has no node on a");
        assert!(a.forwards.is_empty(), "the forward goes to n2, on b");
        let t = &a.share.as_ref().unwrap().tunnels;
        assert_eq!(t.len(), 1);
        assert_eq!(
            t[0].remotes,
            ["192.0.2.2".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            t[0].local,
            "192.0.2.1".parse::<std::net::Ipv4Addr>().unwrap()
        );
        assert_eq!(t[0].name, tunnel_name(derived_vni("m", "br0")));
        let b = share(&lab, Some("b")).unwrap();
        assert_eq!(b.forwards.len(), 1);
        assert_eq!(
            b.share.as_ref().unwrap().tunnels[0].interface.as_deref(),
            Some("eth1")
        );
        // Problems found in a share name the file's fields.
        assert_eq!(file_field(&b, "nodes[0].name"), "nodes[1].name");
        assert_eq!(file_field(&b, "forwards[0].port"), "forwards[0].port");
        assert_eq!(file_field(&b, "bridges[0].name"), "bridges[0].name");
        let c = share(&lab, Some("c")).unwrap();
        assert_eq!(file_field(&c, "bridges[0].subnet"), "bridges[1].subnet");
        assert_eq!(file_field(&lab, "nodes[2].name"), "nodes[2].name");
        // br1 lives on c alone: no tunnel.
        assert!(c.share.as_ref().unwrap().tunnels.is_empty());
        assert!(share(&lab, None).unwrap_err().contains("--host"));
        assert!(share(&lab, Some("z")).unwrap_err().contains("no host z"));
    }

    /// [`three_text`] with a forward on c's uplink to n2 (on b, on br0).
    fn across() -> String {
        format!(
            "{}[[forwards]]\nprotocol = \"tcp\"\nport = 9090\nto = \"n2:80\"\nhost = \"c\"\n",
            three_text()
        )
    }

    #[test]
    fn a_forward_across_hosts_gets_a_host_port_and_the_bridge() {
        let lab = parse("lab.toml", &across()).unwrap();
        let c = share(&lab, Some("c")).unwrap();
        let s = c.share.as_ref().unwrap();
        // c has no node on br0 but takes a forward into it: br0, its
        // tunnel and c's port on it are there.
        assert!(c.bridge("br0").is_some());
        assert_eq!(c.forwards.len(), 1);
        assert_eq!(c.forwards[0].port_first, 9090);
        // The top of the subnet but the gateway, one per host: c is third.
        let addr: Ipv4Addr = "192.168.15.251".parse().unwrap();
        assert_eq!(c.forwards[0].snat, Some(addr));
        let vni = derived_vni("m", "br0");
        assert_eq!(
            s.host_ports,
            vec![HostPort {
                name: format!("hp-{vni}"),
                peer: format!("hpb-{vni}"),
                bridge: "br0".into(),
                address: addr,
                mtu: 1450,
            }]
        );
        let t = s.tunnels.iter().find(|t| t.bridge == "br0").unwrap();
        assert_eq!(t.remotes.len(), 2, "{t:?}");
        // The other hosts stretch br0 to c, and do not take the forward.
        let b = share(&lab, Some("b")).unwrap();
        let tb = &b.share.as_ref().unwrap().tunnels[0];
        assert!(tb.remotes.contains(&"192.0.2.3".parse().unwrap()), "{tb:?}");
        assert_eq!(b.forwards.len(), 1, "only its own 8080");
        assert!(b.forwards.iter().all(|f| f.snat.is_none()));
        assert!(b.share.as_ref().unwrap().host_ports.is_empty());
        // Naming the target's own host changes nothing.
        let same = across().replace("host = \"c\"\n", "host = \"b\"\n");
        let same = parse("lab.toml", &same).unwrap();
        let b = share(&same, Some("b")).unwrap();
        assert_eq!(b.forwards.len(), 2);
        assert!(b.share.as_ref().unwrap().host_ports.is_empty());
    }

    #[test]
    fn forwards_across_hosts_are_checked() {
        let at = |s: &str| {
            let line = across()
                .lines()
                .collect::<Vec<_>>()
                .iter()
                .rposition(|l| *l == "host = \"c\"")
                .unwrap()
                + 1;
            format!("lab.toml:{line}: forwards[1].host: {s}")
        };
        let e = err(&across().replace(
            "port = 9090\nto = \"n2:80\"\nhost = \"c\"",
            "port = 9090\nto = \"n2:80\"\nhost = \"q\"",
        ));
        assert!(e.contains("forwards[1].host: unknown host `q`"), "{e}");
        // c's address on br0 would be .251: a node there is refused.
        let e = err(&across().replace("192.168.15.2\"", "192.168.15.251\""));
        assert_eq!(
            e,
            at(
                "host c's address on bridge br0 would be 192.168.15.251 (from the top of the \
                subnet, one per host), which is node n2's: give the node another address"
            )
        );
    }

    #[test]
    fn hosts_are_checked() {
        let e = err(&three_text().replace("192.0.2.3", "192.0.2.2"));
        assert!(
            e.contains("hosts[2].underlay: 192.0.2.2 is already host b's"),
            "{e}"
        );
        let e = err(&three_text().replace("host = \"c\"", "host = \"q\""));
        assert!(
            e.contains("nodes[2].host: unknown host `q` (hosts: a, b, c)"),
            "{e}"
        );
        let e =
            err(&three_text().replace("vni = 77", &format!("vni = {}", derived_vni("m", "br0"))));
        assert!(e.contains("bridges[1].vni: VNI"), "{e}");
        let e = err(&three_text().replace("vni = 77", "vni = 16777216"));
        assert!(e.contains("is not a VNI"), "{e}");
        let e = err(&format!("{}[vxlan]\nport = 0\nmtu = 100\n", three_text()));
        assert!(e.contains("vxlan.port") && e.contains("vxlan.mtu"), "{e}");
    }

    #[test]
    fn host_keys_need_hosts() {
        let e = err(
            "[[bridges]]\nname = \"b\"\nsubnet = \"10.1.0.0/24\"\nvni = 5\n\
             [[nodes]]\nname = \"n\"\nhost = \"x\"\nbridge = \"b\"\naddress = \"10.1.0.1\"\n",
        );
        assert!(e.contains("bridges[0].vni: needs [[hosts]]"), "{e}");
        assert!(e.contains("nodes[0].host: the lab has no [[hosts]]"), "{e}");
    }

    #[test]
    fn cables_do_not_cross_hosts() {
        let e = err(&format!(
            "{}[[cables]]\na = {{ node = \"n1\", address = \"10.9.0.1/30\" }}\n\
             b = {{ node = \"n2\", address = \"10.9.0.2/30\" }}\n",
            three_text()
        ));
        assert!(e.contains("cannot cross hosts"), "{e}");
    }
}
