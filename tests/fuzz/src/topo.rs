//! Oracles for the topology targets: what a lab that `topology::parse`
//! accepted must satisfy, the planner run on it, and a round trip through a
//! TOML rendering of the validated lab.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
};

use netlab::model::{
    net::{IpNet, Ipv4Net},
    plan::{converged, plan, teardown, Actual, Desired},
    topology::{self, check_domain, check_ifname, Attachment, Filtering, Lab, IFNAME_MAX},
};

/// Parse `text` and, when it validates, check everything below. Panics
/// (a finding) on any broken invariant.
pub fn check_text(text: &str) {
    let Ok(lab) = topology::parse("fuzz.toml", text) else {
        // Errors must render (file:line: field: message).
        if let Err(e) = topology::parse("fuzz.toml", text) {
            assert!(!e.problems.is_empty(), "an error without a problem");
            let shown = e.to_string();
            assert!(shown.starts_with("fuzz.toml"), "{shown}");
            for p in &e.problems {
                if let Some(line) = p.line {
                    let lines = text.split('\n').count();
                    assert!(
                        line >= 1 && line <= lines,
                        "problem on line {line} of a {lines}-line file: {p:?}"
                    );
                }
            }
        }
        return;
    };
    KNOWN_HIT.with(|k| k.set(false));
    check_lab(&lab);
    check_plan(&lab);
    if KNOWN_HIT.with(|k| k.get()) {
        return;
    }
    let again = render(&lab);
    match topology::parse("rendered.toml", &again) {
        Ok(lab2) => assert_eq!(
            without_file_places(lab.clone()),
            without_file_places(lab2),
            "the rendered lab parses into another lab\n--- input\n{text}\n--- rendered\n{again}"
        ),
        Err(e) => panic!(
            "a validated lab, rendered back to TOML, is refused: {e}\n--- input\n{text}\n--- rendered\n{again}"
        ),
    }
}

/// The lab without its host routes' places in the file: those name a
/// route in later error messages as the file does, so they change with the
/// file (the rendering numbers the routes afresh, one per destination, where
/// the file may have said the same route twice), not with the lab.
fn without_file_places(mut lab: Lab) -> Lab {
    lab.host_routes.iter_mut().for_each(|r| r.file_index = 0);
    lab.host_routes6.iter_mut().for_each(|r| r.file_index = 0);
    lab
}

/// Findings already reported (each with an ignored regression test in
/// tests/tests/fuzz_regressions.rs): shown once, not a crash, so the fuzzer
/// goes on looking for others. `NETLAB_FUZZ_STRICT=1` makes them crashes
/// again (to check a fix). Remove a class when its bug is fixed.
pub const KNOWN: &[(&str, &str)] = &[];

fn finding(class: &'static str, msg: String) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SHOWN: [AtomicBool; 16] = [const { AtomicBool::new(false) }; 16];
    let strict = std::env::var_os("NETLAB_FUZZ_STRICT").is_some_and(|v| v != "0");
    if !strict {
        if let Some(i) = KNOWN.iter().position(|(c, _)| *c == class) {
            if !SHOWN[i % 16].swap(true, Ordering::Relaxed) {
                eprintln!(
                    "netlab-fuzz: known finding `{class}` (regression test {}), not a crash: {msg}",
                    KNOWN[i].1
                );
            }
            KNOWN_HIT.with(|k| k.set(true));
            return;
        }
    }
    panic!("netlab-fuzz finding `{class}`: {msg}");
}

thread_local! {
    /// A known finding in the lab being checked (its round trip would
    /// only meet it again).
    static KNOWN_HIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn ifname_ok(name: &str, what: &str) {
    assert!(
        !name.is_empty() && name.len() <= IFNAME_MAX,
        "{what}: interface name `{name}` is {} bytes",
        name.len()
    );
    check_ifname(name).unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// Invariants of a validated lab.
pub fn check_lab(lab: &Lab) {
    assert!(!lab.name.is_empty() && lab.name.len() <= 64, "lab name");
    if let Some(i) = &lab.uplink.interface {
        ifname_ok(i, "uplink.interface");
    }
    // NAT settings.
    let nat = &lab.nat;
    assert!(
        nat.port_min >= 1024 && nat.port_min < nat.port_max,
        "port range {}-{}",
        nat.port_min,
        nat.port_max
    );
    assert!((2..=16_777_216).contains(&nat.max_flows), "max_flows");
    let t = nat.timeouts;
    for (what, v) in [
        ("tcp_syn", t.tcp_syn),
        ("tcp_established", t.tcp_established),
        ("tcp_closing", t.tcp_closing),
        ("tcp_rst", t.tcp_rst),
        ("udp", t.udp),
        ("icmp", t.icmp),
    ] {
        assert!(v >= 1, "timeout {what} is {v}");
    }

    // DNS search domains go into every node's resolv.conf as they are.
    for d in &lab.dns.search {
        if d.is_empty() || d.chars().any(|c| c.is_whitespace() || c.is_control()) {
            finding(
                "dns-search",
                format!("search domain {d:?} would break resolv.conf's `search` line"),
            );
        }
        check_domain(d).unwrap_or_else(|e| panic!("search domain {d:?}: {e}"));
    }

    // Bridges: valid unique names, networks that do not overlap, gateways
    // usable inside them.
    let mut names = BTreeSet::new();
    for b in &lab.bridges {
        ifname_ok(&b.name, "bridge");
        assert_ne!(b.name, "lo", "a bridge named lo");
        assert!(names.insert(b.name.clone()), "bridge {} twice", b.name);
        assert!(b.subnet.is_network(), "bridge subnet {}", b.subnet);
        if let Some(gw) = b.gateway {
            assert!(b.subnet.is_usable_host(gw), "gateway {gw} of {}", b.subnet);
        } else {
            assert!(
                !b.masquerade,
                "bridge {} masquerades without a gateway",
                b.name
            );
        }
    }
    let mut nets: Vec<(IpNet, String)> = lab
        .bridges
        .iter()
        .flat_map(|b| {
            let v6 = b.subnet6.map(|s| (s.into(), format!("bridge {}", b.name)));
            std::iter::once((b.subnet.into(), format!("bridge {}", b.name))).chain(v6)
        })
        .collect();
    for (i, c) in lab.cables.iter().enumerate() {
        nets.push((c.a.address.network().into(), format!("cable {i}")));
        if let (Some(a), Some(b)) = (c.a.address6, c.b.address6) {
            assert_eq!(a.network(), b.network(), "cable {i}: two IPv6 subnets");
            nets.push((a.network().into(), format!("cable {i}")));
        }
    }
    for (i, (a, an)) in nets.iter().enumerate() {
        for (b, bn) in &nets[i + 1..] {
            assert!(!a.overlaps(b), "{an} {a} overlaps {bn} {b}");
        }
    }

    // Nodes: unique names and namespaces, interface names valid and unique
    // per node, lab-host names unique (and not a bridge's), every address
    // unique in the lab and inside its segment.
    let mut addresses: BTreeMap<IpAddr, String> = BTreeMap::new();
    for b in &lab.bridges {
        let gw6 = b.gateway6.map(IpAddr::from);
        for gw in b.gateway.map(IpAddr::from).into_iter().chain(gw6) {
            addresses.insert(gw, format!("gateway of {}", b.name));
        }
        if let (Some(s6), Some(gw6)) = (b.subnet6, b.gateway6) {
            assert!(s6.is_usable_host(gw6), "gateway6 {gw6} of {s6}");
        } else {
            assert!(
                b.gateway6.is_none(),
                "bridge {}: gateway6 without subnet6",
                b.name
            );
        }
    }
    let mut host_names: BTreeSet<String> = names.clone();
    let mut netns = BTreeSet::new();
    let mut node_names = BTreeSet::new();
    for n in &lab.nodes {
        assert!(node_names.insert(n.name.clone()), "node {} twice", n.name);
        assert!(netns.insert(n.netns.clone()), "netns {} twice", n.netns);
        assert_eq!(n.netns, lab.netns_of(&n.name));
        assert!(
            !n.netns.is_empty() && !n.netns.contains('/') && n.netns != "." && n.netns != "..",
            "netns name {:?}",
            n.netns
        );
        let mut ifnames = BTreeSet::new();
        for i in &n.interfaces {
            if i.name.len() > IFNAME_MAX {
                finding(
                    "node-ifname-too-long",
                    format!(
                        "node {}: interface name `{}` is {} bytes (the kernel refuses it)",
                        n.name,
                        i.name,
                        i.name.len()
                    ),
                );
            } else {
                ifname_ok(&i.name, &format!("node {} interface", n.name));
            }
            if i.name == "lo" {
                finding(
                    "node-ifname-lo",
                    format!(
                        "node {}: an interface named lo (the namespace's loopback has that name)",
                        n.name
                    ),
                );
            }
            assert!(
                ifnames.insert(i.name.clone()),
                "node {}: interface {} twice",
                n.name,
                i.name
            );
            let a6 = i.address6.map(|a| IpAddr::from(a.addr));
            for a in std::iter::once(IpAddr::from(i.address.addr)).chain(a6) {
                if let Some(owner) = addresses.insert(a, format!("node {}", n.name)) {
                    panic!("address {a} of node {} is also {owner}", n.name);
                }
            }
            if let Some(a6) = i.address6 {
                assert!(
                    a6.network().is_usable_host(a6.addr),
                    "node {}: {a6} is not a usable host address",
                    n.name
                );
            }
            assert!(
                i.address.network().is_usable_host(i.address.addr),
                "node {}: {} is not a usable host address",
                n.name,
                i.address
            );
            match &i.attachment {
                Attachment::Bridge { bridge, host_name } => {
                    let b = lab
                        .bridge(bridge)
                        .unwrap_or_else(|| panic!("node {}: unknown bridge {bridge}", n.name));
                    assert_eq!(
                        i.address.network(),
                        b.subnet,
                        "node {}: {} is not in {}'s subnet",
                        n.name,
                        i.address,
                        b.name
                    );
                    if let Some(a6) = i.address6 {
                        assert_eq!(Some(a6.network()), b.subnet6, "node {}: {a6}", n.name);
                    }
                    ifname_ok(host_name, &format!("node {} host_name", n.name));
                    assert_ne!(host_name, "lo", "node {}: host_name lo", n.name);
                    assert!(
                        host_names.insert(host_name.clone()),
                        "lab-host interface {host_name} twice"
                    );
                }
                Attachment::Cable {
                    peer_node,
                    peer_interface,
                } => {
                    let peer = lab.node(peer_node).unwrap_or_else(|| {
                        panic!("node {}: unknown cable peer {peer_node}", n.name)
                    });
                    let back = peer
                        .interfaces
                        .iter()
                        .find(|p| &p.name == peer_interface)
                        .unwrap_or_else(|| {
                            panic!(
                                "node {}: cable peer {peer_node} has no interface {peer_interface}",
                                n.name
                            )
                        });
                    assert_eq!(
                        back.attachment,
                        Attachment::Cable {
                            peer_node: n.name.clone(),
                            peer_interface: i.name.clone()
                        },
                        "cable ends of {} and {peer_node} do not point at each other",
                        n.name
                    );
                    assert_eq!(back.address.network(), i.address.network());
                }
            }
        }
        // Default route and static routes go through a neighbour on one
        // of the node's segments; no two routes to one destination.
        let own: Vec<IpNet> = n
            .interfaces
            .iter()
            .flat_map(|i| std::iter::once(i.address.into()).chain(i.address6.map(IpNet::from)))
            .collect();
        let connected = |ip: IpAddr| {
            own.iter().any(|a| a.is_usable_host(ip)) && !own.iter().any(|a| a.addr() == ip)
        };
        // (Identical routes are one; two ways to one destination are not:
        // netlink refuses the second with EEXIST, `up` takes that as done,
        // and every later plan adds it again.)
        let mut dests: BTreeMap<IpNet, IpAddr> = BTreeMap::new();
        let gw6 = n.gateway6.map(IpAddr::from);
        for gw in n.gateway.map(IpAddr::from).into_iter().chain(gw6) {
            assert!(connected(gw), "node {}: gateway {gw} not connected", n.name);
            dests.insert(IpNet::default_for(gw), gw);
        }
        for r in &n.routes {
            assert!(
                connected(r.via),
                "node {}: route via {} not connected",
                n.name,
                r.via
            );
            assert!(r.to.is_network(), "node {}: route to {}", n.name, r.to);
            assert_eq!(
                r.to.is_v6(),
                r.via.is_ipv6(),
                "node {}: route families",
                n.name
            );
            // (A connected subnet has its kernel route already: EEXIST too.)
            assert!(
                !own.iter().any(|a| a.network() == r.to),
                "node {}: route to its own subnet {}",
                n.name,
                r.to
            );
            if let Some(other) = dests.insert(r.to, r.via) {
                if other != r.via {
                    finding(
                        "duplicate-route",
                        format!(
                            "node {}: two routes to {} (via {other} and via {})",
                            n.name, r.to, r.via
                        ),
                    );
                }
            }
        }
    }
    // Cables.
    for c in &lab.cables {
        assert_ne!(c.a.node, c.b.node, "cable to itself");
        assert_eq!(c.a.address.network(), c.b.address.network());
        assert_ne!(c.a.address.addr, c.b.address.addr);
        for end in [&c.a, &c.b] {
            let n = lab.node(&end.node).expect("cable node");
            assert!(
                n.interfaces
                    .iter()
                    .any(|i| i.name == end.interface && i.address == end.address),
                "cable end {}:{} missing",
                end.node,
                end.interface
            );
        }
    }
    // Host routes.
    let mut host_dests: BTreeMap<Ipv4Net, Ipv4Addr> = BTreeMap::new();
    let host_nets: Vec<Ipv4Net> = lab.bridges.iter().filter_map(|b| b.gateway_net()).collect();
    for r in &lab.host_routes {
        assert!(r.to.is_network(), "host route to {}", r.to);
        assert!(
            host_nets.iter().any(|g| g.is_usable_host(r.via))
                && !host_nets.iter().any(|g| g.addr == r.via),
            "host route to {} via {}: not another usable address on a bridge the lab host is on",
            r.to,
            r.via
        );
        assert!(
            !host_nets.iter().any(|g| g.network() == r.to),
            "host route to {}, a subnet the lab host is on",
            r.to
        );
        if let Some(other) = host_dests.insert(r.to, r.via) {
            if other != r.via {
                finding(
                    "duplicate-route",
                    format!(
                        "two host routes to {} (via {other} and via {})",
                        r.to, r.via
                    ),
                );
            }
        }
    }

    // Forwards: ports 1-65535, the target a node's address on a bridge the
    // lab host is on (with a gateway) or behind one of its routes, no overlaps; every port pair and the
    // descriptions computable (`netlab check`, `fwd list` print them).
    for (i, f) in lab.forwards.iter().enumerate() {
        assert!(
            f.port_first >= 1 && f.port_first <= f.port_last,
            "forward ports {}-{}",
            f.port_first,
            f.port_last
        );
        assert!(f.target_port >= 1, "forward target port 0");
        let node = lab
            .node(&f.node)
            .unwrap_or_else(|| panic!("forward to unknown node {}", f.node));
        let iface = node
            .interfaces
            .iter()
            .find(|i| i.address.addr == f.target_addr)
            .unwrap_or_else(|| panic!("forward target {} is not {}'s", f.target_addr, f.node));
        // (A route of the lab host may lead to the target instead.)
        let routed_to = lab.host_routes.iter().any(|r| r.to.contains(f.target_addr));
        match &iface.attachment {
            _ if routed_to => {}
            Attachment::Bridge { bridge, .. } => {
                let b = lab.bridge(bridge).expect("bridge");
                if b.gateway.is_none() {
                    finding(
                        "forward-to-switch",
                        format!(
                            "forward {i} goes to {} on bridge {} which has no gateway: the lab \
                             host cannot reach it (`to = \"{}\"` by name is refused for this)",
                            f.target_addr, b.name, f.node
                        ),
                    );
                }
            }
            Attachment::Cable { .. } => panic!(
                "forward target {} on a cable no route of the lab host leads to",
                f.target_addr
            ),
        }
        let span = u32::from(f.port_last - f.port_first);
        if f.target_range {
            assert!(
                u32::from(f.target_port) + span <= 65535,
                "forward {i}: target range past 65535"
            );
        }
        let pairs: Vec<(u16, u16)> = f.port_pairs().collect();
        assert_eq!(pairs.len() as u32, span + 1);
        for (o, inside) in pairs {
            assert!(o >= 1 && inside >= 1);
        }
        for other in &lab.forwards[i + 1..] {
            assert!(
                !f.overlaps(other),
                "forwards {} {} and {} {} overlap",
                f.proto,
                f.ports_text(),
                other.proto,
                other.ports_text()
            );
        }
        let _ = f.ports_text();
        // (A range to one port, however high, is every port to that one.)
        let text = f.target_text();
        let _ = f.to_string();
        if !f.target_range {
            assert_eq!(
                text,
                format!("{}:{}", f.node, f.target_port),
                "forward {i}: all ports go to one port"
            );
        }
    }
}

/// The planner on a validated lab: from nothing, converged, teardown.
pub fn check_plan(lab: &Lab) {
    let desired = Desired::from_lab(lab, &[Ipv4Addr::new(10, 0, 0, 53)]);
    assert_eq!(
        desired.nodes.len(),
        lab.nodes.len(),
        "two nodes in one netns"
    );
    let bridge_ifaces = lab
        .nodes
        .iter()
        .flat_map(|n| &n.interfaces)
        .filter(|i| matches!(i.attachment, Attachment::Bridge { .. }))
        .count();
    assert_eq!(
        desired.host_veths.len(),
        bridge_ifaces,
        "two lab-host veths under one name"
    );
    assert_eq!(desired.cables.len(), lab.cables.len(), "two cables alike");
    for n in &lab.nodes {
        assert_eq!(
            desired.nodes[&n.netns].addresses.len(),
            n.interfaces.len(),
            "node {}: two interfaces under one name",
            n.name
        );
    }
    let actions = plan(&desired, &Actual::default());
    for a in &actions {
        let _ = a.to_string();
    }
    assert!(
        !actions.iter().any(|a| a.removes()),
        "a plan from nothing deletes something: {actions:?}"
    );
    let done = converged(&desired);
    let again = plan(&desired, &done);
    assert!(again.is_empty(), "a converged lab plans {again:?}");
    let down = teardown(&lab.name, &done);
    for a in &down {
        let _ = a.to_string();
    }
    let namespaces = down
        .iter()
        .filter(|a| a.deleted_namespace().is_some())
        .count();
    assert_eq!(namespaces, lab.nodes.len(), "teardown misses namespaces");
}

fn q(s: &str) -> String {
    // TOML basic string.
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The validated lab as a topology file that says everything explicitly.
pub fn render(lab: &Lab) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "name = {}", q(&lab.name));
    let _ = writeln!(s, "netns_prefix = {}", q(&lab.netns_prefix));
    let _ = writeln!(s, "[uplink]");
    let _ = writeln!(
        s,
        "interface = {}",
        q(lab.uplink.interface.as_deref().unwrap_or("auto"))
    );
    if let Some(a) = lab.uplink.address {
        let _ = writeln!(s, "address = {}", q(&a.to_string()));
    }
    if let Some(a) = lab.uplink.address6 {
        let _ = writeln!(s, "address6 = {}", q(&a.to_string()));
    }
    let n = &lab.nat;
    let _ = writeln!(s, "[nat]");
    let _ = writeln!(
        s,
        "port_range = {}",
        q(&format!("{}-{}", n.port_min, n.port_max))
    );
    let _ = writeln!(s, "max_flows = {}", n.max_flows);
    let _ = writeln!(s, "fast_path = {}", n.fast_path);
    let _ = writeln!(s, "[nat.timeouts]");
    let t = n.timeouts;
    let _ = writeln!(
        s,
        "tcp_syn = {}\ntcp_established = {}\ntcp_closing = {}\ntcp_rst = {}\nudp = {}\nicmp = {}",
        t.tcp_syn, t.tcp_established, t.tcp_closing, t.tcp_rst, t.udp, t.icmp
    );
    let _ = writeln!(s, "[dns]");
    if let Some(ns) = &lab.dns.nameservers {
        let list: Vec<String> = ns.iter().map(|a| q(&a.to_string())).collect();
        let _ = writeln!(s, "nameservers = [{}]", list.join(", "));
    }
    let list: Vec<String> = lab.dns.search.iter().map(|d| q(d)).collect();
    let _ = writeln!(s, "search = [{}]", list.join(", "));
    for b in &lab.bridges {
        let _ = writeln!(s, "[[bridges]]");
        let _ = writeln!(s, "name = {}", q(&b.name));
        let _ = writeln!(s, "subnet = {}", q(&b.subnet.to_string()));
        if let Some(gw) = b.gateway {
            let _ = writeln!(s, "gateway = {}", q(&gw.to_string()));
        }
        if let Some(s6) = b.subnet6 {
            let _ = writeln!(s, "subnet6 = {}", q(&s6.to_string()));
            let gw6 = b.gateway6.map(|g| g.to_string());
            let _ = writeln!(s, "gateway6 = {}", q(gw6.as_deref().unwrap_or("none")));
        }
        let _ = writeln!(s, "masquerade = {}", b.masquerade);
        let _ = writeln!(
            s,
            "filtering = {}",
            q(match b.filtering {
                Filtering::AddressAndPortDependent => "address-and-port-dependent",
                Filtering::EndpointIndependent => "endpoint-independent",
            })
        );
        let _ = writeln!(s, "routed = {}", b.routed);
    }
    for node in &lab.nodes {
        let _ = writeln!(s, "[[nodes]]");
        let _ = writeln!(s, "name = {}", q(&node.name));
        let bridged: Vec<String> = node
            .interfaces
            .iter()
            .filter_map(|i| match &i.attachment {
                Attachment::Bridge { bridge, host_name } => Some(format!(
                    "{{ bridge = {}, address = {}{}, name = {}, host_name = {} }}",
                    q(bridge),
                    q(&i.address.to_string()),
                    address6(i.address6),
                    q(&i.name),
                    q(host_name)
                )),
                Attachment::Cable { .. } => None,
            })
            .collect();
        if !bridged.is_empty() {
            let _ = writeln!(s, "interfaces = [{}]", bridged.join(", "));
        }
        let _ = writeln!(
            s,
            "gateway = {}",
            q(&node
                .gateway
                .map(|g| g.to_string())
                .unwrap_or_else(|| "none".into()))
        );
        let gw6 = node.gateway6.map(|g| g.to_string());
        let _ = writeln!(s, "gateway6 = {}", q(gw6.as_deref().unwrap_or("none")));
        let routes: Vec<String> = node
            .routes
            .iter()
            .map(|r| {
                format!(
                    "{{ to = {}, via = {} }}",
                    q(&r.to.to_string()),
                    q(&r.via.to_string())
                )
            })
            .collect();
        let _ = writeln!(s, "routes = [{}]", routes.join(", "));
        let _ = writeln!(s, "forwarding = {}", node.forwarding);
        let run: Vec<String> = node.run.iter().map(|c| q(c)).collect();
        let _ = writeln!(s, "run = [{}]", run.join(", "));
    }
    for c in &lab.cables {
        let _ = writeln!(s, "[[cables]]");
        for (side, e) in [("a", &c.a), ("b", &c.b)] {
            let _ = writeln!(
                s,
                "{side} = {{ node = {}, interface = {}, address = {}{} }}",
                q(&e.node),
                q(&e.interface),
                q(&e.address.to_string()),
                address6(e.address6)
            );
        }
    }
    for f in &lab.forwards {
        let _ = writeln!(s, "[[forwards]]");
        let _ = writeln!(s, "protocol = {}", q(&f.proto.to_string()));
        let _ = writeln!(s, "port = {}", q(&f.ports_text()));
        let span = f.port_last - f.port_first;
        let to = if f.target_range && span > 0 {
            format!(
                "{}:{}-{}",
                f.target_addr,
                f.target_port,
                f.target_port + span
            )
        } else {
            format!("{}:{}", f.target_addr, f.target_port)
        };
        let _ = writeln!(s, "to = {}", q(&to));
        let _ = writeln!(s, "take_host_port = {}", f.take_host_port);
    }
    let v4 = lab.host_routes.iter().map(|r| {
        (
            IpNet::from(r.to),
            IpAddr::from(r.via),
            r.masquerade,
            r.routed,
        )
    });
    let v6 = lab.host_routes6.iter().map(|r| {
        (
            IpNet::from(r.to),
            IpAddr::from(r.via),
            r.masquerade,
            r.routed,
        )
    });
    for (to, via, masquerade, routed) in v4.chain(v6) {
        let _ = writeln!(s, "[[routes]]");
        let _ = writeln!(s, "to = {}", q(&to.to_string()));
        let _ = writeln!(s, "via = {}", q(&via.to_string()));
        let _ = writeln!(s, "masquerade = {masquerade}");
        let _ = writeln!(s, "routed = {routed}");
    }
    s
}

/// `, address6 = "<a>"` for an inline table, or nothing.
fn address6(a: Option<netlab::model::net::Ipv6Net>) -> String {
    a.map(|a| format!(", address6 = {}", q(&a.to_string())))
        .unwrap_or_default()
}
