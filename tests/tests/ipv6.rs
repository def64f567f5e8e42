//! Dual-stack labs end to end: IPv6 addresses usable the moment `up`
//! returns, names of both families, routers, convergence on edit, IPv6
//! forwarding restored by `down`, and NAT66 to the sandbox's outside
//! (2001:db8:100::/64, and 2001:db8:200::/64 behind it) with ping, curl,
//! socat (UDP), traceroute and path-MTU discovery. Every test in its own
//! sandbox or lab-host namespace.

use std::{net::UdpSocket, thread};

use netlab_tests::{
    in_netns, ok, ping_unfragmented, ping_wait, require_root, text, FarNetwork, Lab, T,
};

/// The seeds' bridge with a ULA /64 beside its IPv4 subnet, red and blue
/// on it with an address of each family; `v6 = false` leaves IPv6 out.
fn dual_stack(v6: bool) -> String {
    let (subnet6, red6, blue6) = if v6 {
        (
            "subnet6 = \"fd00:15::/64\"\ngateway6 = \"fd00:15::5\"\n",
            "address6 = \"fd00:15::1\"\n",
            "address6 = \"fd00:15::2\"\n",
        )
    } else {
        ("", "", "")
    };
    format!(
        r#"
[[bridges]]
name = "v-net-0"
subnet = "192.168.15.0/24"
gateway = "192.168.15.5"
{subnet6}
[[nodes]]
name = "red"
bridge = "v-net-0"
address = "192.168.15.1"
{red6}
[[nodes]]
name = "blue"
bridge = "v-net-0"
address = "192.168.15.2"
{blue6}"#
    )
}

/// One echo request, one second to answer: no retries that would hide an
/// address still tentative (duplicate address detection takes a second or
/// more, and a tentative source address cannot be bound at all).
fn ping6_once(lab: &Lab, node: &str, to: &str) -> std::process::Output {
    lab.node(node, &["ping", "-6", "-n", "-c1", &ping_wait(2), to])
}

/// The global IPv6 addresses in a namespace (`-n NETNS`) as `ip -6 addr` lists them.
fn global6(netns_args: &[&str]) -> String {
    let mut args = vec!["ip", "-6", "-o", "addr", "show", "scope", "global"];
    args.splice(1..1, netns_args.iter().copied());
    ok(&args, T)
}

#[test]
fn ipv6_dual_stack_lab_answers_at_once_and_converges() {
    require_root();
    let lab = Lab::new("d6", &dual_stack(true));
    lab.up();
    // Right after `up`: the first echo request to a node and to the lab
    // host's gateway6 is answered (addresses are never tentative).
    for (from, to) in [
        ("red", "fd00:15::2"),
        ("blue", "fd00:15::1"),
        ("red", "fd00:15::5"),
    ] {
        let o = ping6_once(&lab, from, to);
        assert!(
            o.status.success(),
            "{from} -> {to} right after up:\n{}",
            text(&o)
        );
    }
    let red_netns = lab.netns("red");
    let addrs = global6(&["-n", &red_netns]);
    assert!(addrs.contains("fd00:15::1/64"), "{addrs}");
    assert!(!addrs.contains("tentative"), "{addrs}");
    // Names resolve to both families from the hosts file.
    let both = lab.node_ok("red", &["getent", "ahosts", "blue"]);
    assert!(
        both.contains("fd00:15::2") && both.contains("192.168.15.2"),
        "{both}"
    );
    let by_name = lab.node_ok("red", &["ping", "-6", "-c1", &ping_wait(2), "blue"]);
    assert!(by_name.contains("fd00:15::2"), "{by_name}");
    let gw = lab.node_ok("blue", &["getent", "ahosts", "v-net-0-gateway"]);
    assert!(gw.contains("fd00:15::5"), "{gw}");
    // Routers and the lab host route IPv6: its forwarding is on.
    let fwd = lab.host(&["sysctl", "-n", "net.ipv6.conf.all.forwarding"]);
    assert_eq!(netlab_tests::stdout(&fwd).trim(), "1", "{}", text(&fwd));
    // A second `up` changes nothing; status shows the IPv6 side.
    let again = lab.up();
    assert!(again.contains("nothing to change"), "{again}");
    let status = lab.netlab_ok(&["status", "--name", &lab.name]);
    assert!(status.contains("192.168.15.5/24 fd00:15::5/64"), "{status}");
    assert!(status.contains("192.168.15.1/24 fd00:15::1/64"), "{status}");
    assert_eq!(
        ipv6_side(&lab),
        (Some("2001:db8:100::2".into()), IPV6_PROGRAMS)
    );

    // Without subnet6, `up` takes every IPv6 address (and route) away.
    lab.write(&dual_stack(false));
    lab.up();
    let addrs = global6(&["-n", &red_netns]);
    assert!(addrs.trim().is_empty(), "left in red: {addrs}");
    let host = lab.host_netns();
    let bridge = global6(&["-n", &host]);
    assert!(
        !bridge.contains("fd00:15::"),
        "left on the lab host: {bridge}"
    );
    let routes = ok(
        &["ip", "-n", &red_netns, "-6", "route", "show", "default"],
        T,
    );
    assert!(routes.trim().is_empty(), "left in red: {routes}");
    assert!(!ping6_once(&lab, "red", "fd00:15::2").status.success());
    let json = lab.netlab_ok(&["status", "--name", &lab.name, "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["converged"], true, "{json}");
    // Nothing to translate: no IPv6 address taken, no IPv6 program kept.
    assert_eq!(ipv6_side(&lab), (None, 0));
    // And back: usable at once again.
    lab.write(&dual_stack(true));
    lab.up();
    let o = ping6_once(&lab, "red", "fd00:15::2");
    assert!(o.status.success(), "after re-adding:\n{}", text(&o));
    assert_eq!(
        ipv6_side(&lab),
        (Some("2001:db8:100::2".into()), IPV6_PROGRAMS)
    );
    lab.down();
}

/// The IPv6 programs of a lab with the fast path: all of them.
const IPV6_PROGRAMS: usize = netlab_common::names::IPV6_PROGRAMS.len();

/// The uplink's IPv6 address the lab's NAT translates to (`status`), and
/// how many IPv6 programs it has pinned.
fn ipv6_side(lab: &Lab) -> (Option<String>, usize) {
    let json = lab.netlab_ok(&["status", "--name", &lab.name, "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["dataplane"]["fast_path"], true, "{json}");
    let address6 = json["dataplane"]["uplink_address6"]
        .as_str()
        .map(str::to_string);
    let progs = std::path::Path::new("/sys/fs/bpf/netlab")
        .join(&lab.name)
        .join("progs");
    let pinned = std::fs::read_dir(&progs)
        .unwrap_or_else(|e| panic!("{}: {e}", progs.display()))
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy().into_owned();
            name.starts_with("nl_") && name.ends_with('6')
        })
        .count();
    (address6, pinned)
}

#[test]
fn router_node_forwards_ipv6_between_segments() {
    require_root();
    // a — r — b over cables, each a dual-stack /64; a routes b's subnet
    // through r, b has r as its IPv6 default gateway.
    let body = |forwarding: bool| {
        format!(
            r#"
[[nodes]]
name = "a"
routes = [{{ to = "fd00:2::/64", via = "fd00:1::1" }}]
[[nodes]]
name = "r"
forwarding = {forwarding}
[[nodes]]
name = "b"
gateway6 = "fd00:2::1"
[[cables]]
a = {{ node = "a", address = "10.0.1.2/24", address6 = "fd00:1::2/64" }}
b = {{ node = "r", address = "10.0.1.1/24", address6 = "fd00:1::1/64" }}
[[cables]]
a = {{ node = "r", address = "10.0.2.1/24", address6 = "fd00:2::1/64" }}
b = {{ node = "b", address = "10.0.2.2/24", address6 = "fd00:2::2/64" }}
"#
        )
    };
    let lab = Lab::new("r6", &body(true));
    lab.up();
    let o = ping6_once(&lab, "a", "fd00:2::2");
    assert!(o.status.success(), "a -> b through r:\n{}", text(&o));
    let back = lab.node_ok("b", &["ping", "-6", "-c1", &ping_wait(2), "a"]);
    assert!(back.contains("fd00:1::2"), "{back}");
    let fwd = lab.node_ok("r", &["sysctl", "-n", "net.ipv6.conf.all.forwarding"]);
    assert_eq!(fwd.trim(), "1");
    // Without forwarding in r, nothing crosses it.
    lab.write(&body(false));
    lab.up();
    let fwd = lab.node_ok("r", &["sysctl", "-n", "net.ipv6.conf.all.forwarding"]);
    assert_eq!(fwd.trim(), "0");
    let o = ping6_once(&lab, "a", "fd00:2::2");
    assert!(
        !o.status.success(),
        "forwarded without forwarding on:\n{}",
        text(&o)
    );
    lab.down();
}

#[test]
fn ipv6_forwarding_on_the_lab_host_is_restored_by_down() {
    require_root();
    // --host-netns: a namespace of the test's stands in for the lab host.
    let lab = Lab::new(
        "h6",
        r#"
[[bridges]]
name = "br0"
subnet = "10.20.0.0/24"
gateway = "10.20.0.1"
subnet6 = "fd00:20::/64"
masquerade = false
[[nodes]]
name = "x"
bridge = "br0"
address = "10.20.0.2"
address6 = "fd00:20::2"
"#,
    );
    let host = lab.own_host_netns();
    let sysctl = |netns: &str, key: &str| {
        ok(&["ip", "netns", "exec", netns, "sysctl", "-n", key], T)
            .trim()
            .to_string()
    };
    let forwarding6 = || sysctl(&host, "net.ipv6.conf.all.forwarding");
    assert_eq!(forwarding6(), "0");
    let file = lab.file.to_str().unwrap().to_string();
    lab.netlab_ok(&["--host-netns", &host, "up", "-f", &file]);
    assert_eq!(forwarding6(), "1", "the lab host routes IPv6 for its nodes");
    // The bridge took its gateway6 by default: the subnet's first address.
    let o = ping6_once(&lab, "x", "fd00:20::1");
    assert!(o.status.success(), "x -> gateway6:\n{}", text(&o));
    // The lab's links: IPv6 on, no duplicate address detection, no RAs.
    let x = lab.netns("x");
    for (netns, link) in [(x.as_str(), "veth-x"), (host.as_str(), "br0")] {
        for (key, want) in [
            ("disable_ipv6", "0"),
            ("accept_dad", "0"),
            ("accept_ra", "0"),
        ] {
            let k = format!("net.ipv6.conf.{link}.{key}");
            assert_eq!(sysctl(netns, &k), want, "{k} in {netns}");
        }
    }
    lab.netlab_ok(&["down", "--name", &lab.name]);
    assert_eq!(forwarding6(), "0", "down turns IPv6 forwarding off again");
    let addrs = global6(&["-n", &host]);
    assert!(addrs.trim().is_empty(), "{addrs}");
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
}

#[test]
fn ipv6_lab_subnet_over_an_ipv6_route_of_the_host_is_refused() {
    require_root();
    // The sandbox's uplink carries 2001:db8:100::/64: a second lab on that
    // lab host with it as a bridge's subnet6 would cut the host off.
    let first = Lab::new("c6", &dual_stack(true));
    first.up();
    let host = first.host_netns();
    let second = Lab::new(
        "c6o",
        "[[bridges]]\nname = \"c6o-br\"\nsubnet = \"10.77.0.0/24\"\ngateway = \"10.77.0.1\"\n\
         subnet6 = \"2001:db8:100::/64\"\nmasquerade = false\n",
    );
    let file = second.file.to_str().unwrap().to_string();
    let o = second.netlab(&["up", "-f", &file, "--host-netns", &host]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("lab.toml:7: bridges[0].subnet6: 2001:db8:100::/64 overlaps the lab host's route `2001:db8:100::/64 dev eth0"),
        "{err}"
    );
    let links = first.host(&["ip", "-o", "link", "show", "c6o-br"]);
    assert!(!links.status.success(), "the bridge was made");
    assert!(second.leftovers().is_empty(), "{:?}", second.leftovers());
    // The lab host still reaches the wan side over IPv6.
    let ping = first.host(&["ping", "-6", "-c1", &ping_wait(2), "2001:db8:100::1"]);
    assert!(ping.status.success(), "upstream lost: {}", text(&ping));
    first.down();
}

/// `Icmp6InEchos` of a namespace's `/proc/net/snmp6`: echo requests that
/// reached its stack.
fn echo_requests_received(lab: &Lab, netns: &str) -> u64 {
    let snmp6 = ok(&["ip", "netns", "exec", netns, "cat", "/proc/net/snmp6"], T);
    snmp6
        .lines()
        .find_map(|l| l.strip_prefix("Icmp6InEchos"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Icmp6InEchos in {netns} ({}): {snmp6}", lab.name))
}

/// NAT66 with the real tools: `ping -6`, `curl -6` and a UDP exchange
/// (socat) from a node reach the wan side, which sees only the uplink's
/// IPv6 address (its servers answer with the address they saw); nothing is
/// dropped untranslated, and the nodes' IPv4 still goes out.
#[test]
fn ipv6_from_a_masqueraded_subnet_is_masqueraded_to_the_uplinks_address() {
    require_root();
    let lab = Lab::new("g6", &dual_stack(true));
    lab.up();
    let wan = lab.wan_netns();
    let echoes = echo_requests_received(&lab, &wan);
    let before = netlab_tests::reliability::stats(&lab);
    let o = lab.node(
        "red",
        &[
            "ping",
            "-6",
            "-n",
            "-c3",
            "-i0.2",
            &ping_wait(2),
            "2001:db8:100::1",
        ],
    );
    assert!(o.status.success(), "unanswered: {}", text(&o));
    assert_eq!(echo_requests_received(&lab, &wan), echoes + 3);
    for node in ["red", "blue"] {
        let seen = lab.node(
            node,
            &["curl", "-6", "-sS", "-m5", "http://[2001:db8:100::1]/ip"],
        );
        assert!(seen.status.success(), "{node}: {}", text(&seen));
        assert_eq!(
            String::from_utf8_lossy(&seen.stdout).trim(),
            "2001:db8:100::2",
            "{node}: the wan side saw another source"
        );
    }
    let after = netlab_tests::reliability::stats_when(&lab, &before, |d| {
        d.get("new_snat_v6_flows").copied().unwrap_or(0) >= 3
    });
    let moved = netlab_tests::reliability::delta(&before, &after);
    assert_eq!(moved.get("new_snat_v6_flows"), Some(&3), "{moved:?}");
    assert_eq!(moved.get("drop_v6_untranslated"), None, "{moved:?}");
    // Past a flow's first packet, both ways go the fast path.
    for way in ["fast_path_out", "fast_path_in"] {
        assert!(moved.get(way).is_some_and(|&n| n > 0), "{way}: {moved:?}");
    }
    // `nat list` shows them: red's echo, from the uplink's address.
    let name = lab.name.clone();
    let list: serde_json::Value =
        serde_json::from_str(&lab.netlab_ok(&["nat", "list", "--name", &name, "--json"])).unwrap();
    let echo = list
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["protocol"] == "icmp6")
        .unwrap_or_else(|| panic!("no icmp6 flow in {list:#}"));
    assert_eq!(echo["kind"], "snat");
    assert!(echo["original"]["src"]
        .as_str()
        .unwrap()
        .starts_with("fd00:15::1 id="));
    assert!(echo["translated"]["src"]
        .as_str()
        .unwrap()
        .starts_with("2001:db8:100::2 id="));
    assert_eq!(echo["reply_packets"], 3, "{echo:#}");
    // A datagram in fragments both ways (3,000 bytes over 1,500-byte links):
    // the later fragments follow their first.
    let big = lab.node(
        "red",
        &[
            "ping",
            "-6",
            "-n",
            "-c1",
            "-s",
            "3000",
            &ping_wait(2),
            "2001:db8:100::1",
        ],
    );
    assert!(big.status.success(), "fragmented echo: {}", text(&big));
    // UDP both ways with socat: the wan side's server answers with the
    // address it saw, from a port of the NAT range.
    let server = in_netns(&wan, || UdpSocket::bind("[::]:7000").unwrap());
    server.set_read_timeout(Some(T)).unwrap();
    let answer = thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (_, peer) = server.recv_from(&mut buf).expect("no datagram came");
        server
            .send_to(peer.ip().to_string().as_bytes(), peer)
            .unwrap();
        peer
    });
    let udp = lab.node(
        "red",
        &[
            "sh",
            "-c",
            "echo hello | socat -T3 - 'UDP6:[2001:db8:100::1]:7000'",
        ],
    );
    let peer = answer.join().unwrap();
    assert!(udp.status.success(), "socat: {}", text(&udp));
    assert_eq!(String::from_utf8_lossy(&udp.stdout), "2001:db8:100::2");
    assert!((10000..=32767).contains(&peer.port()), "{peer}");
    let v4 = lab.node(
        "red",
        &["ping", "-4", "-n", "-c1", &ping_wait(2), "198.51.100.1"],
    );
    assert!(v4.status.success(), "IPv4 out: {}", text(&v4));
    lab.down();
}

/// ICMPv6 errors through NAT66 with the real tools: `traceroute -6` from
/// a node names the outside router on the way (its Time Exceeded about
/// the node's probe, translated back), and path-MTU discovery works
/// (IPv6 routers do not fragment: the outside router's Packet Too Big
/// reaches the node, which learns the 1280-byte path MTU, and a TCP bulk
/// transfer over that path completes).
#[test]
fn ipv6_traceroute_and_path_mtu_discovery_through_nat66() {
    require_root();
    let lab = Lab::new("t6", &dual_stack(true));
    lab.up();
    let far = FarNetwork::behind(&lab);
    let trace = lab.node_ok(
        "red",
        &["traceroute", "-6", "-n", "-q1", "-w2", FarNetwork::ADDR6],
    );
    let hops: Vec<&str> = trace
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        hops,
        ["fd00:15::5", "2001:db8:100::1", FarNetwork::ADDR6],
        "{trace}"
    );
    let big = ping_unfragmented(&lab, "-6", 1400, FarNetwork::ADDR6);
    assert!(!big.status.success(), "{}", text(&big));
    assert!(
        text(&big).contains("mtu=1280"),
        "red got no Packet Too Big: {}",
        text(&big)
    );
    let route = lab.node_ok("red", &["ip", "-6", "route", "get", FarNetwork::ADDR6]);
    assert!(
        route.contains("mtu 1280"),
        "red did not learn the path MTU:\n{route}"
    );
    let fits = ping_unfragmented(&lab, "-6", 1232, FarNetwork::ADDR6);
    assert!(fits.status.success(), "{}", text(&fits));
    far.send_once(8000, 200_000);
    // A bulk transfer from the far side over that path completes.
    let got = lab.node(
        "red",
        &[
            "socat",
            "-T5",
            "-u",
            &format!("TCP6:[{}]:8000", FarNetwork::ADDR6),
            "-",
        ],
    );
    assert_eq!(got.stdout.len(), 200_000, "{}", text(&got));
    drop(far);
    lab.down();
}

/// A forward applies to both families: the wan side reaches blue's server
/// through the uplink's forwarded port over IPv6 as over IPv4, and blue
/// sees the client's own address; the nodes reach it there too (hairpin);
/// a forward added to the live lab works over IPv6 at once, and one
/// removed stops.
#[test]
fn ipv6_forwards_reach_their_node_from_the_wan_side() {
    require_root();
    let body = format!(
        "{}\n[[forwards]]\nprotocol = \"tcp\"\nport = 8080\nto = \"blue:80\"\n\
         [[forwards]]\nprotocol = \"tcp\"\nport = 8082\nto = \"blue:80\"\nipv6 = false\n",
        dual_stack(true)
    );
    let lab = Lab::new("f6", &body);
    lab.up();
    lab.http_server("blue", 80);
    let get = |url: &str| {
        let o = lab.wan(&["curl", "-sS", "-m5", url]);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )
    };
    // `netlab log` names the new IPv6 flows, from each place that makes
    // one but the hairpin (see README): a forward, the lab host's own, a
    // masquerade.
    let connect = || {
        assert_eq!(
            get("http://[2001:db8:100::2]:8080/ip"),
            (true, "2001:db8:100::1".to_string()),
            "over IPv6, blue sees the client"
        );
        assert_eq!(
            get("http://198.51.100.2:8080/ip"),
            (true, "198.51.100.1".to_string())
        );
        // Hairpin: the nodes reach the forward at the uplink's IPv6 address
        // too, blue itself included; blue sees the uplink's address.
        for node in ["red", "blue"] {
            let seen = lab.node_ok(
                node,
                &[
                    "curl",
                    "-6",
                    "-sS",
                    "-m5",
                    "http://[2001:db8:100::2]:8080/ip",
                ],
            );
            assert_eq!(seen.trim(), "2001:db8:100::2", "{node} through the hairpin");
        }
        // The lab host itself reaches the forward at its uplink's IPv6 address
        // (nl_local_out6), as over IPv4; blue sees that address.
        let own = lab.host(&[
            "curl",
            "-6",
            "-sS",
            "-m5",
            "http://[2001:db8:100::2]:8080/ip",
        ]);
        assert!(own.status.success(), "the lab host's own: {}", text(&own));
        assert_eq!(netlab_tests::stdout(&own).trim(), "2001:db8:100::2");
        let out = lab.node_ok(
            "red",
            &["curl", "-6", "-sS", "-m5", "http://[2001:db8:100::1]/ip"],
        );
        assert_eq!(out.trim(), "2001:db8:100::2");
    };
    let expected = [
        "new dnat flow (uplink ingress): [2001:db8:100::1]:",
        "new local flow (lab host's lo): [2001:db8:100::2]:",
        "new snat flow (uplink egress): [fd00:15::1]:",
    ];
    let lines = lab.log_during(connect, |lines| {
        expected.iter().all(|w| lines.iter().any(|l| l.contains(w)))
    });
    for w in expected {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(w) && l.ends_with("ip protocol 6")),
            "no line {w:?} in:\n{}",
            lines.join("\n")
        );
    }
    let name = lab.name.clone();
    lab.netlab_ok(&["fwd", "add", "--name", &name, "tcp", "8081", "blue:80"]);
    assert_eq!(
        get("http://[2001:db8:100::2]:8081/ip"),
        (true, "2001:db8:100::1".to_string())
    );
    lab.netlab_ok(&["fwd", "del", "--name", &name, "tcp", "8081"]);
    assert!(
        !get("http://[2001:db8:100::2]:8081/ip").0,
        "a removed forward still answered"
    );
    // IPv4 only, from the file and live: the uplink's IPv6 address does
    // not forward them (the lab host itself refuses the connection).
    let added = lab.netlab_ok(&[
        "fwd",
        "add",
        "--name",
        &name,
        "--no-ipv6",
        "tcp",
        "8083",
        "blue:80",
    ]);
    assert!(added.contains("IPv4 only"), "{added}");
    for port in [8082, 8083] {
        assert_eq!(
            get(&format!("http://198.51.100.2:{port}/ip")),
            (true, "198.51.100.1".to_string())
        );
        assert!(
            !get(&format!("http://[2001:db8:100::2]:{port}/ip")).0,
            "the IPv4-only forward of {port} answered over IPv6"
        );
    }
    lab.down();
}

/// A forward to a node behind a router (reached through the lab host's
/// `[[routes]]`) works over IPv6 as over IPv4: the wan's curl at the
/// uplink's address reaches it, the node sees the client, and its answer
/// leaves translated.
#[test]
fn ipv6_forward_reaches_a_node_behind_a_router() {
    require_root();
    let body = r#"
[[bridges]]
name = "v-net-0"
subnet = "192.168.15.0/24"
gateway = "192.168.15.5"
subnet6 = "fd00:15::/64"
gateway6 = "fd00:15::5"
[[nodes]]
name = "r"
bridge = "v-net-0"
address = "192.168.15.3"
address6 = "fd00:15::3"
forwarding = true
[[nodes]]
name = "b"
gateway = "10.0.2.1"
gateway6 = "fd00:2::1"
[[cables]]
a = { node = "r", address = "10.0.2.1/24", address6 = "fd00:2::1/64" }
b = { node = "b", address = "10.0.2.2/24", address6 = "fd00:2::2/64" }
[[routes]]
to = "10.0.2.0/24"
via = "192.168.15.3"
[[routes]]
to = "fd00:2::/64"
via = "fd00:15::3"
[[forwards]]
protocol = "tcp"
port = 8080
to = "b:80"
"#;
    let lab = Lab::new("k6", body);
    lab.up();
    lab.http_server("b", 80);
    for (url, client) in [
        ("http://198.51.100.2:8080/ip", "198.51.100.1"),
        ("http://[2001:db8:100::2]:8080/ip", "2001:db8:100::1"),
    ] {
        let o = lab.wan(&["curl", "-sS", "-m5", url]);
        assert!(o.status.success(), "{url}: {}", text(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), client, "{url}");
    }
    lab.down();
}

/// A dual-stack client choosing between families (happy eyeballs, as curl
/// does it): a name with an address of each family reaches the outside
/// over IPv6 first, through NAT66; with the outside's IPv6 gone, the same
/// request falls back to IPv4 at once rather than hanging.
#[test]
fn ipv6_a_dual_stack_client_prefers_ipv6_and_falls_back_to_ipv4() {
    require_root();
    let lab = Lab::new("h6", &dual_stack(true));
    lab.up();
    let both = "outside:80:[2001:db8:100::1],198.51.100.1";
    let get = || {
        let start = std::time::Instant::now();
        let o = lab.node(
            "red",
            &["curl", "-sS", "-m8", "--resolve", both, "http://outside/ip"],
        );
        assert!(o.status.success(), "{}", text(&o));
        (
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
            start.elapsed(),
        )
    };
    assert_eq!(get().0, "2001:db8:100::2", "IPv6 first, masqueraded");
    let wan = lab.wan_netns();
    ok(
        &[
            "ip", "-n", &wan, "-6", "addr", "flush", "dev", "eth0", "scope", "global",
        ],
        T,
    );
    let (seen, took) = get();
    assert_eq!(seen, "198.51.100.2", "IPv4 after IPv6 failed");
    assert!(took.as_secs() < 5, "the fallback took {took:?}");
    lab.down();
}
