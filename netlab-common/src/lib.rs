//! Types and constants shared by the eBPF programs (`netlab-ebpf`) and the
//! user-space side (`netlab`).
//!
//! Every map key and value is `#[repr(C)]` with explicit padding fields, so the
//! layout is the same on both sides and no byte is left uninitialised (the
//! kernel hashes keys byte by byte).
//!
//! Byte order: IPv4 addresses and L4 ports are stored exactly as they appear
//! on the wire (network byte order), as `u32::from_ne_bytes(octets)` and
//! `u16::from_ne_bytes(port_bytes)`. The kernel side then copies header bytes
//! without swapping; the user side converts with [`addr_from_ipv4`] and
//! [`port_to_net`].
#![no_std]

/// IP protocol numbers the dataplane understands.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// A directional flow as seen by one hook: the packet's own addresses and
/// ports. For ICMP echo, the echo identifier stands in for the port on the
/// side that chose it (the requester) and the other port is 0: a request is
/// `(id, 0)`, its reply `(0, id)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowKey {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    // Two fields rather than `[u8; 3]`: zeroing them is two stores, where
    // an array makes LLVM call `memset`, a BPF-to-BPF call whose frame
    // Linux 6.1's verifier counts against the 512-byte stack.
    pub _pad0: u8,
    pub _pad1: u16,
}

impl FlowKey {
    pub const fn new(
        src_addr: u32,
        dst_addr: u32,
        src_port: u16,
        dst_port: u16,
        proto: u8,
    ) -> Self {
        Self {
            src_addr,
            dst_addr,
            src_port,
            dst_port,
            proto,
            _pad0: 0,
            _pad1: 0,
        }
    }

    /// The key the other direction of the same (translated) flow is stored under,
    /// given what this direction rewrites to.
    pub const fn peer_of(value: &FlowValue, proto: u8) -> Self {
        Self::new(
            value.dst_addr,
            value.src_addr,
            value.dst_port,
            value.src_port,
            proto,
        )
    }
}

/// Where a flow entry is applied. A packet that matches an entry at another
/// hook passes that hook untouched (e.g. a port-forward reply crossing the
/// bridge on its way to the uplink is translated at the uplink).
pub const HOOK_UPLINK_EGRESS: u8 = 1;
pub const HOOK_UPLINK_INGRESS: u8 = 2;
pub const HOOK_BRIDGE_INGRESS: u8 = 3;
/// Egress of the lab host's loopback: its own connections to the uplink
/// address on a forwarded port.
pub const HOOK_LOCAL_EGRESS: u8 = 4;

/// Why a flow exists.
pub const KIND_SNAT: u8 = 1;
pub const KIND_DNAT: u8 = 2;
pub const KIND_HAIRPIN: u8 = 3;
/// A connection from the outside straight to a node of a routed subnet:
/// nothing is rewritten, but the flow is known, so its replies are not
/// masqueraded.
pub const KIND_ROUTED: u8 = 4;
/// The lab host's own connection to the uplink address on a forwarded port,
/// taken to the forward's target (as Docker does): its packets leave `lo`
/// for the target's bridge, and the target's replies come back into `lo`.
pub const KIND_LOCAL: u8 = 5;

/// How a flow kind reads in `netlab nat list` and the programs' log.
pub const fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_SNAT => "snat",
        KIND_DNAT => "dnat",
        KIND_HAIRPIN => "hairpin",
        KIND_ROUTED => "routed",
        KIND_LOCAL => "local",
        _ => "unknown",
    }
}

/// How a protocol reads in `netlab nat list` and the programs' log.
pub const fn proto_name(proto: u8) -> &'static str {
    match proto {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_ICMP => "icmp",
        _ => "other",
    }
}

/// The loopback interface: index 1 in every network namespace.
pub const LO_IFINDEX: u32 = 1;

/// Which direction of its flow an entry translates.
pub const DIR_ORIGINAL: u8 = 0;
pub const DIR_REPLY: u8 = 1;

/// `FlowValue::l2` holds the uplink's Ethernet addresses for this flow.
pub const FLOW_L2: u8 = 1 << 0;
/// `FlowValue::last_ack` holds a value.
pub const FLOW_ACKED: u8 = 1 << 1;

/// Connection state bits, kept in both entries of a flow.
pub const STATE_REPLIED: u8 = 1 << 0;
pub const STATE_FIN_ORIGINAL: u8 = 1 << 1;
pub const STATE_FIN_REPLY: u8 = 1 << 2;
pub const STATE_RST: u8 = 1 << 3;
/// Set once the originator's SYN has been seen (TCP only).
pub const STATE_SYN: u8 = 1 << 4;

/// How long after a TCP connection closed with FINs its remote end may still
/// hold the tuple in TIME_WAIT: twice the maximum segment lifetime, as
/// conntrack keeps TIME_WAIT entries (Linux's own TIME_WAIT is 60 s; other
/// stacks take up to 2 min). The port search gives such a tuple to another
/// inside endpoint only when no other port is free.
pub const TIME_WAIT_SECS: u64 = 120;

/// One direction of a translated flow: what a packet matching its [`FlowKey`]
/// is rewritten to. The entry for the other direction is stored under
/// [`FlowKey::peer_of`] this value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowValue {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
    /// One of the `HOOK_*` constants.
    pub hook: u8,
    /// One of the `KIND_*` constants.
    pub kind: u8,
    /// `DIR_ORIGINAL` or `DIR_REPLY`.
    pub dir: u8,
    /// `STATE_*` bits.
    pub state: u8,
    /// Interface a hairpinned packet is redirected to after rewriting.
    pub out_ifindex: u32,
    /// `FLOW_*` bits.
    pub flags: u8,
    pub _pad0: u8,
    /// The counter of the forward the flow came through
    /// ([`ForwardTarget::counter`], copied when the flow is made; both
    /// entries carry it), 0 for a flow of no forward.
    pub forward: u16,
    /// Ethernet destination and source the uplink uses for this flow,
    /// learnt from its first packet on the slow path (`FLOW_L2`): the fast
    /// path reuses them instead of a neighbour lookup per packet.
    pub l2: [u8; 12],
    /// TCP: the acknowledgement number this direction's packets last
    /// carried (host order; `FLOW_ACKED`), i.e. where its sender expects the
    /// other side's next byte. A reset or FIN coming the other way from the
    /// outside counts only near it (RFC 5961).
    pub last_ack: u32,
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE) when the entry was made.
    pub created_ns: u64,
    /// Last packet in this direction, same clock.
    pub last_seen_ns: u64,
    /// Packets and bytes translated in this direction (approximate under
    /// concurrent updates from several CPUs; for display only).
    pub packets: u64,
    pub bytes: u64,
}

/// An endpoint: address, port and protocol. Key and value of the mapping
/// tables that give RFC 4787 endpoint-independent mapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Endpoint {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl Endpoint {
    pub const fn new(addr: u32, port: u16, proto: u8) -> Self {
        Self {
            addr,
            port,
            proto,
            _pad: 0,
        }
    }
}

/// A mapping between an inside endpoint and its outside endpoint, stored in
/// both directions (`nat_bind`: inside → outside, `nat_port`: outside → inside).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Binding {
    pub peer: Endpoint,
    /// The mapping is free for reuse after this time (same clock as
    /// `FlowValue::last_seen_ns`); refreshed by the flows that use it.
    pub expires_ns: u64,
}

/// An IPv6 flow as one direction sees it: [`FlowKey`] with IPv6 addresses
/// (wire bytes); ICMPv6 echo is keyed as ICMP echo is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Flow6Key {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub _pad0: u8,
    pub _pad1: u16,
}

impl Flow6Key {
    pub const fn new(
        src_addr: [u8; 16],
        dst_addr: [u8; 16],
        src_port: u16,
        dst_port: u16,
        proto: u8,
    ) -> Self {
        Self {
            src_addr,
            dst_addr,
            src_port,
            dst_port,
            proto,
            _pad0: 0,
            _pad1: 0,
        }
    }
}

/// One direction of a masqueraded IPv6 flow (`NAT6_FLOWS`). The original
/// direction's entry holds the flow's state and counts; the reply's points
/// to it by `peer`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Flow6Value {
    /// What this direction's packets are rewritten to: the new source
    /// address and port going out (the uplink's), the new destination
    /// coming in (the node's). Port in network order.
    pub addr: [u8; 16],
    pub port: u16,
    /// `DIR_*`.
    pub dir: u8,
    /// `STATE_*` (the original direction's entry only).
    pub state: u8,
    /// `HOOK_UPLINK_EGRESS` (the source is rewritten),
    /// `HOOK_UPLINK_INGRESS` (the destination is) or `HOOK_BRIDGE_INGRESS`
    /// (hairpin: both, the source to the uplink's address and
    /// `hairpin_sport`).
    pub hook: u8,
    /// `FLOW_L2`: `l2` holds the Ethernet addresses the flow leaves the
    /// uplink with (the fast path out).
    pub flags: u8,
    pub hairpin_sport: u16,
    /// The counter of the forward the flow came through
    /// (`fwd_counter`; 0: none).
    pub forward: u16,
    /// Destination and source MAC for the fast path out.
    pub l2: [u8; 12],
    pub _pad1: u16,
    /// The other direction's key.
    pub peer: Flow6Key,
    pub created_ns: u64,
    pub last_seen_ns: u64,
    /// This direction's packets and bytes.
    pub packets: u64,
    pub bytes: u64,
}

/// An IPv6 endpoint (`NAT6_BIND` key; the inside endpoint of a reservation).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Endpoint6 {
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl Endpoint6 {
    pub const fn new(addr: [u8; 16], port: u16, proto: u8) -> Self {
        Self {
            addr,
            port,
            proto,
            _pad: 0,
        }
    }
}

/// A fragmented IPv6 datagram as its fragments carry it: addresses,
/// identification (wire order) and protocol (`FRAG6_FLOWS` key; the value
/// is the address its later fragments are rewritten to, as its first was).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Frag6Key {
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub id: u32,
    pub proto: u8,
    pub _pad0: u8,
    pub _pad1: u16,
}

/// Where a forwarded port of the uplink's IPv6 address goes
/// (`FORWARD6_RULES`, keyed as `FORWARD_RULES`): the target node's IPv6
/// address and port (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Forward6Target {
    pub addr: [u8; 16],
    pub port: u16,
    /// The forward's counter: its IPv4 rule's (one forward, one count).
    pub counter: u16,
}

/// Who holds an outside port of the uplink's IPv6 address (`NAT6_PORTS`,
/// keyed by port and protocol as a forward is): the inside endpoint, until
/// `expires_ns`, refreshed by its flows' packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Reservation6 {
    pub inside: Endpoint6,
    pub _pad: u32,
    pub expires_ns: u64,
}

/// A port forward, keyed by the outside port (network order) and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ForwardKey {
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl ForwardKey {
    pub const fn new(port: u16, proto: u8) -> Self {
        Self {
            port,
            proto,
            _pad: 0,
        }
    }
}

/// Where a forwarded port goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ForwardTarget {
    pub addr: u32,
    pub port: u16,
    /// The forward's cumulative counter (see [`fwd_counter`]), the same
    /// for every port of the forward; 0: not counted.
    pub counter: u16,
    /// A forward to a node on another lab host: the address of this host
    /// on the target's stretched bridge (its host port, a `/32` entry of
    /// `LAB_SUBNETS` whose ifindex is the port's) that the connection's
    /// source becomes, so the node's replies come back here. 0: none.
    pub snat_addr: u32,
}

impl ForwardTarget {
    /// Whether both go to the same place (whatever their counters).
    pub const fn same_target(&self, other: &ForwardTarget) -> bool {
        self.addr == other.addr && self.port == other.port && self.snat_addr == other.snat_addr
    }
}

/// Per-forward cumulative counters: element `slot` of the per-CPU
/// `FORWARD_COUNTERS` array. The control plane gives each forward a slot
/// and a generation, together its counter id (`ForwardTarget::counter`);
/// a flow made through the forward carries the id (`FlowValue::forward`),
/// and its packets are counted only while the slot holds that id: when a
/// removed forward's slot goes to a new one (zeroed, with the next
/// generation), the old forward's flows still alive stop counting there.
pub mod fwd_counter {
    /// Forwards a lab can count (more are forwarded, not counted).
    pub const SLOTS: u32 = 1 << SLOT_BITS;
    const SLOT_BITS: u32 = 10;
    /// Generations run 1..=`LAST_GENERATION` and round again (an id is
    /// never 0).
    pub const LAST_GENERATION: u16 = (1 << (16 - SLOT_BITS)) - 1;

    pub const fn id(slot: u32, generation: u16) -> u16 {
        (generation << SLOT_BITS) | (slot & (SLOTS - 1)) as u16
    }

    pub const fn slot(id: u16) -> u32 {
        id as u32 & (SLOTS - 1)
    }

    pub const fn generation(id: u16) -> u16 {
        id >> SLOT_BITS
    }

    /// The generation after `g` (the first is 1).
    pub const fn next_generation(g: u16) -> u16 {
        if g >= LAST_GENERATION {
            1
        } else {
            g + 1
        }
    }
}

/// A forward's packets and bytes since it was made, on one CPU: `in`
/// toward its target, `out` its target's replies. Bytes as the hooks see
/// the packets (Ethernet frames).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ForwardCounter {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// The id of the forward that holds the slot now (0: none).
    pub id: u16,
    pub _pad0: u16,
    pub _pad1: u32,
}

/// An IP datagram's fragments: everything but the first carry no L4 header,
/// so they follow the translation recorded for the first one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FragKey {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// The addresses a datagram's fragments are rewritten to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FragValue {
    pub src_addr: u32,
    pub dst_addr: u32,
}

/// A node's port on the lab host (keyed by the node's address): where the
/// fast path delivers translated replies, straight into the node.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct NodePort {
    /// The lab-host end of the node's veth.
    pub ifindex: u32,
    /// The node's MAC, and the gateway's (its bridge's) MAC.
    pub node_mac: [u8; 6],
    pub gateway_mac: [u8; 6],
}

/// Per lab subnet (LPM trie value): how traffic from and to it is treated.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SubnetInfo {
    /// `SUBNET_*` bits.
    pub flags: u32,
    /// The lab host's interface for this subnet (its bridge): where
    /// hairpinned packets to it are redirected.
    pub ifindex: u32,
}

/// Outbound traffic from the subnet is masqueraded behind the uplink address.
pub const SUBNET_MASQUERADE: u32 = 1 << 0;
/// Endpoint-independent filtering ("full cone"): once a node's endpoint has a
/// mapping, any outside host may reach it through that mapping.
pub const SUBNET_ENDPOINT_INDEPENDENT_FILTERING: u32 = 1 << 1;
/// The outside may reach the subnet's addresses directly (routed, no NAT).
pub const SUBNET_ROUTED: u32 = 1 << 2;

/// `LAB_IFACES` value: the interface is one of the lab's bridges on the lab
/// host. A packet forwarded from there to the uplink has a lab source, which
/// must be masqueraded or routed, never sent as it is.
pub const LAB_IFACE_BRIDGE: u32 = 1 << 0;

/// Global dataplane settings: element 0 of the `config` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct NatConfig {
    /// The uplink's IPv4 address (network order); 0 disables translation.
    pub uplink_addr: u32,
    pub uplink_ifindex: u32,
    /// NAT port range, inclusive, host order.
    pub port_min: u16,
    pub port_max: u16,
    /// `CONFIG_*` bits.
    pub flags: u32,
    /// Idle timeouts in seconds.
    pub timeout_tcp_syn: u32,
    pub timeout_tcp_established: u32,
    pub timeout_tcp_closing: u32,
    pub timeout_tcp_rst: u32,
    pub timeout_udp: u32,
    pub timeout_icmp: u32,
    /// New flows are refused (dropped and counted) once the flow table holds
    /// this many entries and garbage collection frees none: established
    /// flows are never evicted to make room. Set below the table's capacity
    /// by the LRU's per-CPU reserve.
    pub flow_limit: u32,
    /// The uplink's IPv6 address to masquerade to (wire bytes); all zero:
    /// IPv6 from masqueraded subnets is not translated (and dropped).
    pub uplink_addr6: [u8; 16],
    /// `flow_limit` for the IPv6 flow table (`NAT6_FLOWS`).
    pub flow_limit6: u32,
}

/// State of a flow table's garbage collection (element 0 of `GC_STATE`,
/// and of `GC6_STATE` for the IPv6 table).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct GcState {
    /// Flow entries in the table: counted as they come and go (approximately:
    /// without atomics CPUs may race), and set to the exact number by each
    /// collection.
    pub entries: u64,
    /// When the last collection ran.
    pub last_run_ns: u64,
}

/// Write events to the `FLOW_EVENTS` ring buffer (`netlab log` runs).
pub const CONFIG_LOG: u32 = 1 << 0;
/// Established flows take the fast path (translated at the node's veth and
/// redirected past the bridge and the lab host's stack).
pub const CONFIG_FAST_PATH: u32 = 1 << 1;
/// The uplink is a veth: the fast path hands packets straight to its peer's
/// ingress (`bpf_redirect_peer`) rather than transmitting them on it.
pub const CONFIG_UPLINK_PEER: u32 = 1 << 2;

/// The programs' events for `netlab log`, one fixed-size record each,
/// written to the `FLOW_EVENTS` ring buffer while `CONFIG_LOG` is set.
pub mod event {
    use super::{Flow6Key, FlowKey};

    /// Ring buffer size in bytes (a power of two, a multiple of the page
    /// size): room for about 5,400 events (40 bytes and an 8-byte header
    /// each) that `netlab log` has not read yet.
    pub const RING_BYTES: u32 = 256 * 1024;

    /// A new flow, by where it was made (`what` of [`Event`]).
    pub const NEW_SNAT_OUT: u32 = 1;
    pub const NEW_SNAT_NODE: u32 = 2;
    pub const NEW_SNAT_IN: u32 = 3;
    pub const NEW_DNAT: u32 = 4;
    pub const NEW_ROUTED: u32 = 5;
    pub const NEW_HAIRPIN: u32 = 6;
    pub const NEW_LOCAL: u32 = 7;
    /// A packet to the uplink address on a port in the NAT range that no
    /// mapping holds (dropped, `drop_no_mapping`); `opening` is the packet.
    pub const NO_MAPPING: u32 = 8;
    /// No free outside port for a new masqueraded flow (dropped,
    /// `drop_port_exhausted` or `drop_table_full`); `opening` is the packet.
    pub const NO_FREE_PORT: u32 = 9;

    /// One event. For a new flow: the opening packet as it came and as it
    /// left (its translation); for a drop, only the packet.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    #[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
    pub struct Event {
        pub what: u32,
        pub _pad: u32,
        pub opening: FlowKey,
        pub translated: FlowKey,
    }

    /// An IPv6 flow's event, as [`Event`] (the same `what`s); told from
    /// one by its size in the ring.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    #[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
    pub struct Event6 {
        pub what: u32,
        pub _pad: u32,
        pub opening: Flow6Key,
        pub translated: Flow6Key,
    }

    /// What a new flow event's `what` says: the kind and the place, as
    /// `netlab log` prints it (the kinds as [`super::kind_name`] spells them).
    pub const fn new_flow_place(what: u32) -> Option<&'static str> {
        Some(match what {
            NEW_SNAT_OUT => "snat flow (uplink egress)",
            NEW_SNAT_NODE => "snat flow (node port, fast path)",
            NEW_SNAT_IN => "snat flow (uplink ingress, endpoint-independent filtering)",
            NEW_DNAT => "dnat flow (uplink ingress)",
            NEW_ROUTED => "routed flow (uplink ingress)",
            NEW_HAIRPIN => "hairpin flow (bridge)",
            NEW_LOCAL => "local flow (lab host's lo)",
            _ => return None,
        })
    }
}

/// Slots of the `TAILS` program array: the programs reached by tail call.
/// The attached programs have slots too, so `nl_gc` can hand the packet
/// that made it run back to the program it came from.
pub mod tail {
    /// `nl_node_new`: a flow's first packet on the fast path.
    pub const NODE_NEW: u32 = 0;
    /// `nl_gc`: collect the flow table when it is full. Its own program,
    /// so the collection's callback frame never stacks on a hook's frames.
    pub const GC: u32 = 1;
    pub const UPLINK_IN: u32 = 2;
    pub const UPLINK_OUT: u32 = 3;
    pub const BRIDGE_IN: u32 = 4;
    pub const LOCAL_OUT: u32 = 5;
    /// `nl_uplink_out6`, `nl_uplink_in6`: IPv6 masquerade (NAT66), programs
    /// of their own so the IPv4 hooks' verification is not touched by it.
    pub const UPLINK_OUT6: u32 = 6;
    pub const UPLINK_IN6: u32 = 7;
    /// `nl_bridge_in6`: IPv6 hairpin.
    pub const BRIDGE_IN6: u32 = 8;
    /// `nl_node_in6`: the IPv6 fast path out.
    pub const NODE_IN6: u32 = 9;
    /// `nl_local_out6`: the lab host's own IPv6 connections to its forwards.
    pub const LOCAL_OUT6: u32 = 10;
    /// `nl_gc6`: collect the IPv6 flow table when it is full.
    pub const GC6: u32 = 11;
    pub const COUNT: u32 = 12;
}

/// Indexes into the per-CPU `stats` array.
pub mod stat {
    pub const XLATE_OUT: u32 = 0;
    pub const XLATE_IN: u32 = 1;
    pub const XLATE_HAIRPIN: u32 = 2;
    pub const XLATE_ICMP_ERROR: u32 = 3;
    pub const NEW_SNAT: u32 = 4;
    pub const NEW_DNAT: u32 = 5;
    pub const NEW_HAIRPIN: u32 = 6;
    pub const REPAIRED: u32 = 7;
    pub const EXPIRED: u32 = 8;
    pub const DROP_NO_MAPPING: u32 = 9;
    pub const DROP_PORT_EXHAUSTED: u32 = 10;
    pub const DROP_BAD_HEADER: u32 = 11;
    pub const DROP_FRAGMENT: u32 = 12;
    pub const DROP_SPOOFED: u32 = 13;
    pub const DROP_UNSOLICITED: u32 = 14;
    pub const DROP_CONFLICT: u32 = 15;
    pub const DROP_TABLE_FULL: u32 = 16;
    pub const DROP_FILTERED: u32 = 17;
    pub const FAST_OUT: u32 = 18;
    pub const FAST_IN: u32 = 19;
    pub const GC_RUNS: u32 = 20;
    pub const GC_FREED: u32 = 21;
    pub const DROP_OUT_OF_WINDOW: u32 = 22;
    /// From a masqueraded subnet, a protocol (or ICMP message) netlab does
    /// not translate: dropped rather than sent with an inside address.
    pub const DROP_PROTOCOL: u32 = 23;
    /// Forwarded from a lab bridge to the uplink with a source that is
    /// neither the uplink address nor in a masqueraded or routed subnet
    /// (e.g. a subnet behind a router node the lab does not translate):
    /// dropped rather than leaked.
    pub const DROP_UNKNOWN_SOURCE: u32 = 24;
    /// A rewrite helper (checksum or store) failed half-way: the packet is
    /// dropped, never sent half translated.
    pub const DROP_REWRITE_FAILED: u32 = 25;
    /// A per-CPU scratch slot was missing (cannot happen with the maps as
    /// defined; counted so no drop goes without a reason).
    pub const DROP_NO_SCRATCH: u32 = 26;
    pub const NEW_LOCAL: u32 = 27;
    pub const XLATE_LOCAL: u32 = 28;
    /// IPv6 from a masqueraded subnet that the dataplane did not translate,
    /// leaving by the uplink: dropped rather than sent with an inside address.
    pub const DROP_V6_UNTRANSLATED: u32 = 29;
    /// IPv6 whose extension headers run past the packet or past the
    /// programs' bound on how many they walk, where its upper-layer header
    /// must be known (from a masqueraded subnet): dropped.
    pub const DROP_V6_HEADER_CHAIN: u32 = 30;
    /// A frame of the lab host's own bridge (the anycast gateway's: its
    /// MAC is the same on every host) about to enter a VXLAN tunnel to the
    /// other hosts: it stays on its host.
    pub const DROP_GATEWAY_INTO_TUNNEL: u32 = 31;
    /// A new forwarded flow whose client port was changed: the target
    /// held the four-tuple for another flow (the client reused its port
    /// towards another forward of the same target).
    pub const CLIENT_PORT_CHANGED: u32 = 32;
    /// IPv6 (NAT66): new masqueraded flows, packets translated each way.
    pub const NEW_SNAT6: u32 = 33;
    pub const XLATE6_OUT: u32 = 34;
    pub const XLATE6_IN: u32 = 35;
    pub const NEW_DNAT6: u32 = 36;
    pub const NEW_HAIRPIN6: u32 = 37;
    pub const XLATE6_HAIRPIN: u32 = 38;
    /// The lab host's own IPv6 connections to its forwards.
    pub const NEW_LOCAL6: u32 = 39;
    pub const XLATE6_LOCAL: u32 = 40;
    pub const COUNT: u32 = 41;

    /// Display names, in index order.
    pub const NAMES: [&str; COUNT as usize] = [
        "translated_out",
        "translated_in",
        "translated_hairpin",
        "translated_icmp_error",
        "new_snat_flows",
        "new_dnat_flows",
        "new_hairpin_flows",
        "repaired_entries",
        "expired_entries",
        "drop_no_mapping",
        "drop_port_exhausted",
        "drop_bad_header",
        "drop_fragment",
        "drop_spoofed_source",
        "drop_unsolicited",
        "drop_conflict",
        "drop_table_full",
        "drop_filtered",
        "fast_path_out",
        "fast_path_in",
        "gc_runs",
        "gc_freed_entries",
        "drop_out_of_window",
        "drop_protocol",
        "drop_unknown_source",
        "drop_rewrite_failed",
        "drop_no_scratch",
        "new_local_flows",
        "translated_local",
        "drop_v6_untranslated",
        "drop_v6_header_chain",
        "drop_gateway_into_tunnel",
        "dnat_client_port_changed",
        "new_snat_v6_flows",
        "translated_v6_out",
        "translated_v6_in",
        "new_dnat_v6_flows",
        "new_hairpin_v6_flows",
        "translated_v6_hairpin",
        "new_local_v6_flows",
        "translated_v6_local",
    ];
}

/// Map sizes. `FLOW_ENTRIES` holds both directions of each flow.
pub const FLOW_ENTRIES: u32 = 262_144;
pub const BINDING_ENTRIES: u32 = 131_072;
pub const FORWARD_ENTRIES: u32 = 65_536;
pub const SUBNET_ENTRIES: u32 = 256;
pub const SUBNET6_ENTRIES: u32 = 256;
/// IPv6 flows (both directions each) and their outside ports.
pub const FLOW6_ENTRIES: u32 = 65_536;
pub const BINDING6_ENTRIES: u32 = 32_768;
pub const FRAG_ENTRIES: u32 = 8192;
/// Flow keys being taken over at once: at most one per CPU at a time.
pub const CLAIM_ENTRIES: u32 = 4096;
pub const NODE_ENTRIES: u32 = 4096;
pub const IFACE_ENTRIES: u32 = 256;
/// The taken-port hint: a bit per port (64 a word, 1024 words) for each of
/// TCP, UDP and ICMP (echo identifiers).
pub const PORT_HINT_WORDS: u32 = 1024;
pub const PORT_USED_ENTRIES: u32 = 3 * PORT_HINT_WORDS;
/// The forwarded-port bitmap: a bit per TCP and UDP port (ICMP is never
/// forwarded), laid out as the hint's words.
pub const FORWARDED_PORTS_ENTRIES: u32 = 2 * PORT_HINT_WORDS;

/// The `FORWARDED_PORTS` word that holds host-order `port` of `proto`, and
/// the port's bit in it; `None` for a protocol that is never forwarded.
#[inline(always)]
pub const fn forwarded_port_bit(proto: u8, port: u16) -> Option<(u32, u64)> {
    let base = match proto {
        IPPROTO_TCP => 0,
        IPPROTO_UDP => PORT_HINT_WORDS,
        _ => return None,
    };
    Some((base + (port / 64) as u32, 1 << (port % 64)))
}

/// The programs' and maps' names, defined once for both sides. aya-ebpf
/// names a map after its static, so the statics in `netlab-ebpf` carry
/// exactly these names; a test of the netlab crate checks the built object
/// against [`MAPS`] and [`PROGRAMS`].
pub mod names {
    pub const PROG_UPLINK_IN: &str = "nl_uplink_in";
    pub const PROG_UPLINK_OUT: &str = "nl_uplink_out";
    pub const PROG_BRIDGE_IN: &str = "nl_bridge_in";
    pub const PROG_NODE_IN: &str = "nl_node_in";
    pub const PROG_NODE_NEW: &str = "nl_node_new";
    pub const PROG_GC: &str = "nl_gc";
    pub const PROG_LOCAL_OUT: &str = "nl_local_out";
    pub const PROG_HOST_PORT_IN: &str = "nl_host_port_in";
    pub const PROG_TUNNEL_OUT: &str = "nl_tunnel_out";
    pub const PROG_UPLINK_OUT6: &str = "nl_uplink_out6";
    pub const PROG_UPLINK_IN6: &str = "nl_uplink_in6";
    pub const PROG_BRIDGE_IN6: &str = "nl_bridge_in6";
    pub const PROG_NODE_IN6: &str = "nl_node_in6";
    pub const PROG_LOCAL_OUT6: &str = "nl_local_out6";
    pub const PROG_GC6: &str = "nl_gc6";

    pub const PROGRAMS: &[&str] = &[
        PROG_UPLINK_IN,
        PROG_UPLINK_OUT,
        PROG_BRIDGE_IN,
        PROG_NODE_IN,
        PROG_NODE_NEW,
        PROG_GC,
        PROG_LOCAL_OUT,
        PROG_HOST_PORT_IN,
        PROG_TUNNEL_OUT,
        PROG_UPLINK_OUT6,
        PROG_UPLINK_IN6,
        PROG_BRIDGE_IN6,
        PROG_NODE_IN6,
        PROG_LOCAL_OUT6,
        PROG_GC6,
    ];

    /// The programs only a lab that translates IPv6 loads (each reached
    /// by tail call from its IPv4 hook, `nl_gc6` from them).
    pub const IPV6_PROGRAMS: &[&str] = &[
        PROG_UPLINK_OUT6,
        PROG_UPLINK_IN6,
        PROG_BRIDGE_IN6,
        PROG_NODE_IN6,
        PROG_LOCAL_OUT6,
        PROG_GC6,
    ];

    pub const NAT_FLOWS: &str = "NAT_FLOWS";
    pub const NAT_BIND: &str = "NAT_BIND";
    pub const NAT_PORTS: &str = "NAT_PORTS";
    pub const FORWARD_RULES: &str = "FORWARD_RULES";
    pub const LAB_SUBNETS: &str = "LAB_SUBNETS";
    pub const LAB_SUBNETS6: &str = "LAB_SUBNETS6";
    pub const LAB_IFACES: &str = "LAB_IFACES";
    pub const CONFIG: &str = "CONFIG";
    pub const STATS: &str = "STATS";
    pub const FRAG_FLOWS: &str = "FRAG_FLOWS";
    pub const GC_STATE: &str = "GC_STATE";
    pub const GC6_STATE: &str = "GC6_STATE";
    pub const NODE_PORTS: &str = "NODE_PORTS";
    pub const NODE_PORTS6: &str = "NODE_PORTS6";
    pub const TAILS: &str = "TAILS";
    pub const GC_RESUME: &str = "GC_RESUME";
    pub const SOCK_TUPLE: &str = "SOCK_TUPLE";
    pub const FIB_SCRATCH: &str = "FIB_SCRATCH";
    pub const SCRATCH: &str = "SCRATCH";
    pub const PORT_USED: &str = "PORT_USED";
    pub const FORWARDED_PORTS: &str = "FORWARDED_PORTS";
    pub const PORT_CURSOR: &str = "PORT_CURSOR";
    pub const FLOW_EVENTS: &str = "FLOW_EVENTS";
    pub const FORWARD_COUNTERS: &str = "FORWARD_COUNTERS";
    pub const TUNNEL_GATEWAYS: &str = "TUNNEL_GATEWAYS";
    pub const NAT6_FLOWS: &str = "NAT6_FLOWS";
    pub const NAT6_BIND: &str = "NAT6_BIND";
    pub const NAT6_PORTS: &str = "NAT6_PORTS";
    pub const PORT6_CURSOR: &str = "PORT6_CURSOR";
    pub const SCRATCH6: &str = "SCRATCH6";
    pub const UPPER6: &str = "UPPER6";
    pub const FORWARD6_RULES: &str = "FORWARD6_RULES";
    pub const FRAG6_FLOWS: &str = "FRAG6_FLOWS";
    pub const FLOW_CLAIMS: &str = "FLOW_CLAIMS";
    pub const FLOW6_CLAIMS: &str = "FLOW6_CLAIMS";

    pub const MAPS: &[&str] = &[
        NAT_FLOWS,
        NAT_BIND,
        NAT_PORTS,
        FORWARD_RULES,
        LAB_SUBNETS,
        LAB_SUBNETS6,
        LAB_IFACES,
        CONFIG,
        STATS,
        FRAG_FLOWS,
        GC_STATE,
        GC6_STATE,
        NODE_PORTS,
        NODE_PORTS6,
        TAILS,
        GC_RESUME,
        SOCK_TUPLE,
        FIB_SCRATCH,
        SCRATCH,
        PORT_USED,
        FORWARDED_PORTS,
        PORT_CURSOR,
        FLOW_EVENTS,
        FORWARD_COUNTERS,
        TUNNEL_GATEWAYS,
        NAT6_FLOWS,
        NAT6_BIND,
        NAT6_PORTS,
        PORT6_CURSOR,
        SCRATCH6,
        UPPER6,
        FORWARD6_RULES,
        FRAG6_FLOWS,
        FLOW_CLAIMS,
        FLOW6_CLAIMS,
    ];
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all types are #[repr(C)], Copy, and have explicit padding, so
    // every bit pattern is valid and no byte is uninitialised.
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::Binding {}
    unsafe impl aya::Pod for super::ForwardKey {}
    unsafe impl aya::Pod for super::ForwardTarget {}
    unsafe impl aya::Pod for super::SubnetInfo {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragValue {}
    unsafe impl aya::Pod for super::NodePort {}
    unsafe impl aya::Pod for super::GcState {}
    unsafe impl aya::Pod for super::NatConfig {}
    unsafe impl aya::Pod for super::event::Event {}
    unsafe impl aya::Pod for super::event::Event6 {}
    unsafe impl aya::Pod for super::ForwardCounter {}
    unsafe impl aya::Pod for super::Flow6Key {}
    unsafe impl aya::Pod for super::Flow6Value {}
    unsafe impl aya::Pod for super::Endpoint6 {}
    unsafe impl aya::Pod for super::Reservation6 {}
    unsafe impl aya::Pod for super::Forward6Target {}
    unsafe impl aya::Pod for super::Frag6Key {}
}

/// Network-order `u32` for an IPv4 address (user side).
#[inline]
pub const fn addr_from_octets(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// Octets of a network-order `u32` address.
#[inline]
pub const fn addr_octets(addr: u32) -> [u8; 4] {
    addr.to_ne_bytes()
}

/// Host-order port to the stored (network-order) form, and back.
#[inline]
pub const fn port_to_net(port: u16) -> u16 {
    port.to_be()
}

#[inline]
pub const fn port_from_net(port: u16) -> u16 {
    u16::from_be(port)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<FlowValue>(), 72);
        assert_eq!(size_of::<Endpoint>(), 8);
        assert_eq!(size_of::<Binding>(), 16);
        assert_eq!(size_of::<ForwardKey>(), 4);
        assert_eq!(size_of::<ForwardTarget>(), 12);
        assert_eq!(size_of::<SubnetInfo>(), 8);
        assert_eq!(size_of::<NatConfig>(), 64);
        assert_eq!(size_of::<GcState>(), 16);
        assert_eq!(size_of::<FragKey>(), 12);
        assert_eq!(size_of::<FragValue>(), 8);
        assert_eq!(size_of::<NodePort>(), 16);
        assert_eq!(size_of::<event::Event>(), 40);
        assert_eq!(size_of::<event::Event6>(), 88);
        assert_eq!(size_of::<ForwardCounter>(), 40);
        assert_eq!(size_of::<Flow6Key>(), 40);
        assert_eq!(size_of::<Flow6Value>(), 112);
        assert_eq!(size_of::<Endpoint6>(), 20);
        assert_eq!(size_of::<Reservation6>(), 32);
        assert_eq!(size_of::<Forward6Target>(), 20);
        assert_eq!(size_of::<Frag6Key>(), 40);
    }

    #[test]
    fn forward_counter_ids_hold_slot_and_generation_and_are_never_zero() {
        for slot in [0, 1, fwd_counter::SLOTS - 1] {
            for g in 1..=fwd_counter::LAST_GENERATION {
                let id = fwd_counter::id(slot, g);
                assert_ne!(id, 0);
                assert_eq!(fwd_counter::slot(id), slot);
                assert_eq!(fwd_counter::generation(id), g);
            }
        }
        assert_eq!(fwd_counter::next_generation(0), 1);
        assert_eq!(fwd_counter::next_generation(1), 2);
        assert_eq!(
            fwd_counter::next_generation(fwd_counter::LAST_GENERATION),
            1
        );
    }

    #[test]
    fn names_are_unique() {
        for list in [names::MAPS, names::PROGRAMS, &stat::NAMES[..]] {
            for (i, a) in list.iter().enumerate() {
                assert!(!list[i + 1..].contains(a), "{a} twice");
            }
        }
    }

    #[test]
    fn every_kind_has_a_name() {
        for kind in [KIND_SNAT, KIND_DNAT, KIND_HAIRPIN, KIND_ROUTED, KIND_LOCAL] {
            assert_ne!(kind_name(kind), "unknown");
        }
    }

    #[test]
    fn peer_key_reverses_the_rewritten_tuple() {
        let value = FlowValue {
            src_addr: 1,
            dst_addr: 2,
            src_port: 3,
            dst_port: 4,
            ..Default::default()
        };
        assert_eq!(
            FlowKey::peer_of(&value, IPPROTO_UDP),
            FlowKey::new(2, 1, 4, 3, IPPROTO_UDP)
        );
    }
}
