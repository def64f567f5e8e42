//! Findings of the fuzz targets (tests/fuzz, `cargo xtask fuzz`), each
//! minimized into a test that replays it. A test marked
//! `#[ignore = "bug: …"]` fails until the bug is fixed: then drop the
//! `ignore`, and remove the finding's class from the `KNOWN` list of its
//! target (tests/fuzz/src/oracle.rs or tests/fuzz/src/topo.rs), so the
//! fuzzer treats it as a crash again.
//!
//! The program tests load the eBPF programs with fresh maps
//! (`netlab_tests::programs::Dataplane`, as tests/tests/programs.rs does)
//! and need root.

use std::{
    net::Ipv4Addr,
    panic::{catch_unwind, AssertUnwindSafe},
    time::{Duration, Instant},
};

use aya::maps::{lpm_trie::Key, LpmTrie};
use netlab::model::topology;
use netlab_common::SubnetInfo;
use netlab_tests::{
    packet::{icmp_echo, icmp_error, parse_checked, tcp, udp, Ip, ICMP, SYN, TCP, UDP},
    programs::{na, Dataplane, BLUE, RED, REMOTE, SHOT, UNSPEC, UPLINK},
    require_root,
};

/// Set the IPv4 total length of an Ethernet frame (checksum kept right).
fn set_total_length(frame: &mut [u8], total: u16) {
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    frame[24..26].fill(0);
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let c = netlab_tests::packet::checksum(&frame[14..14 + ihl], 0);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

fn l4_of(frame: &[u8]) -> &[u8] {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    &frame[14 + ihl..]
}

// ---------------------------------------------------------------------------
// eBPF programs (packets target).

/// A TCP SYN to the forwarded port whose IPv4 total length ends one byte
/// into its TCP header; the header's last byte is there only as Ethernet
/// padding. The programs bound headers by the frame, not the datagram, and
/// forward it (and make a flow for it); the stack then drops it as
/// malformed. Found as `rewrote-malformed` (also at nl_uplink_out) and
/// `wrote-past-datagram` (an ICMP error's quoted L4 checksum found in the
/// padding).
#[test]
fn l4_header_past_the_total_length_is_not_translated() {
    require_root();
    let mut dp = Dataplane::new(10000, 32767);
    let mut wrong = Vec::new();
    let mut syn = Ip::new(REMOTE, UPLINK, TCP, tcp(5555, 80, SYN, b"")).frame();
    set_total_length(&mut syn, 20 + 19);
    let (rc, out) = dp.inb(&syn);
    if rc != SHOT && out != syn {
        wrong.push(format!(
            "a datagram too short for its TCP header was translated (verdict {})",
            rc as i32
        ));
    }
    if !dp.flows().is_empty() {
        wrong.push("a malformed packet made a flow".to_string());
    }

    // An ICMP error quoting 8 bytes of a translated TCP segment, followed by
    // padding: the quoted TCP checksum is not there, but the programs find
    // "one" in the padding, rewrite it and fold the change into the ICMP
    // checksum, which no longer verifies (found as `wrote-past-datagram`).
    let mut dp = Dataplane::new(10000, 32767);
    let syn = Ip::new(RED, REMOTE, TCP, tcp(40000, 443, SYN, b"")).frame();
    let (_, sent) = dp.out(&syn);
    let mut err = Ip::new(REMOTE, UPLINK, ICMP, icmp_error(3, 4, &sent[14..14 + 28])).frame();
    err.extend_from_slice(&[0xb2; 16]);
    let (rc, back) = dp.inb(&err);
    assert_eq!(rc, UNSPEC);
    if back[err.len() - 16..] != [0xb2; 16] {
        wrong.push("an ICMP error's padding was rewritten".to_string());
    }
    if let Err(e) = parse_checked(&back) {
        wrong.push(format!("the translated ICMP error has a {e}"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("; "));
}

/// GRE from the outside straight to a node's address on a subnet that is
/// not routed: TCP, UDP and ICMP are dropped (`drop_unsolicited`), other
/// protocols pass into the lab. Found as `unsolicited-other-protocol`
/// (protocol 33 to 192.168.15.1; also with a lab source to a routed subnet).
#[test]
fn other_protocols_from_outside_to_a_lab_address_are_dropped() {
    require_root();
    let mut dp = Dataplane::new(10000, 32767);
    let gre = Ip::new(REMOTE, RED, 47, vec![0, 0, 0x08, 0, 1, 2, 3, 4]).frame();
    let (rc, _) = dp.inb(&gre);
    assert_eq!(rc, SHOT, "GRE to a lab address was let in");
}

/// GRE from a masqueraded node to the outside leaves with the node's own
/// address: only TCP, UDP and ICMP are masqueraded, the rest passes
/// (unlike an unknown RST or an orphan fragment, dropped so as not to leak
/// the inside address). Found as `leak-other-protocol` (protocol 0).
#[test]
fn other_protocols_from_a_masqueraded_node_never_leave_with_its_address() {
    require_root();
    let mut dp = Dataplane::new(10000, 32767);
    let gre = Ip::new(RED, REMOTE, 47, vec![0, 0, 0x08, 0, 1, 2, 3, 4]).frame();
    let (rc, out) = dp.out(&gre);
    assert!(
        rc == SHOT || out[26..30] == UPLINK.octets(),
        "GRE left with source {:?}",
        &out[26..30]
    );
}

/// An ICMP timestamp request (type 13) from a node is masqueraded as a flow
/// with "ports" 0/0: a NAT port is written over its identifier (with the
/// ICMP checksum updated as if the identifier had been 0, so it breaks),
/// and the timestamp reply is never translated back. Found as
/// `icmp-non-echo-identifier` (an unknown type 169, bytes 4-5 rewritten).
#[test]
fn icmp_timestamp_is_translated_both_ways_or_not_at_all() {
    require_root();
    let mut dp = Dataplane::new(10000, 32767);
    let mut ts = vec![13, 0, 0, 0, 0x12, 0x34, 0, 1];
    ts.extend_from_slice(&[0u8; 12]);
    let req = Ip::new(RED, REMOTE, ICMP, ts).frame();
    let (rc, out) = dp.out(&req);
    if rc == SHOT {
        // Not translated: fine, when the drop is counted.
        assert_eq!(dp.drops(), 1, "a drop without a counted reason");
        return;
    }
    let p = parse_checked(&out).expect("a valid ICMP message stays valid");
    let id = [p.l4[4], p.l4[5]];
    if id == [0x12, 0x34] {
        // Identifier kept: fine, whatever the address.
        return;
    }
    // A new identifier: the reply to it must find the node.
    let mut rep = vec![14, 0, 0, 0, id[0], id[1], 0, 1];
    rep.extend_from_slice(&[0u8; 12]);
    let reply = Ip::new(REMOTE, p.src, ICMP, rep).frame();
    let (_, back) = dp.inb(&reply);
    let b = parse_checked(&back).unwrap();
    assert_eq!(
        (b.dst, [b.l4[4], b.l4[5]]),
        (RED, [0x12, 0x34]),
        "the timestamp went out with identifier {id:?}, its reply stays with the lab host"
    );
}

/// An echo reply from a node with no flow (nothing asked it) is
/// masqueraded as a new flow whose "source port" is 0: the NAT port is
/// written over the identifier (the reply's destination "port") and the
/// ICMP checksum updated for an identifier of 0, so it is wrong. The flow
/// made this way is then followed by the fast path and matched by ICMP
/// errors quoting echo requests. Found as `icmp-echo-reply-masqueraded`.
#[test]
fn unsolicited_echo_reply_from_a_node_keeps_its_identifier() {
    require_root();
    let mut dp = Dataplane::new(10000, 32767);
    let reply = Ip::new(RED, REMOTE, ICMP, icmp_echo(false, 80, 7, b"pong")).frame();
    let (rc, out) = dp.out(&reply);
    if rc == SHOT {
        assert_eq!(dp.drops(), 1, "a drop without a counted reason");
        return;
    }
    let p = parse_checked(&out).expect("a valid echo reply stays valid");
    assert_eq!(p.echo_id(), 80, "the echo reply's identifier was rewritten");
}

/// A port unreachable from a node about a packet the NAT never saw leaves
/// with the node's address (an unknown RST or an orphan fragment is dropped
/// for exactly that reason). Found as `leak-icmp-error` (time exceeded
/// quoting a TCP packet).
#[test]
fn icmp_error_from_a_node_about_an_unknown_flow_does_not_leak() {
    require_root();
    let mut dp = Dataplane::new(10000, 32767);
    let quoted = Ip::new(REMOTE, RED, UDP, udp(5000, 6000, b"probe")).bytes();
    let err = Ip::new(RED, REMOTE, ICMP, icmp_error(3, 3, &quoted[..28])).frame();
    let (rc, out) = dp.out(&err);
    assert!(
        rc == SHOT || out[26..30] == UPLINK.octets(),
        "the ICMP error left with source {:?}",
        &out[26..30]
    );
}

/// An ICMP error arriving on the uplink with a lab address as its source
/// (spoofed: lab addresses are never outside) is translated and handed to
/// the node like any other; every other packet with a lab source is dropped
/// as `drop_spoofed_source`, as the README says. The spoof check sits in
/// the path of packets without a flow, after ICMP errors are handled.
/// Found as `spoofed-translated` (a time exceeded from 192.168.15.1 quoting
/// a node's UDP flow).
#[test]
fn icmp_error_from_outside_with_a_lab_source_is_dropped() {
    require_root();
    let mut dp = Dataplane::new(10000, 32767);
    let probe = Ip::new(RED, REMOTE, UDP, udp(40000, 53, b"query")).frame();
    let (_, sent) = dp.out(&probe);
    let spoofed = Ipv4Addr::new(192, 168, 15, 7);
    let err = Ip::new(spoofed, UPLINK, ICMP, icmp_error(3, 3, &sent[14..])).frame();
    let (rc, out) = dp.inb(&err);
    assert_eq!(
        rc,
        SHOT,
        "an ICMP error from the lab address {spoofed} came in from outside (sent on to {:?})",
        &out[30..34]
    );
}

/// Since routed subnets get identity flows (KIND_ROUTED, so the fast path
/// can carry them), an ICMP error that a lab router sends about a packet
/// into the routed subnet matches that flow at nl_uplink_out and gets the
/// flow's source as its own: it claims to come from the routed host itself
/// (traceroute from outside shows the host at the router's hop, a "frag
/// needed" seems to come from the host). Found as `icmp-error-translation`
/// (a destination unreachable from 192.168.15.1 quoting a packet to
/// 172.20.0.5:4000 left from 172.20.0.5).
#[test]
fn icmp_error_about_a_routed_flow_keeps_its_sender() {
    require_root();
    let mut dp = Dataplane::new(10000, 32767);
    let routed = Ipv4Addr::new(172, 20, 0, 5);
    let mut subnets: LpmTrie<_, u32, SubnetInfo> =
        LpmTrie::try_from(dp.ebpf.map_mut("LAB_SUBNETS").unwrap()).unwrap();
    subnets
        .insert(
            &Key::new(24, na(Ipv4Addr::new(172, 20, 0, 0))),
            SubnetInfo {
                flags: netlab_common::SUBNET_ROUTED,
                ifindex: 1,
            },
            0,
        )
        .unwrap();
    // From outside straight to the routed host: passed, as it is.
    let syn = Ip::new(REMOTE, routed, TCP, tcp(5000, 4000, SYN, b"")).frame();
    let (rc, arrived) = dp.inb(&syn);
    assert_eq!((rc, &arrived), (UNSPEC, &syn));
    // A router of the lab (here red) answers it with an ICMP error.
    let err = Ip::new(RED, REMOTE, ICMP, icmp_error(11, 0, &arrived[14..14 + 28])).frame();
    let (rc, out) = dp.out(&err);
    if rc == SHOT {
        assert_eq!(dp.drops(), 1, "a drop without a counted reason");
        return;
    }
    assert_ne!(
        &out[26..30],
        &routed.octets(),
        "red's ICMP error left with the routed host's address as its source"
    );
    // Red is on a masqueraded subnet: the uplink address speaks for it; the
    // quoted packet (to the routed host) is left as it was.
    assert_eq!(&out[26..30], &UPLINK.octets(), "red's address left the lab");
    let p = parse_checked(&out).expect("checksums after the rewrite");
    assert_eq!(&p.l4[8..8 + 28], &arrived[14..14 + 28]);
}

/// A flow that is busy (a packet more often than once a second) never
/// refreshes its mapping nor checks its other half: `touch` takes "due" as
/// a second since the previous packet, not since the last refresh. So the
/// mapping expires while the flow runs and, on a one-way stream, the reply
/// half looks idle; another node then gets the outside port, takes the
/// reply half over, and the busy flow is torn down: its next packet leaves
/// from another port (the remote sees the stream move; endpoint-independent
/// mapping broken while in use). Found as `peer-disagrees` (an ICMP flow
/// whose reply half had gone to another flow).
#[test]
fn busy_flow_keeps_its_mapping() {
    require_root();
    let mut dp = Dataplane::with(20000, 20001, |c| c.timeout_udp = 2);
    let red = Ip::new(RED, REMOTE, UDP, udp(20000, 514, b"log line")).frame();
    let sport = |f: &[u8]| u16::from_be_bytes([l4_of(f)[0], l4_of(f)[1]]);
    let (rc, out) = dp.out(&red);
    assert_eq!((rc, sport(&out)), (UNSPEC, 20000), "port preserved");
    // A one-way stream, a packet every 400 ms for 3.2 s: longer than the
    // 2 s timeout, never idle for as long. The dataplane is aged between
    // packets (no sleeping); what really passes adds to each gap and is
    // measured: more than 1.6 s would make a gap the timeout, and the test
    // meaningless.
    let mut last = Instant::now();
    for _ in 0..8 {
        dp.age(Duration::from_millis(400));
        let (rc, out) = dp.out(&red);
        let gap = last.elapsed() + Duration::from_millis(400);
        assert!(
            gap < Duration::from_secs(2),
            "a {gap:?} gap between packets: the flow may really have been idle for its timeout"
        );
        last = Instant::now();
        assert_eq!((rc, sport(&out)), (UNSPEC, 20000));
    }
    // Another node asks for the same port, to the same server.
    let blue = Ip::new(BLUE, REMOTE, UDP, udp(20000, 514, b"other")).frame();
    let (rc, out) = dp.out(&blue);
    let mut wrong = Vec::new();
    if rc == UNSPEC && sport(&out) == 20000 {
        wrong.push("blue got outside port 20000 of red's live flow".to_string());
    }
    let (rc, out) = dp.out(&red);
    if rc != UNSPEC || sport(&out) != 20000 {
        wrong.push(format!(
            "red's live flow moved to outside port {} (verdict {})",
            sport(&out),
            rc as i32
        ));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("; "));
}

/// An echo request with identifier 0 makes a flow keyed `(0, 0)`, the key an
/// echo reply or an ICMP message without identifier (timestamp, type 13)
/// from the same node to the same host also has: both were translated as
/// if they were the request, the reply's identifier overwritten. Found as
/// `icmp-echo-reply-masqueraded` and `icmp-non-echo-identifier` once the
/// first fixes were in.
#[test]
fn identifier_zero_echo_flow_matches_only_echo_requests() {
    require_root();
    let mut dp = Dataplane::new(10000, 32767);
    let req = Ip::new(RED, REMOTE, ICMP, icmp_echo(true, 0, 1, b"ping")).frame();
    let (rc, out) = dp.out(&req);
    assert_eq!(rc, UNSPEC);
    assert_eq!(parse_checked(&out).unwrap().src, UPLINK);
    let reply = Ip::new(RED, REMOTE, ICMP, icmp_echo(false, 0, 1, b"pong")).frame();
    let (rc, out) = dp.out(&reply);
    assert!(
        rc == SHOT || out == reply,
        "an echo reply took the echo request's flow (verdict {})",
        rc as i32
    );
    let mut ts = vec![13, 0, 0, 0, 0, 0, 0, 1];
    ts.extend_from_slice(&[0u8; 12]);
    let ts = Ip::new(RED, REMOTE, ICMP, ts).frame();
    let (rc, out) = dp.out(&ts);
    assert!(
        rc == SHOT || out == ts,
        "a timestamp request took the echo request's flow (verdict {})",
        rc as i32
    );
}

/// A hairpinned fragmented datagram records its translation under the
/// sending node's address; a later fragment "from" that node arriving on
/// the uplink (spoofed) found that record and was translated into the lab.
/// Found as `spoofed-translated` (from 10.9.0.7, 192.168.15.1, 172.20.0.5).
#[test]
fn spoofed_later_fragment_does_not_use_a_hairpin_record() {
    require_root();
    let mut dp = Dataplane::new(10000, 32767);
    let whole = Ip::new(BLUE, UPLINK, TCP, tcp(44000, 80, SYN, &[0x77; 48]));
    let bytes = whole.bytes();
    let mut first = Ip::new(BLUE, UPLINK, TCP, bytes[20..20 + 40].to_vec());
    first.frag = 0x2000;
    first.id = 0x5151;
    first.keep_l4_checksum = true;
    let (rc, _) = dp.run("nl_bridge_in", &first.frame());
    assert_eq!(rc, 7, "the first fragment hairpins to blue's own forward");
    let mut later = Ip::new(BLUE, UPLINK, TCP, bytes[20 + 40..].to_vec());
    later.frag = 5;
    later.id = 0x5151;
    let (rc, _) = dp.inb(&later.frame());
    assert_eq!(
        rc, SHOT,
        "a fragment from a lab address came in on the uplink"
    );
}

// ---------------------------------------------------------------------------
// Topology validation (topology and topology_shapes targets).

const BRIDGE: &str =
    "[[bridges]]\nname = \"v-net-0\"\nsubnet = \"192.168.15.0/24\"\ngateway = \"192.168.15.5\"\n";

/// Two default routes through different neighbours validate; netlink
/// refuses the second with EEXIST, `up` takes that as done, and every plan
/// after adds it again (the lab never converges). The same for two host
/// `[[routes]]` to one prefix. Found as `duplicate-route` (host routes to
/// 0.0.0.0/0 via 192.168.15.255 and 192.168.15.0: their `via` is not
/// checked either, unlike a node's).
#[test]
fn two_routes_to_one_destination_are_refused() {
    let text = format!(
        "{BRIDGE}[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\n\
         routes = [{{ to = \"default\", via = \"192.168.15.9\" }}]\n"
    );
    assert!(
        topology::parse("lab.toml", &text).is_err(),
        "a gateway and another default route were accepted"
    );
    let text = format!(
        "{BRIDGE}[[routes]]\nto = \"10.0.0.0/8\"\nvia = \"192.168.15.1\"\n\
         [[routes]]\nto = \"10.0.0.0/8\"\nvia = \"192.168.15.2\"\n"
    );
    assert!(
        topology::parse("lab.toml", &text).is_err(),
        "two host routes to 10.0.0.0/8 were accepted"
    );
}

/// The default name of a node's only interface is `veth-<node>`: for a
/// node name of 11 bytes or more it is longer than the 15 bytes Linux
/// allows, and only the lab-host side's default is checked (setting
/// `host_interface` passes validation; creating the veth then fails).
/// Found as `node-ifname-too-long` (`veth-longnodename`, 17 bytes).
#[test]
fn default_interface_names_inside_a_node_fit_ifnamsiz() {
    let text = format!(
        "{BRIDGE}[[nodes]]\nname = \"longnodename\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\n\
         host_interface = \"vlong-br\"\n"
    );
    if let Ok(lab) = topology::parse("lab.toml", &text) {
        let name = &lab.nodes[0].interfaces[0].name;
        assert!(
            name.len() <= 15,
            "interface name `{name}` is {} bytes",
            name.len()
        );
    }
}

/// `interface = "lo"` inside a node validates; the namespace already has
/// its loopback under that name, and the planner never sees it (`lo` is not
/// among a node's links), so every plan adds its address again. Found as
/// `node-ifname-lo`.
#[test]
fn an_interface_inside_a_node_cannot_be_named_lo() {
    let text = format!(
        "{BRIDGE}[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\n\
         interface = \"lo\"\n"
    );
    assert!(topology::parse("lab.toml", &text).is_err());
}

/// `[dns] search` entries are written into every node's resolv.conf
/// unchecked: a newline adds lines (here a nameserver), a space splits one
/// domain into two, an empty one leaves `search ` dangling. Found as
/// `dns-search`.
#[test]
fn dns_search_domains_are_validated() {
    for bad in ["x\\nnameserver 1.1.1.1", "two words", ""] {
        let text = format!("[dns]\nsearch = [\"{bad}\"]\n");
        assert!(
            topology::parse("lab.toml", &text).is_err(),
            "search domain {bad:?} was accepted"
        );
    }
}

/// `port = "1000-2000"`, `to = "blue:65000"` (every port to one) validates,
/// but describing it (`netlab check`, `fwd list --json`, the forward's
/// Display) computes 65000 + 1000 in u16: a panic in debug builds, a wrong
/// text in release. Found as `forward-text-overflow`.
#[test]
fn forward_of_a_port_range_to_one_high_port_can_be_described() {
    let text = format!(
        "{BRIDGE}[[nodes]]\nname = \"blue\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.2\"\n\
         [[forwards]]\nprotocol = \"tcp\"\nport = \"1000-2000\"\nto = \"blue:65000\"\n"
    );
    let lab = topology::parse("lab.toml", &text).expect("a valid lab");
    let f = &lab.forwards[0];
    let described = catch_unwind(AssertUnwindSafe(|| (f.target_text(), f.to_string())));
    let (target, _) = described.expect("describing the forward panicked");
    assert_eq!(target, "blue:65000");
}

/// A forward written with an address (`to = "10.0.0.2:80"`) to a node on a
/// bridge without a gateway validates, though the lab host is not on that
/// bridge and cannot reach the target; written with the node's name it is
/// refused for exactly that. Found as `forward-to-switch`.
#[test]
fn forward_by_address_to_a_bridge_without_gateway_is_refused() {
    let text = "[[bridges]]\nname = \"sw\"\nsubnet = \"10.0.0.0/24\"\n\
                [[nodes]]\nname = \"blue\"\nbridge = \"sw\"\naddress = \"10.0.0.2\"\n\
                [[forwards]]\nprotocol = \"tcp\"\nport = 80\nto = \"10.0.0.2:80\"\n";
    let by_name = text.replace("10.0.0.2:80\"\n", "blue:80\"\n");
    assert!(topology::parse("lab.toml", &by_name).is_err());
    assert!(
        topology::parse("lab.toml", text).is_err(),
        "the same forward by address was accepted"
    );
}
