//! The dataplane's maps, and nothing else (the code that reads them lives
//! in the units named after what they hold). netlab pins the state maps
//! under `/sys/fs/bpf/netlab/<lab>/maps/` so they outlive program reloads.
//! Each static's name is the map's name (`netlab_common::names`).

use aya_ebpf::{
    bindings::{bpf_fib_lookup, bpf_sock_tuple},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use netlab_common::{
    event, fwd_counter, stat, tail, Binding, Endpoint, FlowKey, FlowValue, ForwardCounter,
    ForwardKey, ForwardTarget, FragKey, FragValue, GcState, NatConfig, NodePort, SubnetInfo,
    BINDING_ENTRIES, FLOW_ENTRIES, FORWARD_ENTRIES, FRAG_ENTRIES, IFACE_ENTRIES, NODE_ENTRIES,
    SUBNET_ENTRIES,
};

/// Both directions of every translated flow, keyed as each direction is seen.
#[map]
pub static NAT_FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(FLOW_ENTRIES, 0);

/// Inside endpoint → its outside endpoint (endpoint-independent mapping).
#[map]
pub static NAT_BIND: LruHashMap<Endpoint, Binding> =
    LruHashMap::with_max_entries(BINDING_ENTRIES, 0);

/// Outside endpoint → the inside endpoint holding it (port reservations).
#[map]
pub static NAT_PORTS: LruHashMap<Endpoint, Binding> =
    LruHashMap::with_max_entries(BINDING_ENTRIES, 0);

/// Port forwards: outside port → inside endpoint.
#[map]
pub static FORWARD_RULES: HashMap<ForwardKey, ForwardTarget> =
    HashMap::with_max_entries(FORWARD_ENTRIES, 0);

/// The lab's subnets (key data: network-order address).
#[map]
pub static LAB_SUBNETS: LpmTrie<u32, SubnetInfo> = LpmTrie::with_max_entries(SUBNET_ENTRIES, 0);

/// The lab host's interfaces that carry lab traffic (its bridges), by
/// ifindex: `LAB_IFACE_*` bits.
#[map]
pub static LAB_IFACES: HashMap<u32, u32> = HashMap::with_max_entries(IFACE_ENTRIES, 0);

#[map]
pub static CONFIG: Array<NatConfig> = Array::with_max_entries(1, 0);

/// Each forward's packets and bytes, by its counter's slot
/// (`netlab_common::fwd_counter`).
#[map]
pub static FORWARD_COUNTERS: PerCpuArray<ForwardCounter> =
    PerCpuArray::with_max_entries(fwd_counter::SLOTS, 0);

#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Translations of fragmented datagrams, recorded from their first fragment.
#[map]
pub static FRAG_FLOWS: LruHashMap<FragKey, FragValue> =
    LruHashMap::with_max_entries(FRAG_ENTRIES, 0);

/// The flow table's entry count and garbage collection (element 0).
#[map]
pub static GC_STATE: Array<GcState> = Array::with_max_entries(1, 0);

/// The lab's nodes by address: where the fast path hands replies over.
#[map]
pub static NODE_PORTS: HashMap<u32, NodePort> = HashMap::with_max_entries(NODE_ENTRIES, 0);

/// Programs reached by tail call, at the slots of `netlab_common::tail`.
#[map]
pub static TAILS: ProgramArray = ProgramArray::with_max_entries(tail::COUNT, 0);

/// Per-CPU: the packet `nl_gc` collects for and returns to.
#[map]
pub static GC_RESUME: PerCpuArray<GcResume> = PerCpuArray::with_max_entries(1, 0);

/// `GC_RESUME`'s value. A tail-call chain runs on one CPU without another
/// packet in between, so a per-CPU slot identifies the packet that asked.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GcResume {
    /// The `TAILS` slot of the program that asked.
    pub slot: u32,
    /// Set by `nl_gc` when it hands the packet back, cleared by the next
    /// admission check on this CPU.
    pub collected: u32,
    /// The asking packet's flow key and the collection's start time: the
    /// resumed packet has both, a later one does not.
    pub key: FlowKey,
    pub run_ns: u64,
}

/// Per-CPU room for a socket lookup's tuple (see `binding::host_socket_uses`).
#[map]
pub static SOCK_TUPLE: PerCpuArray<bpf_sock_tuple> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for a FIB lookup's parameters (the fast path's first packet).
#[map]
pub static FIB_SCRATCH: PerCpuArray<bpf_fib_lookup> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room to build a new flow's two entries in: a BPF program has 512
/// bytes of stack, and two flow entries plus the packet's state do not fit
/// there.
#[map]
pub static SCRATCH: PerCpuArray<FlowValue> = PerCpuArray::with_max_entries(2, 0);

/// `SCRATCH` slots: the entry of the packet that opens a flow, and the
/// entry of its other direction (also where a missing half is rebuilt).
pub const SCRATCH_OPENING: u32 = 0;
pub const SCRATCH_OTHER: u32 = 1;

/// Events for `netlab log` (`flowlog`): written only while it runs.
#[map]
pub static FLOW_EVENTS: RingBuf = RingBuf::with_byte_size(event::RING_BYTES, 0);
