//! End to end, in sandboxes: the lab host reaches its own forwards (as
//! Docker's hosts do), and a subnet behind a router node that the lab does
//! not translate never leaves the uplink with its private addresses.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use netlab_tests::{in_netns, require_root, stdout, text, Lab, SEEDS_BODY};

/// The counters of `netlab stats --json`.
fn stats(lab: &Lab) -> serde_json::Value {
    let out = lab.netlab_ok(&["stats", "--name", &lab.name, "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {stats}"))
}

/// From the lab host's own namespace, `curl` to the uplink address on the
/// forwarded port 80 reaches blue's server, which sees the uplink address.
#[test]
fn the_lab_host_reaches_its_own_forward() {
    require_root();
    let lab = Lab::seeds("lo");
    lab.up();
    lab.http_server("blue", 80);
    let o = lab.host(&["curl", "-s", "-m5", "http://198.51.100.2/ip"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        stdout(&o).trim(),
        "198.51.100.2",
        "blue saw the uplink address"
    );
    let s = stats(&lab);
    assert_eq!(counter(&s, "new_local_flows"), 1, "{s}");
    assert!(counter(&s, "translated_local") >= 4, "{s}");
    // The wan side's own server is still the lab host's to reach directly.
    let o = lab.host(&["curl", "-s", "-m5", "http://198.51.100.1/ip"]);
    assert_eq!(stdout(&o).trim(), "198.51.100.2", "{}", text(&o));
    lab.down();
}

/// A subnet behind a router node, reached by a lab host route: its
/// packets leave the uplink masqueraded (the route's default), and a
/// forward reaches a node there; a route with `masquerade = false` (and not
/// `routed`) gets its packets dropped at the uplink (`drop_unknown_source`)
/// instead of sent out with a private source. A datagram listener in the
/// wan namespace sees only the uplink address either way.
fn behind_a_router(tag: &str, masquerade: bool) {
    require_root();
    let body = format!(
        "{SEEDS_BODY}
[[bridges]]
name = \"inner\"
subnet = \"10.44.0.0/24\"

[[nodes]]
name = \"r\"
forwarding = true
interfaces = [{{ bridge = \"v-net-0\", address = \"192.168.15.3\" }}, {{ bridge = \"inner\", address = \"10.44.0.1\" }}]

[[nodes]]
name = \"n\"
bridge = \"inner\"
address = \"10.44.0.10\"
gateway = \"10.44.0.1\"

[[routes]]
to = \"10.44.0.0/24\"
via = \"192.168.15.3\"
masquerade = {masquerade}

[[forwards]]
protocol = \"tcp\"
port = 8080
to = \"n:80\"
"
    );
    let lab = Lab::new(tag, &body);
    lab.up();
    let listener = in_netns(&lab.wan_netns(), || {
        let s = UdpSocket::bind(("0.0.0.0", 4444)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s
    });
    let send_from = |node: &str, n: usize| {
        in_netns(&lab.netns(node), move || {
            let s = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
            for _ in 0..n {
                let _ = s.send_to(b"hello", ("198.51.100.1", 4444));
            }
        })
    };
    let before = counter(&stats(&lab), "drop_unknown_source");
    send_from("n", 20);
    send_from("red", 3);
    let mut seen: Vec<Ipv4Addr> = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok((_, from)) = listener.recv_from(&mut buf) {
        if let SocketAddr::V4(a) = from {
            seen.push(*a.ip());
        }
    }
    assert!(
        seen.iter().all(|a| *a == Ipv4Addr::new(198, 51, 100, 2)),
        "the wan side saw {seen:?}"
    );
    let dropped = counter(&stats(&lab), "drop_unknown_source") - before;
    if masquerade {
        assert_eq!(
            seen.len(),
            23,
            "n's and red's datagrams arrive masqueraded: {seen:?}"
        );
        assert_eq!(dropped, 0, "nothing dropped for its source");
        lab.http_server("n", 80);
        let page = lab.wan_ok(&["curl", "-s", "-m", "5", "http://198.51.100.2:8080/ip"]);
        assert!(page.contains("198.51.100.1"), "n saw the wan host: {page}");
    } else {
        assert_eq!(seen.len(), 3, "only red's datagrams arrive: {seen:?}");
        assert_eq!(dropped, 20, "each of n's datagrams dropped and counted");
    }
    lab.down();
}

#[test]
fn a_subnet_behind_a_router_is_masqueraded_and_reached_by_forwards() {
    behind_a_router("bm", true);
}

#[test]
fn a_subnet_behind_a_router_never_leaves_untranslated() {
    behind_a_router("br", false);
}

/// `netlab log` shows one line per new flow from every place that makes
/// them: the fast path's first packet (`nl_node_new`), a forward, a
/// hairpin, and the lab host's own connection to its forward.
#[test]
fn the_log_shows_every_new_flow() {
    require_root();
    let lab = Lab::seeds("lg");
    lab.up();
    lab.http_server("blue", 80);
    // The lab host knows the wan's address: the fast path's FIB lookup
    // finds its neighbour, so red's first packet opens the flow there.
    let o = lab.host(&["ping", "-c1", "-W2", "198.51.100.1"]);
    assert!(o.status.success(), "{}", text(&o));
    let curl = |o: std::process::Output| assert!(o.status.success(), "{}", text(&o));
    let connect = || {
        curl(lab.node("red", &["curl", "-s", "-m5", "http://198.51.100.1/ip"]));
        curl(lab.wan(&["curl", "-s", "-m5", "http://198.51.100.2/ip"]));
        curl(lab.node("red", &["curl", "-s", "-m5", "http://198.51.100.2/ip"]));
        curl(lab.host(&["curl", "-s", "-m5", "http://198.51.100.2/ip"]));
    };
    let expected = [
        (
            "new snat flow (node port, fast path): 192.168.15.1:",
            "red's",
        ),
        ("new dnat flow (uplink ingress): 198.51.100.1:", "the wan's"),
        ("new hairpin flow (bridge): 192.168.15.1:", "red's"),
        (
            "new local flow (lab host's lo): 198.51.100.2:",
            "the lab host's",
        ),
    ];
    let has = |lines: &[String], what: &str| {
        lines
            .iter()
            .any(|l| l.contains(what) && l.contains("ip protocol 6"))
    };
    let lines = lab.log_during(connect, |lines| {
        expected.iter().all(|(what, _)| has(lines, what))
    });
    for (what, from) in expected {
        assert!(
            has(&lines, what),
            "no line for {from} connection ({what}) in:\n{}",
            lines.join("\n")
        );
    }
    lab.down();
}
