//! The eBPF programs with fresh maps, for runs through BPF_PROG_TEST_RUN
//! (tests/tests/programs.rs, tests/tests/fuzz_regressions.rs): uplink
//! 198.51.100.2, 192.168.15.0/24 masqueraded, tcp/80 forwarded to blue:80.

use std::net::Ipv4Addr;

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuArray},
    programs::{SchedClassifier, TestRun, TestRunOptions},
    Ebpf, EbpfLoader,
};
use netlab_common::{
    addr_from_octets, port_to_net, Binding, Endpoint, FlowKey, FlowValue, ForwardKey,
    ForwardTarget, NatConfig, SubnetInfo, IPPROTO_TCP, SUBNET_MASQUERADE,
};

/// TC_ACT_UNSPEC (-1): pass, next program.
pub const UNSPEC: u32 = u32::MAX;
pub const SHOT: u32 = 2;
pub const REDIRECT: u32 = 7;

pub const RED: Ipv4Addr = Ipv4Addr::new(192, 168, 15, 1);
pub const BLUE: Ipv4Addr = Ipv4Addr::new(192, 168, 15, 2);
pub const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

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
        let mut ebpf = loader
            .load(netlab::dataplane::EBPF_OBJECT)
            .expect("loading the object");
        netlab::dataplane::attach::load_every_program(&mut ebpf)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let mut config = NatConfig {
            port_min,
            port_max,
            flow_limit: 1 << 20,
            ..netlab::dataplane::default_config(na(UPLINK), true)
        };
        tweak(&mut config);
        let mut cfg: Array<_, NatConfig> =
            Array::try_from(ebpf.map_mut("CONFIG").unwrap()).unwrap();
        cfg.set(0, config, 0).unwrap();
        let mut subnets: LpmTrie<_, u32, SubnetInfo> =
            LpmTrie::try_from(ebpf.map_mut("LAB_SUBNETS").unwrap()).unwrap();
        subnets
            .insert(
                &Key::new(24, na(Ipv4Addr::new(192, 168, 15, 0))),
                SubnetInfo {
                    flags: SUBNET_MASQUERADE,
                    ifindex: 1,
                },
                0,
            )
            .unwrap();
        let mut fwd: HashMap<_, ForwardKey, ForwardTarget> =
            HashMap::try_from(ebpf.map_mut("FORWARD_RULES").unwrap()).unwrap();
        fwd.insert(
            ForwardKey::new(port_to_net(80), IPPROTO_TCP),
            ForwardTarget {
                addr: na(BLUE),
                port: port_to_net(80),
                _pad: 0,
            },
            0,
        )
        .unwrap();
        Dataplane { ebpf }
    }

    /// Run `prog` on `frame`: its verdict and the frame it left.
    pub fn run(&mut self, prog: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        self.try_run(prog, frame)
            .unwrap_or_else(|| panic!("the kernel refused a {}-byte test frame", frame.len()))
    }

    /// `None` when the kernel refuses the frame itself (too short to be an
    /// skb of its protocol): no program ever sees such a packet.
    pub fn try_run(&mut self, prog: &str, frame: &[u8]) -> Option<(u32, Vec<u8>)> {
        let p: &mut SchedClassifier = self.ebpf.program_mut(prog).unwrap().try_into().unwrap();
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let r = p.test_run(opts).ok()?;
        out.truncate(r.data_size_out as usize);
        Some((r.return_value, out))
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

    pub fn binding(&self, inside: Endpoint) -> Option<Binding> {
        let m: HashMap<&MapData, Endpoint, Binding> =
            HashMap::try_from(self.ebpf.map("NAT_BIND").unwrap()).unwrap();
        m.get(&inside, 0).ok()
    }

    /// A counter of `STATS`, summed over CPUs.
    pub fn stat(&self, index: u32) -> u64 {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map("STATS").unwrap()).unwrap();
        m.get(&index, 0).unwrap().iter().sum()
    }
}
