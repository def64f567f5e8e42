//! The programs through BPF_PROG_TEST_RUN, for what the kernel side gained
//! with issue 11: the lab host reaching its own forwards (`nl_local_out`
//! and the replies at `nl_bridge_in`), lab addresses that must not leave
//! the uplink untranslated (`LAB_IFACES`, `drop_unknown_source`), and at
//! most one flow table collection per packet. Frames are checked byte by
//! byte with the harness's own checksum code, as in `programs.rs`.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData},
    programs::{ProgramInfo, SchedClassifier, TestRun, TestRunOptions},
};
use netlab_common::{
    names, port_to_net, stat, FlowKey, FlowValue, Forward6Target, ForwardKey, GcState, SubnetInfo,
    DIR_ORIGINAL, DIR_REPLY, HOOK_BRIDGE_INGRESS, HOOK_LOCAL_EGRESS, HOOK_UPLINK_EGRESS,
    KIND_LOCAL, LAB_IFACE_BRIDGE, LO_IFINDEX, SUBNET_MASQUERADE, SUBNET_ROUTED,
};
use netlab_tests::{
    packet::{
        icmp6, icmp6_echo, icmp_echo, parse_checked, parse_checked6, tcp, udp, Ip, Ip6, ACK, ICMP,
        ICMPV6, SYN, TCP, UDP,
    },
    programs::{
        na, Dataplane, BLUE, BLUE6, RED, RED6, REDIRECT, REMOTE, REMOTE6, SHOT, UNSPEC, UPLINK,
        UPLINK6,
    },
    require_root,
};

/// The ifindex the tests give the lab's bridge (the harness's subnet says
/// 1, which is also `lo`'s: a test could not tell them apart).
const BRIDGE: u32 = 7;
/// A subnet behind a router node that the lab neither masquerades nor routes.
const BEHIND_ROUTER: Ipv4Addr = Ipv4Addr::new(10, 44, 0, 10);
/// A node of a routed subnet.
const ROUTED_NODE: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 5);

fn set_subnet(dp: &mut Dataplane, net: Ipv4Addr, len: u32, flags: u32) {
    let mut subnets: LpmTrie<_, u32, SubnetInfo> =
        LpmTrie::try_from(dp.ebpf.map_mut(names::LAB_SUBNETS).unwrap()).unwrap();
    let info = SubnetInfo {
        flags,
        ifindex: BRIDGE,
    };
    subnets.insert(&Key::new(len, na(net)), info, 0).unwrap();
}

/// The harness's dataplane with the lab's bridge at ifindex [`BRIDGE`],
/// known as a lab interface.
fn dataplane() -> Dataplane {
    let mut dp = Dataplane::new(10000, 32767);
    set_subnet(
        &mut dp,
        Ipv4Addr::new(192, 168, 15, 0),
        24,
        SUBNET_MASQUERADE,
    );
    let mut ifaces: HashMap<_, u32, u32> =
        HashMap::try_from(dp.ebpf.map_mut(names::LAB_IFACES).unwrap()).unwrap();
    ifaces.insert(BRIDGE, LAB_IFACE_BRIDGE, 0).unwrap();
    dp
}

/// Run `prog` on `frame` as if it had been received on `ingress_ifindex`
/// (what the programs read as `skb->ingress_ifindex`): verdict and frame.
fn run_from(dp: &mut Dataplane, prog: &str, frame: &[u8], ingress_ifindex: u32) -> (u32, Vec<u8>) {
    // struct __sk_buff up to `ingress_ifindex` (offset 36); the rest zero.
    let mut ctx = [0u8; 40];
    ctx[36..40].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    let p = dp.program(prog, frame);
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(&ctx);
    let r = p.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

/// Run `prog` on `frame`: verdict and how long the kernel says it took.
fn timed_run(dp: &mut Dataplane, prog: &str, frame: &[u8]) -> (u32, Duration) {
    let p = dp.program(prog, frame);
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let r = p.test_run(opts).expect("BPF_PROG_TEST_RUN");
    (r.return_value, r.duration)
}

fn flow(dp: &Dataplane, key: FlowKey) -> FlowValue {
    dp.flows()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no flow entry {key:?} in {:?}", dp.flows()))
}

/// The lab host connects to its own uplink address on the forwarded port
/// 80: the connection leaves `lo` for blue:80 from the uplink address and
/// the host's own port, and blue's replies come back as from the forwarded
/// port, handed into `lo` with `lo`'s (zero) Ethernet addresses.
#[test]
fn the_lab_host_reaches_its_own_forward_both_ways() {
    require_root();
    let mut dp = dataplane();
    let syn = Ip::new(UPLINK, UPLINK, TCP, tcp(45000, 80, SYN, b"")).frame();
    let (rc, out) = dp.run(names::PROG_LOCAL_OUT, &syn);
    assert_eq!(rc, REDIRECT);
    let p = parse_checked(&out).unwrap();
    assert_eq!(
        (p.src, p.sport(), p.dst, p.dport()),
        (UPLINK, 45000, BLUE, 80)
    );
    let port = |p: u16| port_to_net(p);
    let opening = flow(
        &dp,
        FlowKey::new(na(UPLINK), na(UPLINK), port(45000), port(80), TCP),
    );
    let reply_key = FlowKey::new(na(BLUE), na(UPLINK), port(80), port(45000), TCP);
    let reply = flow(&dp, reply_key);
    assert_eq!(
        (opening.kind, opening.hook, opening.dir, opening.out_ifindex),
        (KIND_LOCAL, HOOK_LOCAL_EGRESS, DIR_ORIGINAL, BRIDGE),
        "out of the target's bridge"
    );
    assert_eq!(
        (reply.kind, reply.hook, reply.dir, reply.out_ifindex),
        (KIND_LOCAL, HOOK_BRIDGE_INGRESS, DIR_REPLY, LO_IFINDEX),
        "replies into lo"
    );
    assert_eq!(FlowKey::peer_of(&opening, TCP), reply_key);

    let synack = Ip::new(BLUE, UPLINK, TCP, tcp(80, 45000, SYN | ACK, b"")).frame();
    let (rc, back) = dp.run(names::PROG_BRIDGE_IN, &synack);
    assert_eq!(rc, REDIRECT);
    let p = parse_checked(&back).unwrap();
    assert_eq!(
        (p.src, p.sport(), p.dst, p.dport()),
        (UPLINK, 80, UPLINK, 45000),
        "as from the forwarded port"
    );
    assert_eq!(&back[..12], &[0u8; 12], "lo's Ethernet addresses");

    let request = Ip::new(
        UPLINK,
        UPLINK,
        TCP,
        tcp(45000, 80, ACK, b"GET / HTTP/1.0\r\n\r\n"),
    );
    let (rc, out) = dp.run(names::PROG_LOCAL_OUT, &request.frame());
    assert_eq!(rc, REDIRECT);
    let p = parse_checked(&out).expect("payload and checksums");
    assert_eq!((p.dst, p.dport()), (BLUE, 80));
    assert_eq!(dp.stat(stat::NEW_LOCAL), 1);
    assert_eq!(dp.stat(stat::XLATE_LOCAL), 3);
    assert_eq!(dp.stat(stat::NEW_DNAT) + dp.stat(stat::NEW_HAIRPIN), 0);
}

/// A UDP forward, the same way (checksums through the pseudo-header).
#[test]
fn the_lab_host_reaches_a_udp_forward() {
    require_root();
    let mut dp = dataplane();
    dp.forward_ports(UDP, 5353..=5353, BLUE, 53, None);
    let query = Ip::new(UPLINK, UPLINK, UDP, udp(41000, 5353, b"query")).frame();
    let (rc, out) = dp.run(names::PROG_LOCAL_OUT, &query);
    assert_eq!(rc, REDIRECT);
    let p = parse_checked(&out).unwrap();
    assert_eq!(
        (p.src, p.sport(), p.dst, p.dport()),
        (UPLINK, 41000, BLUE, 53)
    );
    let answer = Ip::new(BLUE, UPLINK, UDP, udp(53, 41000, b"answer")).frame();
    let (rc, back) = dp.run(names::PROG_BRIDGE_IN, &answer);
    assert_eq!(rc, REDIRECT);
    let p = parse_checked(&back).unwrap();
    assert_eq!(
        (p.src, p.sport(), p.dst, p.dport()),
        (UPLINK, 5353, UPLINK, 41000)
    );
}

/// The lab host connects to its own uplink's IPv6 address on the
/// forwarded port 80 (`nl_local_out6`, tail-called): the connection leaves
/// `lo` for blue:80 from the uplink's address and the host's own port, and
/// blue's replies come back (`nl_bridge_in6`) as from the forwarded port,
/// into `lo`; a UDP forward the same way.
#[test]
fn the_lab_host_reaches_its_own_ipv6_forward_both_ways() {
    require_root();
    let mut dp = dataplane();
    let syn = Ip6::new(UPLINK6, UPLINK6, TCP, tcp(45000, 80, SYN, b"")).frame();
    let (rc, out) = dp.run(names::PROG_LOCAL_OUT, &syn);
    assert_eq!(rc, REDIRECT);
    let p = parse_checked6(&out).unwrap();
    assert_eq!(
        (p.src, p.sport(), p.dst, p.dport()),
        (UPLINK6, 45000, BLUE6, 80)
    );
    let synack = Ip6::new(BLUE6, UPLINK6, TCP, tcp(80, 45000, SYN | ACK, b"")).frame();
    let (rc, back) = dp.run(names::PROG_BRIDGE_IN, &synack);
    assert_eq!(rc, REDIRECT);
    let p = parse_checked6(&back).unwrap();
    assert_eq!(
        (p.src, p.sport(), p.dst, p.dport()),
        (UPLINK6, 80, UPLINK6, 45000),
        "as from the forwarded port"
    );
    assert_eq!(&back[..12], &[0u8; 12], "lo's Ethernet addresses");
    let request = tcp(45000, 80, ACK, b"GET / HTTP/1.0\r\n\r\n");
    let request = Ip6::new(UPLINK6, UPLINK6, TCP, request).frame();
    let (rc, out) = dp.run(names::PROG_LOCAL_OUT, &request);
    assert_eq!(rc, REDIRECT);
    let p = parse_checked6(&out).expect("payload and checksums");
    assert_eq!((p.dst, p.dport()), (BLUE6, 80));
    assert_eq!(dp.stat(stat::NEW_LOCAL6), 1);
    assert_eq!(dp.stat(stat::XLATE6_LOCAL), 3);
    assert_eq!(dp.stat(stat::NEW_DNAT6) + dp.stat(stat::NEW_HAIRPIN6), 0);

    let mut rules: HashMap<_, ForwardKey, Forward6Target> =
        HashMap::try_from(dp.ebpf.map_mut(names::FORWARD6_RULES).unwrap()).unwrap();
    let dns = Forward6Target {
        addr: BLUE6.octets(),
        port: port_to_net(53),
        ..rules
            .get(&ForwardKey::new(port_to_net(80), TCP), 0)
            .unwrap()
    };
    rules
        .insert(ForwardKey::new(port_to_net(5353), UDP), dns, 0)
        .unwrap();
    let query = Ip6::new(UPLINK6, UPLINK6, UDP, udp(41000, 5353, b"query")).frame();
    let (rc, out) = dp.run(names::PROG_LOCAL_OUT, &query);
    assert_eq!(rc, REDIRECT);
    let p = parse_checked6(&out).unwrap();
    assert_eq!((p.sport(), p.dst, p.dport()), (41000, BLUE6, 53));
    let answer = Ip6::new(BLUE6, UPLINK6, UDP, udp(53, 41000, b"answer")).frame();
    let (rc, back) = dp.run(names::PROG_BRIDGE_IN, &answer);
    assert_eq!(rc, REDIRECT);
    let p = parse_checked6(&back).unwrap();
    assert_eq!(
        (p.src, p.sport(), p.dst, p.dport()),
        (UPLINK6, 5353, UPLINK6, 41000)
    );
}

/// What is not the lab host's connection to a forward passes `lo` as it
/// is, over IPv4 and IPv6: its own services on the uplink address,
/// loopback traffic, pings, a TCP segment that opens nothing, and (IPv6)
/// a connection from another address.
#[test]
fn the_rest_of_lo_passes_untouched() {
    require_root();
    let mut dp = dataplane();
    let (lo, lo6) = (Ipv4Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
    let ping = icmp_echo(true, 7, 1, b"ping");
    let ping6 = icmp6_echo(true, 7, 1, b"ping");
    let cases = [
        (
            "own service",
            Ip::new(UPLINK, UPLINK, TCP, tcp(45001, 22, SYN, b"")).frame(),
        ),
        (
            "loopback",
            Ip::new(lo, lo, TCP, tcp(45002, 80, SYN, b"")).frame(),
        ),
        ("ping", Ip::new(UPLINK, UPLINK, ICMP, ping).frame()),
        (
            "stray ACK",
            Ip::new(UPLINK, UPLINK, TCP, tcp(45003, 80, ACK, b"")).frame(),
        ),
        (
            "own service 6",
            Ip6::new(UPLINK6, UPLINK6, TCP, tcp(45001, 22, SYN, b"")).frame(),
        ),
        (
            "loopback 6",
            Ip6::new(lo6, lo6, TCP, tcp(45002, 80, SYN, b"")).frame(),
        ),
        (
            "another address 6",
            Ip6::new(RED6, UPLINK6, TCP, tcp(45003, 80, SYN, b"")).frame(),
        ),
        ("ping 6", Ip6::new(UPLINK6, UPLINK6, ICMPV6, ping6).frame()),
        (
            "stray ACK 6",
            Ip6::new(UPLINK6, UPLINK6, TCP, tcp(45004, 80, ACK, b"")).frame(),
        ),
    ];
    for (name, f) in cases {
        let (rc, out) = dp.run(names::PROG_LOCAL_OUT, &f);
        assert_eq!((rc, &out), (UNSPEC, &f), "{name}");
    }
    assert!(dp.flows6().is_empty(), "{:?}", dp.flows6());
    assert!(dp.flows().is_empty(), "{:?}", dp.flows());
    let p: &SchedClassifier = dp
        .ebpf
        .program(names::PROG_LOCAL_OUT)
        .unwrap()
        .try_into()
        .unwrap();
    let info: ProgramInfo = p.info().unwrap();
    // Reported since Linux 5.16 (bpf_prog_info.verified_insns); every kernel
    // netlab supports has it, so its absence is a failure, not a pass.
    let verified = info.verified_instruction_count().expect(
        "the kernel reports no verified instruction count (bpf_prog_info.verified_insns, 5.16+)",
    );
    assert!(
        verified < 500_000,
        "the verifier walked {verified} instructions"
    );
}

/// A packet forwarded from a lab bridge to the uplink leaves only
/// translated (a masqueraded source), or as it is from a routed subnet or
/// the uplink address; anything else from there (a subnet behind a router
/// the lab does not know, a subnet neither masqueraded nor routed) is
/// dropped and counted. From other interfaces, and the lab host's own
/// packets, pass; a flow's packets are never checked again.
#[test]
fn lab_addresses_never_leave_the_uplink_untranslated() {
    require_root();
    let mut dp = dataplane();
    set_subnet(&mut dp, Ipv4Addr::new(172, 20, 0, 0), 24, SUBNET_ROUTED);
    set_subnet(&mut dp, Ipv4Addr::new(10, 55, 0, 0), 24, 0);
    let unknown = [
        Ip::new(BEHIND_ROUTER, REMOTE, TCP, tcp(40000, 80, SYN, b"")),
        Ip::new(BEHIND_ROUTER, REMOTE, UDP, udp(40000, 53, b"q")),
        Ip::new(BEHIND_ROUTER, REMOTE, ICMP, icmp_echo(true, 9, 1, b"ping")),
        Ip::new(BEHIND_ROUTER, REMOTE, 47, vec![0u8; 8]),
        Ip::new(Ipv4Addr::new(10, 55, 0, 3), REMOTE, UDP, udp(1, 2, b"x")),
    ];
    for (i, pkt) in unknown.iter().enumerate() {
        let f = pkt.frame();
        let (rc, _) = run_from(&mut dp, names::PROG_UPLINK_OUT, &f, BRIDGE);
        assert_eq!(rc, SHOT, "case {i} from the lab's bridge");
        let (rc, out) = run_from(&mut dp, names::PROG_UPLINK_OUT, &f, 9);
        assert_eq!((rc, &out), (UNSPEC, &f), "case {i} from another interface");
        let (rc, out) = run_from(&mut dp, names::PROG_UPLINK_OUT, &f, 0);
        assert_eq!((rc, &out), (UNSPEC, &f), "case {i} of the lab host's own");
    }
    assert_eq!(dp.stat(stat::DROP_UNKNOWN_SOURCE), unknown.len() as u64);
    let routed = Ip::new(ROUTED_NODE, REMOTE, TCP, tcp(40000, 80, SYN, b"")).frame();
    let (rc, out) = run_from(&mut dp, names::PROG_UPLINK_OUT, &routed, BRIDGE);
    assert_eq!(
        (rc, &out),
        (UNSPEC, &routed),
        "a routed subnet leaves as it is"
    );
    let own = Ip::new(UPLINK, REMOTE, TCP, tcp(40000, 80, SYN, b"")).frame();
    let (rc, out) = run_from(&mut dp, names::PROG_UPLINK_OUT, &own, BRIDGE);
    assert_eq!((rc, &out), (UNSPEC, &own), "the uplink address");
    let masq = Ip::new(RED, REMOTE, TCP, tcp(40000, 80, SYN, b"")).frame();
    let (rc, out) = run_from(&mut dp, names::PROG_UPLINK_OUT, &masq, BRIDGE);
    assert_eq!(rc, UNSPEC);
    assert_eq!(parse_checked(&out).unwrap().src, UPLINK, "masqueraded");
    // A forward to a node behind the router: its replies belong to a flow
    // and are translated like any forward's.
    dp.forward_ports(TCP, 8080..=8080, BEHIND_ROUTER, 80, None);
    let syn = Ip::new(REMOTE, UPLINK, TCP, tcp(5555, 8080, SYN, b"")).frame();
    assert_eq!(dp.inb(&syn).0, UNSPEC);
    let synack = Ip::new(BEHIND_ROUTER, REMOTE, TCP, tcp(80, 5555, SYN | ACK, b"")).frame();
    let (rc, out) = run_from(&mut dp, names::PROG_UPLINK_OUT, &synack, BRIDGE);
    assert_eq!(rc, UNSPEC);
    let p = parse_checked(&out).unwrap();
    assert_eq!((p.src, p.sport()), (UPLINK, 8080));
    assert_eq!(dp.stat(stat::DROP_UNKNOWN_SOURCE), unknown.len() as u64);
    assert!(
        dp.flows()
            .iter()
            .all(|(k, v)| k.src_addr != na(BEHIND_ROUTER) || v.hook == HOOK_UPLINK_EGRESS),
        "{:?}",
        dp.flows()
    );
}

/// IPv6 forwarded from a lab bridge to the uplink: from a masqueraded
/// subnet it leaves translated, and, as for IPv4, from an address in no
/// routed subnet (behind a router node the lab does not know, or a subnet
/// neither masqueraded nor routed) it is `drop_unknown_source`; from a
/// routed subnet, from other interfaces, the lab host's own, and neighbour
/// discovery pass as they are.
#[test]
fn ipv6_from_a_lab_bridge_leaves_the_uplink_only_from_a_routed_subnet() {
    require_root();
    let mut dp = dataplane();
    let routed_node = Ipv6Addr::new(0xfd00, 0x172, 0, 0, 0, 0, 0, 5);
    let behind_router = Ipv6Addr::new(0xfd00, 0x44, 0, 0, 0, 0, 0, 10);
    let mut subnets: LpmTrie<_, [u8; 16], SubnetInfo> =
        LpmTrie::try_from(dp.ebpf.map_mut(names::LAB_SUBNETS6).unwrap()).unwrap();
    let routed = SubnetInfo {
        flags: SUBNET_ROUTED,
        ifindex: BRIDGE,
    };
    let net = Ipv6Addr::new(0xfd00, 0x172, 0, 0, 0, 0, 0, 0);
    subnets
        .insert(&Key::new(64, net.octets()), routed, 0)
        .unwrap();
    let unknown = [
        Ip6::new(behind_router, REMOTE6, TCP, tcp(40000, 80, SYN, b"")),
        Ip6::new(behind_router, REMOTE6, UDP, udp(40000, 53, b"q")),
        Ip6::new(behind_router, REMOTE6, 47, vec![0u8; 8]),
    ];
    for (i, pkt) in unknown.iter().enumerate() {
        let f = pkt.frame();
        let (rc, _) = run_from(&mut dp, names::PROG_UPLINK_OUT, &f, BRIDGE);
        assert_eq!(rc, SHOT, "case {i} from the lab's bridge");
        for other in [9, 0] {
            let (rc, out) = run_from(&mut dp, names::PROG_UPLINK_OUT, &f, other);
            assert_eq!((rc, &out), (UNSPEC, &f), "case {i} from ifindex {other}");
        }
    }
    assert_eq!(dp.stat(stat::DROP_UNKNOWN_SOURCE), unknown.len() as u64);
    // From a masqueraded subnet: translated (NAT66), never as it is.
    let masq = Ip6::new(RED6, REMOTE6, UDP, udp(40000, 53, b"q")).frame();
    let (rc, out) = run_from(&mut dp, names::PROG_UPLINK_OUT, &masq, BRIDGE);
    assert_eq!(rc, UNSPEC);
    assert_eq!(parse_checked6(&out).unwrap().src, UPLINK6);
    assert_eq!(dp.stat(stat::NEW_SNAT6), 1);
    let passing = [
        (
            Ip6::new(routed_node, REMOTE6, TCP, tcp(40000, 80, SYN, b"")),
            BRIDGE,
        ),
        (Ip6::new(UPLINK6, REMOTE6, TCP, tcp(40000, 80, SYN, b"")), 0),
        (
            Ip6::new(behind_router, BLUE6, ICMPV6, icmp6(135, &BLUE6.octets())),
            BRIDGE,
        ),
    ];
    for (pkt, from) in &passing {
        let f = pkt.frame();
        let (rc, out) = run_from(&mut dp, names::PROG_UPLINK_OUT, &f, *from);
        assert_eq!((rc, &out), (UNSPEC, &f), "{pkt:?}");
    }
    assert_eq!(dp.drops(), unknown.len() as u64);
}

/// `bpf_ktime_get_coarse_ns`'s clock, from user space.
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Flows `from..to` of a live table: pairs of entries that point at each
/// other, one half fresh and the other stale, so a collection keeps them
/// all and looks each stale half's partner up (a slow walk).
fn fill_live_flows(dp: &mut Dataplane, from: u32, to: u32) {
    let now = coarse_now_ns();
    let mut table: HashMap<_, FlowKey, FlowValue> =
        HashMap::try_from(dp.ebpf.map_mut(names::NAT_FLOWS).unwrap()).unwrap();
    let addr = |base: [u8; 4], i: u32| na(Ipv4Addr::from(u32::from(Ipv4Addr::from(base)) + i));
    let (sport, dport) = (port_to_net(4000), port_to_net(53));
    for i in from..to {
        let fresh = FlowKey::new(addr([10, 64, 0, 0], i), na(REMOTE), sport, dport, UDP);
        let stale = FlowKey::new(na(REMOTE), addr([10, 128, 0, 0], i), dport, sport, UDP);
        // Each half rewrites into the reverse of the other's key.
        let value = |other: &FlowKey, seen: u64| FlowValue {
            src_addr: other.dst_addr,
            dst_addr: other.src_addr,
            src_port: other.dst_port,
            dst_port: other.src_port,
            last_seen_ns: seen,
            created_ns: seen,
            ..Default::default()
        };
        table.insert(fresh, value(&stale, now), 0).unwrap();
        table.insert(stale, value(&fresh, 0), 0).unwrap();
    }
}

/// A full table is collected once for a packet, however long the
/// collection takes and whatever the clock says after it: the packet
/// `nl_gc` hands back never starts a second one. The table is made large
/// enough that a collection outlasts the collection interval, which is
/// what let a second one start (measured, not assumed: the test grows the
/// table until a run takes that long).
#[test]
fn one_collection_per_packet_however_long_it_takes() {
    require_root();
    const CAPACITY: u32 = 1 << 19;
    const STEP: u32 = 1 << 15;
    // Flow limit 1,000: the collection interval is its minimum, 10 ms.
    let interval = Duration::from_millis(10);
    let mut dp = Dataplane::with_flow_capacity(10000, 32767, CAPACITY, |c| c.flow_limit = 1000);
    let packet = Ip::new(RED, REMOTE, UDP, udp(41001, 53, b"q")).frame();
    let mut pairs = 0;
    let mut longest = Duration::ZERO;
    while longest < 2 * interval {
        assert!(
            pairs + STEP <= CAPACITY / 2,
            "a collection of {} entries took only {longest:?}: the test cannot make one \
             outlast the {interval:?} interval here",
            2 * pairs
        );
        fill_live_flows(&mut dp, pairs, pairs + STEP);
        pairs += STEP;
        let mut gc: Array<_, GcState> =
            Array::try_from(dp.ebpf.map_mut(names::GC_STATE).unwrap()).unwrap();
        let mut st = gc.get(&0, 0).unwrap();
        st.entries = u64::from(2 * pairs);
        gc.set(0, st, 0).unwrap();
        // The previous collection is an interval old by now.
        std::thread::sleep(2 * interval);
        let runs = dp.stat(stat::GC_RUNS);
        let (rc, took) = timed_run(&mut dp, names::PROG_UPLINK_OUT, &packet);
        assert_eq!(rc, SHOT, "the table stays full");
        assert_eq!(
            dp.stat(stat::GC_RUNS),
            runs + 1,
            "collections for one packet, with {} entries, in {took:?}",
            2 * pairs
        );
        longest = longest.max(took);
    }
    eprintln!(
        "a collection of {} entries took {longest:?} (interval {interval:?})",
        2 * pairs
    );
    // The next packet of the same flow, an interval later, is a packet of
    // its own: it gets its collection.
    std::thread::sleep(2 * interval);
    let runs = dp.stat(stat::GC_RUNS);
    let started = Instant::now();
    assert_eq!(timed_run(&mut dp, names::PROG_UPLINK_OUT, &packet).0, SHOT);
    assert_eq!(
        dp.stat(stat::GC_RUNS),
        runs + 1,
        "in {:?}",
        started.elapsed()
    );
    let table: HashMap<&MapData, FlowKey, FlowValue> =
        HashMap::try_from(dp.ebpf.map(names::NAT_FLOWS).unwrap()).unwrap();
    assert!(table.keys().count() >= 2 * pairs as usize - 1024);
}
