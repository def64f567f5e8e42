//! The flow table (`NAT_FLOWS`): both directions of every flow, each under
//! the key its packets have at the hook that translates them. Looking a
//! packet's entry up (with its timeout), accounting a packet on it (and
//! keeping its other half consistent: repaired, or the flow dropped, never
//! a mistranslation), inserting a new flow's two entries as a pair, and
//! deleting.

use aya_ebpf::helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns};
use netlab_common::{
    stat, Endpoint, FlowKey, FlowValue, NatConfig, FLOW_ACKED, HOOK_UPLINK_INGRESS, IPPROTO_ICMP,
    IPPROTO_TCP, STATE_FIN_ORIGINAL, STATE_FIN_REPLY, STATE_RST,
};
use netlab_ebpf::{
    binding_timeout_secs, datagram_next_state, flow_timeout_secs, in_time_wait, tcp_closed,
    tcp_next_state, NSEC_PER_SEC, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};

use crate::{
    binding::{self, BPF_ANY, BPF_NOEXIST},
    flow_state, fwd_counters,
    maps::{FLOW_CLAIMS, NAT_FLOWS},
    packet::{Pkt, ICMP_ECHO},
    table,
    template::{self, FlowTemplate},
    verdict::{count, DropReason},
};

/// How far past the inside endpoint's last acknowledgement a reset or FIN
/// from the outside may fall and still end the flow.
const SEQ_WINDOW: u32 = 1 << 16;

/// The other half and the mapping are checked at most this often per flow,
/// so the common case of a packet touches one map entry.
const REFRESH_NS: u64 = if cfg!(feature = "variant") {
    NSEC_PER_SEC / 2
} else {
    NSEC_PER_SEC
};

/// The fields of a flow entry that a packet is rewritten and sent by, read
/// once, before `touch` updates the entry: every hook's known-flow path
/// starts here.
#[derive(Clone, Copy)]
pub struct Rewrite {
    pub hook: u8,
    pub kind: u8,
    pub flags: u8,
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub out_ifindex: u32,
}

#[inline(always)]
pub fn rewrite_of(v: *mut FlowValue) -> Rewrite {
    let v = unsafe { &*v };
    Rewrite {
        hook: v.hook,
        kind: v.kind,
        flags: v.flags,
        src: v.src_addr,
        dst: v.dst_addr,
        sport: v.src_port,
        dport: v.dst_port,
        out_ifindex: v.out_ifindex,
    }
}

/// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE): the flows' clock.
#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The entry under `key`, live or not.
#[inline(always)]
pub fn get(key: &FlowKey) -> Option<*mut FlowValue> {
    NAT_FLOWS.get_ptr_mut(key)
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
pub fn points_back(peer: &FlowValue, key: &FlowKey) -> bool {
    peer.src_addr == key.dst_addr
        && peer.dst_addr == key.src_addr
        && peer.src_port == key.dst_port
        && peer.dst_port == key.src_port
}

/// Tries at a free client port for a forwarded flow (see [`free_reply_key`]).
const CLIENT_PORT_TRIES: u32 = 4;

/// Make the reply key of a new forwarded flow `t` one the target may
/// take. A client that reuses its source port towards another forward of
/// the same target meets its earlier connection there, as the same
/// four-tuple at the target: a live one (a conflict), or one closed with
/// FINs less than `TIME_WAIT_SECS` ago ([`closed_recently`]), which the
/// target may hold in TIME_WAIT and refuse the SYN on (PAWS: the new connection's timestamps
/// are unrelated to the old one's). As conntrack's null binding does, the
/// client's port is changed then (its replies are changed back), to a
/// random port whose reply key no flow holds; after a few taken ports the
/// key stays and [`insert_pair`] decides. A tuple closed by a reset, or
/// long enough ago, is taken over as it is.
#[inline(always)]
pub fn free_reply_key(cfg: &NatConfig, t: &mut FlowTemplate, now: u64) {
    let opening = t.opening.key;
    let key = t.other.key;
    let Some(v) = NAT_FLOWS.get_ptr(&key) else {
        return;
    };
    let v = unsafe { &*v };
    if points_back(v, &opening) {
        return;
    }
    let live = !tcp_closed(key.proto, v.state) && flow_alive(cfg, &key, v, now);
    let target = Endpoint::new(key.src_addr, key.src_port, key.proto);
    if !live && closed_recently(&key, &target, now).is_none() {
        return;
    }
    for _ in 0..CLIENT_PORT_TRIES {
        let random = unsafe { bpf_get_prandom_u32() };
        let port = (1024 + random % (65536 - 1024)) as u16;
        let mut other = key;
        other.dst_port = port.to_be();
        if NAT_FLOWS.get_ptr(&other).is_none() {
            t.set_port(port.to_be());
            count(stat::CLIENT_PORT_CHANGED);
            return;
        }
    }
}

/// Whether the flow of the entry `(key, v)` is alive: either half fresh.
#[inline(always)]
pub fn flow_alive(cfg: &NatConfig, key: &FlowKey, v: &FlowValue, now: u64) -> bool {
    if alive(cfg, key.proto, v, now) {
        return true;
    }
    let peer_key = FlowKey::peer_of(v, key.proto);
    NAT_FLOWS.get_ptr(&peer_key).is_some_and(|pv| {
        let peer = unsafe { &*pv };
        points_back(peer, key) && alive(cfg, key.proto, peer, now)
    })
}

/// The live entry a packet belongs to. An echo request and an echo reply
/// with identifier 0 have the same key (`(0, 0)`); the entry's
/// translation tells them apart (a request's keeps destination "port" 0).
#[inline(always)]
pub fn lookup_packet(cfg: &NatConfig, p: &Pkt, key: &FlowKey, now: u64) -> Option<*mut FlowValue> {
    let v = lookup_live(cfg, key, now)?;
    if reopens(key, v, p) {
        return None;
    }
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

/// Whether `p` is a SYN opening a new connection on the tuple of one that
/// is over (reset, or closed both ways). As conntrack does with a TIME_WAIT
/// entry, the old flow goes (both halves) and the packet is then a new
/// flow's first, translated by the forwards and the mapping as they are
/// now: a forward changed since would otherwise still lead to its old
/// target, and a mapping's outside port, freed at the close, be reused
/// without being reserved again.
#[inline(always)]
pub fn reopens(key: &FlowKey, v: *mut FlowValue, p: &Pkt) -> bool {
    let val = unsafe { &*v };
    let syn_only = p.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN;
    if p.proto != IPPROTO_TCP || !syn_only || !tcp_closed(key.proto, val.state) {
        return false;
    }
    let peer_key = FlowKey::peer_of(val, key.proto);
    if NAT_FLOWS
        .get_ptr(&peer_key)
        .is_some_and(|pv| points_back(unsafe { &*pv }, key))
    {
        delete(&peer_key);
    }
    delete(key);
    true
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
            delete(&peer_key);
        }
    }
    delete(key);
    count(stat::EXPIRED);
    None
}

/// Whether a reset or FIN from the outside may end the flow: only near the
/// acknowledgement the inside endpoint last sent (RFC 5961). A reset
/// elsewhere is spoofed and dropped. A FIN elsewhere still goes through
/// without closing the flow: a real one can run ahead of that
/// acknowledgement by more than the window kept here (a sender's FIN right
/// after a burst of data in flight), and the endpoint's TCP, which knows its
/// window, drops a spoofed one itself.
#[inline(always)]
fn outside_close_counts(key: &FlowKey, v: &FlowValue, p: &Pkt) -> Result<bool, DropReason> {
    if p.tcp_flags & (TCP_RST | TCP_FIN) == 0 || v.hook != HOOK_UPLINK_INGRESS {
        return Ok(true);
    }
    let Some(pv) = NAT_FLOWS.get_ptr(&FlowKey::peer_of(v, key.proto)) else {
        return Ok(true);
    };
    let peer = unsafe { &*pv };
    let in_window =
        peer.flags & FLOW_ACKED == 0 || p.tcp_seq.wrapping_sub(peer.last_ack) < SEQ_WINDOW;
    if !in_window && p.tcp_flags & TCP_RST != 0 {
        return Err(DropReason::OutOfWindow);
    }
    Ok(in_window)
}

/// Account a translated packet on its entry (and on its forward's counter,
/// if it came through one). Every `REFRESH_NS`, and on
/// every state change, the other half is checked (rebuilt when evicted, the
/// flow dropped when it disagrees) and the mapping refreshed.
#[inline(always)]
pub fn touch(
    cfg: &NatConfig,
    key: &FlowKey,
    v: *mut FlowValue,
    p: &Pkt,
    now: u64,
) -> Result<(), DropReason> {
    let val = unsafe { &mut *v };
    let mut closes = true;
    if p.proto == IPPROTO_TCP {
        closes = outside_close_counts(key, val, p)?;
        // A FIN not believed carries no acknowledgement worth keeping either.
        if closes && p.tcp_flags & TCP_ACK != 0 {
            val.last_ack = p.tcp_ack;
            val.flags |= FLOW_ACKED;
        }
    }
    let old_state = val.state;
    let state = if p.proto == IPPROTO_TCP {
        let flags = if closes {
            p.tcp_flags
        } else {
            p.tcp_flags & !TCP_FIN
        };
        tcp_next_state(old_state, flags, val.dir)
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
    fwd_counters::add(val.forward, val.dir, p.len);
    if state == old_state && !due {
        return Ok(());
    }
    if state != old_state {
        flow_state::set(val, old_state, state);
    }
    check_peer(key, val, old_state, state)?;
    if let Some((inside, ext_port)) = binding::mapping_of(key, val) {
        let expires = now + u64::from(binding_timeout_secs(cfg, key.proto, state)) * NSEC_PER_SEC;
        binding::refresh(cfg, &inside, ext_port, expires);
    }
    Ok(())
}

/// The other half of `(key, val)`: given the new state (which came from
/// `old`), rebuilt when it was evicted; when it belongs to another flow,
/// this one is dropped.
#[inline(always)]
fn check_peer(key: &FlowKey, val: &FlowValue, old: u8, state: u8) -> Result<(), DropReason> {
    let peer_key = FlowKey::peer_of(val, key.proto);
    match NAT_FLOWS.get_ptr_mut(&peer_key) {
        Some(pv) => {
            if !points_back(unsafe { &*pv }, key) {
                delete(key);
                return Err(DropReason::Conflict);
            }
            flow_state::set(pv, old, state);
        }
        None => {
            if let Ok(pv) = template::peer_entry(key, val) {
                if NAT_FLOWS.insert(&peer_key, &*pv, BPF_NOEXIST).is_ok() {
                    table::entries_add(1);
                    count(stat::REPAIRED);
                }
            }
        }
    }
    Ok(())
}

/// When the entry under `key` is a TCP connection that closed with FINs
/// less than `TIME_WAIT_SECS` ago, for another inside endpoint than
/// `inside`: its close time (its last packet). The remote end may still
/// hold the tuple in TIME_WAIT and refuse a new connection's SYN on it
/// (its timestamps and sequence numbers are another endpoint's), so the
/// port search passes such a tuple over while other ports are free. A
/// reset ends TIME_WAIT (Linux's default); the same inside endpoint
/// continues its own clock.
#[inline(always)]
pub fn closed_recently(key: &FlowKey, inside: &Endpoint, now: u64) -> Option<u64> {
    if key.proto != IPPROTO_TCP {
        return None;
    }
    let v = unsafe { &*NAT_FLOWS.get_ptr(key)? };
    let fins = STATE_FIN_ORIGINAL | STATE_FIN_REPLY;
    if v.state & (fins | STATE_RST) != fins {
        return None;
    }
    let closed = v.last_seen_ns;
    if !in_time_wait(closed, now) {
        return None;
    }
    match binding::mapping_of(key, v) {
        Some((owner, _)) if owner == *inside => None,
        _ => Some(closed),
    }
}

/// Take `key` for a new flow's entry `val`. The key may not belong to
/// another live flow; a stale half of this very flow is taken over, and so
/// is the tuple of a connection that is over (as conntrack reopens a
/// TIME_WAIT entry on a new SYN), its other half going with it. The port
/// search offers a recently closed tuple only as a last resort
/// ([`closed_recently`]).
///
/// A takeover writes under a claim of the key (`FLOW_CLAIMS`), and only if
/// the entry it judged is still there: two CPUs that found the same dead
/// entry would otherwise both overwrite it, and two flows share one tuple
/// (a program test saw it in one run of five, 1,500 flows per CPU).
#[inline(always)]
fn reserve(cfg: &NatConfig, key: &FlowKey, val: &FlowValue, now: u64) -> Result<(), DropReason> {
    if NAT_FLOWS.insert(key, val, BPF_NOEXIST).is_ok() {
        table::entries_add(1);
        return Ok(());
    }
    // No entry under the key: the insert failed for want of room.
    let judged = NAT_FLOWS.get_ptr(key).ok_or(DropReason::TableFull)?;
    let cur = unsafe { &*judged };
    let same = cur.src_addr == val.src_addr
        && cur.dst_addr == val.dst_addr
        && cur.src_port == val.src_port
        && cur.dst_port == val.dst_port;
    let over = tcp_closed(key.proto, cur.state);
    // A quiet half of a one-way stream is as alive as the stream.
    if !same && !over && flow_alive(cfg, key, cur, now) {
        return Err(DropReason::Conflict);
    }
    if same {
        // This flow's own stale half: any CPU writing it writes the same.
        return NAT_FLOWS
            .insert(key, val, BPF_ANY)
            .map_err(|_| DropReason::Conflict);
    }
    // The claim's value is never read: the key's own byte serves, where a
    // constant would take a stack slot the port search's callback lacks.
    if FLOW_CLAIMS.insert(key, &key.proto, BPF_NOEXIST).is_err() {
        return Err(DropReason::Conflict);
    }
    let taken = take_over(key, val, judged);
    let _ = FLOW_CLAIMS.remove(key);
    taken
}

/// [`reserve`]'s write, claimed: `key`'s entry is still `judged` (another
/// CPU's takeover since would have put a new element there: an update of a
/// hash map's key always does), the flow it was half of loses its other
/// half, and `val` takes the key. Not caught: the dead entry removed (by a
/// collection) and the key inserted anew on the CPU that freed it, which
/// may hand out the same element, both between the judgement and the claim.
#[inline(always)]
fn take_over(key: &FlowKey, val: &FlowValue, judged: *const FlowValue) -> Result<(), DropReason> {
    if NAT_FLOWS.get_ptr(key) != Some(judged) {
        return Err(DropReason::Conflict);
    }
    let old_peer = FlowKey::peer_of(unsafe { &*judged }, key.proto);
    if NAT_FLOWS
        .get_ptr(&old_peer)
        .is_some_and(|p| points_back(unsafe { &*p }, key))
    {
        delete(&old_peer);
    }
    NAT_FLOWS
        .insert(key, val, BPF_ANY)
        .map_err(|_| DropReason::Conflict)
}

/// Insert both entries of a new flow as a pair, as Cilium's NAT does: the
/// other direction first and exclusively (its key may be another flow's:
/// see [`reserve`]), then the opening packet's; if that fails the first is
/// taken out again, so a flow never exists by halves.
#[inline(always)]
pub fn insert_pair(cfg: &NatConfig, t: &FlowTemplate, now: u64) -> Result<(), DropReason> {
    let (opening, other) = t.entries(now)?;
    reserve(cfg, &t.other.key, other, now)?;
    if put(&t.opening.key, opening).is_err() {
        delete(&t.other.key);
        return Err(DropReason::TableFull);
    }
    Ok(())
}

/// Insert a flow entry, counting it when it is new.
#[inline(always)]
pub fn put(key: &FlowKey, val: &FlowValue) -> Result<(), DropReason> {
    if NAT_FLOWS.insert(key, val, BPF_NOEXIST).is_ok() {
        table::entries_add(1);
        return Ok(());
    }
    NAT_FLOWS
        .insert(key, val, BPF_ANY)
        .map_err(|_| DropReason::TableFull)
}

/// Remove a flow entry, if there, uncounting it.
#[inline(always)]
pub fn delete(key: &FlowKey) {
    if NAT_FLOWS.remove(key).is_ok() {
        table::entries_add(u64::MAX);
    }
}
