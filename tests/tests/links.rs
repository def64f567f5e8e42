//! Link impairments and link control end to end, in sandboxes: a `rate`
//! holds within ±15% under iperf3 in both directions through the NAT's fast
//! path, `up` converges impairments (changes only what changed, removes
//! what went), and an impairment this kernel cannot give is refused with
//! nothing created; where the kernel has netem, delay, jitter and loss are
//! measured with ping.

use std::time::Duration;

use netlab_tests::{text, Lab, SEEDS_BODY};
use serde_json::Value;

const WAN: &str = "198.51.100.1";

/// The seeds' lab with `impair` on red.
fn seeds_with(red_impair: &str) -> String {
    SEEDS_BODY.replace(
        "address = \"192.168.15.1\"\n",
        &format!("address = \"192.168.15.1\"\n{red_impair}\n"),
    )
}

/// iperf3's received throughput (bits/s) from red to the wan (`reverse`:
/// the wan to red), over `secs` seconds after the first (TCP's start).
fn iperf(lab: &Lab, reverse: bool, secs: u32) -> f64 {
    let server = lab.spawn_in(&lab.wan_netns(), &["iperf3", "-s", "-1", "-B", WAN]);
    let _reap = ReapOnDrop(server);
    netlab_tests::wait_for(
        "iperf3 listening in the wan",
        Duration::from_secs(5),
        || text(&lab.wan(&["ss", "-ltn", "sport = :5201"])).contains("5201"),
    );
    let t = secs.to_string();
    let mut args = vec!["iperf3", "-c", WAN, "-t", &t, "-O", "1", "-J"];
    if reverse {
        args.push("-R");
    }
    let out = lab.node_ok("red", &args);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no throughput in {out}"))
}

struct ReapOnDrop(std::process::Child);

impl Drop for ReapOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The root qdisc of `dev` as `tc` shows it in `netns`.
fn root_qdisc(lab: &Lab, netns: &str, dev: &str) -> String {
    let o = lab.in_netns(
        netns,
        &["tc", "qdisc", "show", "dev", dev, "root"],
        netlab_tests::T,
    );
    text(&o)
}

#[test]
fn rate_holds_both_ways_through_the_fast_path() {
    netlab_tests::require_root();
    let lab = Lab::new("lrate", &seeds_with("impair = { rate = \"20mbit\" }"));
    lab.up();
    // Out of red at its veth, into red through an IFB beside it: both TBF.
    let red_ns = lab.netns("red");
    assert!(root_qdisc(&lab, &red_ns, "veth-red").contains("tbf 4e4c:"));
    assert!(root_qdisc(&lab, &red_ns, "ifb-veth-red").contains("tbf 4e4c:"));
    for reverse in [false, true] {
        let bps = iperf(&lab, reverse, 5);
        let ratio = bps / 20e6;
        eprintln!("rate 20mbit, reverse={reverse}: {:.2} Mbit/s", bps / 1e6);
        assert!(
            (0.85..=1.15).contains(&ratio),
            "{} at rate 20mbit: {:.2} Mbit/s",
            if reverse { "wan -> red" } else { "red -> wan" },
            bps / 1e6
        );
    }
    lab.down();
}
