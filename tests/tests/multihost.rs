//! One lab over three lab hosts joined by VXLAN, end to end. The hosts are
//! namespaces of the test's own on one underlay (192.0.2.0/24, a bridge in
//! an underlay namespace), each with its own uplink to one shared wan
//! namespace (198.51.100.0/24); each runs its share with
//! `netlab --host-netns H up -f lab.toml --host NAME`.

use std::{path::Path, time::Duration};

use netlab_tests::{capture, ok, run, text, Lab, T};

const HOSTS: [(&str, &str, &str); 3] = [
    ("a", "192.0.2.1", "198.51.100.11"),
    ("b", "192.0.2.2", "198.51.100.12"),
    ("c", "192.0.2.3", "198.51.100.13"),
];

/// The lab: br0 (dual-stack) stretched over a, b and c; n1 on a, n2 on b,
/// n3 on c; a forward on b's uplink to n2, and one on a's uplink to n2
/// (across hosts).
fn body() -> String {
    let mut s = String::new();
    for (h, underlay, _) in HOSTS {
        s.push_str(&format!(
            "[[hosts]]\nname = \"{h}\"\nunderlay = \"{underlay}\"\ninterface = \"ul\"\n"
        ));
    }
    s.push_str(
        "[[bridges]]\nname = \"br0\"\nsubnet = \"192.168.15.0/24\"\ngateway = \"192.168.15.254\"\n\
         subnet6 = \"fd00:15::/64\"\ngateway6 = \"fd00:15::fe\"\n",
    );
    for (i, (h, _, _)) in HOSTS.iter().enumerate() {
        let n = i + 1;
        s.push_str(&format!(
            "[[nodes]]\nname = \"n{n}\"\nhost = \"{h}\"\nbridge = \"br0\"\naddress = \"192.168.15.{n}\"\n\
             address6 = \"fd00:15::{n}\"\n"
        ));
    }
    s.push_str("[[forwards]]\nprotocol = \"tcp\"\nport = 8080\nto = \"n2:80\"\n");
    s.push_str("[[forwards]]\nprotocol = \"tcp\"\nport = 8081\nto = \"n2:80\"\nhost = \"a\"\n");
    s
}

/// Host a's address on br0: the top of the subnet but the gateway (.254),
/// a being the first host.
const HOST_A_ON_BR0: &str = "192.168.15.253";

/// The test's own namespaces and the lab's three shares; dropping it takes
/// every share down, deletes the namespaces and asserts nothing is left.
struct Hosts {
    name: String,
    file: String,
    prefix: String,
}

impl Hosts {
    fn ns(&self, host: &str) -> String {
        format!("{}-h{host}", self.name)
    }

    fn underlay(&self) -> String {
        format!("{}-ul", self.name)
    }

    fn wan(&self) -> String {
        format!("{}-wan", self.name)
    }

    fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = HOSTS.iter().map(|(h, _, _)| self.ns(h)).collect();
        v.push(self.underlay());
        v.push(self.wan());
        v
    }

    fn ip(&self, netns: &str, args: &str) {
        let mut full = vec!["ip", "-n", netns];
        full.extend(args.split_whitespace());
        ok(&full, T);
    }

    /// The underlay bridge, the wan bridge, and each host on both.
    fn build(&self) {
        for n in self.namespaces() {
            ok(&["ip", "netns", "add", &n], T);
            self.ip(&n, "link set lo up");
        }
        let (ul, wan) = (self.underlay(), self.wan());
        self.ip(&ul, "link add ul0 type bridge");
        self.ip(&ul, "link set ul0 up");
        self.ip(&wan, "link add wan0 type bridge");
        self.ip(&wan, "addr add 198.51.100.1/24 dev wan0");
        self.ip(&wan, "link set wan0 up");
        for (h, underlay, uplink) in HOSTS {
            let ns = self.ns(h);
            self.ip(
                &ul,
                &format!("link add ul-{h} type veth peer name ul netns {ns}"),
            );
            self.ip(&ul, &format!("link set ul-{h} master ul0 up"));
            self.ip(
                &wan,
                &format!("link add w-{h} type veth peer name eth0 netns {ns}"),
            );
            self.ip(&wan, &format!("link set w-{h} master wan0 up"));
            self.ip(&ns, &format!("addr add {underlay}/24 dev ul"));
            self.ip(&ns, &format!("addr add {uplink}/24 dev eth0"));
            self.ip(&ns, "link set ul up");
            self.ip(&ns, "link set eth0 up");
            self.ip(&ns, "route add default via 198.51.100.1");
        }
    }

    fn netlab(&self, host: &str, args: &[&str]) -> std::process::Output {
        let ns = self.ns(host);
        let mut full = vec!["--host-netns", &ns];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--host", host]);
        netlab_tests::run_netlab(&full)
    }

    #[track_caller]
    fn netlab_ok(&self, host: &str, args: &[&str]) -> String {
        let o = self.netlab(host, args);
        assert!(
            o.status.success(),
            "netlab {args:?} on {host}:\n{}",
            text(&o)
        );
        netlab_tests::stdout(&o)
    }

    fn up(&self, host: &str) -> String {
        self.netlab_ok(host, &["up", "-f", &self.file])
    }

    fn down(&self, host: &str) -> std::process::Output {
        self.netlab(host, &["down", "--name", &self.name])
    }

    /// What host `host`'s share left: its nodes' namespaces, state, pins,
    /// files, and links in the host namespace other than the test's own.
    fn left_of(&self, host: &str) -> Vec<String> {
        let share = format!("{}@{host}", self.name);
        let mut left = Vec::new();
        for p in [
            format!("/sys/fs/bpf/netlab/{share}"),
            format!("/run/netlab/{share}"),
        ] {
            if Path::new(&p).exists() {
                left.push(p);
            }
        }
        let i = HOSTS.iter().position(|(h, _, _)| *h == host).unwrap() + 1;
        let node = format!("{}n{i}", self.prefix);
        let netns = netlab_tests::stdout(&run(&["ip", "netns", "list"], T));
        if netns
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&node))
        {
            left.push(format!("netns {node}"));
        }
        if Path::new("/etc/netns").join(&node).exists() {
            left.push(format!("/etc/netns/{node}"));
        }
        let links = run(&["ip", "-n", &self.ns(host), "-o", "link", "show"], T);
        for l in netlab_tests::stdout(&links).lines() {
            let name = l.split(':').nth(1).unwrap_or("").trim();
            let name = name.split('@').next().unwrap_or("");
            if !["lo", "ul", "eth0"].contains(&name) {
                left.push(format!("link {name} on host {host}"));
            }
        }
        left
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let mut left = Vec::new();
        for (h, _, _) in HOSTS {
            let o = self.down(h);
            if !o.status.success() {
                left.push(format!("down on {h} failed: {}", text(&o)));
            }
            left.extend(self.left_of(h));
        }
        for n in self.namespaces() {
            let _ = run(&["ip", "netns", "del", &n], T);
        }
        if !std::thread::panicking() {
            assert!(left.is_empty(), "left behind: {left:#?}");
        } else if !left.is_empty() {
            eprintln!("left behind: {left:#?}");
        }
    }
}

fn ping(lab: &Lab, node: &str, args: &[&str]) -> std::process::Output {
    let mut full = vec!["ping", "-c", "2", "-W", "2"];
    full.extend_from_slice(args);
    lab.node(node, &full)
}

#[test]
fn multihost_lab_over_three_hosts() {
    netlab_tests::require_root();
    let lab = Lab::new("mh", &body());
    let hosts = Hosts {
        name: lab.name.clone(),
        file: lab.file.to_str().unwrap().to_string(),
        prefix: lab.prefix.clone(),
    };
    hosts.build();
    // Checked as host a (`check` as root also checks the file against the
    // lab host it runs on: the test's host namespace, not the machine's).
    let check = hosts.netlab_ok("a", &["check", "-f", &hosts.file]);
    assert!(
        check.contains("stretched over a, b, c by VXLAN VNI"),
        "{check}"
    );
    // The underlay from before the first `up` (the bridges' first ND and
    // MLD) to the end of the traffic across hosts: each packet once, as
    // it enters the underlay from its host.
    let pcap = std::env::temp_dir()
        .join(format!("netlab-test-{}", lab.name))
        .join("underlay.pcap");
    let tcpdump = capture::tcpdump(&hosts.underlay(), "any", "inbound and udp port 4789", &pcap);
    let tcpdump = Reap(Some(tcpdump));
    let captured_since = std::time::Instant::now();
    for (h, _, _) in HOSTS {
        hosts.up(h);
    }

    // Across the stretched bridge: ping, full-size with DF, one byte more
    // refused at the node (never silently lost), and TCP.
    let o = ping(&lab, "n1", &["n2"]);
    assert!(o.status.success(), "n1 -> n2 by name:\n{}", text(&o));
    let o = ping(&lab, "n1", &["-M", "do", "-s", "1422", "192.168.15.3"]);
    assert!(o.status.success(), "full-size n1 -> n3:\n{}", text(&o));
    let o = ping(&lab, "n1", &["-M", "do", "-s", "1423", "192.168.15.3"]);
    assert!(
        !o.status.success() && text(&o).contains("mtu=1450"),
        "1451 bytes not refused at the node:\n{}",
        text(&o)
    );
    // IPv6 across hosts too, and each node's IPv6 gateway (the same
    // address on every host, as the IPv4 one) answering on its own host.
    let o = ping(&lab, "n1", &["fd00:15::3"]);
    assert!(o.status.success(), "n1 -> n3 over IPv6:\n{}", text(&o));
    for node in ["n1", "n2"] {
        let o = ping(&lab, node, &["fd00:15::fe"]);
        assert!(
            o.status.success(),
            "{node} -> its IPv6 gateway:\n{}",
            text(&o)
        );
    }
    lab.http_server("n2", 80);
    let body = lab.node_ok("n1", &["curl", "-s", "-m", "5", "http://192.168.15.2/"]);
    assert!(body.contains("you are 192.168.15.1:"), "{body}");
    // Full-size TCP segments (MSS from the 1450 MTU), every byte there.
    let got = lab.node_ok(
        "n1",
        &[
            "sh",
            "-c",
            "curl -s -m 10 http://192.168.15.2/bytes/300000 | wc -c",
        ],
    );
    assert_eq!(got.trim(), "300000");

    // Each host masquerades its own nodes to its own uplink address.
    let server = lab.spawn_in(
        &hosts.wan(),
        &[
            netlab_tests::netlab_bin().to_str().unwrap(),
            "serve-http",
            "--port",
            "81",
        ],
    );
    let _server = Reap(Some(server));
    netlab_tests::wait_for("the wan's server", Duration::from_secs(5), || {
        lab.wan(&["curl", "-s", "-m", "1", "http://198.51.100.1:81/ip"])
            .status
            .success()
    });
    for (i, (h, _, uplink)) in HOSTS.iter().enumerate() {
        let node = format!("n{}", i + 1);
        let seen = lab.node_ok(
            &node,
            &["curl", "-s", "-m", "5", "http://198.51.100.1:81/ip"],
        );
        assert_eq!(seen.trim(), *uplink, "{node} on host {h}");
    }
    // The forward on b's uplink reaches n2, on b.
    let fwd = lab.wan_ok(&["curl", "-s", "-m", "5", "http://198.51.100.12:8080/"]);
    assert!(fwd.contains("you are 198.51.100.1:"), "{fwd}");
    // The forward on a's uplink reaches n2 on b too: n2 answers, and sees
    // host a's address on br0 (its replies must come back through a).
    // Repeated connections each get a flow of their own.
    for i in 0..5 {
        let fwd = lab.wan_ok(&["curl", "-s", "-m", "5", "http://198.51.100.11:8081/"]);
        assert!(
            fwd.contains(&format!("you are {HOST_A_ON_BR0}:")),
            "connection {i}: {fwd}"
        );
    }
    let got = lab.wan_ok(&[
        "sh",
        "-c",
        "curl -s -m 10 http://198.51.100.11:8081/bytes/300000 | wc -c",
    ]);
    assert_eq!(got.trim(), "300000", "a large reply across hosts");

    // Host a asks for n2, a node of another host, as the gateway (from
    // the anycast MAC): a frame for a's tunnel program to keep on a. (n2's
    // answer, to the anycast MAC, would end on b: a never reaches it.)
    let _ = run(
        &[
            "ip",
            "netns",
            "exec",
            &hosts.ns("a"),
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "192.168.15.2",
        ],
        T,
    );
    // The gateway's own frames stayed on their hosts: none crossed the
    // underlay in a tunnel, while the nodes' did; the hosts' tunnel
    // programs dropped them (so they were there to drop: a's ARP at least).
    let tcpdump = tcpdump.take();
    capture::interrupt(&tcpdump);
    capture::finished(tcpdump, "tcpdump on the underlay");
    let inner = inner_frames(&capture::read_back_ethernet(&pcap));
    let (gateway, nodes): (Vec<&String>, Vec<&String>) = inner
        .iter()
        .partition(|l| l.starts_with(ANYCAST_MAC_PREFIX));
    let dropped: Vec<u64> = HOSTS
        .iter()
        .map(|(h, _, _)| {
            let json = hosts.netlab_ok(h, &["stats", "--name", &lab.name, "--json"]);
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            v["drop_gateway_into_tunnel"].as_u64().unwrap_or(0)
        })
        .collect();
    eprintln!(
        "underlay over {:?}, inner frames by kind: gateway {:?}, nodes {:?}; dropped by the tunnels' programs on a, b, c: {dropped:?}",
        captured_since.elapsed(),
        kinds(&gateway),
        kinds(&nodes)
    );
    assert!(
        gateway.is_empty(),
        "the gateway's own frames crossed the underlay: {gateway:#?}"
    );
    assert!(nodes.len() > 100, "the nodes' traffic: {}", nodes.len());
    assert!(
        dropped[0] > 0,
        "host a's tunnel program saw no gateway frame"
    );
    // The host port answers ARP for its address, the bridge (whose MAC is
    // the anycast gateway's on every host) does not.
    let n2_neigh = lab.node_ok("n2", &["ip", "neigh", "show", HOST_A_ON_BR0]);
    assert!(
        n2_neigh.contains("lladdr") && !n2_neigh.contains("02:4e:4c"),
        "n2 learnt host a's address at the anycast MAC: {n2_neigh}"
    );

    // Gateway ARP stays on the host: n1 asked its gateway (host a) for the
    // way out, and host b, which has the same gateway address, never heard
    // the question (it would have learnt n1's address from it).
    let neigh = |host: &str| {
        let o = run(
            &["ip", "-n", &hosts.ns(host), "neigh", "show", "192.168.15.1"],
            T,
        );
        netlab_tests::stdout(&o)
    };
    assert!(neigh("a").contains("lladdr"), "host a: {}", neigh("a"));
    assert_eq!(
        neigh("b").trim(),
        "",
        "host b heard n1's ARP for the gateway"
    );
    assert_eq!(
        neigh("c").trim(),
        "",
        "host c heard n1's ARP for the gateway"
    );
    // The same for ND: only host a learnt n1's IPv6 address.
    let neigh6 = |host: &str| {
        let o = run(
            &[
                "ip",
                "-n",
                &hosts.ns(host),
                "-6",
                "neigh",
                "show",
                "fd00:15::1",
            ],
            T,
        );
        netlab_tests::stdout(&o)
    };
    assert!(neigh6("a").contains("lladdr"), "host a: {}", neigh6("a"));
    for h in ["b", "c"] {
        assert_eq!(
            neigh6(h).trim(),
            "",
            "host {h} heard n1's ND for the gateway"
        );
    }
    let vx = run(
        &[
            "ip",
            "-n",
            &hosts.ns("a"),
            "-d",
            "link",
            "show",
            "type",
            "vxlan",
        ],
        T,
    );
    let vx = netlab_tests::stdout(&vx);
    assert!(
        vx.contains("neigh_suppress on") && vx.contains("dstport 4789"),
        "{vx}"
    );

    // Again: nothing to do; status shows the tunnels up with traffic.
    // (--verbose: a change would be named in the message.)
    let again = hosts.netlab_ok("a", &["up", "-f", &hosts.file, "--verbose"]);
    assert!(again.contains("nothing to change"), "{again}");
    let status = hosts.netlab_ok("a", &["status", "--name", &lab.name]);
    assert!(status.contains("converged: yes"), "{status}");
    let tunnel = status
        .lines()
        .find(|l| l.contains("tunnel vx-"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        tunnel.contains("192.0.2.1 -> 192.0.2.2, 192.0.2.3"),
        "{tunnel}"
    );
    assert!(
        tunnel.contains(" up: ") && !tunnel.contains("rx 0 pkts"),
        "{tunnel}"
    );
    let vni = tunnel
        .split("tunnel vx-")
        .nth(1)
        .and_then(|t| t.split(' ').next());
    let program = format!("nl_tunnel_out  on vx-{} egress", vni.unwrap_or("?"));
    assert!(status.contains(&program), "{program}:\n{status}");
    let port = status
        .lines()
        .find(|l| l.contains("host port hp-"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        port.contains(&format!("{HOST_A_ON_BR0}/32 on bridge br0")),
        "{port}"
    );

    // c goes: a and b still talk, and nothing of c's share is left.
    let o = hosts.down("c");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(hosts.left_of("c"), Vec::<String>::new());
    let o = ping(&lab, "n1", &["192.168.15.2"]);
    assert!(o.status.success(), "n1 -> n2 with c down:\n{}", text(&o));

    // SIGKILL in the middle of `up` on c, then `down`: nothing left.
    for delay_ms in [50, 300] {
        let ns = hosts.ns("c");
        let args = ["--host-netns", &ns, "up", "-f", &hosts.file, "--host", "c"];
        let (mut child, _lines) = netlab_tests::spawn_netlab(&args);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let o = hosts.down("c");
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(
            hosts.left_of("c"),
            Vec::<String>::new(),
            "killed after {delay_ms} ms"
        );
    }
    // a goes: nothing of its share is left (its host port neither), and
    // b's forward still reaches n2.
    let o = hosts.down("a");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(hosts.left_of("a"), Vec::<String>::new());
    let fwd = lab.wan_ok(&["curl", "-s", "-m", "5", "http://198.51.100.12:8080/"]);
    assert!(fwd.contains("you are 198.51.100.1:"), "with a down: {fwd}");
    drop(hosts);
    drop(lab);
}

/// The source MAC prefix of every anycast gateway (`anycast_mac`).
const ANYCAST_MAC_PREFIX: &str = "02:4e:4c:";

/// The inner frames of the VXLAN packets in tcpdump's `-e` lines: each is
/// a line of its own after its packet's, beginning with its source MAC.
fn inner_frames(lines: &[String]) -> Vec<String> {
    lines
        .windows(2)
        .filter(|w| w[0].contains(": VXLAN, ") && w[0].contains(" vni "))
        .map(|w| w[1].trim_start().to_string())
        .collect()
}

/// How many of `frames` are of each kind (for the test's log).
fn kinds(frames: &[&String]) -> std::collections::BTreeMap<&'static str, usize> {
    const KINDS: [(&str, &str); 8] = [
        ("Request who-has", "arp request"),
        ("Reply", "arp reply"),
        ("neighbor solicitation", "nd ns"),
        ("neighbor advertisement", "nd na"),
        ("router solicitation", "rs"),
        ("router advertisement", "ra"),
        ("multicast listener", "mld"),
        ("igmp", "igmp"),
    ];
    let mut out = std::collections::BTreeMap::new();
    for f in frames {
        let kind = KINDS
            .iter()
            .find(|(needle, _)| f.contains(needle))
            .map_or("other", |(_, k)| k);
        *out.entry(kind).or_insert(0) += 1;
    }
    out
}

/// A process of the test's, ended when the test ends (unless taken back).
struct Reap(Option<std::process::Child>);

impl Reap {
    fn take(mut self) -> std::process::Child {
        self.0.take().unwrap()
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
