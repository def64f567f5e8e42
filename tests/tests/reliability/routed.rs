//! Routed bridges: the outside reaches nodes directly, lab sources stay refused.

use super::*;

/// A routed bridge: the wan host reaches the nodes directly, as themselves;
/// lab sources from the outside are still refused. `masquerade` as given.
fn routed_bridge(tag: &str, masquerade: bool) {
    let lab = Lab::new(
        tag,
        &SEEDS_BODY.replace(
            "masquerade = true",
            &format!("masquerade = {masquerade}\nrouted = true"),
        ),
    );
    lab.up();
    lab.http_server("blue", 80);
    let wan = lab.wan_netns();
    ok(
        &[
            "ip",
            "-n",
            &wan,
            "route",
            "add",
            "192.168.15.0/24",
            "via",
            "198.51.100.2",
        ],
        T,
    );
    let n = pick(200u64, 5000);
    let s0 = stats(&lab);
    let direct = lab.wan(&["curl", "-s", "-m5", "http://192.168.15.2/ip"]);
    let ping = lab.wan(&["ping", "-c2", "-i0.2", "-W2", "192.168.15.1"]);
    let out = lab.node_ok("red", &["curl", "-s", "-m5", "http://198.51.100.1/ip"]);
    let raw = RawSender::new(&wan);
    for i in 0..n {
        let p = packet::Ip::new(
            Ipv4Addr::new(192, 168, 15, 1),
            Ipv4Addr::new(192, 168, 15, 2),
            packet::UDP,
            packet::udp(5000 + (i % 100) as u16, 9999, b"spoof"),
        );
        raw.send(&p.bytes()).unwrap();
    }
    let d = delta(
        &s0,
        &stats_when(&lab, &s0, |d| moved(d, "drop_spoofed_source") >= n),
    );
    let spoofed = d.get("drop_spoofed_source").copied().unwrap_or(0);
    let flows = nat_list(&lab);
    figure(
        "routed bridge",
        format!(
            "masquerade = {masquerade}, routed = true: the wan host's curl to blue directly: {}; its ping to red: {}; red's own curl out seen as {}; {n} lab-sourced packets to the routed subnet: drop_spoofed_source +{spoofed}; flows {:?}",
            if direct.status.success() { format!("blue saw {}", stdout(&direct).trim()) } else { format!("FAILED (exit {:?})", direct.status.code()) },
            if ping.status.success() { "answered" } else { "FAILED" },
            out.trim(),
            flows.iter().map(|f| format!("{} {} {} -> {} as {}", f["protocol"], f["state"], f["original"]["src"], f["original"]["dst"], f["translated"]["src"])).collect::<Vec<_>>()
        ),
    );
    assert!(direct.status.success(), "{}", text(&direct));
    assert_eq!(stdout(&direct).trim(), "198.51.100.1");
    assert!(ping.status.success(), "{}", text(&ping));
    assert_eq!(
        out.trim(),
        if masquerade {
            "198.51.100.2"
        } else {
            "192.168.15.1"
        }
    );
    assert!(spoofed >= n, "{d:?}");
    lab.down();
}

#[test]
fn routed_bridge_lets_the_outside_in() {
    require_root();
    let _s = shared();
    routed_bridge("rb", false);
}

// Found by this suite, fixed in 2a8ac36: the nodes' replies to direct inbound connections were masqueraded.
#[test]
fn routed_and_masqueraded_bridge_lets_the_outside_in() {
    require_root();
    let _s = shared();
    routed_bridge("rm", true);
}

// Found by this suite, fixed in e128ff1: `up` applied a changed subnet flag but printed "nothing to change".
#[test]
fn converging_a_subnet_flag_reports_a_change() {
    require_root();
    let _s = shared();
    let lab = Lab::seeds("sf");
    lab.up();
    lab.write(&SEEDS_BODY.replace("masquerade = true", "masquerade = true\nrouted = true"));
    let out = lab.up();
    let seen = lab.node_ok("red", &["curl", "-s", "-m5", "http://198.51.100.1/ip"]);
    figure(
        "converging a subnet flag",
        format!(
            "routed false -> true: `up` said {:?}",
            out.lines().find(|l| l.contains(" is up")).unwrap_or("")
        ),
    );
    assert_eq!(seen.trim(), "198.51.100.2");
    assert!(!out.contains("nothing to change"), "{out}");
    lab.down();
}
