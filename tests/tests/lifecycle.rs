//! The lab's lifecycle end to end: failed runs leave nothing, runs take
//! turns, `status` tells the truth (exit codes included), live forward
//! edits are visible, nodes leaving a lab take their processes along.

use std::{
    fs,
    time::{Duration, Instant},
};

use netlab_tests::{
    expect_line, finish, interrupt, lines_of, ok, require_root, spawn_netlab, text, unique,
    wait_for, Lab, SEEDS_BODY, T,
};

/// `netlab up -f` that must be refused, as a problem of the lab on this
/// lab host (exit 2, before anything is made); returns its stderr.
#[track_caller]
fn up_fails(lab: &Lab, extra: &[&str]) -> String {
    let file = lab.file.to_str().unwrap().to_string();
    let mut args = vec!["up", "-f", &file];
    args.extend_from_slice(extra);
    let o = lab.netlab(&args);
    assert_eq!(
        o.status.code(),
        Some(2),
        "up was not refused:\n{}",
        text(&o)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Nothing of `lab` is left, and `status` does not report it as a ghost.
#[track_caller]
fn left_nothing(lab: &Lab) {
    let left = lab.leftovers();
    assert!(left.is_empty(), "the failed up left {left:?}");
    let o = lab.netlab(&["status", "--name", &lab.name]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is not up"),
        "{}",
        text(&o)
    );
}

#[test]
fn failed_first_up_leaves_nothing_behind() {
    require_root();
    // The NAT port range overlaps the lab host's ip_local_port_range.
    let ports = Lab::new(
        "fp",
        &format!("{SEEDS_BODY}\n[nat]\nport_range = \"30000-40000\"\n"),
    );
    let err = up_fails(&ports, &["--sandbox"]);
    assert!(err.contains("ip_local_port_range"), "{err}");
    left_nothing(&ports);

    // A bridge named like an interface the lab host already has.
    let eth0 = Lab::new("fe", &SEEDS_BODY.replace("v-net-0", "eth0"));
    let err = up_fails(&eth0, &["--sandbox"]);
    assert!(err.contains("`eth0` is the uplink"), "{err}");
    left_nothing(&eth0);

    // A lab host without a default route to find the uplink by.
    let noroute = Lab::seeds("fr");
    let bare = noroute.own_host_netns();
    let err = up_fails(&noroute, &["--host-netns", &bare]);
    assert!(err.contains("no default route"), "{err}");
    left_nothing(&noroute);
    let links = ok(&["ip", "-n", &bare, "-o", "link", "show"], T);
    assert_eq!(links.lines().count(), 1, "only lo may be left: {links}");
    let forwarding = ok(
        &[
            "ip",
            "netns",
            "exec",
            &bare,
            "sysctl",
            "-n",
            "net.ipv4.ip_forward",
        ],
        T,
    );
    assert_eq!(forwarding.trim(), "0", "IPv4 forwarding left on");

    // A second lab on the uplink of a lab that is up; the first one stays
    // up and converged.
    let first = Lab::seeds("f1");
    first.up();
    let second = Lab::new(
        "f2",
        &SEEDS_BODY
            .replace("v-net-0", "v-net-9")
            .replace("192.168.15.", "192.168.16.")
            .replace("red", "rose")
            .replace("blue", "navy"),
    );
    let err = up_fails(&second, &["--host-netns", &first.host_netns()]);
    assert!(err.contains("already carries lab"), "{err}");
    left_nothing(&second);
    first.netlab_ok(&["status", "--name", &first.name]);

    // The same file renamed: its namespaces belong to the first lab.
    let renamed = Lab::seeds("f3");
    fs::write(
        &renamed.file,
        format!(
            "name = \"{}\"\nnetns_prefix = \"{}\"\n{SEEDS_BODY}",
            renamed.name, first.prefix
        ),
    )
    .unwrap();
    let err = up_fails(&renamed, &["--sandbox"]);
    assert!(
        err.contains(&format!(
            "namespace `{}red` belongs to lab {}",
            first.prefix, first.name
        )),
        "{err}"
    );
    left_nothing(&renamed);
    first.netlab_ok(&["status", "--name", &first.name]);
    first.down();
}

#[test]
fn removed_node_takes_its_processes_along() {
    require_root();
    let lab = Lab::seeds("rp");
    lab.up();
    let mut sleeper = lab.spawn_in(&lab.netns("blue"), &["sleep", "300"]);
    lab.write(&SEEDS_BODY[..SEEDS_BODY.find("[[nodes]]\nname = \"blue\"").unwrap()]);
    let out = lab.up();
    assert!(
        out.contains(&format!("ended sleep (pid {})", sleeper.id())),
        "{out}"
    );
    // Ended and reaped by us: it is gone, not a zombie kept by the namespace.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleeper.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "sleep in blue still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ns = ok(&["ip", "netns", "list"], T);
    assert!(!ns.contains(&lab.netns("blue")), "{ns}");
    lab.down();
}

#[test]
fn runs_of_one_lab_take_turns() {
    require_root();
    let lab = Lab::seeds("lk");
    let file = lab.file.to_str().unwrap().to_string();
    // Hold the lab's lock as another run would, so both `up`s must wait.
    let held = netlab::lock::acquire(
        &netlab::lock::Scope::Lab(lab.name.clone()),
        "the test's stand-in",
        Duration::from_secs(5),
    )
    .unwrap();
    let (a, a_err) = spawn_netlab(&["up", "--sandbox", "-f", &file]);
    let (b, b_err) = spawn_netlab(&["up", "--sandbox", "-f", &file]);
    let me = std::process::id();
    for rx in [&a_err, &b_err] {
        let line = expect_line(rx, "waiting for");
        assert_eq!(
            line,
            format!(
                "netlab: waiting for the test's stand-in (pid {me}) on lab {}",
                lab.name
            )
        );
    }
    drop(held);
    let outs = [finish(a), finish(b)];
    assert_eq!(
        outs.iter()
            .filter(|o| o.contains("nothing to change"))
            .count(),
        1,
        "one made the lab, the other found it made: {outs:?}"
    );
    lab.netlab_ok(&["status", "--name", &lab.name]);

    // `up` while `down` runs (and the other way round): both end well,
    // whichever goes first.
    let held = netlab::lock::acquire(
        &netlab::lock::Scope::Lab(lab.name.clone()),
        "the test's stand-in",
        Duration::from_secs(5),
    )
    .unwrap();
    let (down, down_err) = spawn_netlab(&["down", "--name", &lab.name]);
    let (up, up_err) = spawn_netlab(&["up", "--sandbox", "-f", &file]);
    expect_line(&down_err, "waiting for");
    expect_line(&up_err, "waiting for");
    drop(held);
    finish(down);
    finish(up);
    let o = lab.netlab(&["status", "-f", &file]);
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(3),
        "{}",
        text(&o)
    );
    lab.down();
}

#[test]
fn status_and_list_tell_up_converged_and_missing() {
    require_root();
    let lab = Lab::seeds("st");
    let file = lab.file.to_str().unwrap().to_string();
    // Not up: says so, exit 3.
    let o = lab.netlab(&["status", "-f", &file]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("is not up"),
        "{}",
        text(&o)
    );
    lab.up();
    lab.netlab_ok(&["status", "--name", &lab.name]);
    lab.netlab_ok(&["--name", &lab.name, "status"]);
    let listed: serde_json::Value =
        serde_json::from_str(&lab.netlab_ok(&["list", "--json"])).unwrap();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["lab"] == lab.name.as_str())
        .unwrap_or_else(|| panic!("{} not listed: {listed:#}", lab.name));
    assert_eq!(row["host_netns"], lab.host_netns().as_str(), "{row}");
    assert_eq!(row["converged"], true, "{row}");
    assert_eq!(row["nodes"], serde_json::json!(["red", "blue"]), "{row}");
    let text_list = lab.netlab_ok(&["list"]);
    assert!(
        text_list
            .lines()
            .any(|l| l.starts_with(&lab.name) && l.contains("up, converged; nodes: red blue")),
        "{text_list}"
    );
    // The sandbox's web server says where it runs.
    let hello = lab.node_ok("red", &["curl", "-s", "-m5", "http://198.51.100.1/"]);
    assert!(
        hello.starts_with(&format!(
            "hello from netlab serve-http in netns {}\n",
            lab.wan_netns()
        )),
        "{hello}"
    );
    // A lab host namespace that does not exist: an error, one line.
    let missing = unique("nons");
    let o = lab.netlab(&["status", "--host-netns", &missing]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.trim(),
        format!("netlab: error: network namespace {missing} does not exist")
    );
    assert!(o.stdout.is_empty(), "{}", text(&o));
    // Not converged (a node's namespace gone): exit 3, and why.
    ok(&["ip", "netns", "del", &lab.netns("red")], T);
    let o = lab.netlab(&["status", "--name", &lab.name]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("converged: no"), "{out}");
    let text_list = lab.netlab_ok(&["list"]);
    assert!(
        text_list
            .lines()
            .any(|l| l.starts_with(&lab.name) && l.contains("up, not converged")),
        "{text_list}"
    );
    lab.up();
    lab.netlab_ok(&["status", "--name", &lab.name]);
    lab.down();
}

#[test]
fn live_forward_edits_show_in_status_and_up_restores_the_file() {
    require_root();
    const UPLINK: &str = "198.51.100.2";
    let lab = Lab::seeds("lf");
    lab.up();
    lab.http_server("blue", 80);
    let name = lab.name.clone();
    lab.netlab_ok(&["fwd", "add", "--name", &name, "tcp", "8080", "blue:80"]);
    lab.netlab_ok(&["fwd", "del", "--name", &name, "tcp", "80"]);
    // The file's lab in the state is untouched; the live forwards differ.
    let saved: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(format!("/run/netlab/{name}/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["lab"]["forwards"].as_array().unwrap().len(), 1);
    assert_eq!(saved["lab"]["forwards"][0]["port_first"], 80, "{saved:#}");
    let o = lab.netlab(&["status", "--name", &name]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("live forwards differ from the file"), "{out}");
    assert!(
        out.contains("forward tcp 8080 -> blue:80 (192.168.15.2): added live, not in the file"),
        "{out}"
    );
    assert!(
        out.contains("forward tcp 80 -> blue:80 (192.168.15.2): removed live, in the file"),
        "{out}"
    );
    // `up` puts the file's forwards back and says so.
    let again = lab.up();
    assert!(!again.contains("nothing to change"), "{again}");
    assert!(again.contains("(2 changes)"), "{again}");
    assert!(
        again.contains("forward tcp 8080 -> blue:80 (192.168.15.2): added live"),
        "{again}"
    );
    assert!(
        again.contains("forward tcp 80 -> blue:80 (192.168.15.2): removed live"),
        "{again}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&lab.netlab_ok(&["status", "--name", &name, "--json"])).unwrap();
    assert_eq!(status["converged"], true, "{status:#}");
    lab.wan_ok(&["curl", "-s", "-m5", &format!("http://{UPLINK}/ip")]);
    let o = lab.wan(&["curl", "-s", "-m2", &format!("http://{UPLINK}:8080/")]);
    assert!(!o.status.success(), "{}", text(&o));
    let third = lab.up();
    assert!(third.contains("nothing to change"), "{third}");
    lab.down();
}

#[test]
fn sandbox_nodes_wait_on_no_resolver() {
    require_root();
    let lab = Lab::seeds("dn");
    lab.up();
    // The host's nameservers are outside the sandbox: nodes get none.
    let resolv = lab.node_ok("red", &["cat", "/etc/resolv.conf"]);
    assert!(
        !resolv.lines().any(|l| l.starts_with("nameserver")),
        "{resolv}"
    );
    // python's http.server looks its own name up before it listens
    // (socket.getfqdn('')); with an unreachable resolver that waits out the
    // resolver's 5 s timeout. Python times the lookup itself, so neither its
    // own start nor the machine's load (seconds under emulation) counts;
    // the lookup's work is microseconds, a wait is 5 s.
    let lookup = lab.node_ok(
        "red",
        &[
            "python3",
            "-c",
            "import socket, time; t = time.monotonic(); socket.getfqdn(''); print(time.monotonic() - t)",
        ],
    );
    let lookup: f64 = lookup
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {lookup:?}"));
    assert!(
        lookup < 2.5,
        "looking up the node's own name took {lookup:.3} s (a resolver timeout is 5 s)"
    );
    // And the server itself listens.
    let mut server = lab.spawn_in(&lab.netns("red"), &["python3", "-m", "http.server", "8000"]);
    wait_for(
        "http.server listening in red",
        Duration::from_secs(10),
        || {
            lab.node(
                "red",
                &[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-m1",
                    "http://127.0.0.1:8000/",
                ],
            )
            .status
            .success()
        },
    );
    let _ = server.kill();
    let _ = server.wait();
    lab.down();
}

#[test]
fn log_streams_a_line_for_each_new_masqueraded_flow() {
    require_root();
    // Without the fast path every new flow passes nl_uplink_out. (With it,
    // nl_node_new makes them: the kernel side's log lines there are the
    // dataplane's part.)
    let lab = Lab::new("lg", &format!("{SEEDS_BODY}\n[nat]\nfast_path = false\n"));
    lab.up();
    let (mut log, log_err) = spawn_netlab(&["log", "--name", &lab.name, "--seconds", "60"]);
    let log_out = lines_of(log.stdout.take().unwrap());
    expect_line(&log_err, "streaming lab");
    lab.node_ok("red", &["curl", "-s", "-m5", "http://198.51.100.1/ip"]);
    let line = expect_line(&log_out, "new snat flow (uplink egress): 192.168.15.1:");
    assert!(
        line.starts_with("[DEBUG] new snat flow (uplink egress): 192.168.15.1:")
            && line.contains("-> 198.51.100.1:80 as 198.51.100.2:"),
        "{line}"
    );
    // Ctrl-C ends it cleanly: the programs' log switch goes off again.
    assert!(log_switch(&lab.name), "logging is off while streaming");
    interrupt(&log);
    finish(log);
    assert!(!log_switch(&lab.name), "logging stayed on after Ctrl-C");
    lab.down();
}

/// Ctrl-C ends `netlab log` while events stream, every time: its signal
/// listener lives as long as it does (one made per turn of its loop lost a
/// Ctrl-C that came between two turns, and CI waited on it for 40 min).
/// The wan side sends a datagram every 200 µs or so to a port of the NAT
/// range that nobody holds: each is dropped with a `no mapping` event and
/// leaves no state, so the stream lasts as long as the rounds do. Each
/// round starts a log, waits for its first line, and interrupts it.
#[test]
fn log_ends_on_one_ctrl_c_while_events_stream() {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    /// Stops the sender however the test ends.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    require_root();
    let lab = Lab::new("lc", SEEDS_BODY);
    lab.up();
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let (stopped, wan) = (stop.0.clone(), lab.wan_netns());
    let sender = std::thread::spawn(move || {
        netlab_tests::in_netns(&wan, move || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            // Bounded: a million datagrams, 10 minutes, or told to stop.
            let started = Instant::now();
            for _ in 0..1_000_000u32 {
                if stopped.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(600) {
                    break;
                }
                let _ = socket.send_to(b"x", ("198.51.100.2", 20000));
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    });
    for round in 0..12 {
        let (mut log, log_err) = spawn_netlab(&["log", "--name", &lab.name]);
        let out = lines_of(log.stdout.take().unwrap());
        expect_line(&log_err, "streaming lab");
        expect_line(&out, "no mapping for 198.51.100.1:");
        std::thread::sleep(Duration::from_millis(round * 7));
        interrupt(&log);
        finish(log);
        assert!(
            !log_switch(&lab.name),
            "logging stayed on after round {round}"
        );
    }
    drop(stop);
    sender.join().unwrap();
    lab.down();
}

/// Whether the programs of lab `name` log (CONFIG's log flag).
fn log_switch(name: &str) -> bool {
    let pins = netlab::dataplane::pins::LabPins::new(name);
    let cfg: aya::maps::Array<_, netlab_common::NatConfig> =
        aya::maps::Array::try_from(pins.open("CONFIG").unwrap()).unwrap();
    cfg.get(&0, 0).unwrap().flags & netlab_common::CONFIG_LOG != 0
}

#[test]
fn down_sweeps_node_files_a_killed_up_left_half_made() {
    require_root();
    // What a SIGKILL of `up` between making a node's /etc/netns directory
    // and writing its (marked) files leaves: an empty directory, or an
    // empty file in it.
    let lab = Lab::seeds("hw");
    let red = format!("/etc/netns/{}", lab.netns("red"));
    let blue = format!("/etc/netns/{}", lab.netns("blue"));
    fs::create_dir_all(&red).unwrap();
    fs::create_dir_all(&blue).unwrap();
    fs::write(format!("{blue}/hosts"), "").unwrap();
    let file = lab.file.to_str().unwrap().to_string();
    lab.netlab_ok(&["down", "-f", &file]);
    assert!(lab.leftovers().is_empty(), "{:?}", lab.leftovers());
}
