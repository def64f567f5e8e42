//! The dataplane's maps. netlab pins the state maps under
//! `/sys/fs/bpf/netlab/<lab>/maps/` so they outlive program reloads.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray},
};
use netlab_common::{
    stat, tail, Binding, Endpoint, FlowKey, FlowValue, ForwardKey, ForwardTarget, FragKey,
    FragValue, GcState, NatConfig, NodePort, SubnetInfo, BINDING_ENTRIES, FLOW_ENTRIES,
    FORWARD_ENTRIES, FRAG_ENTRIES, NODE_ENTRIES, SUBNET_ENTRIES,
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

#[map]
pub static CONFIG: Array<NatConfig> = Array::with_max_entries(1, 0);

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

/// Per-CPU: the `TAILS` slot `nl_gc` returns the packet to.
#[map]
pub static GC_RESUME: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for a socket lookup's tuple (see `nat::host_socket_uses`).
#[map]
pub static SOCK_TUPLE: PerCpuArray<aya_ebpf::bindings::bpf_sock_tuple> =
    PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for a FIB lookup's parameters (the fast path's first packet).
#[map]
pub static FIB_SCRATCH: PerCpuArray<aya_ebpf::bindings::bpf_fib_lookup> =
    PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room to build flow entries in: a BPF program has 512 bytes of
/// stack, and two flow entries plus the packet's state do not fit there.
#[map]
pub static SCRATCH: PerCpuArray<FlowValue> = PerCpuArray::with_max_entries(3, 0);

pub const SCRATCH_REPLY: u32 = 0;
pub const SCRATCH_ORIGINAL: u32 = 1;
pub const SCRATCH_PEER: u32 = 2;

#[inline(always)]
pub fn scratch(index: u32) -> Option<&'static mut FlowValue> {
    SCRATCH.get_ptr_mut(index).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = STATS.get_ptr_mut(index) {
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn config() -> Option<&'static NatConfig> {
    CONFIG.get(0)
}
