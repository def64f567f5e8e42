//! The eBPF programs on crafted IPv6 frames through BPF_PROG_TEST_RUN:
//! nothing from a masqueraded IPv6 subnet leaves the uplink untranslated,
//! whatever its extension headers; neighbour discovery, link-local traffic
//! and others' traffic pass every program byte for byte.

use std::net::Ipv6Addr;

use netlab_common::stat;
use netlab_tests::{
    packet::{
        icmp6, icmp6_echo, tcp, udp, Ext, Ip6, DEST_OPTS, HOP_BY_HOP, ICMPV6, ROUTING, SYN, TCP,
        UDP,
    },
    programs::{Dataplane, BLUE6, RED6, REMOTE6, SHOT, UNSPEC, UPLINK6},
    require_root,
};

const PROGRAMS: [&str; 7] = [
    "nl_uplink_in",
    "nl_uplink_out",
    "nl_bridge_in",
    "nl_node_in",
    "nl_node_new",
    "nl_local_out",
    "nl_gc",
];

/// As many extension headers as the programs walk (`MAX_EXT_HEADERS`).
const WALKED: usize = 6;

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Every kind of packet a node sends out: TCP, UDP, ICMPv6 echo, another
/// protocol (SCTP), with and without extension headers, fragments.
fn lab_packets(src: Ipv6Addr) -> Vec<(&'static str, Vec<u8>)> {
    let to = |proto, l4| Ip6::new(src, REMOTE6, proto, l4);
    let opts = || vec![Ext::options(HOP_BY_HOP, 1), Ext::options(DEST_OPTS, 2)];
    vec![
        ("tcp syn", to(TCP, tcp(40000, 80, SYN, b"")).frame()),
        ("udp", to(UDP, udp(40000, 53, b"query")).frame()),
        ("echo", to(ICMPV6, icmp6_echo(true, 7, 1, b"ping")).frame()),
        ("sctp", to(132, vec![0; 12]).frame()),
        (
            "udp with options",
            to(UDP, udp(40000, 53, b"q")).with_ext(opts()).frame(),
        ),
        (
            "first fragment",
            to(UDP, udp(40000, 53, &[0; 64]))
                .with_ext(vec![Ext::fragment(0, true, 9)])
                .frame(),
        ),
        (
            "later fragment",
            to(UDP, vec![0; 64])
                .with_ext(vec![Ext::fragment(9, false, 9)])
                .frame(),
        ),
        (
            "echo after a routing header",
            to(ICMPV6, icmp6_echo(true, 7, 1, b""))
                .with_ext(vec![Ext::options(ROUTING, 1)])
                .frame(),
        ),
        (
            "as many headers as are walked",
            to(UDP, udp(40000, 53, b""))
                .with_ext(vec![Ext::options(DEST_OPTS, 1); WALKED])
                .frame(),
        ),
    ]
}

#[test]
fn ipv6_from_a_masqueraded_subnet_never_leaves_untranslated() {
    require_root();
    let mut dp = Dataplane::new(10000, 32767);
    let packets = lab_packets(RED6);
    for (what, f) in &packets {
        let (rc, _) = dp.out(f);
        assert_eq!(rc, SHOT, "{what} left the uplink");
    }
    let n = packets.len() as u64;
    assert_eq!(dp.stat(stat::DROP_V6_UNTRANSLATED), n);
    assert_eq!(dp.drops(), n, "each drop counted once, for its reason");
}

#[test]
fn ipv6_header_chains_too_long_or_cut_short_are_dropped_from_the_lab_only() {
    require_root();
    let mut dp = Dataplane::new(10000, 32767);
    let too_long = |src| {
        Ip6::new(src, REMOTE6, UDP, udp(40000, 53, b""))
            .with_ext(vec![Ext::options(DEST_OPTS, 1); WALKED + 1])
            .frame()
    };
    // A hop-by-hop header of 16 bytes, the frame ending 4 bytes into it.
    let cut_short = |src| {
        let f = Ip6::new(src, REMOTE6, UDP, udp(40000, 53, b""))
            .with_ext(vec![Ext::options(HOP_BY_HOP, 2)])
            .frame();
        f[..14 + 40 + 4].to_vec()
    };
    for f in [too_long(RED6), cut_short(RED6)] {
        assert_eq!(dp.out(&f).0, SHOT);
    }
    assert_eq!(dp.stat(stat::DROP_V6_HEADER_CHAIN), 2);
    // Not the lab's: not the dataplane's to judge.
    for f in [too_long(REMOTE6), cut_short(UPLINK6)] {
        assert_eq!(dp.out(&f), (UNSPEC, f.clone()));
    }
    assert_eq!(dp.drops(), 2);
}

/// Router and neighbour solicitations and advertisements (from link-local,
/// unspecified and lab addresses), link-local traffic of any protocol, and
/// traffic neither from nor to the lab: every program passes it unchanged.
#[test]
fn ipv6_neighbour_discovery_link_local_and_others_pass_every_program_untouched() {
    require_root();
    let mut dp = Dataplane::new(10000, 32767);
    let ll = v6("fe80::1");
    let ns_target = BLUE6.octets();
    let frames = [
        Ip6::new(ll, v6("ff02::2"), ICMPV6, icmp6(133, &[])),
        Ip6::new(ll, v6("ff02::1"), ICMPV6, icmp6(134, &[0; 8])),
        Ip6::new(
            v6("::"),
            v6("ff02::1:ff00:2"),
            ICMPV6,
            icmp6(135, &ns_target),
        ),
        Ip6::new(RED6, BLUE6, ICMPV6, icmp6(135, &ns_target)),
        Ip6::new(RED6, REMOTE6, ICMPV6, icmp6(136, &RED6.octets())),
        Ip6::new(REMOTE6, RED6, ICMPV6, icmp6(136, &REMOTE6.octets())),
        Ip6::new(ll, v6("fe80::2"), ICMPV6, icmp6_echo(true, 1, 1, b"")),
        Ip6::new(ll, REMOTE6, UDP, udp(546, 547, b"dhcp")),
        Ip6::new(RED6, v6("ff02::fb"), UDP, udp(5353, 5353, b"mdns")),
        Ip6::new(UPLINK6, REMOTE6, TCP, tcp(40000, 443, SYN, b"")),
        Ip6::new(REMOTE6, UPLINK6, TCP, tcp(443, 40000, SYN, b"")),
    ];
    for ip in &frames {
        let f = ip.frame();
        for prog in PROGRAMS {
            assert_eq!(dp.run(prog, &f), (UNSPEC, f.clone()), "{prog}: {ip:?}");
        }
    }
    assert_eq!(dp.drops(), 0);
}

#[test]
fn ipv6_from_outside_into_a_masqueraded_subnet_or_from_a_lab_source_is_refused() {
    require_root();
    let mut dp = Dataplane::new(10000, 32767);
    let to_lab = Ip6::new(REMOTE6, RED6, TCP, tcp(443, 40000, SYN, b"")).frame();
    assert_eq!(dp.inb(&to_lab).0, SHOT);
    assert_eq!(dp.stat(stat::DROP_UNSOLICITED), 1);
    let spoofed = Ip6::new(BLUE6, UPLINK6, UDP, udp(53, 40000, b"")).frame();
    assert_eq!(dp.inb(&spoofed).0, SHOT);
    assert_eq!(dp.stat(stat::DROP_SPOOFED), 1);
    assert_eq!(dp.drops(), 2);
}

/// Mangled IPv6 frames (from the lab and from outside): every program
/// passes or drops them (with a counted reason), and none is rewritten.
#[test]
fn ipv6_malformed_frames_pass_or_drop_unchanged() {
    require_root();
    let mut dp = Dataplane::new(10000, 32767);
    let mut seed = 0x9e37_79b9_u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let bases: Vec<Vec<u8>> = lab_packets(RED6)
        .into_iter()
        .chain(lab_packets(REMOTE6))
        .map(|(_, f)| f)
        .collect();
    for base in &bases {
        for round in 0..20 {
            let mut f = base.clone();
            for _ in 0..3 {
                let r = next();
                let i = 14 + (r as usize % (f.len() - 14));
                f[i] = (r >> 8) as u8;
            }
            if round % 5 == 0 {
                f.truncate(14 + 40 + (next() as usize % (f.len() - 54)));
            }
            for prog in PROGRAMS {
                let before = dp.drops();
                let Some((rc, out)) = dp.try_run(prog, &f) else {
                    continue;
                };
                match rc {
                    UNSPEC => assert_eq!(out, f, "{prog} rewrote IPv6"),
                    SHOT => assert_eq!(dp.drops(), before + 1, "{prog}: drop uncounted"),
                    _ => panic!("{prog}: verdict {rc}"),
                }
            }
        }
    }
}
