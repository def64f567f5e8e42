//! The eBPF programs loaded once per fuzzing process, with fresh maps filled
//! (through `netlab::dataplane::fill_maps`, as `up` fills them) like
//! `tests/tests/programs.rs` does (plus a few more subnets, forwards and
//! fast-path ports so every branch has something to find), run on frames
//! through `BPF_PROG_TEST_RUN`.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions},
    Ebpf, EbpfLoader,
};
use netlab::dataplane::MapContents;
use netlab_common::{
    addr_from_octets, stat, FlowKey, FlowValue, FragKey, FragValue, GcState, NatConfig, NodePort,
    CONFIG_FAST_PATH, CONFIG_LOG, IPPROTO_TCP, IPPROTO_UDP, SUBNET_ENDPOINT_INDEPENDENT_FILTERING,
    SUBNET_MASQUERADE, SUBNET_ROUTED,
};

pub const UNSPEC: u32 = u32::MAX; // TC_ACT_UNSPEC (-1)
pub const SHOT: u32 = 2;
pub const REDIRECT: u32 = 7;

pub const RED: Ipv4Addr = Ipv4Addr::new(192, 168, 15, 1);
pub const BLUE: Ipv4Addr = Ipv4Addr::new(192, 168, 15, 2);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 15, 5);
/// A node on an endpoint-independent-filtering subnet (full cone).
pub const CONE: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 7);
/// A node on a routed subnet (reachable from outside, not masqueraded).
pub const ROUTED: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 5);
pub const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const REMOTE2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

/// IPv6: red in a masqueraded subnet, a node in a routed one, the uplink
/// and a host beyond it.
pub const RED6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x15, 0, 0, 0, 0, 0, 1);
pub const ROUTED6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x172, 0, 0, 0, 0, 0, 5);
pub const UPLINK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub const REMOTE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// A small NAT range, so ports collide, get reused and run out.
pub const PORT_MIN: u16 = 20000;
pub const PORT_MAX: u16 = 20063;

pub struct Subnet {
    pub net: Ipv4Addr,
    pub len: u8,
    pub flags: u32,
}

pub const SUBNETS: [Subnet; 3] = [
    Subnet {
        net: Ipv4Addr::new(192, 168, 15, 0),
        len: 24,
        flags: SUBNET_MASQUERADE,
    },
    Subnet {
        net: Ipv4Addr::new(10, 9, 0, 0),
        len: 24,
        flags: SUBNET_MASQUERADE | SUBNET_ENDPOINT_INDEPENDENT_FILTERING,
    },
    Subnet {
        net: Ipv4Addr::new(172, 20, 0, 0),
        len: 24,
        flags: SUBNET_ROUTED,
    },
];

pub struct Subnet6 {
    pub net: Ipv6Addr,
    pub len: u8,
    pub flags: u32,
}

pub const SUBNETS6: [Subnet6; 2] = [
    Subnet6 {
        net: Ipv6Addr::new(0xfd00, 0x15, 0, 0, 0, 0, 0, 0),
        len: 64,
        flags: SUBNET_MASQUERADE,
    },
    Subnet6 {
        net: Ipv6Addr::new(0xfd00, 0x172, 0, 0, 0, 0, 0, 0),
        len: 64,
        flags: SUBNET_ROUTED,
    },
];

/// The IPv6 subnet an address is in, if any.
pub fn subnet6_of(a: Ipv6Addr) -> Option<&'static Subnet6> {
    SUBNETS6.iter().find(|s| {
        let mask = u128::MAX << (128 - u32::from(s.len));
        u128::from(a) & mask == u128::from(s.net)
    })
}

/// Forwards: (protocol, outside port, target, target port). One sits
/// inside the NAT range (new mappings must skip it).
pub const FORWARDS: [(u8, u16, Ipv4Addr, u16); 5] = [
    (IPPROTO_TCP, 80, BLUE, 80),
    (IPPROTO_UDP, 5353, BLUE, 53),
    (IPPROTO_TCP, 20010, RED, 22),
    (IPPROTO_TCP, 8080, CONE, 8080),
    (IPPROTO_UDP, 4000, ROUTED, 4000),
];

/// The forwards' IPv6 side: to ::2 of red's subnet (a forward applies to
/// both families).
pub const FORWARDS6: [(u8, u16, Ipv6Addr, u16); 2] = [
    (
        IPPROTO_TCP,
        80,
        Ipv6Addr::new(0xfd00, 0x15, 0, 0, 0, 0, 0, 2),
        80,
    ),
    (
        IPPROTO_UDP,
        5353,
        Ipv6Addr::new(0xfd00, 0x15, 0, 0, 0, 0, 0, 2),
        53,
    ),
];

/// The lab host's end of RED's and CONE's veths (fast path).
pub const NODE_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
pub const BRIDGE_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 1];

/// The subnet an address is in, if any.
pub fn subnet_of(a: Ipv4Addr) -> Option<&'static Subnet> {
    SUBNETS.iter().find(|s| {
        let mask = u32::MAX << (32 - u32::from(s.len));
        u32::from(a) & mask == u32::from(s.net)
    })
}

pub fn na(a: Ipv4Addr) -> u32 {
    addr_from_octets(a.octets())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prog {
    UplinkIn,
    UplinkOut,
    BridgeIn,
    NodeIn,
}

impl Prog {
    pub const ALL: [Prog; 4] = [
        Prog::UplinkIn,
        Prog::UplinkOut,
        Prog::BridgeIn,
        Prog::NodeIn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Prog::UplinkIn => "nl_uplink_in",
            Prog::UplinkOut => "nl_uplink_out",
            Prog::BridgeIn => "nl_bridge_in",
            Prog::NodeIn => "nl_node_in",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Knobs an input may turn (set before each input).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Knobs {
    pub fast_path: bool,
    pub log: bool,
    /// A flow table limit of 16 entries: admission, collection, refusal.
    pub tight: bool,
}

pub struct Dataplane {
    pub ebpf: Ebpf,
    knobs: Option<Knobs>,
    stats: [u64; stat::COUNT as usize],
}

impl Dataplane {
    /// Load the programs (the verifier runs once here) with fresh maps.
    pub fn new() -> Dataplane {
        // `cargo xtask fuzz` builds this crate without compiling the
        // programs again (AYA_BUILD_SKIP) and points here at the object of
        // the workspace's own build.
        let mut ebpf = match std::env::var_os(netlab::dataplane::OBJECT_ENV) {
            Some(path) => EbpfLoader::new()
                .load_file(&path)
                .unwrap_or_else(|e| panic!("loading the eBPF object {path:?}: {e}")),
            None => EbpfLoader::new().load(netlab::dataplane::EBPF_OBJECT).expect(
                "loading the embedded eBPF object (built with AYA_BUILD_SKIP? set NETLAB_EBPF_OBJECT)",
            ),
        };
        // Every program of the object (the hooks' and those they tail-call),
        // then the tail-call table, as `netlab up` does.
        netlab::dataplane::attach::load_every_program(&mut ebpf)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let first = Knobs {
            fast_path: true,
            ..Default::default()
        };
        let mut contents = MapContents::with_config(Self::config(first));
        for sub in &SUBNETS {
            contents = contents.subnet(sub.net, sub.len, sub.flags, 1);
        }
        for sub in &SUBNETS6 {
            contents = contents.subnet6(sub.net, sub.len, sub.flags, 1);
        }
        for (proto, port, to, to_port) in FORWARDS {
            contents = contents.forward(proto, port, to, to_port);
        }
        for (proto, port, to, to_port) in FORWARDS6 {
            contents = contents.forward6(proto, port, to, to_port);
        }
        for node in [RED, CONE] {
            let port = NodePort {
                ifindex: 1,
                node_mac: NODE_MAC,
                gateway_mac: BRIDGE_MAC,
            };
            contents = contents.node_port(node, port);
        }
        contents = contents.node_port6(
            RED6,
            NodePort {
                ifindex: 1,
                node_mac: NODE_MAC,
                gateway_mac: BRIDGE_MAC,
            },
        );
        netlab::dataplane::fill_maps(&mut ebpf, &contents).unwrap_or_else(|e| panic!("{e:#}"));
        let mut dp = Dataplane {
            ebpf,
            knobs: Some(first),
            stats: [0; stat::COUNT as usize],
        };
        dp.stats = dp.read_stats();
        dp
    }

    pub fn config(knobs: Knobs) -> NatConfig {
        NatConfig {
            uplink_addr: na(UPLINK),
            uplink_ifindex: 1,
            port_min: PORT_MIN,
            port_max: PORT_MAX,
            flags: if knobs.fast_path { CONFIG_FAST_PATH } else { 0 }
                | if knobs.log { CONFIG_LOG } else { 0 },
            // Short timeouts: flows expire while the fuzzer runs, so expiry,
            // collection and reuse are exercised too.
            timeout_tcp_syn: 4,
            timeout_tcp_established: 8,
            timeout_tcp_closing: 4,
            timeout_tcp_rst: 1,
            timeout_udp: 3,
            timeout_icmp: 2,
            flow_limit: if knobs.tight { 16 } else { 4096 },
            flow_limit6: if knobs.tight { 16 } else { 4096 },
            uplink_addr6: UPLINK6.octets(),
        }
    }

    pub fn set_knobs(&mut self, knobs: Knobs) {
        if self.knobs == Some(knobs) {
            return;
        }
        let mut cfg: Array<_, NatConfig> =
            Array::try_from(self.ebpf.map_mut("CONFIG").unwrap()).unwrap();
        cfg.set(0, Self::config(knobs), 0).unwrap();
        self.knobs = Some(knobs);
    }

    pub fn knobs(&self) -> Knobs {
        self.knobs.unwrap_or_default()
    }

    /// Run one program on a frame: the verdict and the frame as it left, or
    /// the kernel's error when it refused to run it.
    pub fn run(&mut self, prog: Prog, frame: &[u8]) -> Result<(u32, Vec<u8>), String> {
        let p: &mut SchedClassifier = self
            .ebpf
            .program_mut(prog.name())
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let r = p.test_run(opts).map_err(|e| format!("{e:#}"))?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    pub fn read_stats(&self) -> [u64; stat::COUNT as usize] {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map("STATS").unwrap()).unwrap();
        let mut s = [0u64; stat::COUNT as usize];
        for (i, v) in s.iter_mut().enumerate() {
            *v = m.get(&(i as u32), 0).map(|c| c.iter().sum()).unwrap_or(0);
        }
        s
    }

    /// Counters that moved since the last call.
    pub fn stats_delta(&mut self) -> [u64; stat::COUNT as usize] {
        let now = self.read_stats();
        let mut d = [0u64; stat::COUNT as usize];
        for i in 0..d.len() {
            d[i] = now[i].wrapping_sub(self.stats[i]);
        }
        self.stats = now;
        d
    }

    pub fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        let m: HashMap<&MapData, FlowKey, FlowValue> =
            HashMap::try_from(self.ebpf.map("NAT_FLOWS").unwrap()).unwrap();
        m.get(key, 0).ok()
    }

    pub fn frag(&self, key: &FragKey) -> Option<FragValue> {
        let m: HashMap<&MapData, FragKey, FragValue> =
            HashMap::try_from(self.ebpf.map("FRAG_FLOWS").unwrap()).unwrap();
        m.get(key, 0).ok()
    }

    pub fn flows(&self) -> Vec<(FlowKey, FlowValue)> {
        let m: HashMap<&MapData, FlowKey, FlowValue> =
            HashMap::try_from(self.ebpf.map("NAT_FLOWS").unwrap()).unwrap();
        m.iter().filter_map(|r| r.ok()).collect()
    }

    /// The flow table's own count of its entries.
    pub fn entries(&self) -> u64 {
        let m: Array<&MapData, GcState> =
            Array::try_from(self.ebpf.map("GC_STATE").unwrap()).unwrap();
        m.get(&0, 0).map(|g| g.entries).unwrap_or(0)
    }

    /// Empty the state maps (flows, mappings, fragments, collection state):
    /// as freshly loaded, configuration kept.
    pub fn reset(&mut self) {
        fn clear<K: aya::Pod, V: aya::Pod>(ebpf: &mut Ebpf, name: &str) {
            let mut m: HashMap<&mut MapData, K, V> =
                HashMap::try_from(ebpf.map_mut(name).unwrap()).unwrap();
            let keys: Vec<K> = m.keys().filter_map(|k| k.ok()).collect();
            for k in keys {
                let _ = m.remove(&k);
            }
        }
        clear::<FlowKey, FlowValue>(&mut self.ebpf, "NAT_FLOWS");
        clear::<netlab_common::Endpoint, netlab_common::Binding>(&mut self.ebpf, "NAT_BIND");
        clear::<netlab_common::Endpoint, netlab_common::Binding>(&mut self.ebpf, "NAT_PORTS");
        clear::<FragKey, FragValue>(&mut self.ebpf, "FRAG_FLOWS");
        let mut gc: Array<_, GcState> =
            Array::try_from(self.ebpf.map_mut("GC_STATE").unwrap()).unwrap();
        gc.set(0, GcState::default(), 0).unwrap();
    }
}

impl Default for Dataplane {
    fn default() -> Self {
        Self::new()
    }
}

/// Move this thread into a network namespace of its own: the programs'
/// socket lookups then see no socket of the machine, and nothing the
/// harness does can touch the machine's network.
pub fn isolate() {
    // SAFETY: unshare has no memory-safety preconditions.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc != 0 {
        eprintln!(
            "netlab-fuzz: unshare(CLONE_NEWNET) failed ({}); using the current network namespace",
            std::io::Error::last_os_error()
        );
    }
}
