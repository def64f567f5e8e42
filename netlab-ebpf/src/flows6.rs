//! The IPv6 flow table (`NAT6_FLOWS`): both directions of each masqueraded,
//! forwarded or hairpinned flow, each entry saying at which hook its
//! packets are rewritten and counting them, the original direction's entry
//! holding the flow's state and, for a flow that holds its client's port,
//! the refresh of that port's reservation.

use netlab_common::{
    Endpoint6, Flow6Key, Flow6Value, NatConfig, DIR_ORIGINAL, DIR_REPLY, HOOK_BRIDGE_INGRESS,
    HOOK_LOCAL_EGRESS, HOOK_UPLINK_EGRESS, HOOK_UPLINK_INGRESS, IPPROTO_ICMPV6, IPPROTO_TCP,
    STATE_FIN_ORIGINAL, STATE_FIN_REPLY, STATE_REPLIED, STATE_RST,
};
use netlab_ebpf::{
    binding_timeout_secs, datagram_next_state, flow_timeout_secs, in_time_wait, tcp_closed,
    tcp_next_state, NSEC_PER_SEC, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};

use crate::{
    binding::{BPF_ANY, BPF_NOEXIST},
    binding6, flow_state, fwd_counters,
    maps::{FLOW6_CLAIMS, NAT6_FLOWS, SCRATCH6},
    packet6::{same_addr, Pkt6, ICMPV6_ECHO_REQUEST},
    table,
    verdict::DropReason,
};

/// The entry under `key`, live or not.
#[inline(always)]
pub fn get(key: &Flow6Key) -> Option<*mut Flow6Value> {
    NAT6_FLOWS.get_ptr_mut(key)
}

/// Remove the entry under `key`, if there is one.
#[inline(always)]
pub fn remove(key: &Flow6Key) {
    let _ = NAT6_FLOWS.remove(key);
}

/// The original direction's entry of the flow `v` is a direction of.
#[inline(always)]
pub fn original(v: *mut Flow6Value) -> Option<*mut Flow6Value> {
    let val = unsafe { &*v };
    if val.dir == DIR_ORIGINAL {
        Some(v)
    } else {
        get(&val.peer)
    }
}

/// The entry whose state says whether the flow of the reply entry `v`
/// holds its tuple: its original entry or, while that is not there
/// (another CPU has claimed the tuple and is storing its flow, or it was
/// lost), the reply entry itself, whose own times then count: a fresh
/// claim holds the tuple for a new flow's timeout.
#[inline(always)]
pub fn tuple_state(v: *mut Flow6Value) -> *mut Flow6Value {
    original(v).unwrap_or(v)
}

/// Whether the flow whose original entry is `orig` has not timed out.
#[inline(always)]
pub fn alive(cfg: &NatConfig, proto: u8, orig: &Flow6Value, now: u64) -> bool {
    now <= orig.last_seen_ns + u64::from(flow_timeout_secs(cfg, proto, orig.state)) * NSEC_PER_SEC
}

/// Whether the flow whose original entry is `orig` still holds its reply
/// tuple: alive, or a TCP connection closed with FINs less than TIME_WAIT
/// ago (the remote side may still hold the tuple; one reset is over).
#[inline(always)]
pub fn holds_tuple(cfg: &NatConfig, proto: u8, orig: &Flow6Value, now: u64) -> bool {
    if !tcp_closed(proto, orig.state) {
        return alive(cfg, proto, orig, now);
    }
    if orig.state & STATE_RST != 0 {
        return false;
    }
    in_time_wait(orig.last_seen_ns, now)
}

/// Whether a packet without a flow may open one: not a reset, not an echo
/// reply.
#[inline(always)]
pub fn opens_flow(p: &Pkt6) -> bool {
    match p.proto {
        IPPROTO_TCP => p.tcp_flags & TCP_RST == 0,
        IPPROTO_ICMPV6 => p.icmp_type == ICMPV6_ECHO_REQUEST,
        _ => true,
    }
}

/// The entry under `key` that `hook` rewrites, and its flow's original
/// entry, while the flow lives.
#[inline(always)]
pub fn live_at(
    cfg: &NatConfig,
    key: &Flow6Key,
    hook: u8,
    now: u64,
) -> Option<(*mut Flow6Value, *mut Flow6Value)> {
    let v = get(key)?;
    if unsafe { (*v).hook } != hook {
        return None;
    }
    let orig = original(v)?;
    alive(cfg, key.proto, unsafe { &*orig }, now).then_some((v, orig))
}

/// [`live_at`] for the packet `p`, unless `p` reopens the flow's tuple
/// ([`reopens`]): then the old flow is gone and `p` is a new flow's.
#[inline(always)]
pub fn live_for(
    cfg: &NatConfig,
    p: &Pkt6,
    hook: u8,
    now: u64,
) -> Option<(*mut Flow6Value, *mut Flow6Value)> {
    let (v, orig) = live_at(cfg, &p.key, hook, now)?;
    (!reopens(p, v, orig)).then_some((v, orig))
}

/// Whether `p` is a SYN opening a new connection on the tuple of a flow
/// that is over (reset, or closed both ways). As IPv4's `flows::reopens`
/// (and conntrack with a TIME_WAIT entry): the old flow goes, both
/// entries, and `p` is translated as a new flow's first packet by the
/// forwards and mappings as they are now, not to where a forward led
/// before it changed.
#[inline(always)]
fn reopens(p: &Pkt6, v: *mut Flow6Value, orig: *mut Flow6Value) -> bool {
    let syn_only = p.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN;
    if p.proto != IPPROTO_TCP || !syn_only || !tcp_closed(p.proto, unsafe { (*orig).state }) {
        return false;
    }
    let peer = unsafe { (*v).peer };
    if points_back(&peer, &p.key) {
        remove(&peer);
    }
    remove(&p.key);
    true
}

/// Account a translated packet `p` on its own entry `v` (packets, bytes)
/// and on its flow's original entry `orig` (state, last packet), and keep
/// the client's port reserved for as long as the flow's state asks (a
/// masqueraded or hairpinned flow; a forward's port is the forward's).
#[inline(always)]
pub fn touch(cfg: &NatConfig, p: &Pkt6, v: *mut Flow6Value, orig: *mut Flow6Value, now: u64) {
    let dir = unsafe { (*v).dir };
    // The original direction's key: this packet's, or the entry's peer.
    let out = if dir == DIR_ORIGINAL {
        &p.key
    } else {
        unsafe { &(*v).peer }
    };
    unsafe {
        (*v).packets += 1;
        (*v).bytes += u64::from(p.len);
        fwd_counters::add((*v).forward, dir, p.len);
    }
    let o = unsafe { &mut *orig };
    let old = o.state;
    let state = if p.proto == IPPROTO_TCP {
        tcp_next_state(old, p.tcp_flags, dir)
    } else {
        datagram_next_state(old, dir)
    };
    if state != old {
        flow_state::set6(o, old, state);
    }
    // Refreshed on every packet: doing it once per `REFRESH_NS`, as IPv4
    // does, took `nl_bridge_in6` past Linux 6.1's million verified
    // instructions.
    o.last_seen_ns = now;
    let port = match o.hook {
        HOOK_UPLINK_EGRESS => o.port,
        HOOK_BRIDGE_INGRESS => o.hairpin_sport,
        _ => return,
    };
    let hold = u64::from(binding_timeout_secs(cfg, p.proto, state)) * NSEC_PER_SEC;
    let inside = Endpoint6::new(out.src_addr, out.src_port, out.proto);
    binding6::refresh(port, &inside, now + hold);
}

/// Whether `p` leaves its flow's state (original entry `orig`) as it is:
/// the flow has been answered and is not closing, and `p` is no SYN, FIN
/// or reset. The fast path takes only such packets and accounts them with
/// [`touch_steady`]; the others go through the stack to `nl_uplink_out6`.
#[inline(always)]
pub fn steady(p: &Pkt6, orig: &Flow6Value) -> bool {
    orig.state & STATE_REPLIED != 0
        && orig.state & (STATE_RST | STATE_FIN_ORIGINAL | STATE_FIN_REPLY) == 0
        && (p.proto != IPPROTO_TCP || p.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0)
}

/// [`touch`] for a [`steady`] packet leaving by the uplink: counted, the
/// flow's last packet, and a masqueraded flow's port reserved for its
/// state's timeout. What it leaves out (the state machine, the peer's key)
/// is what took `nl_node_in6` past Linux 6.1's million verified
/// instructions.
#[inline(always)]
pub fn touch_steady(
    cfg: &NatConfig,
    p: &Pkt6,
    v: *mut Flow6Value,
    orig: *mut Flow6Value,
    now: u64,
) {
    unsafe {
        (*v).packets += 1;
        (*v).bytes += u64::from(p.len);
        fwd_counters::add((*v).forward, (*v).dir, p.len);
    }
    let o = unsafe { &mut *orig };
    o.last_seen_ns = now;
    if v != orig || o.hook != HOOK_UPLINK_EGRESS {
        return;
    }
    let hold = u64::from(flow_timeout_secs(cfg, p.proto, o.state)) * NSEC_PER_SEC;
    let inside = Endpoint6::new(p.key.src_addr, p.key.src_port, p.key.proto);
    binding6::refresh(o.port, &inside, now + hold);
}

/// The key of the replies to a flow whose first packet has key `out`,
/// once it goes out from `uplink`:`port`.
#[inline(always)]
pub fn reply_key(out: &Flow6Key, uplink: &[u8; 16], port: u16) -> Flow6Key {
    // An echo reply is keyed (0, id), as the request (id, 0).
    let remote_port = if out.proto == IPPROTO_ICMPV6 {
        0
    } else {
        out.dst_port
    };
    Flow6Key::new(out.dst_addr, *uplink, remote_port, port, out.proto)
}

/// One direction's rewrite: the hook that makes it, the address and port
/// it rewrites to (the source's at the uplink's egress, the destination's
/// elsewhere) and, for a hairpin, the source port.
pub struct Rewrite6<'a> {
    pub hook: u8,
    pub addr: &'a [u8; 16],
    pub port: u16,
    pub hairpin_sport: u16,
}

/// Write a new flow's entry for direction `dir` (its key's peer `peer`,
/// rewritten by `r`, counting on the counter `forward`) into `SCRATCH6`:
/// an entry beside the packet's keys does not fit on the stack.
#[inline(always)]
fn stage(r: &Rewrite6, dir: u8, peer: &Flow6Key, forward: u16, now: u64) -> Result<(), DropReason> {
    let Some(v) = SCRATCH6.get_ptr_mut(0) else {
        return Err(DropReason::NoScratch);
    };
    let v = unsafe { &mut *v };
    v.addr = *r.addr;
    v.port = r.port;
    v.hairpin_sport = r.hairpin_sport;
    v.hook = r.hook;
    v.dir = dir;
    v.peer = *peer;
    v.forward = forward;
    v.state = 0;
    v.created_ns = now;
    v.last_seen_ns = now;
    v.packets = 0;
    v.bytes = 0;
    Ok(())
}

/// The new flow [`store_original`] stored last on this CPU: its original
/// entry (still staged in `SCRATCH6`) and its first packet's key (its
/// reply entry's peer).
#[inline(always)]
pub fn just_stored() -> Option<(&'static Flow6Value, &'static Flow6Key)> {
    let orig = unsafe { &*SCRATCH6.get_ptr(0)? };
    let reply = unsafe { &*NAT6_FLOWS.get_ptr(&orig.peer)? };
    Some((orig, &reply.peer))
}

/// Store what `SCRATCH6` holds under `key`.
#[inline(always)]
fn store_staged(key: &Flow6Key, flags: u64) -> Result<(), DropReason> {
    let Some(v) = SCRATCH6.get_ptr(0) else {
        return Err(DropReason::NoScratch);
    };
    NAT6_FLOWS
        .insert(key, unsafe { &*v }, flags)
        .map_err(|_| DropReason::TableFull)
}

/// Store a new flow's two entries: under `opening` (its first packet's
/// key) with the rewrite `original`, under `reply` with `back`, both
/// counting on the counter `forward` (0: none).
#[inline(always)]
fn insert_flow(
    opening: &Flow6Key,
    reply: &Flow6Key,
    original: Rewrite6,
    back: Rewrite6,
    forward: u16,
    now: u64,
) -> Result<(), DropReason> {
    stage(&back, DIR_REPLY, opening, forward, now)?;
    store_staged(reply, BPF_ANY)?;
    store_original(opening, reply, original, forward, now)
}

/// Store a new flow's original entry, its reply entry stored already
/// (taken back if this one cannot be).
#[inline(always)]
fn store_original(
    opening: &Flow6Key,
    reply: &Flow6Key,
    original: Rewrite6,
    forward: u16,
    now: u64,
) -> Result<(), DropReason> {
    stage(&original, DIR_ORIGINAL, reply, forward, now)?;
    if let Err(e) = store_staged(opening, BPF_ANY) {
        remove(reply);
        return Err(e);
    }
    table::entries6_add(2);
    Ok(())
}

/// Store the reply entry staged by [`stage_masquerade`] or
/// [`stage_hairpin`] under `reply`, unless a flow holds that tuple
/// ([`holds_tuple`]): the claim that makes a port found free this
/// flow's, so of two CPUs that find the same port for the same
/// destination at once, one takes it and the other searches on. The entry
/// of a flow that no longer holds the tuple is taken over under a claim of
/// the key (`FLOW6_CLAIMS`), judged again once claimed: two CPUs that
/// judged it at once would otherwise both take it (a program
/// test saw it in one run of five), as IPv4's `flows::reserve`. Calls no
/// function: it runs under `bpf_loop`.
#[inline(always)]
pub fn claim_reply(cfg: &NatConfig, reply: &Flow6Key, now: u64) -> bool {
    let Some(v) = SCRATCH6.get_ptr(0) else {
        return false;
    };
    let v = unsafe { &*v };
    if NAT6_FLOWS.insert(reply, v, BPF_NOEXIST).is_ok() {
        return true;
    }
    if reply_holder(cfg, reply, now).is_some() {
        return false;
    }
    // The claim's value is never read: the key's own byte serves.
    if FLOW6_CLAIMS
        .insert(reply, &reply.proto, BPF_NOEXIST)
        .is_err()
    {
        return false;
    }
    // Judged again, claimed: another CPU may have taken the tuple since.
    let taken = reply_holder(cfg, reply, now).is_none() && {
        release_tuple(reply, &v.peer);
        remove(reply);
        NAT6_FLOWS.insert(reply, v, BPF_NOEXIST).is_ok()
    };
    let _ = FLOW6_CLAIMS.remove(reply);
    taken
}

/// The tuple `reply` of a flow that no longer holds it (closed, timed
/// out) is being taken over by the flow `opening`: the old flow's
/// original entry goes, or a packet from its endpoint (a port reused after
/// a reset) would still be sent out on the tuple, now another flow's.
#[inline(always)]
fn release_tuple(reply: &Flow6Key, opening: &Flow6Key) {
    let Some(v) = get(reply) else { return };
    // Read in place: a copy would take stack from the port search's
    // callback, which 6.1 counts with the hook's.
    let old = unsafe { &(*v).peer };
    if same_key(old, opening) {
        return;
    }
    if points_back(old, reply) {
        remove(old);
    }
}

/// Whether the entry under `peer` is the other direction of the entry
/// under `key` (it names `key` as its peer).
#[inline(always)]
pub fn points_back(peer: &Flow6Key, key: &Flow6Key) -> bool {
    get(peer).is_some_and(|pv| same_key(unsafe { &(*pv).peer }, key))
}

/// Key equality, field by field (see `binding6::same`).
#[inline(always)]
pub fn same_key(a: &Flow6Key, b: &Flow6Key) -> bool {
    a.src_port == b.src_port
        && a.dst_port == b.dst_port
        && a.proto == b.proto
        && same_addr(&a.src_addr, &b.src_addr)
        && same_addr(&a.dst_addr, &b.dst_addr)
}

/// The inside endpoint of the flow that holds the reply tuple `reply`
/// ([`holds_tuple`]), if one does.
#[inline(always)]
pub fn reply_holder(cfg: &NatConfig, reply: &Flow6Key, now: u64) -> Option<Endpoint6> {
    let v = get(reply)?;
    if !holds_tuple(cfg, reply.proto, unsafe { &*tuple_state(v) }, now) {
        return None;
    }
    let opening = unsafe { &(*v).peer };
    Some(Endpoint6::new(
        opening.src_addr,
        opening.src_port,
        opening.proto,
    ))
}

/// The reply entry of a masqueraded flow whose first packet has key
/// `out`, staged for [`claim_reply`]: the replies come back to the node,
/// whichever port the flow gets.
#[inline(always)]
pub fn stage_masquerade(out: &Flow6Key, now: u64) -> Result<(), DropReason> {
    let back = Rewrite6 {
        hook: HOOK_UPLINK_INGRESS,
        addr: &out.src_addr,
        port: out.src_port,
        hairpin_sport: 0,
    };
    stage(&back, DIR_REPLY, out, 0, now)
}

/// A masqueraded flow, its reply tuple claimed on `port`: `out` goes out
/// from `uplink`:`port`.
#[inline(always)]
pub fn store_masquerade(
    out: &Flow6Key,
    uplink: &[u8; 16],
    port: u16,
    now: u64,
) -> Result<(), DropReason> {
    let reply = reply_key(out, uplink, port);
    let original = Rewrite6 {
        hook: HOOK_UPLINK_EGRESS,
        addr: uplink,
        port,
        hairpin_sport: 0,
    };
    store_original(out, &reply, original, 0, now)
}

/// A forwarded flow: `inbound` (to the uplink's forwarded port) goes to
/// `target`:`port`; the replies leave from the forwarded port.
#[inline(always)]
pub fn insert_forwarded(
    inbound: &Flow6Key,
    target: &[u8; 16],
    port: u16,
    forward: u16,
    now: u64,
) -> Result<(), DropReason> {
    let reply = Flow6Key::new(
        *target,
        inbound.src_addr,
        port,
        inbound.src_port,
        inbound.proto,
    );
    let original = Rewrite6 {
        hook: HOOK_UPLINK_INGRESS,
        addr: target,
        port,
        hairpin_sport: 0,
    };
    let back = Rewrite6 {
        hook: HOOK_UPLINK_EGRESS,
        addr: &inbound.dst_addr,
        port: inbound.dst_port,
        hairpin_sport: 0,
    };
    insert_flow(inbound, &reply, original, back, forward, now)
}

/// The reply entry of a hairpinned flow (both directions rewritten at
/// the bridge's ingress), staged for [`claim_reply`]: the replies to
/// `opening` (a node to the uplink's port) come back from the port the
/// node asked for.
#[inline(always)]
pub fn stage_hairpin(opening: &Flow6Key, forward: u16, now: u64) -> Result<(), DropReason> {
    let back = Rewrite6 {
        hook: HOOK_BRIDGE_INGRESS,
        addr: &opening.src_addr,
        port: opening.src_port,
        hairpin_sport: opening.dst_port,
    };
    stage(&back, DIR_REPLY, opening, forward, now)
}

/// A hairpinned flow, its reply tuple claimed: `opening` goes to `target`
/// from the uplink's address and the client's `sport` (its own mapping).
#[inline(always)]
pub fn store_hairpin(
    opening: &Flow6Key,
    target: &Endpoint6,
    uplink: &[u8; 16],
    sport: u16,
    forward: u16,
    now: u64,
) -> Result<(), DropReason> {
    let reply = Flow6Key::new(target.addr, *uplink, target.port, sport, opening.proto);
    let original = Rewrite6 {
        hook: HOOK_BRIDGE_INGRESS,
        addr: &target.addr,
        port: target.port,
        hairpin_sport: sport,
    };
    store_original(opening, &reply, original, forward, now)
}

/// The key of the replies to the lab host's own connection `opening`
/// (`U:s → U:f`) taken to `target`: `T:t → U:s`.
#[inline(always)]
pub fn local_reply_key(opening: &Flow6Key, target: &Endpoint6) -> Flow6Key {
    Flow6Key::new(
        target.addr,
        opening.src_addr,
        target.port,
        opening.src_port,
        opening.proto,
    )
}

/// The lab host's own connection `opening` to a forward, its reply tuple
/// `reply` claimed (with the entry [`stage_hairpin`] makes): it goes to
/// `target` from the connection's own address and port.
#[inline(always)]
pub fn store_local(
    opening: &Flow6Key,
    reply: &Flow6Key,
    target: &Endpoint6,
    forward: u16,
    now: u64,
) -> Result<(), DropReason> {
    let original = Rewrite6 {
        hook: HOOK_LOCAL_EGRESS,
        addr: &target.addr,
        port: target.port,
        hairpin_sport: 0,
    };
    store_original(opening, reply, original, forward, now)
}
