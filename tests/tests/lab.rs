//! The lab control plane end to end: every test in its own sandbox.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use netlab_tests::{netlab_bin, ok, ping_wait, require_root, run, text, wait_for, Lab, T};

#[test]
fn seeds_lab_up_twice_down_twice() {
    require_root();
    let lab = Lab::seeds("ud");
    let first = lab.up();
    assert!(first.contains("is up"), "{first}");
    // Nodes reach each other and the gateway; names resolve from /etc/netns.
    lab.node_ok("red", &["ping", "-c1", "-W2", "192.168.15.2"]);
    lab.node_ok("red", &["ping", "-c1", "-W2", "192.168.15.5"]);
    let by_name = lab.node_ok("red", &["ping", "-c1", "-W2", "blue"]);
    assert!(by_name.contains("(192.168.15.2)"), "{by_name}");
    lab.node_ok("blue", &["ping", "-c1", "-W2", "red"]);
    // The second up changes nothing.
    let second = lab.up();
    assert!(second.contains("nothing to change"), "{second}");
    let status = lab.netlab_ok(&["status", "--name", &lab.name, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["converged"], true, "{status}");
    lab.down();
    let again = lab.netlab_ok(&["down", "--sandbox", "--name", &lab.name]);
    assert!(again.contains("not up"), "{again}");
}

#[test]
fn router_node_forwards_between_segments() {
    require_root();
    // The seeds' routing example: a and b on different segments, r between
    // them with forwarding on; a and b route through r.
    let body = |forwarding: bool| {
        format!(
            r#"
[[nodes]]
name = "a"
routes = [{{ to = "10.0.2.0/24", via = "10.0.1.1" }}]
[[nodes]]
name = "r"
forwarding = {forwarding}
[[nodes]]
name = "b"
gateway = "10.0.2.1"
[[cables]]
a = {{ node = "a", address = "10.0.1.2/24" }}
b = {{ node = "r", address = "10.0.1.1/24" }}
[[cables]]
a = {{ node = "r", address = "10.0.2.1/24" }}
b = {{ node = "b", address = "10.0.2.2/24" }}
"#
        )
    };
    let lab = Lab::new("rt", &body(true));
    lab.up();
    lab.node_ok("a", &["ping", "-c1", &ping_wait(2), "10.0.2.2"]);
    lab.node_ok("b", &["ping", "-c1", &ping_wait(2), "a"]);
    // Without forwarding in r, nothing crosses it.
    lab.write(&body(false));
    lab.up();
    let o = lab.node("a", &["ping", "-c1", &ping_wait(2), "10.0.2.2"]);
    assert!(
        !o.status.success(),
        "forwarded without forwarding on:\n{}",
        text(&o)
    );
    lab.down();
}

#[test]
fn edited_file_converges() {
    require_root();
    let lab = Lab::seeds("cv");
    lab.up();
    // blue goes, green comes, red moves to another address, forward goes.
    lab.write(
        r#"
[[bridges]]
name = "v-net-0"
subnet = "192.168.15.0/24"
gateway = "192.168.15.5"
[[nodes]]
name = "red"
bridge = "v-net-0"
address = "192.168.15.11"
[[nodes]]
name = "green"
bridge = "v-net-0"
address = "192.168.15.3"
"#,
    );
    lab.up();
    let ns = ok(&["ip", "netns", "list"], T);
    assert!(!ns.contains(&lab.netns("blue")), "{ns}");
    assert!(ns.contains(&lab.netns("green")), "{ns}");
    let addr = lab.node_ok(
        "red",
        &["ip", "-4", "-o", "addr", "show", "dev", "veth-red"],
    );
    assert!(
        addr.contains("192.168.15.11/24") && !addr.contains("192.168.15.1/"),
        "{addr}"
    );
    lab.node_ok("green", &["ping", "-c1", "-W2", "red"]);
    let hosts = lab.node_ok("green", &["cat", "/etc/hosts"]);
    assert!(
        hosts.contains("192.168.15.11\tred") && !hosts.contains("blue"),
        "{hosts}"
    );
    let again = lab.up();
    assert!(again.contains("nothing to change"), "{again}");
    lab.down();
}

#[test]
fn bad_input_exits_2_and_creates_nothing() {
    require_root();
    let lab = Lab::new(
        "bi",
        r#"
[[bridges]]
name = "v-net-0"
subnet = "192.168.15.0/24"
gateway = "192.168.15.5"
[[nodes]]
name = "red"
bridge = "v-net-0"
address = "10.9.9.9"
"#,
    );
    let file = lab.file.to_str().unwrap().to_string();
    let o = lab.netlab(&["up", "--sandbox", "-f", &file]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{file}:11: nodes[0].address: 10.9.9.9 is outside subnet"
        )),
        "{err}"
    );
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
}

#[test]
fn failure_half_way_rolls_back() {
    require_root();
    // The eBPF object cannot be loaded: the NAT dataplane fails after the
    // namespaces and links were made, and everything this run made is
    // undone, its state included. (An uplink that is not there is refused
    // before anything is made: tests/host_checks.rs.)
    let lab = Lab::seeds("rb");
    let file = lab.file.to_str().unwrap().to_string();
    let missing = lab.file.with_file_name("missing-object.o");
    let missing = missing.to_str().unwrap();
    let o = netlab_tests::reliability::netlab_env(
        &[("NETLAB_EBPF_OBJECT", missing)],
        &["up", "--sandbox", "-f", &file],
        Duration::from_secs(120),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("setting up the NAT dataplane (rolled back"),
        "{err}"
    );
    // The sandbox this run made went too, and the links in it with it.
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
}

#[test]
fn down_ends_processes_in_nodes() {
    require_root();
    let lab = Lab::seeds("pr");
    lab.up();
    let mut sleeper = lab.spawn_in(&lab.netns("red"), &["sleep", "1000"]);
    // `ip netns exec` becomes `sleep` once it has entered the namespace.
    let comm = format!("/proc/{}/comm", sleeper.id());
    wait_for("sleep running in red", Duration::from_secs(10), || {
        std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep")
    });
    let out = lab.netlab_ok(&["down", "--sandbox", "--name", &lab.name]);
    assert!(out.contains("ended sleep"), "{out}");
    let _ = sleeper.wait();
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
}

#[test]
fn exec_enters_node_with_its_dns() {
    require_root();
    let lab = Lab::seeds("ex");
    lab.up();
    let out = lab.netlab_ok(&[
        "exec", "--name", &lab.name, "red", "--", "ping", "-c1", "-W2", "blue",
    ]);
    assert!(out.contains("192.168.15.2"), "{out}");
    let hosts = lab.netlab_ok(&[
        "exec",
        "--name",
        &lab.name,
        "blue",
        "--",
        "cat",
        "/etc/hosts",
    ]);
    assert!(hosts.contains("192.168.15.1\tred"), "{hosts}");
    let o = lab.netlab(&["exec", "--name", &lab.name, "nobody", "--", "true"]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no node nobody"),
        "{}",
        text(&o)
    );
    lab.down();
}

#[test]
fn sigkill_during_up_then_down_leaves_nothing() {
    require_root();
    let lab = Lab::seeds("sk");
    let file = lab.file.to_str().unwrap().to_string();
    let mut interrupted = 0;
    for delay_ms in [5u64, 30, 80, 150, 300] {
        let mut child = Command::new(netlab_bin())
            .args(["up", "--sandbox", "-f", &file])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        lab.down();
    }
    // The sleeps are lower bounds: on a slow machine every kill still
    // lands during an `up`; only a machine fast enough to finish one in
    // 5 ms would leave nothing interrupted, and nothing tested.
    assert!(interrupted > 0, "every `up` had finished before its kill");
    // And it still comes up and works.
    lab.up();
    lab.node_ok("red", &["ping", "-c1", "-W2", "blue"]);
    lab.down();
}

#[test]
fn lab_in_an_existing_host_namespace() {
    require_root();
    // --host-netns: the lab host is a namespace of the caller's; a lab with
    // no NAT needs no uplink.
    let lab = Lab::new(
        "hn",
        r#"
[[bridges]]
name = "br0"
subnet = "10.20.0.0/24"
gateway = "10.20.0.1"
masquerade = false
[[nodes]]
name = "x"
bridge = "br0"
address = "10.20.0.2"
"#,
    );
    let host = lab.own_host_netns();
    let forwarding = || {
        ok(
            &[
                "ip",
                "netns",
                "exec",
                &host,
                "sysctl",
                "-n",
                "net.ipv4.ip_forward",
            ],
            T,
        )
        .trim()
        .to_string()
    };
    assert_eq!(forwarding(), "0");
    let file = lab.file.to_str().unwrap().to_string();
    lab.netlab_ok(&["--host-netns", &host, "up", "-f", &file]);
    let links = ok(&["ip", "-n", &host, "-o", "link"], T);
    assert!(
        links.contains("br0") && links.contains("veth-x-br"),
        "{links}"
    );
    assert_eq!(forwarding(), "1", "the lab host routes for its nodes");
    lab.node_ok("x", &["ping", "-c1", "-W2", "10.20.0.1"]);
    lab.netlab_ok(&["down", "--name", &lab.name]);
    let links = ok(&["ip", "-n", &host, "-o", "link"], T);
    assert!(!links.contains("br0"), "{links}");
    assert_eq!(forwarding(), "0", "down turns forwarding off again");
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
}

#[test]
fn without_privileges_one_line_and_exit_1() {
    require_root();
    let bin = netlab_bin();
    let o = run(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin.to_str().unwrap(),
            "up",
        ],
        T,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("needs CAP_NET_ADMIN"), "{err}");
}

/// What netlab uses on this kernel, printed past the output capture for
/// `cargo xtask test --kernel` (which puts the line into its table): the
/// attach mode must be the one the kernel offers (TCX from 6.6, netlink
/// clsact filters before), every program must load (the verifier accepts
/// bpf_loop, bpf_for_each_map_elem in the tail-called nl_gc,
/// bpf_redirect_peer and bpf_redirect_neigh), and the fast path must carry
/// an established flow.
#[test]
fn dataplane_features_of_this_kernel() {
    use netlab_tests::reliability::{attach_mode, delta, pinned_programs, stats};
    use std::io::Write as _;
    require_root();
    let lab = Lab::seeds("ft");
    lab.up();
    let status: serde_json::Value =
        serde_json::from_str(&lab.netlab_ok(&["status", "--name", &lab.name, "--json"])).unwrap();
    let dp = &status["dataplane"];
    assert_eq!(dp["attach"], attach_mode(), "{dp:#}");
    assert_eq!(dp["fast_path"], true, "{dp:#}");
    let programs = pinned_programs(&lab.name);
    for p in [
        "nl_uplink_in",
        "nl_uplink_out",
        "nl_bridge_in",
        "nl_node_in",
        "nl_node_new",
        "nl_gc",
    ] {
        assert!(programs.contains_key(p), "{p} not pinned: {programs:?}");
    }
    let tails = format!("/sys/fs/bpf/netlab/{}/tails/TAILS", lab.name);
    assert!(std::path::Path::new(&tails).exists(), "{tails} missing");
    let before = stats(&lab);
    for _ in 0..2 {
        let seen = lab.node_ok("red", &["curl", "-s", "-m5", "http://198.51.100.1/ip"]);
        assert_eq!(seen.trim(), "198.51.100.2");
    }
    let moved = delta(&before, &stats(&lab));
    let fast = |k: &str| moved.get(k).copied().unwrap_or(0);
    let line = format!(
        "netlab features: kernel {}; attach {} ({}); fast path on: fast_path_out +{}, fast_path_in +{} over two curls; programs {}; TAILS pinned\n",
        dp["kernel"].as_str().unwrap_or("?"),
        dp["attach"].as_str().unwrap_or("?"),
        dp["attach_why"].as_str().unwrap_or("?"),
        fast("fast_path_out"),
        fast("fast_path_in"),
        programs.keys().cloned().collect::<Vec<_>>().join(" "),
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    assert!(
        fast("fast_path_out") > 0 && fast("fast_path_in") > 0,
        "the fast path carried nothing: {moved:?}"
    );
    lab.down();
}

/// The kernel is judged by what it has: with the fast path's helpers
/// missing (hidden from the probe through NETLAB_PROBE_HIDE) `up` runs the
/// lab without the fast path, says why, and the lab works; with a helper
/// every program needs missing, `up` refuses with one line naming it and
/// makes nothing, not even the sandbox.
#[test]
fn kernel_probe_turns_the_fast_path_off_or_refuses() {
    use netlab_tests::reliability::{netlab_env, pinned_programs};
    require_root();
    let lab = Lab::seeds("kp");
    let file = lab.file.to_str().unwrap().to_string();
    let o = netlab_env(
        &[("NETLAB_PROBE_HIDE", "bpf_fib_lookup")],
        &["up", "--sandbox", "-f", &file],
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "{}", text(&o));
    let status: serde_json::Value =
        serde_json::from_str(&lab.netlab_ok(&["status", "--name", &lab.name, "--json"])).unwrap();
    let dp = &status["dataplane"];
    assert_eq!(dp["fast_path"], false, "{dp:#}");
    let why = dp["fast_path_why"].as_str().unwrap_or("");
    assert!(why.contains("lacks bpf_fib_lookup"), "{why}");
    let programs = pinned_programs(&lab.name);
    assert!(
        !programs.contains_key("nl_node_in") && !programs.contains_key("nl_node_new"),
        "{programs:?}"
    );
    let seen = lab.node_ok("red", &["curl", "-s", "-m5", "http://198.51.100.1/ip"]);
    assert_eq!(seen.trim(), "198.51.100.2");
    // Probed anew on the next `up`: the fast path comes back.
    lab.up();
    let status: serde_json::Value =
        serde_json::from_str(&lab.netlab_ok(&["status", "--name", &lab.name, "--json"])).unwrap();
    assert_eq!(status["dataplane"]["fast_path"], true, "{status:#}");
    lab.down();

    let o = netlab_env(
        &[("NETLAB_PROBE_HIDE", "bpf_loop")],
        &["up", "--sandbox", "-f", &file],
        Duration::from_secs(120),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("needs Linux 5.17 or newer") && err.contains("lacks the BPF helper bpf_loop"),
        "{err}"
    );
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
}
