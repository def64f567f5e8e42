//! The eBPF programs with fresh maps, for runs through BPF_PROG_TEST_RUN
//! (tests/tests/programs.rs, tests/tests/fuzz_regressions.rs): uplink
//! 198.51.100.2, 192.168.15.0/24 and fdec:60cc:b1bd:15::/64 (the default lab's ULA) masqueraded, tcp/80
//! forwarded to blue:80.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, MapData, PerCpuArray,
    },
    programs::{SchedClassifier, TestRun, TestRunOptions},
    Ebpf, EbpfLoader, Pod,
};
use netlab::dataplane::{fwd_counters::ForwardTotals, MapContents};
use netlab_common::stat;
use netlab_common::{
    addr_from_octets, fwd_counter, names, port_to_net, Binding, Endpoint, Flow6Key, Flow6Value,
    FlowKey, FlowValue, ForwardCounter, ForwardKey, ForwardTarget, GcState, NatConfig,
    Reservation6, SubnetInfo, IPPROTO_TCP, SUBNET_MASQUERADE,
};

/// TC_ACT_UNSPEC (-1): pass, next program.
pub const UNSPEC: u32 = u32::MAX;
pub const SHOT: u32 = 2;
pub const REDIRECT: u32 = 7;

pub const RED: Ipv4Addr = Ipv4Addr::new(192, 168, 15, 1);
pub const BLUE: Ipv4Addr = Ipv4Addr::new(192, 168, 15, 2);
pub const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// The lab's masqueraded IPv6 subnet (/64), red's and blue's addresses in it.
pub const LAB6: Ipv6Addr = Ipv6Addr::new(0xfdec, 0x60cc, 0xb1bd, 0x15, 0, 0, 0, 0);
pub const RED6: Ipv6Addr = Ipv6Addr::new(0xfdec, 0x60cc, 0xb1bd, 0x15, 0, 0, 0, 1);
pub const BLUE6: Ipv6Addr = Ipv6Addr::new(0xfdec, 0x60cc, 0xb1bd, 0x15, 0, 0, 0, 2);
/// The uplink's IPv6 address, and a host beyond it.
pub const UPLINK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub const REMOTE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// The most `Dataplane::age` moves the dataplane's timestamps back by.
pub const AGE_MAX: Duration = Duration::from_secs(130);

/// Wait until the programs' clock (`bpf_ktime_get_coarse_ns`, that is
/// CLOCK_MONOTONIC_COARSE) is past `at_least`, so that every timestamp the
/// programs write from now on can be aged by that much. A VM booted for the
/// tests starts it at 0; a host is long past it and does not wait.
pub fn wait_for_kernel_clock(at_least: Duration) {
    let clock = nix::time::ClockId::CLOCK_MONOTONIC_COARSE;
    let now = Duration::from(clock.now().expect("reading CLOCK_MONOTONIC_COARSE"));
    if now <= at_least {
        let wait = at_least - now + Duration::from_millis(100);
        eprintln!("waiting {wait:?} for the kernel's clock to pass {at_least:?} (it ages timestamps back)");
        std::thread::sleep(wait);
    }
}

/// An address as the maps hold it.
pub fn na(a: Ipv4Addr) -> u32 {
    addr_from_octets(a.octets())
}

pub struct Dataplane {
    pub ebpf: Ebpf,
}

impl Dataplane {
    /// NAT ports `port_min..=port_max`, the fast path on, timeouts as the
    /// lab file's defaults, no flow limit to speak of.
    pub fn new(port_min: u16, port_max: u16) -> Dataplane {
        Dataplane::with(port_min, port_max, |_| {})
    }

    /// As `new`, with the configuration adjusted by `tweak`.
    pub fn with(port_min: u16, port_max: u16, tweak: impl FnOnce(&mut NatConfig)) -> Dataplane {
        Dataplane::load(EbpfLoader::new(), port_min, port_max, tweak)
    }

    /// As `with`, with room for `entries` flow entries (`NAT_FLOWS`).
    pub fn with_flow_capacity(
        port_min: u16,
        port_max: u16,
        entries: u32,
        tweak: impl FnOnce(&mut NatConfig),
    ) -> Dataplane {
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(netlab_common::names::NAT_FLOWS, entries);
        Dataplane::load(loader, port_min, port_max, tweak)
    }

    fn load(
        mut loader: EbpfLoader,
        port_min: u16,
        port_max: u16,
        tweak: impl FnOnce(&mut NatConfig),
    ) -> Dataplane {
        wait_for_kernel_clock(AGE_MAX);
        let mut ebpf = loader
            .load(netlab::dataplane::EBPF_OBJECT)
            .expect("loading the object");
        let mut config = NatConfig {
            port_min,
            port_max,
            flow_limit: 1 << 20,
            flow_limit6: 1 << 20,
            uplink_addr6: UPLINK6.octets(),
            ..netlab::dataplane::default_config(na(UPLINK), true)
        };
        tweak(&mut config);
        let contents = MapContents::with_config(config)
            .subnet(Ipv4Addr::new(192, 168, 15, 0), 24, SUBNET_MASQUERADE, 1)
            .subnet6(LAB6, 64, SUBNET_MASQUERADE, 1)
            .forward(IPPROTO_TCP, 80, BLUE, 80)
            .forward6(IPPROTO_TCP, 80, BLUE6, 80);
        netlab::dataplane::fill_maps(&mut ebpf, &contents).unwrap_or_else(|e| panic!("{e:#}"));
        Dataplane { ebpf }
    }

    /// `prog`, verified and wired to what it reaches by tail call with a
    /// packet like `frame` on its first use: 6.1's verifier spends seconds
    /// on the IPv6 programs in CI's emulated VM, and most tests run none.
    pub fn program(&mut self, prog: &str, frame: &[u8]) -> &mut SchedClassifier {
        let ipv6 = !matches!(frame.get(12..14), Some([0x08, 0x00] | [0x08, 0x06]));
        let names = netlab::dataplane::attach::with_tail_targets([prog], ipv6);
        netlab::dataplane::attach::load_programs(&mut self.ebpf, &names)
            .unwrap_or_else(|e| panic!("{e:#}"));
        self.ebpf.program_mut(prog).unwrap().try_into().unwrap()
    }

    /// Every program of the object, verified.
    pub fn load_every_program(&mut self) {
        netlab::dataplane::attach::load_every_program(&mut self.ebpf)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Run `prog` on `frame`: its verdict and the frame it left.
    pub fn run(&mut self, prog: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let p = self.program(prog, frame);
        run_once(p, frame)
    }

    /// `None` when the kernel refuses the frame itself (too short to be an
    /// skb of its protocol): no program ever sees such a packet.
    pub fn try_run(&mut self, prog: &str, frame: &[u8]) -> Option<(u32, Vec<u8>)> {
        let p = self.program(prog, frame);
        try_run_once(p, frame)
    }

    /// Run `prog` on each list of `lists` at once, each list on a thread of
    /// its own, the threads started together (two CPUs at one map entry,
    /// as under load): every frame's verdict and the frame it left, list
    /// by list. The program is loaded first (for the family of the first
    /// list's first frame), if it is not yet.
    pub fn run_at_once(&mut self, prog: &str, lists: &[Vec<Vec<u8>>]) -> Vec<Vec<(u32, Vec<u8>)>> {
        let runs: Vec<(&str, &[Vec<u8>])> = lists.iter().map(|l| (prog, l.as_slice())).collect();
        self.run_each_at_once(&runs)
    }

    /// [`Self::run_at_once`] with a program per list: the two directions of
    /// the same flows on two CPUs at once (a connection's two FINs crossing).
    pub fn run_each_at_once(&mut self, runs: &[(&str, &[Vec<u8>])]) -> Vec<Vec<(u32, Vec<u8>)>> {
        for (prog, frames) in runs {
            self.program(prog, &frames[0]);
        }
        let progs: Vec<&SchedClassifier> = runs
            .iter()
            .map(|(prog, _)| self.ebpf.program(prog).unwrap().try_into().unwrap())
            .collect();
        let start = std::sync::Barrier::new(runs.len());
        std::thread::scope(|s| {
            let threads: Vec<_> = runs
                .iter()
                .zip(progs)
                .map(|(&(_, frames), p)| {
                    let start = &start;
                    s.spawn(move || {
                        start.wait();
                        frames.iter().map(|f| run_once(p, f)).collect::<Vec<_>>()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        })
    }

    /// A connection's two FINs crossing: `node_fins` through
    /// `nl_uplink_out` and `server_fins` through `nl_uplink_in`, a CPU
    /// each, at once; every one must pass.
    pub fn cross_fins(&mut self, node_fins: &[Vec<u8>], server_fins: &[Vec<u8>]) {
        let verdicts =
            self.run_each_at_once(&[("nl_uplink_out", node_fins), ("nl_uplink_in", server_fins)]);
        assert!(verdicts.iter().flatten().all(|(rc, _)| *rc == UNSPEC));
    }

    /// The source ports of the frames [`Self::run_at_once`] let through
    /// (`UNSPEC`), read by `sport`.
    pub fn ports_at_once(
        &mut self,
        prog: &str,
        lists: &[Vec<Vec<u8>>],
        sport: impl Fn(&[u8]) -> u16,
    ) -> Vec<u16> {
        self.run_at_once(prog, lists)
            .into_iter()
            .flatten()
            .filter(|(rc, _)| *rc == UNSPEC)
            .map(|(_, out)| sport(&out))
            .collect()
    }

    /// Through the uplink's egress program.
    pub fn out(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run("nl_uplink_out", frame)
    }

    /// Through the uplink's ingress program.
    pub fn inb(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run("nl_uplink_in", frame)
    }

    pub fn flows(&self) -> Vec<(FlowKey, FlowValue)> {
        let m: HashMap<&MapData, FlowKey, FlowValue> =
            HashMap::try_from(self.ebpf.map("NAT_FLOWS").unwrap()).unwrap();
        m.iter().map(|r| r.unwrap()).collect()
    }

    /// The IPv6 flow table's entries.
    pub fn flows6(&self) -> Vec<(Flow6Key, Flow6Value)> {
        let m: HashMap<&MapData, Flow6Key, Flow6Value> =
            HashMap::try_from(self.ebpf.map(netlab_common::names::NAT6_FLOWS).unwrap()).unwrap();
        m.iter().map(|r| r.unwrap()).collect()
    }

    pub fn binding(&self, inside: Endpoint) -> Option<Binding> {
        let m: HashMap<&MapData, Endpoint, Binding> =
            HashMap::try_from(self.ebpf.map("NAT_BIND").unwrap()).unwrap();
        m.get(&inside, 0).ok()
    }

    /// Forward `proto` (`IPPROTO_*`) ports `ports` to `to`:`to_port`, as
    /// `netlab fwd add` does (straight into `FORWARD_RULES`, then the bitmap
    /// of forwarded ports), uncounted (counter 0). With `across` = `(snat, ifindex)` the target is on
    /// another lab host, as `up` writes a share's forward: the rule
    /// translates the source to `snat` (the host port's address), whose
    /// `/32` entry in `LAB_SUBNETS` names the host port `ifindex`.
    pub fn forward_ports(
        &mut self,
        proto: u8,
        ports: std::ops::RangeInclusive<u16>,
        to: Ipv4Addr,
        to_port: u16,
        across: Option<(Ipv4Addr, u32)>,
    ) {
        let mut fwd: HashMap<&mut MapData, ForwardKey, ForwardTarget> =
            HashMap::try_from(self.ebpf.map_mut("FORWARD_RULES").unwrap()).unwrap();
        let target = ForwardTarget {
            addr: na(to),
            port: port_to_net(to_port),
            counter: 0,
            snat_addr: across.map_or(0, |(snat, _)| na(snat)),
        };
        for port in ports {
            fwd.insert(ForwardKey::new(port_to_net(port), proto), target, 0)
                .unwrap();
        }
        netlab::dataplane::forwarded_ports::sync_object(&mut self.ebpf)
            .unwrap_or_else(|e| panic!("{e:#}"));
        if let Some((snat, ifindex)) = across {
            let mut subnets: LpmTrie<&mut MapData, u32, SubnetInfo> =
                LpmTrie::try_from(self.ebpf.map_mut("LAB_SUBNETS").unwrap()).unwrap();
            let info = SubnetInfo { flags: 0, ifindex };
            subnets.insert(&Key::new(32, na(snat)), info, 0).unwrap();
        }
    }

    /// Reserve the uplink's `proto` ports `ports` for good, each for an
    /// inside endpoint of 10.99.0.1 (the mappings of flows that left no
    /// entry): `NAT_PORTS` holds them, the port search has not seen them.
    pub fn hold_ports(&mut self, proto: u8, ports: impl IntoIterator<Item = u16>) {
        let mut m: HashMap<&mut MapData, Endpoint, Binding> =
            HashMap::try_from(self.ebpf.map_mut("NAT_PORTS").unwrap()).unwrap();
        let holder = na(Ipv4Addr::new(10, 99, 0, 1));
        for port in ports {
            let binding = Binding {
                peer: Endpoint::new(holder, port_to_net(port), proto),
                expires_ns: u64::MAX,
            };
            m.insert(
                Endpoint::new(na(UPLINK), port_to_net(port), proto),
                binding,
                0,
            )
            .unwrap();
        }
    }

    /// Let `by` pass for the dataplane's state, as if no packet had come
    /// meanwhile: every timestamp the programs compare with their clock
    /// (flows' creation and last packet, mappings' expiry, the last
    /// collection) moves back by `by`. Deterministic where sleeping is not
    /// (a busy or emulated machine sleeps longer than asked), and nothing is
    /// added to the packet path. Time that really passes adds to it.
    pub fn age(&mut self, by: Duration) {
        assert!(by <= AGE_MAX, "age by at most {AGE_MAX:?}, not {by:?}");
        let by = u64::try_from(by.as_nanos()).expect("an age that fits in u64 ns");
        // A timestamp older than the clock's start cannot be written: the
        // test would see less time pass than it asked for.
        let back = |what: &str, ns: u64| -> u64 {
            ns.checked_sub(by).unwrap_or_else(|| {
                panic!("cannot age {what} by {by} ns: it is at {ns} ns of the kernel's clock")
            })
        };
        self.rewrite::<FlowKey, FlowValue>(names::NAT_FLOWS, |v| {
            v.created_ns = back("a flow's creation", v.created_ns);
            v.last_seen_ns = back("a flow's last packet", v.last_seen_ns);
        });
        for map in [names::NAT_BIND, names::NAT_PORTS] {
            self.rewrite::<Endpoint, Binding>(map, |b| {
                b.expires_ns = back("a mapping's expiry", b.expires_ns);
            });
        }
        self.rewrite::<Flow6Key, Flow6Value>(names::NAT6_FLOWS, |v| {
            v.created_ns = back("a flow's creation", v.created_ns);
            v.last_seen_ns = back("a flow's last packet", v.last_seen_ns);
        });
        self.rewrite::<ForwardKey, Reservation6>(names::NAT6_PORTS, |r| {
            r.expires_ns = back("a mapping's expiry", r.expires_ns);
        });
        for table in [names::GC_STATE, names::GC6_STATE] {
            let mut gc: Array<&mut MapData, GcState> =
                Array::try_from(self.ebpf.map_mut(table).unwrap()).unwrap();
            let mut st = gc.get(&0, 0).unwrap();
            // 0: never collected, which stays as long ago as it was.
            if st.last_run_ns != 0 {
                st.last_run_ns = back("the last collection", st.last_run_ns);
                gc.set(0, st, 0).unwrap();
            }
        }
    }

    /// Change every entry of the hash map `name` with `f`, in place.
    fn rewrite<K: Pod, V: Pod>(&mut self, name: &str, mut f: impl FnMut(&mut V)) {
        let mut m: HashMap<&mut MapData, K, V> =
            HashMap::try_from(self.ebpf.map_mut(name).unwrap()).unwrap();
        let entries: Vec<(K, V)> = m.iter().map(|r| r.unwrap()).collect();
        for (k, mut v) in entries {
            f(&mut v);
            m.insert(k, v, 0).unwrap();
        }
    }

    /// Every drop counter (`drop_*` of `stat::NAMES`), summed: a dropped
    /// packet always moves one.
    pub fn drops(&self) -> u64 {
        (0..stat::COUNT)
            .filter(|&i| stat::NAMES[i as usize].starts_with("drop_"))
            .map(|i| self.stat(i))
            .sum()
    }

    /// The counter of the harness's forward of tcp `port`: its id, and its
    /// totals summed over the CPUs whose slot holds that id.
    pub fn forward_totals(&self, port: u16) -> (u16, ForwardTotals) {
        let rules: HashMap<&MapData, ForwardKey, ForwardTarget> =
            HashMap::try_from(self.ebpf.map("FORWARD_RULES").unwrap()).unwrap();
        let id = rules
            .get(&ForwardKey::new(port_to_net(port), IPPROTO_TCP), 0)
            .unwrap()
            .counter;
        let counters: PerCpuArray<&MapData, ForwardCounter> =
            PerCpuArray::try_from(self.ebpf.map("FORWARD_COUNTERS").unwrap()).unwrap();
        let per_cpu = counters.get(&fwd_counter::slot(id), 0).unwrap();
        let mut t = ForwardTotals::default();
        t.add(id, &per_cpu);
        (id, t)
    }

    /// Give the slot of counter `id` to a new forward, as `up` or `fwd add`
    /// would once every slot has been used: zeroed, the next generation.
    /// Returns the new id.
    pub fn reuse_forward_slot(&mut self, id: u16) -> u16 {
        let slot = fwd_counter::slot(id);
        let new = fwd_counter::id(
            slot,
            fwd_counter::next_generation(fwd_counter::generation(id)),
        );
        let mut counters: PerCpuArray<&mut MapData, ForwardCounter> =
            PerCpuArray::try_from(self.ebpf.map_mut("FORWARD_COUNTERS").unwrap()).unwrap();
        let cpus = aya::util::nr_cpus().unwrap();
        let fresh = ForwardCounter {
            id: new,
            ..ForwardCounter::default()
        };
        let values = aya::maps::PerCpuValues::try_from(vec![fresh; cpus]).unwrap();
        counters.set(slot, values, 0).unwrap();
        new
    }

    /// A counter of `STATS`, summed over CPUs.
    pub fn stat(&self, index: u32) -> u64 {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map("STATS").unwrap()).unwrap();
        m.get(&index, 0).unwrap().iter().sum()
    }
}

/// The race of the two-CPU takeover tests, on a dataplane of its own:
/// UDP datagrams to REMOTE (`datagram(node, source port)`) from two CPUs at
/// once fill a range of 3,000 ports; their mappings expire; then `nodes`
/// open as many flows again, one CPU each, at once, taking the expired
/// ports over. Asserts that every flow of that round got a port of the
/// range of its own and that nothing was dropped.
pub fn assert_two_cpus_take_over_apart<A: Copy>(
    nodes: [A; 2],
    datagram: impl Fn(A, u16) -> Vec<u8>,
    sport: impl Fn(&[u8]) -> u16 + Copy,
) {
    const PER_CPU: u16 = 1500;
    const UDP_TIMEOUT: Duration = Duration::from_secs(10);
    let last = 20000 + 2 * PER_CPU - 1;
    let mut dp = Dataplane::with(20000, last, |c| {
        c.timeout_udp = UDP_TIMEOUT.as_secs() as u32;
    });
    let round = |node: A, first_port: u16| -> Vec<Vec<u8>> {
        (0..PER_CPU)
            .map(|i| datagram(node, first_port + i))
            .collect()
    };
    let first = [round(nodes[0], 30000), round(nodes[0], 40000)];
    let filled = dp.ports_at_once("nl_uplink_out", &first, sport);
    assert_eq!(filled.len(), usize::from(2 * PER_CPU), "the first round");
    dp.age(UDP_TIMEOUT + Duration::from_secs(1));
    let second = [round(nodes[0], 50000), round(nodes[1], 50000)];
    let taken = dp.ports_at_once("nl_uplink_out", &second, sport);
    let distinct: std::collections::HashSet<u16> = taken.iter().copied().collect();
    assert_eq!(
        (taken.len(), distinct.len(), dp.drops()),
        (usize::from(2 * PER_CPU), usize::from(2 * PER_CPU), 0),
        "flows translated, their distinct ports, drops (drop_conflict {})",
        dp.stat(stat::DROP_CONFLICT)
    );
    assert!(distinct.iter().all(|p| (20000..=last).contains(p)));
}

/// Whether a flow state lacks either FIN.
pub fn half_closed(state: u8) -> bool {
    let both = netlab_common::STATE_FIN_ORIGINAL | netlab_common::STATE_FIN_REPLY;
    state & both != both
}

/// One run of the loaded program `p` on `frame`: its verdict and the frame
/// it left; `None` when the kernel refuses the frame.
fn try_run_once(p: &SchedClassifier, frame: &[u8]) -> Option<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let r = p.test_run(opts).ok()?;
    out.truncate(r.data_size_out as usize);
    Some((r.return_value, out))
}

/// [`try_run_once`] of a frame the kernel must take.
fn run_once(p: &SchedClassifier, frame: &[u8]) -> (u32, Vec<u8>) {
    try_run_once(p, frame)
        .unwrap_or_else(|| panic!("the kernel refused a {}-byte test frame", frame.len()))
}
