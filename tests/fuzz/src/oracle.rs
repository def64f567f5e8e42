//! The `packets` target's harness: runs an input's steps through the
//! programs (maps kept between inputs, so flows build up), checks every
//! result against oracles that read the frames independently of the
//! programs, and feeds what the programs did back to libFuzzer.
//!
//! libFuzzer only sees coverage of this process, not of the eBPF programs
//! inside the kernel, so their behaviour comes back as extra counters: the
//! verdict, which counters of the `STATS` map moved, and which header
//! fields changed, per program and kind of packet.
//!
//! Oracles, for every frame a program ran on:
//! - the verdict is TC_ACT_UNSPEC, TC_ACT_SHOT or TC_ACT_REDIRECT;
//! - the frame keeps its length;
//! - only the bytes the program owns change (`frames::allowed`): never the
//!   payload, never anything past the IPv4 total length; a malformed
//!   packet is passed unchanged or dropped, never rewritten;
//! - a rewrite of a packet whose checksums were valid has valid checksums
//!   (`parse_checked`, the harness's own checksum code);
//! - a translation agrees with the flow table: the entry for the packet's
//!   tuple holds exactly the tuple it left with, at this hook; outbound it
//!   leaves from the uplink address, inbound it goes to a lab address; the
//!   other half of the flow, when present, points back;
//! - a fast-path packet is what the slow path would send (the uplink's
//!   egress program then leaves it alone), one hop less, with the flow's
//!   Ethernet addresses;
//! - the kernel never refuses a frame of a length it takes;
//! - nothing leaves the uplink with a masqueraded source address, nothing
//!   from the outside reaches a lab address of a subnet that is not routed,
//!   IPv4 or IPv6 (whose neighbour discovery and link-local traffic pass);
//! - an IPv6 packet is rewritten only by NAT66 at the uplink (to and from
//!   the uplink's address), with valid checksums where they were.

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr};

use netlab_common::{
    stat, FragKey, FLOW_L2, HOOK_BRIDGE_INGRESS, HOOK_UPLINK_EGRESS, HOOK_UPLINK_INGRESS,
    IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, KIND_SNAT, SUBNET_MASQUERADE, SUBNET_ROUTED,
};
use netlab_tests::packet::{parse_checked, parse_checked6};

use crate::{
    craft::{self, History, Input, Step},
    dataplane::{
        na, subnet6_of, subnet_of, Dataplane, Prog, BRIDGE_MAC, NODE_MAC, PORT_MAX, PORT_MIN,
        REDIRECT, SHOT, UNSPEC, UPLINK, UPLINK6,
    },
    frames::{self, hex, Tuple, ETH},
};

const EXTRA_LEN: usize = 1 << 14;

/// libFuzzer adds the non-zero bytes of this section to its features
/// after every run (and clears them before).
#[used]
#[link_section = "__libfuzzer_extra_counters"]
static mut EXTRA: [u8; EXTRA_LEN] = [0; EXTRA_LEN];

fn feature(parts: &[u64]) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        h ^= *p;
        h = h.wrapping_mul(0x0100_0000_01b3);
        h ^= h >> 29;
    }
    let i = (h % EXTRA_LEN as u64) as usize;
    // SAFETY: a plain byte array only this thread writes (libFuzzer reads
    // it between runs of the same thread).
    unsafe {
        let p = std::ptr::addr_of_mut!(EXTRA) as *mut u8;
        *p.add(i) = (*p.add(i)).wrapping_add(1);
    }
}

/// Findings already reported (each with an ignored regression test in
/// tests/tests/fuzz_regressions.rs): counted and shown once, not a crash,
/// so the fuzzer goes on looking for others. `NETLAB_FUZZ_STRICT=1` makes
/// them crashes again (to check a fix). Remove a class when its bug is fixed.
pub const KNOWN: &[(&str, &str)] = &[];

fn kind_of(frame: &[u8]) -> u64 {
    if let Some(ip) = frames::ipv6(frame) {
        return 9 + u64::from(ip.nd) + 2 * u64::from(ip.link_local);
    }
    if frames::malformed(frame).is_some() {
        return 1;
    }
    let Some(ip) = frames::ipv4(frame) else {
        return 0;
    };
    if ip.later_fragment() {
        return 8;
    }
    match ip.proto {
        IPPROTO_TCP => 2,
        IPPROTO_UDP => 3,
        IPPROTO_ICMP => match frame.get(ip.l4) {
            Some(0 | 8) => 4,
            Some(t) if frames::icmp_is_error(*t) => 6,
            _ => 5,
        },
        _ => 7,
    }
}

fn verdict_class(rc: u32) -> u64 {
    match rc {
        UNSPEC => 0,
        SHOT => 1,
        REDIRECT => 2,
        _ => 3,
    }
}

/// Frames the kernel's BPF_PROG_TEST_RUN takes for a TC program: at least
/// an Ethernet header, and for IPv4 (IPv6) a whole IPv4 (IPv6) header.
pub fn kernel_takes(frame: &[u8]) -> bool {
    if frame.len() < 14 {
        return false;
    }
    match [frame[12], frame[13]] {
        [0x08, 0x00] => frame.len() >= 14 + 20,
        [0x86, 0xdd] => frame.len() >= 14 + 40,
        _ => true,
    }
}

pub struct Harness {
    pub dp: Dataplane,
    remembered: Vec<Tuple>,
    next_slot: usize,
    strict: bool,
    fresh: bool,
    pub known_hits: BTreeMap<&'static str, u64>,
    /// The current input's steps, for a failure's report.
    log: String,
    inputs: u64,
    /// The known root cause any finding on the current frame comes from.
    cause: Option<&'static str>,
}

impl Harness {
    pub fn new() -> Harness {
        crate::dataplane::isolate();
        let env = |k: &str| std::env::var_os(k).is_some_and(|v| v != "0" && !v.is_empty());
        Harness {
            dp: Dataplane::new(),
            remembered: Vec::new(),
            next_slot: 0,
            strict: env("NETLAB_FUZZ_STRICT"),
            fresh: env("NETLAB_FUZZ_FRESH"),
            known_hits: BTreeMap::new(),
            log: String::new(),
            inputs: 0,
            cause: None,
        }
    }

    fn fail(&mut self, class: &'static str, msg: String) {
        // A finding whose root cause is already known, seen through
        // another oracle.
        let class = self.cause.unwrap_or(class);
        if !self.strict {
            if let Some((_, test)) = KNOWN.iter().find(|(c, _)| *c == class) {
                let n = self.known_hits.entry(class).or_insert(0);
                if *n == 0 {
                    eprintln!(
                        "netlab-fuzz: known finding `{class}` (regression test {test}), not a crash:\n{msg}"
                    );
                }
                *n += 1;
                feature(&[0xdead, class.len() as u64]);
                return;
            }
        }
        panic!(
            "netlab-fuzz finding `{class}`: {msg}\n--- steps of this input ---\n{}\
             (maps kept from earlier inputs; NETLAB_FUZZ_FRESH=1 starts each input from empty maps)",
            self.log
        );
    }

    fn remember(&mut self, t: Tuple) {
        if self.remembered.len() < 512 {
            self.remembered.push(t);
        } else {
            self.remembered[self.next_slot % 512] = t;
            self.next_slot += 1;
        }
    }

    pub fn run_input(&mut self, input: &Input) {
        self.inputs += 1;
        if self.fresh || (self.inputs.is_multiple_of(64) && self.dp.entries() > 3000) {
            self.dp.reset();
        }
        self.dp.set_knobs(input.knobs());
        self.log.clear();
        let _ = writeln!(self.log, "knobs {:?}", self.dp.knobs());
        let entries = self.dp.entries();
        feature(&[0xe17, 64 - entries.leading_zeros() as u64]);
        let mut frames: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for step in input.steps.iter().take(16) {
            let (prog, frame) = {
                let h = History {
                    frames: &frames,
                    remembered: &self.remembered,
                };
                match step {
                    Step::Craft(c) => (c.prog.prog(), c.build(&h)),
                    Step::Craft6(c) => (c.prog.prog(), c.build()),
                    Step::Raw { prog, eth, bytes } => (
                        prog.prog(),
                        if *eth {
                            craft::with_eth(bytes)
                        } else {
                            bytes.clone()
                        },
                    ),
                    Step::Mutate {
                        prog,
                        base,
                        after,
                        edits,
                    } => {
                        if frames.is_empty() {
                            continue;
                        }
                        let (a, b) = &frames[usize::from(*base) % frames.len()];
                        let mut f = if *after { b.clone() } else { a.clone() };
                        if f.is_empty() {
                            continue;
                        }
                        for (at, v) in edits.iter().take(8) {
                            let i = usize::from(*at) % f.len();
                            f[i] = *v;
                        }
                        (prog.prog(), f)
                    }
                    Step::Replay { prog, base } => {
                        if frames.is_empty() {
                            continue;
                        }
                        (
                            prog.prog(),
                            frames[usize::from(*base) % frames.len()].1.clone(),
                        )
                    }
                }
            };
            if let Some(out) = self.step(prog, &frame) {
                frames.push((frame, out));
            }
        }
    }

    /// One frame through one program, checked. The frame as it left, when
    /// the kernel ran the program.
    pub fn step(&mut self, prog: Prog, frame: &[u8]) -> Option<Vec<u8>> {
        // The lab host never routes a packet to its own uplink address or
        // into the lab out of the uplink: such frames at nl_uplink_out
        // would only make flows no real traffic can (replies "from" lab
        // addresses arriving on the uplink), and findings about those.
        // Nor does it take a packet from its own address on the uplink
        // (a martian source: the stack drops it after nl_uplink_in).
        if let Some(ip) = frames::ipv4(frame) {
            let unroutable = match prog {
                Prog::UplinkOut => ip.dst == UPLINK || subnet_of(ip.dst).is_some(),
                Prog::UplinkIn => ip.src == UPLINK,
                _ => false,
            };
            if unroutable {
                feature(&[0x5c1, prog.index() as u64]);
                return None;
            }
        }
        let res = self.dp.run(prog, frame);
        let delta = self.dp.stats_delta();
        let p = prog.index() as u64;
        let kind = kind_of(frame);
        let (rc, out) = match res {
            Err(e) => {
                let _ = writeln!(
                    self.log,
                    "{} {}: kernel refused: {e}",
                    prog.name(),
                    hex(frame)
                );
                feature(&[p, 0xe, kind]);
                if kernel_takes(frame) {
                    self.fail(
                        "kernel-refused",
                        format!("the kernel refused a {}-byte frame: {e}", frame.len()),
                    );
                }
                return None;
            }
            Ok(r) => r,
        };
        let _ = writeln!(
            self.log,
            "{} in  {}\n{} rc {} out {}",
            prog.name(),
            hex(frame),
            " ".repeat(prog.name().len()),
            rc as i32,
            if out == frame {
                "(unchanged)".into()
            } else {
                hex(&out)
            }
        );
        let changed = if out.len() == frame.len() {
            frames::changed_fields(frame, &out)
        } else {
            0x100
        };
        let vc = verdict_class(rc);
        feature(&[p, vc, kind]);
        feature(&[p, 0xc4, vc, u64::from(changed)]);
        for (i, d) in delta.iter().enumerate() {
            if *d > 0 {
                feature(&[p, 0x57, i as u64]);
                feature(&[p, 0x58, i as u64, kind, vc]);
            }
        }
        self.check(prog, frame, rc, &out);
        if let (Some(a), Some(b)) = (frames::tuple(frame), frames::tuple(&out)) {
            if out != frame && rc != SHOT {
                self.remember(a);
                self.remember(b);
            }
        }
        Some(out)
    }

    fn check(&mut self, prog: Prog, frame: &[u8], rc: u32, out: &[u8]) {
        let name = prog.name();
        if rc != UNSPEC && rc != SHOT && rc != REDIRECT {
            self.fail("verdict", format!("{name} returned {rc}"));
        }
        if out.len() != frame.len() {
            self.fail(
                "length",
                format!("{name}: {} bytes in, {} out", frame.len(), out.len()),
            );
            return;
        }
        if rc == SHOT {
            return;
        }
        if let Some(ip) = frames::ipv6(frame) {
            self.check_ipv6(prog, frame, out, ip);
            return;
        }
        let ip = frames::ipv4(frame);
        self.cause = None;
        if let Some(ip) = ip {
            let icmp_type = frame.get(ip.l4).copied();
            if matches!(prog, Prog::UplinkOut | Prog::NodeIn)
                && out != frame
                && ip.proto == IPPROTO_ICMP
                && !ip.later_fragment()
                && frames::malformed(frame).is_none()
            {
                // Echo replies and other non-echo ICMP from a node are
                // masqueraded as if they had a source "port" of 0 (and the
                // fast path then follows that flow).
                self.cause = match icmp_type {
                    Some(0) => Some("icmp-echo-reply-masqueraded"),
                    // An error from the node quoting an echo request it got:
                    // only a flow made from the node's echo reply matches.
                    Some(t)
                        if frames::icmp_is_error(t)
                            && frames::quote(frame)
                                .is_some_and(|q| q.proto == IPPROTO_ICMP && q.icmp_type == 8) =>
                    {
                        Some("icmp-echo-reply-masqueraded")
                    }
                    Some(t) if t != 8 && !frames::icmp_is_error(t) => {
                        Some("icmp-non-echo-identifier")
                    }
                    _ => None,
                };
            }
        }
        if out == frame {
            self.check_untouched(prog, frame, ip);
            return;
        }
        // Rewritten.
        if let Some(why) = frames::malformed(frame) {
            self.fail(
                "rewrote-malformed",
                format!(
                    "{name} rewrote a malformed packet ({why}), verdict {}",
                    rc as i32
                ),
            );
            return;
        }
        let allowed = frames::allowed(frame, prog, rc);
        let bad: Vec<usize> = (0..frame.len())
            .filter(|&i| frame[i] != out[i] && !allowed[i])
            .collect();
        if !bad.is_empty() {
            let class = match ip {
                Some(ip) if bad.iter().any(|&i| i >= ip.end) => "wrote-past-datagram",
                Some(ip)
                    if ip.proto == IPPROTO_ICMP
                        && !ip.later_fragment()
                        && frame
                            .get(ip.l4)
                            .is_some_and(|t| !matches!(t, 0 | 8 | 3 | 11 | 12))
                        && bad.iter().all(|&i| (ip.l4 + 4..ip.l4 + 6).contains(&i)) =>
                {
                    "icmp-non-echo-identifier"
                }
                // An ICMP error whose quoted headers end past the total
                // length (in the padding): the same root cause as above.
                Some(ip)
                    if ip.proto == IPPROTO_ICMP
                        && frame.get(ip.l4).is_some_and(|t| frames::icmp_is_error(*t))
                        && frames::quote(frame).is_none() =>
                {
                    "rewrote-malformed"
                }
                _ => "wrote-outside-headers",
            };
            self.fail(
                class,
                format!(
                    "{name} changed bytes it does not own at offsets {bad:?} (verdict {})",
                    rc as i32
                ),
            );
            return; // (a known finding: the rest would only repeat it)
        }
        if frames::checkable(frame) && parse_checked(frame).is_ok() {
            if let Err(e) = parse_checked(out).or_else(|e| {
                // An ICMP message whose words sum to zero has two
                // checksums in one's complement, 0xffff (what RFC 1071
                // computes) and 0x0000 (what the kernel's incremental
                // helper can leave): the same number, not a finding.
                match (ip, e.as_str()) {
                    (Some(ip), "bad ICMP checksum") if out[ip.l4 + 2..ip.l4 + 4] == [0, 0] => {
                        let mut alt = out.to_vec();
                        alt[ip.l4 + 2..ip.l4 + 4].copy_from_slice(&[0xff, 0xff]);
                        feature(&[0x2e70]);
                        parse_checked(&alt).map_err(|_| e)
                    }
                    _ => Err(e),
                }
            }) {
                self.fail(
                    "checksum",
                    format!("{name} rewrote a valid packet into one with {e}"),
                );
                return;
            }
        }
        let Some(ip) = ip else { return };
        self.check_translation(prog, frame, rc, out, ip);
    }

    /// An IPv6 packet a program let through: unchanged, and, unless it
    /// stays on its link or is neighbour discovery, neither leaving the
    /// uplink from a masqueraded subnet nor coming in to a subnet that is
    /// not routed or from a lab source.
    fn check_ipv6(&mut self, prog: Prog, frame: &[u8], out: &[u8], ip: frames::Ipv6) {
        let name = prog.name();
        self.cause = None;
        if out != frame {
            self.check_nat66(prog, frame, out, ip);
            return;
        }
        if ip.link_local || ip.nd {
            return;
        }
        let masqueraded = |a| subnet6_of(a).is_some_and(|s| s.flags & SUBNET_MASQUERADE != 0);
        match prog {
            Prog::UplinkOut if masqueraded(ip.src) => self.fail(
                "leak-ipv6",
                format!(
                    "{name} let IPv6 leave with the masqueraded source {}",
                    ip.src
                ),
            ),
            Prog::UplinkIn => {
                if subnet6_of(ip.dst).is_some_and(|s| s.flags & SUBNET_ROUTED == 0) {
                    self.fail(
                        "unsolicited-ipv6",
                        format!("{name} let IPv6 from {} in to {}", ip.src, ip.dst),
                    );
                } else if subnet6_of(ip.src).is_some() {
                    self.fail(
                        "spoofed-ipv6",
                        format!("{name} let IPv6 in with the lab source {}", ip.src),
                    );
                }
            }
            _ => {}
        }
    }

    /// An IPv6 packet a program rewrote: only NAT66 may, the uplink's
    /// egress from a masqueraded source to the uplink's address, its
    /// ingress from the uplink's address to a masqueraded one, a bridge's
    /// ingress from a lab address at the uplink's to another (hairpin);
    /// nothing but those addresses, the ports and a checksum changes, and
    /// a packet whose checksum was valid still has a valid one.
    fn check_nat66(&mut self, prog: Prog, frame: &[u8], out: &[u8], ip: frames::Ipv6) {
        let name = prog.name();
        // The fast paths (nl_node_in out, nl_uplink_in in) also give the
        // packet new Ethernet addresses and one hop less; the rest is the
        // uplink's translation.
        let fast = matches!(prog, Prog::NodeIn | Prog::UplinkIn)
            && out.len() == frame.len()
            && frame.len() > ETH + 8
            && frame[ETH + 7] > 1
            && out[ETH + 7] == frame[ETH + 7] - 1;
        let mut seen = out.to_vec();
        if fast {
            seen[..12].copy_from_slice(&frame[..12]);
            seen[ETH + 7] = frame[ETH + 7];
        }
        let out = &seen[..];
        let prog = if fast && prog == Prog::NodeIn {
            Prog::UplinkOut
        } else {
            prog
        };
        let masqueraded = |a| subnet6_of(a).is_some_and(|s| s.flags & SUBNET_MASQUERADE != 0);
        let (addr, ok) = match (prog, frames::ipv6(out)) {
            (Prog::UplinkOut, Some(o)) => (
                ETH + 8..ETH + 24,
                masqueraded(ip.src) && o.src == UPLINK6 && o.dst == ip.dst,
            ),
            (Prog::UplinkIn, Some(o)) => (
                ETH + 24..ETH + 40,
                ip.dst == UPLINK6 && masqueraded(o.dst) && o.src == ip.src,
            ),
            // Hairpin: from a lab address to the uplink's, then from the
            // uplink's to a lab address (both addresses and ports).
            (Prog::BridgeIn, Some(o)) => (
                ETH + 8..ETH + 40,
                ip.dst == UPLINK6
                    && subnet6_of(ip.src).is_some()
                    && o.src == UPLINK6
                    && subnet6_of(o.dst).is_some(),
            ),
            _ => (0..0, false),
        };
        let others = (0..frame.len().min(out.len()))
            .filter(|&i| frame[i] != out[i] && !addr.contains(&i))
            .count();
        if !ok || out.len() != frame.len() || others > 6 {
            self.fail("rewrote-ipv6", format!("{name} rewrote an IPv6 packet"));
        } else if parse_checked6(frame).is_ok() {
            if let Err(e) = parse_checked6(out) {
                self.fail(
                    "nat66-checksum",
                    format!("{name} translated IPv6 into one with {e}"),
                );
            }
        }
    }

    /// A packet passed as it came.
    fn check_untouched(&mut self, prog: Prog, frame: &[u8], ip: Option<frames::Ipv4>) {
        let Some(ip) = ip else { return };
        let class = || -> &'static str {
            match frames::malformed(frame) {
                Some(_) => "malformed",
                None => match ip.proto {
                    IPPROTO_TCP | IPPROTO_UDP => "tcp/udp",
                    IPPROTO_ICMP => match frame.get(ip.l4) {
                        Some(0 | 8) => "icmp-echo",
                        Some(t) if frames::icmp_is_error(*t) => "icmp-error",
                        _ => "icmp-other",
                    },
                    _ => "other-protocol",
                },
            }
        };
        match prog {
            Prog::UplinkOut => {
                // (To the uplink address or into the lab it would not
                // leave through the uplink; a malformed or truncated packet
                // the lab host's stack drops before routing it.)
                if ip.src != UPLINK
                    && frames::malformed(frame).is_none()
                    && !ip.truncated(frame)
                    && ip.dst != UPLINK
                    && subnet_of(ip.dst).is_none()
                    && subnet_of(ip.src).is_some_and(|s| s.flags & SUBNET_MASQUERADE != 0)
                {
                    let c = class();
                    self.fail(
                        match c {
                            "icmp-error" => "leak-icmp-error",
                            "other-protocol" => "leak-other-protocol",
                            _ => "leak",
                        },
                        format!(
                            "nl_uplink_out let a packet ({c}) leave with the masqueraded source {}",
                            ip.src
                        ),
                    );
                }
            }
            Prog::UplinkIn => {
                // The stack drops a malformed or truncated datagram itself.
                let stack_drops = frames::malformed(frame).is_some() || ip.truncated(frame);
                if let Some(s) = subnet_of(ip.dst).filter(|_| !stack_drops) {
                    let c = class();
                    if s.flags & SUBNET_ROUTED == 0 {
                        self.fail(
                            match c {
                                "other-protocol" => "unsolicited-other-protocol",
                                _ => "unsolicited",
                            },
                            format!(
                                "nl_uplink_in let a packet ({c}) from {} in to the lab address {} (subnet not routed)",
                                ip.src, ip.dst
                            ),
                        );
                    } else if subnet_of(ip.src).is_some() {
                        self.fail(
                            if c == "other-protocol" {
                                // The same gap: other protocols are not filtered.
                                "unsolicited-other-protocol"
                            } else {
                                "spoofed"
                            },
                            format!(
                                "nl_uplink_in let a packet ({c}) with the lab source {} in to {}",
                                ip.src, ip.dst
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn check_translation(
        &mut self,
        prog: Prog,
        frame: &[u8],
        rc: u32,
        out: &[u8],
        ip: frames::Ipv4,
    ) {
        let name = prog.name();
        let Some(oip) = frames::ipv4(out) else {
            self.fail("broke-header", format!("{name} broke the IPv4 header"));
            return;
        };
        let in_lab = |a: Ipv4Addr| subnet_of(a).is_some();
        if prog == Prog::UplinkIn && in_lab(ip.src) {
            self.fail(
                "spoofed-translated",
                format!(
                    "nl_uplink_in translated a packet from the lab address {} (from outside)",
                    ip.src
                ),
            );
            return;
        }
        // ICMP errors: outer and quoted.
        if let (Some(q), Some(oq)) = (frames::quote(frame), frames::quote(out)) {
            match prog {
                Prog::UplinkIn => {
                    if !in_lab(oip.dst) || oq.tuple.src != oip.dst {
                        self.fail(
                            "icmp-error-translation",
                            format!(
                                "nl_uplink_in sent an ICMP error to {} quoting a packet from {}",
                                oip.dst, oq.tuple.src
                            ),
                        );
                    }
                }
                Prog::UplinkOut => {
                    let routed =
                        subnet_of(oq.tuple.dst).is_some_and(|s| s.flags & SUBNET_ROUTED != 0);
                    let ok = if routed {
                        // About a routed subnet's (untranslated) flow: the
                        // quote stays; a sender on a masqueraded subnet is
                        // replaced by the uplink address, any other stays.
                        let masqueraded =
                            subnet_of(ip.src).is_some_and(|s| s.flags & SUBNET_MASQUERADE != 0);
                        q.tuple == oq.tuple && oip.src == if masqueraded { UPLINK } else { ip.src }
                    } else {
                        oip.src == UPLINK && oq.tuple.dst == UPLINK
                    };
                    if !ok {
                        self.fail(
                            if routed {
                                "icmp-error-routed-flow"
                            } else {
                                "icmp-error-translation"
                            },
                            format!(
                                "nl_uplink_out sent an ICMP error from {} quoting a packet to {}",
                                oip.src, oq.tuple.dst
                            ),
                        );
                    }
                }
                _ => self.fail(
                    "icmp-error-translation",
                    format!("{name} rewrote an ICMP error"),
                ),
            }
            return;
        }
        if ip.later_fragment() {
            let key = FragKey {
                src_addr: na(ip.src),
                dst_addr: na(ip.dst),
                id: ip.id.to_be(),
                proto: ip.proto,
                _pad: 0,
            };
            let want = self.dp.frag(&key);
            let ok = match (prog, want) {
                (Prog::UplinkOut, Some(v)) => na(oip.src) == v.src_addr && oip.dst == ip.dst,
                (Prog::UplinkIn, Some(v)) => na(oip.dst) == v.dst_addr && oip.src == ip.src,
                // A hairpinned datagram's later fragments, both ways.
                (Prog::BridgeIn, Some(v)) => {
                    na(oip.src) == v.src_addr && na(oip.dst) == v.dst_addr && rc == REDIRECT
                }
                _ => false,
            };
            if !ok {
                self.fail(
                    "fragment-translation",
                    format!(
                        "{name} rewrote a later fragment {} -> {} into {} -> {}; recorded: {want:?}",
                        ip.src, ip.dst, oip.src, oip.dst
                    ),
                );
            }
            return;
        }
        let (Some(tin), Some(tout)) = (frames::tuple(frame), frames::tuple(out)) else {
            self.fail(
                "no-tuple",
                format!("{name} rewrote a packet without a complete L4 header"),
            );
            return;
        };
        let hook = match prog {
            Prog::UplinkOut | Prog::NodeIn => HOOK_UPLINK_EGRESS,
            Prog::UplinkIn => HOOK_UPLINK_INGRESS,
            Prog::BridgeIn => HOOK_BRIDGE_INGRESS,
        };
        let Some(v) = self.dp.flow(&tin.key()) else {
            self.fail(
                "no-flow-entry",
                format!("{name} translated {tin:?} into {tout:?} without a flow entry for it"),
            );
            return;
        };
        let says = Tuple {
            src: Ipv4Addr::from(v.src_addr.to_ne_bytes()),
            dst: Ipv4Addr::from(v.dst_addr.to_ne_bytes()),
            sport: u16::from_be(v.src_port),
            dport: u16::from_be(v.dst_port),
            proto: tin.proto,
        };
        if says != tout || v.hook != hook {
            let reply = tin.proto == IPPROTO_ICMP && frame.get(ip.l4) == Some(&0);
            self.fail(
                if reply && prog == Prog::UplinkOut {
                    "icmp-echo-reply-masqueraded"
                } else {
                    "flow-mismatch"
                },
                format!(
                    "{name} translated {tin:?} into {tout:?}, but its entry says {says:?} at hook {} (this hook: {hook})",
                    v.hook
                ),
            );
        }
        // A routed subnet's flows keep their addresses (identity flows,
        // for the fast path).
        let routed = |a: Ipv4Addr| subnet_of(a).is_some_and(|s| s.flags & SUBNET_ROUTED != 0);
        let identity =
            tout.src == tin.src && tout.dst == tin.dst && (routed(tin.src) || routed(tin.dst));
        match prog {
            Prog::UplinkOut | Prog::NodeIn | Prog::BridgeIn if tout.src != UPLINK && !identity => {
                self.fail(
                    "source-not-uplink",
                    format!("{name} translated {tin:?} to the source {}", tout.src),
                )
            }
            Prog::UplinkIn | Prog::BridgeIn if !in_lab(tout.dst) => self.fail(
                "destination-not-lab",
                format!(
                    "{name} translated {tin:?} to {}, not a lab address",
                    tout.dst
                ),
            ),
            _ => {}
        }
        if matches!(prog, Prog::UplinkOut | Prog::NodeIn) && v.kind == KIND_SNAT {
            let port = if tin.proto == IPPROTO_ICMP {
                tout.sport.max(tout.dport)
            } else {
                tout.sport
            };
            if !(PORT_MIN..=PORT_MAX).contains(&port) {
                self.fail(
                    "port-outside-range",
                    format!("{name} masqueraded {tin:?} to port {port}, outside the NAT range"),
                );
            }
        }
        if prog == Prog::BridgeIn && rc != REDIRECT {
            self.fail(
                "hairpin-not-redirected",
                format!("nl_bridge_in rewrote {tin:?} and returned {}", rc as i32),
            );
        }
        // The flow's other half, when there, translates back.
        let peer_key = netlab_common::FlowKey::peer_of(&v, tin.proto);
        if let Some(peer) = self.dp.flow(&peer_key) {
            let back = peer.src_addr == na(tin.dst)
                && peer.dst_addr == na(tin.src)
                && peer.src_port == tin.dport.to_be()
                && peer.dst_port == tin.sport.to_be();
            if !back {
                self.fail(
                    "peer-disagrees",
                    format!(
                        "{name} translated {tin:?} into {tout:?}, but the flow's other half \
                         ({:?}) translates to {}:{} -> {}:{}",
                        tout.reversed(),
                        Ipv4Addr::from(peer.src_addr.to_ne_bytes()),
                        u16::from_be(peer.src_port),
                        Ipv4Addr::from(peer.dst_addr.to_ne_bytes()),
                        u16::from_be(peer.dst_port)
                    ),
                );
            }
            feature(&[prog.index() as u64, 0x9ee7, 1]);
        } else {
            feature(&[prog.index() as u64, 0x9ee7, 0]);
        }
        // Fast paths.
        if rc == REDIRECT && matches!(prog, Prog::NodeIn | Prog::UplinkIn) {
            if oip.ttl != ip.ttl.wrapping_sub(1) || ip.ttl <= 1 {
                self.fail(
                    "fast-path-ttl",
                    format!("{name}: TTL {} became {}", ip.ttl, oip.ttl),
                );
            }
            let l2: Vec<u8> = if prog == Prog::NodeIn {
                if v.flags & FLOW_L2 == 0 {
                    self.fail(
                        "fast-path-l2",
                        format!("nl_node_in redirected {tin:?} with no Ethernet addresses learnt"),
                    );
                }
                v.l2.to_vec()
            } else {
                [NODE_MAC, BRIDGE_MAC].concat()
            };
            if out[..12] != l2[..] {
                self.fail(
                    "fast-path-l2",
                    format!(
                        "{name}: Ethernet addresses {} instead of {}",
                        hex(&out[..12]),
                        hex(&l2)
                    ),
                );
            }
            if prog == Prog::NodeIn {
                // On its way out, the uplink's egress leaves it alone.
                match self.dp.run(Prog::UplinkOut, out) {
                    Ok((UNSPEC, again)) if again == out => {}
                    other => self.fail(
                        "fast-path-then-egress",
                        format!(
                            "a fast-path packet through nl_uplink_out: {:?}",
                            other.map(|(rc, f)| (rc as i32, hex(&f)))
                        ),
                    ),
                }
                self.dp.stats_delta();
            }
        }
        let _ = stat::COUNT;
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}
