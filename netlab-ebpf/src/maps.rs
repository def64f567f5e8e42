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
    event, fwd_counter, stat, tail, Binding, Endpoint, Endpoint6, Flow6Key, Flow6Value, FlowKey,
    FlowValue, Forward6Target, ForwardCounter, ForwardKey, ForwardTarget, Frag6Key, FragKey,
    FragValue, GcState, NatConfig, NodePort, Reservation6, SubnetInfo, BINDING6_ENTRIES,
    BINDING_ENTRIES, CLAIM_ENTRIES, FLOW6_ENTRIES, FLOW_ENTRIES, FORWARDED_PORTS_ENTRIES,
    FORWARD_ENTRIES, FRAG_ENTRIES, IFACE_ENTRIES, NODE_ENTRIES, PORT_USED_ENTRIES, SUBNET6_ENTRIES,
    SUBNET_ENTRIES,
};

/// Both directions of every translated flow, keyed as each direction is seen.
/// A plain (preallocated) hash, not an LRU: admission keeps it below its
/// size and the collection empties it (`table`), so nothing is to be
/// evicted, and an insert pops a per-CPU free list instead of the LRU's
/// shared one (1.5 µs less per new connection under wrk's load).
#[map]
pub static NAT_FLOWS: HashMap<FlowKey, FlowValue> = HashMap::with_max_entries(FLOW_ENTRIES, 0);

/// `NAT_FLOWS` keys being taken over from flows that no longer hold them,
/// each only while its takeover runs (`flows::reserve`): the exclusive
/// insert here makes one of two CPUs the taker. Not pinned: nothing in it
/// outlives a program run.
#[map]
pub static FLOW_CLAIMS: HashMap<FlowKey, u8> = HashMap::with_max_entries(CLAIM_ENTRIES, 0);

/// Inside endpoint → its outside endpoint (endpoint-independent mapping).
#[map]
pub static NAT_BIND: LruHashMap<Endpoint, Binding> =
    LruHashMap::with_max_entries(BINDING_ENTRIES, 0);

/// Outside endpoint → the inside endpoint holding it (port reservations).
#[map]
pub static NAT_PORTS: LruHashMap<Endpoint, Binding> =
    LruHashMap::with_max_entries(BINDING_ENTRIES, 0);

/// Which outside ports are taken, as far as the port search has seen: a
/// hint (`port_hint`), the reservation itself being `NAT_PORTS`'.
#[map]
pub static PORT_USED: Array<u64> = Array::with_max_entries(PORT_USED_ENTRIES, 0);

/// Which outside ports are forwarded, a bit per port (see
/// `netlab_common::forwarded_port_bit`): written by user space with every
/// change to `FORWARD_RULES`, so the port search reads a word of 64 ports
/// where a hash lookup per port would miss the cache beside 10,000 forwards.
#[map]
pub static FORWARDED_PORTS: Array<u64> = Array::with_max_entries(FORWARDED_PORTS_ENTRIES, 0);

/// Per-CPU: where the port search is (`port_search`). Kept out of the
/// search's stack so the verifier sees its fields as any value, and checks
/// the `bpf_loop` callback once instead of once per distinct cursor.
#[map]
pub static PORT_CURSOR: PerCpuArray<PortCursor> = PerCpuArray::with_max_entries(1, 0);

/// `PORT_CURSOR`'s value.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PortCursor {
    /// The ports of the word at hand still to look at (a bit each).
    pub candidates: u64,
    /// The word's taken bits as the hint had them, when it is checked.
    pub used: u64,
    /// The close time of `fallback`'s flow (`last_seen_ns`).
    pub fallback_ns: u64,
    /// The word the passes start at (port / 64), from a random port.
    pub start: u16,
    /// The word at hand.
    pub word: u16,
    /// Words this pass has still to pass, the one at hand included.
    pub words_left: u16,
    /// The outside port found (network order), 0 while none. Here, not on
    /// the search's stack: Linux 6.1's verifier walks a `bpf_loop` callback
    /// once, from the caller's state, so it would see a stack field the
    /// callback changes only as it was before the loop, and drop the
    /// branches taken once it has changed as dead code.
    pub found: u16,
    /// The free port whose reply tuple has the oldest recently closed flow
    /// among those passed over (host order), when `has_fallback`.
    pub fallback: u16,
    /// 0: the first pass (trusting the hint), 1: the second (checking it).
    pub pass: u8,
    /// Whether `candidates` and `used` hold the word at hand.
    pub loaded: u8,
    /// Whether the word at hand is checked against `NAT_PORTS` (its set
    /// bits are candidates too, and the stale ones are cleared).
    pub checking: u8,
    /// Free ports passed over for a recently closed flow on their reply
    /// tuple (`flows::closed_recently`).
    pub passed_over: u8,
    pub has_fallback: u8,
    /// Whether such ports are now taken like any free one (the fallback
    /// has been tried).
    pub take_closed: u8,
    /// The endpoint's previous outside port (host order, its mapping
    /// expired), when `has_last`.
    pub last_port: u16,
    pub has_last: u8,
    /// This search's bound on `passed_over` (see `port_search::pass_over_max`).
    pub pass_over_max: u8,
    /// Searches in a row on this CPU that took a recently closed tuple:
    /// the one field kept from search to search.
    pub closed_streak: u8,
    pub _pad: [u8; 3],
}

/// Both directions of every masqueraded IPv6 flow, keyed as each is seen.
/// A plain hash kept below its capacity as `NAT_FLOWS` is (`table::admit6`).
#[map]
pub static NAT6_FLOWS: HashMap<Flow6Key, Flow6Value> = HashMap::with_max_entries(FLOW6_ENTRIES, 0);

/// `NAT6_FLOWS` keys being taken over, as `FLOW_CLAIMS` (`flows6::claim_reply`).
#[map]
pub static FLOW6_CLAIMS: HashMap<Flow6Key, u8> = HashMap::with_max_entries(CLAIM_ENTRIES, 0);

/// IPv6 inside endpoint → its outside port (network order):
/// endpoint-independent mapping, as long as `NAT6_PORTS` agrees.
#[map]
pub static NAT6_BIND: LruHashMap<Endpoint6, u16> =
    LruHashMap::with_max_entries(BINDING6_ENTRIES, 0);

/// The uplink's IPv6 outside ports (port and protocol) → who holds each.
#[map]
pub static NAT6_PORTS: LruHashMap<ForwardKey, Reservation6> =
    LruHashMap::with_max_entries(BINDING6_ENTRIES, 0);

/// IPv6 fragmented datagrams' translations, from their first fragment:
/// the address their later fragments get.
#[map]
pub static FRAG6_FLOWS: LruHashMap<Frag6Key, [u8; 16]> =
    LruHashMap::with_max_entries(FRAG_ENTRIES, 0);

/// IPv6 port forwards: outside port → the target's IPv6 endpoint.
#[map]
pub static FORWARD6_RULES: HashMap<ForwardKey, Forward6Target> =
    HashMap::with_max_entries(FORWARD_ENTRIES, 0);

/// Per-CPU: the IPv6 port search's state (`binding6`), out of the
/// `bpf_loop` callback's stack for the reason `PORT_CURSOR` is.
#[map]
pub static PORT6_CURSOR: PerCpuArray<Port6Cursor> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room to build a new IPv6 flow's entries in (see `SCRATCH`).
#[map]
pub static SCRATCH6: PerCpuArray<Flow6Value> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU: where an IPv6 packet's upper-layer header is, as the
/// extension-header walk found it (see `packet6::upper_layer`).
#[map]
pub static UPPER6: PerCpuArray<crate::packet6::Upper> = PerCpuArray::with_max_entries(1, 0);

/// `PORT6_CURSOR`'s value.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Port6Cursor {
    /// The new flow's reply key, its destination port the candidate.
    pub reply: Flow6Key,
    pub now: u64,
    /// Where the search starts, as an offset into the range.
    pub start: u32,
    /// The port found (network order), 0 while none.
    pub found: u16,
    /// The endpoint's previous port (network order, 0: none), tried
    /// first; `held`: it still holds it.
    pub first: u16,
    pub held: u8,
    /// The held port's tuple is another flow's (`drop_conflict`).
    pub conflict: u8,
    pub _pad: [u8; 6],
}

/// Port forwards: outside port → inside endpoint.
#[map]
pub static FORWARD_RULES: HashMap<ForwardKey, ForwardTarget> =
    HashMap::with_max_entries(FORWARD_ENTRIES, 0);

/// The lab's subnets (key data: network-order address).
#[map]
pub static LAB_SUBNETS: LpmTrie<u32, SubnetInfo> = LpmTrie::with_max_entries(SUBNET_ENTRIES, 0);

/// The lab's IPv6 subnets (key data: the address's 16 bytes as on the wire).
#[map]
pub static LAB_SUBNETS6: LpmTrie<[u8; 16], SubnetInfo> =
    LpmTrie::with_max_entries(SUBNET6_ENTRIES, 0);

/// The lab host's interfaces that carry lab traffic (its bridges), by
/// ifindex: `LAB_IFACE_*` bits.
#[map]
pub static LAB_IFACES: HashMap<u32, u32> = HashMap::with_max_entries(IFACE_ENTRIES, 0);

/// The lab's VXLAN devices on the lab host, by ifindex: the MAC address
/// of the bridge each stretches (the anycast gateway's), whose own frames
/// `nl_tunnel_out` keeps out of the tunnel.
#[map]
pub static TUNNEL_GATEWAYS: HashMap<u32, [u8; 6]> = HashMap::with_max_entries(IFACE_ENTRIES, 0);

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

/// The same for the IPv6 flow table (`NAT6_FLOWS`).
#[map]
pub static GC6_STATE: Array<GcState> = Array::with_max_entries(1, 0);

/// The lab's nodes by address: where the fast path hands replies over.
#[map]
pub static NODE_PORTS: HashMap<u32, NodePort> = HashMap::with_max_entries(NODE_ENTRIES, 0);

/// The same by IPv6 address (nodes with an `address6` on a masqueraded bridge).
#[map]
pub static NODE_PORTS6: HashMap<[u8; 16], NodePort> = HashMap::with_max_entries(NODE_ENTRIES, 0);

/// Programs reached by tail call, at the slots of `netlab_common::tail`.
#[map]
pub static TAILS: ProgramArray = ProgramArray::with_max_entries(tail::COUNT, 0);

/// Per-CPU: the packet `nl_gc` (or `nl_gc6`) collects for and returns to.
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
    /// The asking packet's flow key (`key6` for IPv6) and the collection's
    /// start time: the resumed packet has both, a later one does not.
    pub key: FlowKey,
    pub run_ns: u64,
    pub key6: Flow6Key,
    /// `table::admit6`'s question (the new flow's key) and answer.
    pub asking6: Flow6Key,
    pub verdict: u32,
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
