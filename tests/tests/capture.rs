//! `netlab capture` end to end: what it writes is pcap that tcpdump reads
//! back, with the packets sent and the filter applied; on the uplink a flow
//! shows its translated source, on the node and the bridge its own; stdout
//! feeds `tcpdump -r -`; Ctrl-C, or the reader going away, ends a capture
//! with its file whole.

use std::process::{Child, Command, Stdio};

use netlab_tests::{
    capture::{count, finished, interrupt, read_back, start as capture},
    require_root, text, Lab, SEEDS_BODY,
};

/// The seeds' lab with every packet on the slow path: with the fast path,
/// an established flow's packets leave through a veth uplink straight into
/// its peer (`bpf_redirect_peer`), where no capture on the uplink sees them.
fn lab(tag: &str) -> Lab {
    Lab::new(tag, &format!("{SEEDS_BODY}\n[nat]\nfast_path = false\n"))
}

fn ping_out(lab: &Lab, n: u32) {
    lab.node_ok(
        "red",
        &[
            "ping",
            "-c",
            &n.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            "198.51.100.1",
        ],
    );
}

#[test]
fn a_capture_on_a_node_has_its_packets_and_only_those_its_filter_takes() {
    require_root();
    let lab = lab("cf");
    lab.up();
    let dir = tempdir(&lab);
    let (icmp_file, tcp_file) = (dir.join("icmp.pcap"), dir.join("tcp.pcap"));
    let icmp = capture(
        &lab,
        &["red", "-w", icmp_file.to_str().unwrap(), "icmp"],
        Stdio::null(),
    );
    let tcp = capture(
        &lab,
        &["red", "-w", tcp_file.to_str().unwrap(), "tcp", "port", "80"],
        Stdio::null(),
    );
    ping_out(&lab, 3);
    lab.node_ok("red", &["curl", "-s", "-m", "5", "http://198.51.100.1/"]);
    // Ctrl-C ends both, their files whole.
    interrupt(&icmp);
    interrupt(&tcp);
    finished(icmp, "the icmp capture");
    finished(tcp, "the tcp capture");

    let icmp = read_back(&icmp_file);
    assert_eq!(icmp.len(), 6, "{icmp:#?}");
    assert_eq!(
        count(&icmp, "192.168.15.1 > 198.51.100.1: ICMP echo request"),
        3,
        "{icmp:#?}"
    );
    assert_eq!(
        count(&icmp, "198.51.100.1 > 192.168.15.1: ICMP echo reply"),
        3,
        "{icmp:#?}"
    );
    let tcp = read_back(&tcp_file);
    // A handshake, a request, an answer, a close: each way at least three.
    assert!(tcp.len() >= 6, "{tcp:#?}");
    assert!(
        tcp.iter().all(|l| l.contains(".80:") || l.contains(".80 ")),
        "{tcp:#?}"
    );
    assert!(count(&tcp, "ICMP") == 0, "{tcp:#?}");
    assert!(
        count(&tcp, "HTTP") >= 1 || count(&tcp, "Flags [P.]") >= 2,
        "{tcp:#?}"
    );

    // A filter libpcap cannot compile is refused, naming it.
    let bad = lab.netlab(&[
        "capture", "--name", &lab.name, "red", "-c", "1", "tcp", "port",
    ]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("filter `tcp port`"),
        "{}",
        text(&bad)
    );
}

#[test]
fn a_capture_on_the_uplink_shows_a_flow_translated_and_the_node_and_bridge_before() {
    require_root();
    let lab = lab("cu");
    lab.up();
    let dir = tempdir(&lab);
    let files: Vec<_> = ["red", "v-net-0", "uplink"]
        .iter()
        .map(|t| (*t, dir.join(format!("{t}.pcap"))))
        .collect();
    // -c: each ends by itself after the three requests and their replies.
    let captures: Vec<Child> = files
        .iter()
        .map(|(t, f)| {
            capture(
                &lab,
                &[t, "-c", "6", "-w", f.to_str().unwrap(), "icmp"],
                Stdio::null(),
            )
        })
        .collect();
    ping_out(&lab, 3);
    for (c, (t, _)) in captures.into_iter().zip(&files) {
        finished(c, &format!("the capture on {t}"));
    }
    let lines = |t: &str| read_back(&files.iter().find(|(x, _)| *x == t).unwrap().1);
    for inside in ["red", "v-net-0"] {
        let l = lines(inside);
        assert_eq!(l.len(), 6, "{inside}: {l:#?}");
        assert_eq!(
            count(&l, "192.168.15.1 > 198.51.100.1: ICMP echo request"),
            3,
            "{inside}: {l:#?}"
        );
        assert_eq!(count(&l, "198.51.100.2"), 0, "{inside}: {l:#?}");
    }
    let l = lines("uplink");
    assert_eq!(l.len(), 6, "uplink: {l:#?}");
    assert_eq!(
        count(&l, "198.51.100.2 > 198.51.100.1: ICMP echo request"),
        3,
        "{l:#?}"
    );
    assert_eq!(
        count(&l, "198.51.100.1 > 198.51.100.2: ICMP echo reply"),
        3,
        "{l:#?}"
    );
    assert_eq!(
        count(&l, "192.168.15."),
        0,
        "the uplink saw an inside address: {l:#?}"
    );
}

#[test]
fn a_capture_to_stdout_feeds_tcpdump_and_ends_when_its_reader_goes() {
    require_root();
    let lab = lab("cs");
    lab.up();
    let cap = capture(&lab, &["red", "-c", "4", "icmp"], Stdio::piped());
    let mut cap = cap;
    let pipe = cap.stdout.take().unwrap();
    let tcpdump = Command::new("tcpdump")
        .args(["-n", "-r", "-"])
        .stdin(pipe)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ping_out(&lab, 2);
    finished(cap, "the capture to stdout");
    let out = tcpdump.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert_eq!(count(&lines, "ICMP echo request"), 2, "{lines:#?}");
    assert_eq!(count(&lines, "ICMP echo reply"), 2, "{lines:#?}");

    // A reader that goes away (SIGPIPE is ignored: the write fails) ends
    // the capture, with no count and no signal to it.
    let mut cap = capture(&lab, &["red", "icmp"], Stdio::piped());
    // The file header reaches it with the first packet; then it is gone.
    let mut head = Command::new("head")
        .args(["-c", "24"])
        .stdin(cap.stdout.take().unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    ping_out(&lab, 3);
    finished(cap, "a capture whose reader went away");
    assert!(head.wait().unwrap().success());
}

/// A directory for the test's files, beside its lab file (removed with it).
fn tempdir(lab: &Lab) -> std::path::PathBuf {
    lab.file.parent().unwrap().to_path_buf()
}
