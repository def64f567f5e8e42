//! The eBPF NAT dataplane end to end, in sandboxes: masquerade, port
//! forwards, hairpin, ICMP errors (traceroute, path MTU), many concurrent
//! flows, live forward edits, RFC 5780 behaviour with a real STUN client.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::Duration,
};

use netlab_common::IPPROTO_TCP as TCP;
use netlab_tests::{
    in_netns, ping_unfragmented, reliability::tcx, require_root, stdout, text, wait_for,
    FarNetwork, Lab,
};

const UPLINK: &str = "198.51.100.2";
const WAN: &str = "198.51.100.1";
/// curl's exit code when the connection was refused.
const CURL_REFUSED: i32 = 7;

#[test]
fn masquerade_ping_http_udp_traceroute() {
    require_root();
    let lab = Lab::seeds("mq");
    lab.up();
    for node in ["red", "blue"] {
        lab.node_ok(node, &["ping", "-c2", "-i0.2", "-W2", WAN]);
        // The server on the outside sees only the uplink address.
        let seen = lab.node_ok(node, &["curl", "-s", "-m5", &format!("http://{WAN}/ip")]);
        assert_eq!(seen.trim(), UPLINK, "{node}");
    }
    // UDP request/response; the server records who it saw.
    let wan = lab.wan_netns();
    let server = in_netns(&wan, || UdpSocket::bind("0.0.0.0:7000").unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let seen = seen.clone();
        let server = server.try_clone().unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = server.recv_from(&mut buf) {
                seen.lock().unwrap().push(from);
                let _ = server.send_to(&buf[..n], from);
            }
        });
    }
    for node in ["red", "blue"] {
        let client = in_netns(&lab.netns(node), || UdpSocket::bind("0.0.0.0:0").unwrap());
        client
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let msg = format!("hello from {node}");
        client.send_to(msg.as_bytes(), (WAN, 7000)).unwrap();
        let mut buf = [0u8; 100];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg.as_bytes());
        assert_eq!(from, format!("{WAN}:7000").parse::<SocketAddr>().unwrap());
    }
    for from in seen.lock().unwrap().iter() {
        assert_eq!(from.ip().to_string(), UPLINK);
    }
    // traceroute, UDP and ICMP: hop 1 is the lab host, hop 2 the outside host,
    // reached through translated ICMP errors.
    for method in [&[][..], &["-I"][..]] {
        // -w5: a probe's answer may take its time on a busy machine (it
        // costs nothing when answers come, and every hop answers here).
        let mut args = vec!["traceroute", "-n", "-w5", "-q1", "-m4"];
        args.extend_from_slice(method);
        args.push(WAN);
        let out = lab.node_ok("red", &args);
        let hops: Vec<&str> = out.lines().skip(1).collect();
        assert!(
            hops.len() == 2 && hops[0].contains("192.168.15.5") && hops[1].contains(WAN),
            "{out}"
        );
    }
    // nat list shows the translations, stats count them.
    let list: serde_json::Value =
        serde_json::from_str(&lab.netlab_ok(&["nat", "list", "--name", &lab.name, "--json"]))
            .unwrap();
    let flows = list.as_array().unwrap();
    assert!(
        flows.iter().any(|f| f["protocol"] == "udp"
            && f["original"]["src"]
                .as_str()
                .unwrap()
                .starts_with("192.168.15.1:")
            && f["translated"]["src"].as_str().unwrap().starts_with(UPLINK)),
        "{list:#}"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&lab.netlab_ok(&["stats", "--name", &lab.name, "--json"])).unwrap();
    assert!(
        stats["translated_out"].as_u64().unwrap() > 0
            && stats["translated_icmp_error"].as_u64().unwrap() > 0,
        "{stats}"
    );
    lab.down();
}

#[test]
fn port_forward_hairpin_and_live_edits() {
    require_root();
    let lab = Lab::seeds("fw");
    lab.up();
    lab.http_server("blue", 80);
    // From outside through the forward; the server sees the real client.
    let seen = lab.wan_ok(&["curl", "-s", "-m5", &format!("http://{UPLINK}/ip")]);
    assert_eq!(seen.trim(), WAN);
    // A port that is not forwarded gets nothing from the lab: the lab
    // host's own stack refuses it (curl's exit 7, not a timeout, which
    // would prove nothing).
    let o = lab.wan(&["curl", "-s", "-m5", &format!("http://{UPLINK}:81/")]);
    assert_eq!(o.status.code(), Some(CURL_REFUSED), "{}", text(&o));
    // Hairpin: red reaches blue's server through the uplink address; blue
    // reaches its own forward; both appear as the uplink address.
    for node in ["red", "blue"] {
        let seen = lab.node_ok(node, &["curl", "-s", "-m5", &format!("http://{UPLINK}/ip")]);
        assert_eq!(seen.trim(), UPLINK, "{node}");
    }
    // Forwards edited live, without reloading programs.
    let name = lab.name.clone();
    // The port search's bitmap follows every edit (`up` wrote port 80).
    assert_eq!(lab.forwarded_port_bits(), [(TCP, 80)]);
    lab.netlab_ok(&["fwd", "add", "--name", &name, "tcp", "8080", "blue:80"]);
    let list = lab.netlab_ok(&["fwd", "list", "--name", &name]);
    assert!(list.contains("tcp 8080 -> blue:80"), "{list}");
    assert_eq!(lab.forwarded_port_bits(), [(TCP, 80), (TCP, 8080)]);
    assert_eq!(
        lab.wan_ok(&["curl", "-s", "-m5", &format!("http://{UPLINK}:8080/ip")])
            .trim(),
        WAN
    );
    lab.netlab_ok(&["fwd", "del", "--name", &name, "tcp", "8080"]);
    assert_eq!(lab.forwarded_port_bits(), [(TCP, 80)]);
    let o = lab.wan(&["curl", "-s", "-m5", &format!("http://{UPLINK}:8080/")]);
    assert_eq!(o.status.code(), Some(CURL_REFUSED), "{}", text(&o));
    let list: serde_json::Value =
        serde_json::from_str(&lab.netlab_ok(&["fwd", "list", "--name", &name, "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // A port range.
    lab.netlab_ok(&["fwd", "add", "--name", &name, "tcp", "9000-9009", "blue:80"]);
    assert_eq!(
        lab.wan_ok(&["curl", "-s", "-m5", &format!("http://{UPLINK}:9007/ip")])
            .trim(),
        WAN
    );
    let o = lab.netlab(&["fwd", "add", "--name", &name, "tcp", "9005", "red:80"]);
    assert_eq!(o.status.code(), Some(2), "overlap accepted:\n{}", text(&o));
    let mut want = vec![(TCP, 80)];
    want.extend((9000..=9009).map(|p| (TCP, p)));
    assert_eq!(lab.forwarded_port_bits(), want, "after a refused overlap");
    lab.down();
}

#[test]
fn lab_host_traffic_and_no_netfilter() {
    require_root();
    let lab = Lab::seeds("hs");
    lab.up();
    // The lab host's own connection from the uplink address.
    let host = lab.host_netns();
    let seen = stdout(&lab.host(&["curl", "-s", "-m5", &format!("http://{WAN}/ip")]));
    assert_eq!(seen.trim(), UPLINK);
    // A service of the lab host on a port inside the NAT range stays reachable.
    let listener = in_netns(&host, || TcpListener::bind("0.0.0.0:12345").unwrap());
    thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(b"host service\n");
        }
    });
    let got = lab.wan_ok(&["socat", "-T3", "-", &format!("TCP:{UPLINK}:12345")]);
    assert_eq!(got, "host service\n");
    // No netfilter rule anywhere on the lab host, and NAT works.
    let rules = stdout(&lab.host(&["iptables-save"]));
    assert!(!rules.lines().any(|l| l.starts_with('-')), "{rules}");
    let nft = stdout(&lab.host(&["nft", "list", "ruleset"]));
    assert!(nft.trim().is_empty(), "{nft}");
    lab.node_ok("red", &["curl", "-s", "-m5", &format!("http://{WAN}/")]);
    lab.down();
}

/// Who an echo server saw.
type Peers = Arc<Mutex<Vec<SocketAddr>>>;

/// Echo servers in the wan namespace (TCP and UDP on `port`) until `stop`;
/// returns the TCP and UDP peers they saw.
fn echo_servers(wan: &str, port: u16, stop: Arc<AtomicBool>) -> (Peers, Peers) {
    let tcp = in_netns(wan, move || TcpListener::bind(("0.0.0.0", port)).unwrap());
    let udp = in_netns(wan, move || UdpSocket::bind(("0.0.0.0", port)).unwrap());
    let tcp_peers = Arc::new(Mutex::new(Vec::new()));
    let udp_peers = Arc::new(Mutex::new(Vec::new()));
    {
        let peers = tcp_peers.clone();
        let stop = stop.clone();
        tcp.set_nonblocking(true).unwrap();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut s, from)) => {
                        peers.lock().unwrap().push(from);
                        s.set_nonblocking(false).unwrap();
                        thread::spawn(move || {
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = s.read(&mut buf) {
                                if n == 0 || s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
    }
    {
        let peers = udp_peers.clone();
        udp.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    peers.lock().unwrap().push(from);
                    let _ = udp.send_to(&buf[..n], from);
                }
            }
        });
    }
    (tcp_peers, udp_peers)
}

#[test]
fn thousand_concurrent_flows_every_payload_checked() {
    require_root();
    let lab = Lab::seeds("cf");
    lab.up();
    let stop = Arc::new(AtomicBool::new(false));
    let (tcp_peers, udp_peers) = echo_servers(&lab.wan_netns(), 7001, stop.clone());
    const PER_NODE: usize = 300;
    let mut tcp_conns = Vec::new();
    let mut udp_socks = Vec::new();
    for node in ["red", "blue"] {
        let netns = lab.netns(node);
        let (tcp, udp) = in_netns(&netns, move || {
            let tcp: Vec<TcpStream> = (0..PER_NODE)
                .map(|_| {
                    TcpStream::connect_timeout(
                        &format!("{WAN}:7001").parse().unwrap(),
                        Duration::from_secs(5),
                    )
                    .unwrap()
                })
                .collect();
            let udp: Vec<UdpSocket> = (0..PER_NODE)
                .map(|_| UdpSocket::bind("0.0.0.0:0").unwrap())
                .collect();
            (tcp, udp)
        });
        tcp_conns.extend(tcp.into_iter().map(|s| (node, s)));
        udp_socks.extend(udp.into_iter().map(|s| (node, s)));
    }
    // Every flow carries its own payload and gets exactly it back.
    for (i, (node, s)) in tcp_conns.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let msg = format!("tcp flow {i} from {node} {}", "x".repeat(i % 200));
        s.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes(), "tcp flow {i}");
    }
    for (i, (node, s)) in udp_socks.iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let msg = format!("udp flow {i} from {node}");
        let mut answered = false;
        for _ in 0..3 {
            s.send_to(msg.as_bytes(), (WAN, 7001)).unwrap();
            let mut buf = [0u8; 200];
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                assert_eq!(&buf[..n], msg.as_bytes(), "udp flow {i}");
                answered = true;
                break;
            }
        }
        assert!(answered, "udp flow {i} got no answer");
    }
    // All of them live at once in the NAT table.
    let list: serde_json::Value =
        serde_json::from_str(&lab.netlab_ok(&["nat", "list", "--name", &lab.name, "--json"]))
            .unwrap();
    let n = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["original"]["dst"].as_str().unwrap().ends_with(":7001"))
        .count();
    assert!(n >= 4 * PER_NODE, "only {n} flows in the table");
    // The outside saw only the uplink address, and each flow its own port.
    let tcp_peers = tcp_peers.lock().unwrap().clone();
    assert_eq!(tcp_peers.len(), 2 * PER_NODE);
    assert!(tcp_peers.iter().all(|p| p.ip().to_string() == UPLINK));
    let mut ports: Vec<u16> = tcp_peers.iter().map(|p| p.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(
        ports.len(),
        2 * PER_NODE,
        "two flows shared an outside port"
    );
    assert!(udp_peers
        .lock()
        .unwrap()
        .iter()
        .all(|p| p.ip().to_string() == UPLINK));
    stop.store(true, Ordering::Relaxed);
    drop(tcp_conns);
    drop(udp_socks);
    lab.down();
}

#[test]
fn endpoint_independent_mapping_and_port_preservation() {
    require_root();
    let lab = Lab::seeds("ei");
    lab.up();
    let wan = lab.wan_netns();
    let a = in_netns(&wan, || UdpSocket::bind("198.51.100.1:7100").unwrap());
    let b = in_netns(&wan, || UdpSocket::bind("203.0.113.1:7200").unwrap());
    // A port inside the NAT range is kept; one outside it is mapped into it.
    for local in [15000u16, 40000] {
        let client = in_netns(&lab.netns("red"), move || {
            UdpSocket::bind(("0.0.0.0", local)).unwrap()
        });
        client.send_to(b"1", "198.51.100.1:7100").unwrap();
        client.send_to(b"2", "203.0.113.1:7200").unwrap();
        let mut buf = [0u8; 8];
        a.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let (_, from_a) = a.recv_from(&mut buf).unwrap();
        let (_, from_b) = b.recv_from(&mut buf).unwrap();
        assert_eq!(
            from_a, from_b,
            "one inside endpoint, one outside endpoint, whatever the destination"
        );
        assert_eq!(from_a.ip().to_string(), UPLINK);
        if local == 15000 {
            assert_eq!(from_a.port(), 15000, "port preserved");
        } else {
            assert!((10000..=32767).contains(&from_a.port()), "{from_a}");
        }
        // Address-and-port-dependent filtering: another outside endpoint is
        // refused, the one the node sent to gets through.
        let stranger = in_netns(&wan, || UdpSocket::bind("198.51.100.1:7300").unwrap());
        stranger.send_to(b"x", from_a).unwrap();
        a.send_to(b"y", from_a).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let (n, src) = client.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], src.to_string().as_str()),
            (&b"y"[..], "198.51.100.1:7100")
        );
        assert!(
            client.recv_from(&mut buf).is_err(),
            "a stranger got through"
        );
    }
    // Two nodes ping the same host at once: both are answered.
    let a = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.netns("red"),
            "ping",
            "-c3",
            "-i0.2",
            "-W2",
            WAN,
        ])
        .output();
    let b = lab.node("blue", &["ping", "-c3", "-i0.2", "-W2", WAN]);
    assert!(
        a.unwrap().status.success() && b.status.success(),
        "{}",
        text(&b)
    );
    lab.down();
}

#[test]
fn rfc5780_behaviour_with_a_real_stun_client() {
    require_root();
    let lab = Lab::seeds("st");
    lab.up();
    // coturn's server answers RFC 5780 tests with two addresses; its
    // natdiscovery client runs inside a node.
    let wan = lab.wan_netns();
    let mut server = lab.spawn_in(
        &wan,
        &[
            "turnserver",
            "-c",
            "/dev/null",
            "--listening-ip=198.51.100.1",
            "--listening-ip=203.0.113.1",
            "--no-auth",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--log-file=stdout",
        ],
    );
    wait_for("turnserver listening", Duration::from_secs(10), || {
        stdout(&lab.wan(&["ss", "-uln"])).contains("203.0.113.1:3479")
    });
    let discover = |args: &[&str]| {
        let mut full = vec!["turnutils_natdiscovery"];
        full.extend_from_slice(args);
        full.push(WAN);
        stdout(&lab.node("red", &full))
    };
    let out = discover(&["-m", "-f"]);
    assert!(
        out.contains("NAT with Endpoint Independent Mapping!"),
        "{out}"
    );
    assert!(
        out.contains("NAT with Address and Port Dependent Filtering!"),
        "{out}"
    );
    let out = discover(&["-H"]);
    assert!(
        out.contains("Received a request (maybe a successful hairpinning)"),
        "{out}"
    );
    // Full cone on request: the bridge's filtering option, converged live.
    let body = netlab_tests::SEEDS_BODY.replace(
        "masquerade = true",
        "masquerade = true\nfiltering = \"endpoint-independent\"",
    );
    lab.write(&body);
    lab.up();
    let out = discover(&["-f"]);
    assert!(
        out.contains("NAT with Endpoint Independent Filtering!"),
        "{out}"
    );
    let _ = server.kill();
    let _ = server.wait();
    lab.down();
}

#[test]
fn path_mtu_discovery_through_the_nat() {
    require_root();
    let lab = Lab::seeds("pm");
    lab.up();
    // A network behind the outside host with a smaller MTU: 203.0.113.128/25.
    let far = FarNetwork::behind(&lab);
    // A full-size DF packet from red draws "fragmentation needed" from the
    // wan router; translated back, it teaches red the path MTU.
    let o = ping_unfragmented(&lab, "-4", 1400, "203.0.113.130");
    assert!(!o.status.success());
    let route = lab.node_ok("red", &["ip", "route", "get", "203.0.113.130"]);
    assert!(
        route.contains("mtu 1280"),
        "red did not learn the path MTU:\n{route}"
    );
    let fits = ping_unfragmented(&lab, "-4", 1252, "203.0.113.130");
    assert!(fits.status.success(), "{}", text(&fits));
    // TCP adapts: a bulk transfer from the far side completes.
    far.send_once(8000, 200_000);
    let got = lab.node(
        "red",
        &["socat", "-T5", "-u", "TCP:203.0.113.130:8000", "-"],
    );
    assert_eq!(got.stdout.len(), 200_000, "{}", text(&got));
    drop(far);
    lab.down();
}

#[test]
fn flows_survive_a_second_up_and_down_removes_the_dataplane() {
    require_root();
    let lab = Lab::seeds("dp");
    lab.up();
    let stop = Arc::new(AtomicBool::new(false));
    let _ = echo_servers(&lab.wan_netns(), 7002, stop.clone());
    let mut conn = in_netns(&lab.netns("red"), || {
        TcpStream::connect((WAN, 7002)).unwrap()
    });
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut echo = |msg: &[u8]| {
        conn.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        conn.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    };
    echo(b"before");
    // Programs are loaded again and swapped into the pinned links; the NAT
    // table is the pinned one, so the connection lives on.
    lab.up();
    echo(b"after");
    // The programs outlived the CLI; after down none of them is loaded.
    let pins = format!("/sys/fs/bpf/netlab/{}/progs", lab.name);
    let ids: Vec<u32> = std::fs::read_dir(&pins)
        .unwrap()
        .flatten()
        .map(|e| {
            aya::programs::SchedClassifier::from_pin(e.path())
                .unwrap()
                .info()
                .unwrap()
                .id()
        })
        .collect();
    // Every program but a host port's and a tunnel's (a lab on one host
    // has neither) and the IPv6 ones (an IPv4 lab loads none).
    use netlab_common::names::*;
    let not_here = [PROG_HOST_PORT_IN, PROG_TUNNEL_OUT];
    let attached = PROGRAMS
        .iter()
        .filter(|p| !not_here.contains(p) && !IPV6_PROGRAMS.contains(p))
        .count();
    assert_eq!(
        ids.len(),
        attached,
        "five hooks, nl_node_new and nl_gc: {ids:?}"
    );
    // The tail calls still have their programs after the CLI exited (an
    // unpinned program array is emptied when its last file closes).
    let tails = aya::maps::ProgramArray::try_from(aya::maps::Map::ProgramArray(
        aya::maps::MapData::from_pin(format!("/sys/fs/bpf/netlab/{}/tails/TAILS", lab.name))
            .unwrap(),
    ))
    .unwrap();
    let mut slots: Vec<u32> = tails.indices().flatten().collect();
    slots.sort();
    let every_slot: Vec<u32> = (0..netlab_common::tail::COUNT).collect();
    assert_eq!(slots, every_slot, "TAILS slots filled");
    drop(tails);
    stop.store(true, Ordering::Relaxed);
    // Down without --sandbox: the lab host stays, its interfaces must be clean.
    lab.netlab_ok(&["down", "--name", &lab.name]);
    // The kernel empties an unpinned program array in deferred work, and
    // the programs it held (each other, through TAILS) go after that.
    wait_for(
        "the lab's programs unloaded",
        Duration::from_secs(5),
        || {
            let loaded: Vec<u32> = aya::programs::loaded_programs()
                .flatten()
                .map(|p| p.id())
                .collect();
            !ids.iter().any(|id| loaded.contains(id))
        },
    );
    // No program of netlab's is left on the uplink: no TCX program (on
    // kernels with TCX) and no bpf filter (on the others).
    let host = lab.host_netns();
    assert!(
        tcx(&host, "eth0", true).is_empty() && tcx(&host, "eth0", false).is_empty(),
        "TCX programs left on the uplink"
    );
    for dir in ["ingress", "egress"] {
        let filters = stdout(&lab.host(&["tc", "filter", "show", "dev", "eth0", dir]));
        assert!(!filters.contains(" bpf "), "{dir}: {filters}");
    }
    assert!(!std::path::Path::new(&pins).exists());
}

/// The path kernels before 6.6 take: netlink clsact filters instead of TCX
/// links (forced here with NETLAB_FORCE_NETLINK). NAT works, a second `up`
/// replaces the filters in place, and `down` removes the filters and the
/// clsact qdisc netlab added, nothing else.
#[test]
fn netlink_filters_where_there_is_no_tcx() {
    require_root();
    let lab = Lab::seeds("nl");
    let file = lab.file.to_str().unwrap().to_string();
    let up = || {
        let o = std::process::Command::new(netlab_tests::netlab_bin())
            .args(["up", "--sandbox", "-f", &file])
            .env("NETLAB_FORCE_NETLINK", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        stdout(&o)
    };
    assert!(up().contains("(netlink)"));
    let filters = stdout(&lab.host(&["tc", "filter", "show", "dev", "eth0", "egress"]));
    assert!(filters.contains("nl_uplink_out"), "{filters}");
    assert_eq!(
        lab.node_ok("red", &["curl", "-s", "-m5", &format!("http://{WAN}/ip")])
            .trim(),
        UPLINK
    );
    up();
    assert_eq!(
        lab.node_ok("blue", &["curl", "-s", "-m5", &format!("http://{WAN}/ip")])
            .trim(),
        UPLINK
    );
    let status = lab.netlab_ok(&["status", "--name", &lab.name]);
    assert!(status.contains("attached as netlink"), "{status}");
    lab.netlab_ok(&["down", "--name", &lab.name]);
    let qdiscs = stdout(&lab.host(&["tc", "qdisc", "show", "dev", "eth0"]));
    assert!(!qdiscs.contains("clsact"), "{qdiscs}");
    lab.down();
}
