//! Flow state shared by the hooks: looking entries up with their timeouts,
//! keeping both directions of a flow consistent (repair or drop, never
//! mistranslate), endpoint-independent mappings, and outside port
//! allocation.

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    cty::c_void,
    helpers::generated::{
        bpf_for_each_map_elem, bpf_get_prandom_u32, bpf_ktime_get_coarse_ns, bpf_loop,
        bpf_sk_lookup_tcp, bpf_sk_lookup_udp, bpf_sk_release,
    },
    maps::lpm_trie::Key,
    programs::TcContext,
    EbpfContext as _,
};
use netlab_common::{
    stat, tail, Binding, Endpoint, FlowKey, FlowValue, ForwardKey, FragKey, FragValue, NatConfig,
    SubnetInfo, DIR_ORIGINAL, DIR_REPLY, FLOW_ACKED, FLOW_L2, HOOK_BRIDGE_INGRESS,
    HOOK_UPLINK_EGRESS, HOOK_UPLINK_INGRESS, IPPROTO_ICMP, IPPROTO_TCP, KIND_DNAT, KIND_ROUTED,
    KIND_SNAT, SUBNET_MASQUERADE,
};
use netlab_ebpf::{
    binding_timeout_secs, datagram_next_state, flow_timeout_secs, in_nat_range, port_candidate,
    tcp_closed, tcp_next_state, NSEC_PER_SEC, TCP_ACK, TCP_FIN, TCP_RST,
};

use crate::{
    maps::{
        config, count, scratch, FORWARD_RULES, FRAG_FLOWS, GC_RESUME, GC_STATE, LAB_SUBNETS,
        NAT_BIND, NAT_FLOWS, NAT_PORTS, SCRATCH_ORIGINAL, SCRATCH_PEER, SCRATCH_REPLY, SOCK_TUPLE,
        TAILS,
    },
    packet::{Pkt, FRAG_FIRST, ICMP_ECHO},
};

pub const BPF_ANY: u64 = 0;
pub const BPF_NOEXIST: u64 = 1;

/// How many outside ports a new flow tries before giving up (port space
/// exhausted: drop and count): a run of consecutive ports from a random
/// start, which finds the free ports of a nearly full range too.
const PORT_TRIES: u32 = 64;

/// How far past the inside endpoint's last acknowledgement a reset or FIN
/// from the outside may fall and still count.
const SEQ_WINDOW: u32 = 1 << 16;

/// Bindings and peer entries are refreshed at most this often per flow, so
/// the common case of a packet touches one map entry.
const REFRESH_NS: u64 = if cfg!(feature = "variant") {
    NSEC_PER_SEC / 2
} else {
    NSEC_PER_SEC
};

#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
pub fn subnet_of(addr: u32) -> Option<&'static SubnetInfo> {
    LAB_SUBNETS.get(Key::new(32, addr))
}

/// Whether `addr` is in a subnet the uplink masquerades.
#[inline(always)]
pub fn masqueraded(addr: u32) -> bool {
    subnet_of(addr).is_some_and(|s| s.flags & SUBNET_MASQUERADE != 0)
}

/// Whether a packet without a flow may open one: not a reset, not a reply
/// to an echo nobody sent, not an ICMP message without an identifier.
#[inline(always)]
pub fn opens_flow(p: &Pkt) -> bool {
    match p.proto {
        IPPROTO_TCP => p.tcp_flags & TCP_RST == 0,
        IPPROTO_ICMP => p.icmp_type == ICMP_ECHO,
        _ => true,
    }
}

#[inline(always)]
fn alive(cfg: &NatConfig, proto: u8, v: &FlowValue, now: u64) -> bool {
    now <= v.last_seen_ns + u64::from(flow_timeout_secs(cfg, proto, v.state)) * NSEC_PER_SEC
}

/// Whether `peer` (the entry under `FlowKey::peer_of(v)`) translates back to `key`.
#[inline(always)]
fn points_back(peer: &FlowValue, key: &FlowKey) -> bool {
    peer.src_addr == key.dst_addr
        && peer.dst_addr == key.src_addr
        && peer.src_port == key.dst_port
        && peer.dst_port == key.src_port
}

/// The live entry a packet belongs to. An echo request and an echo reply
/// with identifier 0 have the same key (`(0, 0)`); the entry's
/// translation tells them apart (a request's keeps destination "port" 0).
#[inline(always)]
pub fn lookup_packet(cfg: &NatConfig, p: &Pkt, key: &FlowKey, now: u64) -> Option<*mut FlowValue> {
    let v = lookup_live(cfg, key, now)?;
    if p.proto == IPPROTO_ICMP && key.src_port == 0 && key.dst_port == 0 {
        let val = unsafe { &*v };
        let fits = if p.icmp_type == ICMP_ECHO {
            val.dst_port == 0
        } else {
            val.src_port == 0
        };
        if !fits {
            return None;
        }
    }
    Some(v)
}

/// Whether the flow of the entry `(key, v)` is alive: either half fresh.
#[inline(always)]
fn flow_alive(cfg: &NatConfig, key: &FlowKey, v: &FlowValue, now: u64) -> bool {
    if alive(cfg, key.proto, v, now) {
        return true;
    }
    let peer_key = FlowKey::peer_of(v, key.proto);
    NAT_FLOWS.get_ptr(&peer_key).is_some_and(|pv| {
        let peer = unsafe { &*pv };
        points_back(peer, key) && alive(cfg, key.proto, peer, now)
    })
}

/// The live entry for `key`. A direction that has been quiet stays alive
/// while the other one is active (a one-way stream keeps its reply entry).
/// An expired flow is removed, both halves.
#[inline(always)]
pub fn lookup_live(cfg: &NatConfig, key: &FlowKey, now: u64) -> Option<*mut FlowValue> {
    let v = NAT_FLOWS.get_ptr_mut(key)?;
    let val = unsafe { &*v };
    if alive(cfg, key.proto, val, now) {
        return Some(v);
    }
    let peer_key = FlowKey::peer_of(val, key.proto);
    if let Some(pv) = NAT_FLOWS.get_ptr(&peer_key) {
        let peer = unsafe { &*pv };
        if points_back(peer, key) {
            if alive(cfg, key.proto, peer, now) {
                return Some(v);
            }
            flow_del(&peer_key);
        }
    }
    flow_del(key);
    count(stat::EXPIRED);
    None
}

/// The inside endpoint and outside port of a flow entry, when it holds a
/// mapping (port forwards use a fixed port and hold none).
#[inline(always)]
fn mapping_of(key: &FlowKey, v: &FlowValue) -> Option<(Endpoint, u16)> {
    if v.kind == KIND_DNAT || v.kind == KIND_ROUTED {
        return None;
    }
    if v.dir == DIR_ORIGINAL {
        Some((
            Endpoint::new(key.src_addr, key.src_port, key.proto),
            v.src_port,
        ))
    } else {
        Some((
            Endpoint::new(v.dst_addr, v.dst_port, key.proto),
            key.dst_port,
        ))
    }
}

/// Extend a mapping's life, if it is still this flow's.
#[inline(always)]
fn refresh_mapping(cfg: &NatConfig, inside: &Endpoint, ext_port: u16, expires: u64) {
    let outside = Endpoint::new(cfg.uplink_addr, ext_port, inside.proto);
    // Set, not extended: a mapping lives as long as its most recently
    // active flow asks, so a connection that closes can free it at once.
    if let Some(b) = NAT_BIND.get_ptr_mut(inside) {
        let b = unsafe { &mut *b };
        if b.peer == outside {
            b.expires_ns = expires;
        }
    }
    if let Some(b) = NAT_PORTS.get_ptr_mut(&outside) {
        let b = unsafe { &mut *b };
        if b.peer == *inside {
            b.expires_ns = expires;
        }
    }
}

/// What the peer entry of `(key, v)` must hold, built in scratch memory.
#[inline(always)]
fn peer_value(key: &FlowKey, v: &FlowValue) -> Option<&'static mut FlowValue> {
    let hook = match v.hook {
        HOOK_UPLINK_EGRESS => HOOK_UPLINK_INGRESS,
        HOOK_UPLINK_INGRESS => HOOK_UPLINK_EGRESS,
        h => h,
    };
    let out_ifindex = if hook == HOOK_BRIDGE_INGRESS {
        subnet_of(key.src_addr).map(|s| s.ifindex).unwrap_or(0)
    } else {
        0
    };
    let dir = if v.dir == DIR_ORIGINAL {
        DIR_REPLY
    } else {
        DIR_ORIGINAL
    };
    let peer = entry(
        SCRATCH_PEER,
        key.dst_addr,
        key.src_addr,
        key.dst_port,
        key.src_port,
        hook,
        v.kind,
        dir,
        v.state,
        out_ifindex,
        v.last_seen_ns,
    )?;
    peer.created_ns = v.created_ns;
    Some(peer)
}

/// Account a translated packet on its entry. Every `REFRESH_NS`, and on
/// every state change, the peer entry is checked (repaired when evicted,
/// the flow dropped when it disagrees) and the mapping refreshed.
/// `Err` means the flow's halves disagree: drop the packet.
#[inline(always)]
pub fn touch(
    cfg: &NatConfig,
    key: &FlowKey,
    v: *mut FlowValue,
    p: &Pkt,
    now: u64,
) -> Result<(), ()> {
    let val = unsafe { &mut *v };
    if p.proto == IPPROTO_TCP {
        if p.tcp_flags & (TCP_RST | TCP_FIN) != 0 && val.hook == HOOK_UPLINK_INGRESS {
            // A reset or FIN from the outside ends the flow only where the
            // inside endpoint's TCP would take it: near the acknowledgement
            // it last sent (RFC 5961). Spoofed ones are dropped, not
            // believed.
            let peer_key = FlowKey::peer_of(val, key.proto);
            if let Some(pv) = NAT_FLOWS.get_ptr(&peer_key) {
                let peer = unsafe { &*pv };
                if peer.flags & FLOW_ACKED != 0
                    && p.tcp_seq.wrapping_sub(peer.last_ack) >= SEQ_WINDOW
                {
                    count(stat::DROP_OUT_OF_WINDOW);
                    return Err(());
                }
            }
        }
        if p.tcp_flags & TCP_ACK != 0 {
            val.last_ack = p.tcp_ack;
            val.flags |= FLOW_ACKED;
        }
    }
    let old_state = val.state;
    let state = if p.proto == IPPROTO_TCP {
        tcp_next_state(old_state, p.tcp_flags, val.dir)
    } else {
        datagram_next_state(old_state, val.dir)
    };
    // Due once per `REFRESH_NS` period the flow is active in, however
    // often its packets come (measured from the previous packet, a busy
    // flow would never be due).
    let due = now / REFRESH_NS != val.last_seen_ns / REFRESH_NS;
    val.last_seen_ns = now;
    val.packets += 1;
    val.bytes += u64::from(p.len);
    if state == old_state && !due {
        return Ok(());
    }
    val.state = state;
    let peer_key = FlowKey::peer_of(val, key.proto);
    match NAT_FLOWS.get_ptr_mut(&peer_key) {
        Some(pv) => {
            let peer = unsafe { &mut *pv };
            if !points_back(peer, key) {
                flow_del(key);
                count(stat::DROP_CONFLICT);
                return Err(());
            }
            peer.state = state;
        }
        None => {
            if let Some(pv) = peer_value(key, val) {
                if NAT_FLOWS.insert(&peer_key, &*pv, BPF_NOEXIST).is_ok() {
                    entries_add(1);
                    count(stat::REPAIRED);
                }
            }
        }
    }
    if let Some((inside, ext_port)) = mapping_of(key, val) {
        let expires = now + u64::from(binding_timeout_secs(cfg, key.proto, state)) * NSEC_PER_SEC;
        refresh_mapping(cfg, &inside, ext_port, expires);
    }
    Ok(())
}

/// Reserve the half of a new flow whose key must be unique (its outside
/// tuple is what keeps two flows apart): it may not belong to another live
/// flow; a stale half of this very flow is taken over.
#[inline(always)]
fn reserve(
    cfg: &NatConfig,
    unique_key: &FlowKey,
    unique_val: &FlowValue,
    now: u64,
) -> Result<(), ()> {
    if NAT_FLOWS
        .insert(unique_key, unique_val, BPF_NOEXIST)
        .is_ok()
    {
        entries_add(1);
    } else {
        let Some(cur) = NAT_FLOWS.get_ptr(unique_key) else {
            return Err(());
        };
        let cur = unsafe { &*cur };
        let same = cur.src_addr == unique_val.src_addr
            && cur.dst_addr == unique_val.dst_addr
            && cur.src_port == unique_val.src_port
            && cur.dst_port == unique_val.dst_port;
        // A connection that is over gives its outside tuple up to a new
        // flow, as conntrack reopens a TIME_WAIT entry on a new SYN.
        let over = tcp_closed(unique_key.proto, cur.state);
        // A quiet half of a one-way stream is as alive as the stream.
        if !same && !over && flow_alive(cfg, unique_key, cur, now) {
            return Err(());
        }
        if !same {
            // The other half of the flow that had this tuple goes with it.
            let old_peer = FlowKey::peer_of(cur, unique_key.proto);
            if NAT_FLOWS
                .get_ptr(&old_peer)
                .is_some_and(|p| points_back(unsafe { &*p }, unique_key))
            {
                flow_del(&old_peer);
            }
        }
        if NAT_FLOWS.insert(unique_key, unique_val, BPF_ANY).is_err() {
            return Err(());
        }
    }
    Ok(())
}

/// Insert both halves of a new flow, `unique_key` first (see [`reserve`]).
#[inline(always)]
pub fn insert_pair(
    cfg: &NatConfig,
    key: &FlowKey,
    val: &FlowValue,
    unique_key: &FlowKey,
    unique_val: &FlowValue,
    now: u64,
) -> Result<(), ()> {
    reserve(cfg, unique_key, unique_val, now)?;
    if flow_put(key, val).is_err() {
        flow_del(unique_key);
        count(stat::DROP_TABLE_FULL);
        return Err(());
    }
    Ok(())
}

#[inline(always)]
fn zero<T: Default>(field: &mut T) {
    unsafe { core::ptr::write_volatile(field, T::default()) }
}

/// A fresh flow entry, built in per-CPU scratch memory (see `SCRATCH`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn entry(
    slot: u32,
    src_addr: u32,
    dst_addr: u32,
    src_port: u16,
    dst_port: u16,
    hook: u8,
    kind: u8,
    dir: u8,
    state: u8,
    out_ifindex: u32,
    now: u64,
) -> Option<&'static mut FlowValue> {
    let v = scratch(slot)?;
    v.src_addr = src_addr;
    v.dst_addr = dst_addr;
    v.src_port = src_port;
    v.dst_port = dst_port;
    v.hook = hook;
    v.kind = kind;
    v.dir = dir;
    v.state = state;
    v.out_ifindex = out_ifindex;
    v.created_ns = now;
    v.last_seen_ns = now;
    // Volatile, so LLVM cannot merge these runs of zeros into `memset`
    // calls: BPF-to-BPF calls whose frames Linux 6.1's verifier adds to the
    // caller's (the port search's callback runs this, under a hook's frame,
    // and the sum must stay within 512 bytes).
    zero(&mut v.flags);
    zero(&mut v._pad0);
    zero(&mut v._pad1);
    for b in v.l2.iter_mut() {
        zero(b);
    }
    zero(&mut v.last_ack);
    zero(&mut v.packets);
    zero(&mut v.bytes);
    Some(v)
}

/// Whether a socket of the lab host would receive a packet from
/// `remote:remote_port` to `local:port` (so that port is the host's).
/// `skb`: the program's context.
#[inline(always)]
pub fn host_socket_uses(
    skb: *mut c_void,
    proto: u8,
    remote: u32,
    remote_port: u16,
    local: u32,
    port: u16,
) -> bool {
    if proto == IPPROTO_ICMP {
        return false;
    }
    // The tuple lives in per-CPU scratch memory: this runs deep in the port
    // search, where the stack is shared with its callers.
    let Some(tuple) = SOCK_TUPLE.get_ptr_mut(0) else {
        return false;
    };
    unsafe {
        let v4 = &mut (*tuple).__bindgen_anon_1.ipv4;
        v4.saddr = remote;
        v4.daddr = local;
        v4.sport = remote_port;
        v4.dport = port;
    }
    let size = 12u32;
    let netns = u64::MAX; // BPF_F_CURRENT_NETNS
    let sk = unsafe {
        if proto == IPPROTO_TCP {
            bpf_sk_lookup_tcp(skb, tuple, size, netns, 0)
        } else {
            bpf_sk_lookup_udp(skb, tuple, size, netns, 0)
        }
    };
    if sk.is_null() {
        return false;
    }
    unsafe { bpf_sk_release(sk as *mut _) };
    true
}

/// The outside port `inside` is mapped to, if its mapping is live
/// (endpoint-independent mapping: the same port for every destination).
#[inline(always)]
pub fn live_binding(cfg: &NatConfig, inside: &Endpoint, now: u64) -> Option<u16> {
    let b = NAT_BIND.get_ptr(inside)?;
    let b = unsafe { &*b };
    if b.expires_ns > now && b.peer.addr == cfg.uplink_addr {
        Some(b.peer.port)
    } else {
        None
    }
}

/// How to build both halves of a new flow once its outside port is known.
#[derive(Clone, Copy)]
/// The original direction `key` (inside `I:i` to `D:d`) is rewritten to
/// `uplink:port → new_dst:new_dport`; the reply comes back as
/// `new_dst:new_dport → uplink:port` and is rewritten to `D:d → I:i`.
/// Masquerade has `new_dst = D`; hairpin has the forward's target.
pub struct PairSpec {
    pub key: FlowKey,
    pub new_dst: u32,
    pub new_dport: u16,
    pub kind: u8,
    pub state: u8,
    pub hook_original: u8,
    pub hook_reply: u8,
    pub ifindex_original: u32,
    pub ifindex_reply: u32,
}

/// Create both halves of `spec`'s flow with outside port `port`.
#[inline(always)]
pub fn create_pair(cfg: &NatConfig, spec: &PairSpec, port: u16, now: u64) -> Result<(), ()> {
    let k = &spec.key;
    let reply_key = FlowKey::new(spec.new_dst, cfg.uplink_addr, spec.new_dport, port, k.proto);
    let reply = entry(
        SCRATCH_REPLY,
        k.dst_addr,
        k.src_addr,
        k.dst_port,
        k.src_port,
        spec.hook_reply,
        spec.kind,
        DIR_REPLY,
        spec.state,
        spec.ifindex_reply,
        now,
    )
    .ok_or(())?;
    reserve(cfg, &reply_key, reply, now)?;
    let original = entry(
        SCRATCH_ORIGINAL,
        cfg.uplink_addr,
        spec.new_dst,
        port,
        spec.new_dport,
        spec.hook_original,
        spec.kind,
        DIR_ORIGINAL,
        spec.state,
        spec.ifindex_original,
        now,
    )
    .ok_or(())?;
    if flow_put(k, original).is_err() {
        flow_del(&reply_key);
        count(stat::DROP_TABLE_FULL);
        return Err(());
    }
    Ok(())
}

/// The flow of `spec` through the endpoint's live mapping (endpoint-
/// independent mapping), or through a newly allocated one. `None`: the
/// flow table is full or the port space exhausted (dropped and counted).
///
/// The attempts run as a `bpf_loop` callback, which the verifier checks
/// once rather than once per unrolled attempt.
#[inline(always)]
pub fn map_flow(
    ctx: &TcContext,
    cfg: &NatConfig,
    spec: PairSpec,
    now: u64,
    resume: u32,
) -> Option<u16> {
    if !admit(ctx, cfg, now, resume) {
        count(stat::DROP_TABLE_FULL);
        return None;
    }
    let mut state = MapFlow {
        skb: ctx.as_ptr(),
        spec,
        now,
        port: 0,
        probe: port_candidate(cfg, unsafe { bpf_get_prandom_u32() }),
        _pad: [0; 4],
    };
    unsafe {
        bpf_loop(
            1 + PORT_TRIES,
            map_flow_step as *mut c_void,
            &mut state as *mut MapFlow as *mut c_void,
            0,
        );
    }
    if state.port == 0 {
        count(stat::DROP_PORT_EXHAUSTED);
        return None;
    }
    Some(state.port)
}

/// What the `bpf_loop` callback works on (on the caller's stack).
#[repr(C)]
struct MapFlow {
    skb: *mut c_void,
    spec: PairSpec,
    now: u64,
    /// The outside port found (network order), 0 while none.
    port: u16,
    /// Where the run of consecutive attempts starts (host order). Chosen
    /// before the loop: attempts that change nothing but the outcome keep
    /// the verifier's work small.
    probe: u16,
    _pad: [u8; 4],
}

/// One attempt: 0 reuses the endpoint's live mapping, 1 tries to keep the
/// inside port, then consecutive ports from a random start. Returns 1 to
/// stop the loop.
#[inline(never)]
extern "C" fn map_flow_step(index: u64, state: *mut c_void) -> i64 {
    let state = unsafe { &mut *(state as *mut MapFlow) };
    let Some(cfg) = config() else { return 1 };
    let spec = &state.spec;
    let now = state.now;
    let proto = spec.key.proto;
    let inside = Endpoint::new(spec.key.src_addr, spec.key.src_port, proto);
    if index == 0 {
        if let Some(port) = live_binding(cfg, &inside, now) {
            if create_pair(cfg, spec, port, now).is_ok() {
                state.port = port;
                return 1;
            }
        }
        return 0;
    }
    let preferred = u16::from_be(inside.port);
    let host_order = if index == 1 && proto != IPPROTO_ICMP && in_nat_range(cfg, preferred) {
        preferred
    } else {
        let step = (index - 2) as u32;
        let span = u32::from(cfg.port_max - cfg.port_min) + 1;
        let offset = (u32::from(state.probe - cfg.port_min) + step) % span;
        cfg.port_min + offset as u16
    };
    let port = host_order.to_be();
    if proto != IPPROTO_ICMP
        && FORWARD_RULES
            .get_ptr(ForwardKey::new(port, proto))
            .is_some()
    {
        return 0;
    }
    if host_socket_uses(
        state.skb,
        proto,
        spec.new_dst,
        spec.new_dport,
        cfg.uplink_addr,
        port,
    ) {
        return 0;
    }
    let outside = Endpoint::new(cfg.uplink_addr, port, proto);
    let binding = Binding {
        peer: inside,
        expires_ns: now + lifetime_ns(cfg, proto, spec.state),
    };
    let fresh = if NAT_PORTS.insert(&outside, &binding, BPF_NOEXIST).is_ok() {
        true
    } else {
        let Some(cur) = NAT_PORTS.get_ptr(&outside) else {
            return 0;
        };
        let cur = unsafe { &*cur };
        if cur.peer != inside && cur.expires_ns > now {
            return 0;
        }
        if NAT_PORTS.insert(&outside, &binding, BPF_ANY).is_err() {
            return 0;
        }
        false
    };
    if create_pair(cfg, spec, port, now).is_ok() {
        let _ = NAT_BIND.insert(
            &inside,
            &Binding {
                peer: outside,
                expires_ns: binding.expires_ns,
            },
            BPF_ANY,
        );
        state.port = port;
        return 1;
    }
    if fresh {
        let _ = NAT_PORTS.remove(&outside);
    }
    0
}

/// Remember how the first fragment of a datagram was translated, for the
/// fragments that follow without an L4 header.
#[inline(always)]
pub fn record_fragment(p: &Pkt, src: u32, dst: u32) {
    if p.frag != FRAG_FIRST {
        return;
    }
    let key = FragKey {
        src_addr: p.src,
        dst_addr: p.dst,
        id: p.ip_id,
        proto: p.proto,
        _pad: 0,
    };
    let _ = FRAG_FLOWS.insert(
        &key,
        &FragValue {
            src_addr: src,
            dst_addr: dst,
        },
        BPF_ANY,
    );
}

/// The translation recorded for a later fragment.
#[inline(always)]
pub fn fragment_translation(p: &Pkt) -> Option<FragValue> {
    let key = FragKey {
        src_addr: p.src,
        dst_addr: p.dst,
        id: p.ip_id,
        proto: p.proto,
        _pad: 0,
    };
    FRAG_FLOWS.get_ptr(&key).map(|v| unsafe { *v })
}

#[inline(always)]
pub fn lifetime_ns(cfg: &NatConfig, proto: u8, state: u8) -> u64 {
    u64::from(binding_timeout_secs(cfg, proto, state)) * NSEC_PER_SEC
}

/// Remember the uplink's Ethernet addresses for a flow, from a packet of it
/// the lab host's stack has just routed (at the uplink's egress), for the
/// fast path to reuse.
#[inline(always)]
pub fn learn_l2(ctx: &TcContext, v: *mut FlowValue) {
    let v = unsafe { &mut *v };
    if v.flags & FLOW_L2 != 0 {
        return;
    }
    if let Some(l2) = crate::packet::read_l2(ctx) {
        v.l2 = l2;
        v.flags |= FLOW_L2;
    }
}

/// Add `n` (wrapping: `u64::MAX` is -1) to the flow entry count. Not
/// atomic (the programs' target has no atomic read-modify-write), so CPUs
/// racing may lose an update; each collection sets the exact count again.
#[inline(always)]
fn entries_add(n: u64) {
    if let Some(st) = GC_STATE.get_ptr_mut(0) {
        unsafe { (*st).entries = (*st).entries.wrapping_add(n) };
    }
}

/// Insert a flow entry, counting it when it is new.
#[inline(always)]
pub fn flow_put(key: &FlowKey, val: &FlowValue) -> Result<(), ()> {
    if NAT_FLOWS.insert(key, val, BPF_NOEXIST).is_ok() {
        entries_add(1);
        return Ok(());
    }
    NAT_FLOWS.insert(key, val, BPF_ANY).map_err(|_| ())
}

/// Remove a flow entry, if there, uncounting it.
#[inline(always)]
pub fn flow_del(key: &FlowKey) {
    if NAT_FLOWS.remove(key).is_ok() {
        entries_add(u64::MAX);
    }
}

/// How often a full table may be collected: a walk costs about 40 ns per
/// entry, so 4 µs per entry of the limit keeps collections under 1% of a
/// CPU, whatever the table's size. Between 10 ms (a small table fills with
/// closed connections within milliseconds at a high connection rate, and
/// refusing new ones for a whole second would fail them) and a second.
#[inline(always)]
fn gc_interval_ns(cfg: &NatConfig) -> u64 {
    (u64::from(cfg.flow_limit) * 4_000).clamp(10_000_000, NSEC_PER_SEC)
}

/// Set in this CPU's `GC_RESUME` slot by `nl_gc` when it hands a packet
/// back: the packet has had its collection.
const GC_DONE: u32 = 1 << 31;

/// Whether `nl_gc` just collected for the packet this CPU is working on
/// (clearing the mark). A program runs to its end on one CPU and a tail
/// call is a jump, so the mark `nl_gc` leaves is read by the program it
/// hands the packet back to, before any other packet's.
#[inline(always)]
fn just_collected() -> bool {
    let Some(slot) = GC_RESUME.get_ptr_mut(0) else {
        return false;
    };
    let slot = unsafe { &mut *slot };
    let done = *slot & GC_DONE != 0;
    *slot &= !GC_DONE;
    done
}

/// Whether a new flow may take two more entries. At the limit, expired
/// flows are collected (at most every [`gc_interval_ns`], and at most once
/// per packet whatever the clock says) and the entries counted afresh; if
/// the table is still full, the new flow is refused: established flows are
/// never evicted to make room for it.
///
/// The collection runs in `nl_gc`, tail-called here; it hands the packet
/// back to the program at `resume`, which then asks again. Returns only
/// when the answer is known without a collection.
#[inline(always)]
pub fn admit(ctx: &TcContext, cfg: &NatConfig, now: u64, resume: u32) -> bool {
    let Some(st) = GC_STATE.get_ptr_mut(0) else {
        return true;
    };
    let st = unsafe { &mut *st };
    let collected = just_collected();
    if st.entries.wrapping_add(2) <= u64::from(cfg.flow_limit) {
        return true;
    }
    if collected || now.wrapping_sub(st.last_run_ns) < gc_interval_ns(cfg) {
        return false;
    }
    st.last_run_ns = now;
    if let Some(slot) = GC_RESUME.get_ptr_mut(0) {
        unsafe { *slot = resume };
    }
    // Returns only when the tail call cannot be made (no `nl_gc` loaded).
    unsafe { TAILS.tail_call(ctx, tail::GC) };
    false
}

/// `nl_gc`: one collection of the flow table, then the packet goes back to
/// the program that asked for it (dropped if that cannot be done).
#[inline(always)]
pub fn collect(ctx: &TcContext) -> i32 {
    let Some(st) = GC_STATE.get_ptr_mut(0) else {
        return TC_ACT_SHOT;
    };
    let mut gc = Gc {
        now: now(),
        live: 0,
        freed: 0,
    };
    unsafe {
        bpf_for_each_map_elem(
            &NAT_FLOWS as *const _ as *mut c_void,
            gc_step as *mut c_void,
            &mut gc as *mut Gc as *mut c_void,
            0,
        );
        (*st).entries = gc.live;
    }
    count(stat::GC_RUNS);
    if let Some(c) = crate::maps::STATS.get_ptr_mut(stat::GC_FREED) {
        unsafe { *c += gc.freed };
    }
    let Some(slot) = GC_RESUME.get_ptr_mut(0) else {
        count(stat::DROP_TABLE_FULL);
        return TC_ACT_SHOT;
    };
    let slot = unsafe { &mut *slot };
    let resume = *slot & !GC_DONE;
    *slot = resume | GC_DONE;
    unsafe { TAILS.tail_call(ctx, resume) };
    // Not handed back: no mark may be left for the next packet.
    *slot = resume;
    count(stat::DROP_TABLE_FULL);
    TC_ACT_SHOT
}

/// What a collection works on (on the caller's stack).
#[repr(C)]
struct Gc {
    now: u64,
    live: u64,
    freed: u64,
}

/// One entry of a collection: counted when its flow is alive (either half
/// fresh), removed when not. Returns 0 to go on.
#[inline(never)]
extern "C" fn gc_step(
    _map: *mut c_void,
    key: *mut c_void,
    value: *mut c_void,
    gc: *mut c_void,
) -> i64 {
    let gc = unsafe { &mut *(gc as *mut Gc) };
    let Some(cfg) = config() else { return 1 };
    let key = unsafe { *(key as *const FlowKey) };
    let v = unsafe { &*(value as *const FlowValue) };
    // Collections run when the table is full: connections that are over go
    // too, however recently they closed (as conntrack drops them early).
    if tcp_closed(key.proto, v.state) {
        if NAT_FLOWS.remove(&key).is_ok() {
            gc.freed += 1;
        }
        return 0;
    }
    if flow_alive(cfg, &key, v, gc.now) {
        gc.live += 1;
        return 0;
    }
    if NAT_FLOWS.remove(&key).is_ok() {
        gc.freed += 1;
    }
    0
}

/// The new flow a packet from a masqueraded subnet to the outside opens.
#[inline(always)]
pub fn masquerade_spec(p: &Pkt, key: &FlowKey) -> PairSpec {
    let state = if p.proto == IPPROTO_TCP {
        tcp_next_state(0, p.tcp_flags, DIR_ORIGINAL)
    } else {
        0
    };
    PairSpec {
        key: *key,
        new_dst: p.dst,
        new_dport: p.dport,
        kind: KIND_SNAT,
        state,
        hook_original: HOOK_UPLINK_EGRESS,
        hook_reply: HOOK_UPLINK_INGRESS,
        ifindex_original: 0,
        ifindex_reply: 0,
    }
}
