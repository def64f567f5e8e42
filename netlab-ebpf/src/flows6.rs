//! The IPv6 flow table (`NAT6_FLOWS`): both directions of each masqueraded,
//! forwarded or hairpinned flow, each entry saying at which hook its
//! packets are rewritten and counting them, the original direction's entry
//! holding the flow's state and, for a flow that holds its client's port,
//! the refresh of that port's reservation.

use netlab_common::{
    Endpoint6, Flow6Key, Flow6Value, NatConfig, DIR_ORIGINAL, DIR_REPLY, HOOK_BRIDGE_INGRESS,
    HOOK_UPLINK_EGRESS, HOOK_UPLINK_INGRESS, IPPROTO_ICMPV6, IPPROTO_TCP, STATE_RST,
    TIME_WAIT_SECS,
};
use netlab_ebpf::{
    binding_timeout_secs, datagram_next_state, flow_timeout_secs, tcp_closed, tcp_next_state,
    NSEC_PER_SEC, TCP_RST,
};

use crate::{
    binding6,
    maps::{NAT6_FLOWS, SCRATCH6},
    packet6::{Pkt6, ICMPV6_ECHO_REQUEST},
    verdict::DropReason,
};

/// The entry under `key`, live or not.
#[inline(always)]
pub fn get(key: &Flow6Key) -> Option<*mut Flow6Value> {
    NAT6_FLOWS.get_ptr_mut(key)
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
    let closed = orig.last_seen_ns;
    !(now > closed && now - closed >= TIME_WAIT_SECS * NSEC_PER_SEC)
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

/// Account a translated packet of direction `dir` on its own entry `v`
/// (packets, bytes) and on the flow's original entry `orig` (stored under
/// `out`: state, last packet), and keep a masqueraded flow's outside port
/// reserved for as long as the flow's state asks.
#[inline(always)]
pub fn touch(
    cfg: &NatConfig,
    out: &Flow6Key,
    v: *mut Flow6Value,
    orig: *mut Flow6Value,
    p: &Pkt6,
    dir: u8,
    now: u64,
) {
    unsafe {
        (*v).packets += 1;
        (*v).bytes += u64::from(p.len);
    }
    let o = unsafe { &mut *orig };
    o.state = if p.proto == IPPROTO_TCP {
        tcp_next_state(o.state, p.tcp_flags, dir)
    } else {
        datagram_next_state(o.state, dir)
    };
    o.last_seen_ns = now;
    // A masqueraded or hairpinned flow holds its client's port; a
    // forward's port is the forward's.
    let port = match o.hook {
        HOOK_UPLINK_EGRESS => o.port,
        HOOK_BRIDGE_INGRESS => o.hairpin_sport,
        _ => return,
    };
    let hold = u64::from(binding_timeout_secs(cfg, p.proto, o.state)) * NSEC_PER_SEC;
    let inside = Endpoint6::new(out.src_addr, out.src_port, out.proto);
    binding6::refresh(port, &inside, now + hold);
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

/// Store a new flow's two entries: `out` (its first packet's key, which
/// goes out from `uplink`:`port`) and the reply's. Built in `SCRATCH6`:
/// an entry and two keys do not fit on the stack beside the packet's.
#[inline(always)]
pub fn insert_pair(
    out: &Flow6Key,
    uplink: &[u8; 16],
    port: u16,
    now: u64,
) -> Result<(), DropReason> {
    let Some(v) = SCRATCH6.get_ptr_mut(0) else {
        return Err(DropReason::NoScratch);
    };
    let v = unsafe { &mut *v };
    v.addr = *uplink;
    v.port = port;
    v.dir = DIR_ORIGINAL;
    v.hook = HOOK_UPLINK_EGRESS;
    v.state = 0;
    v.peer = reply_key(out, uplink, port);
    v.created_ns = now;
    v.last_seen_ns = now;
    v.packets = 0;
    v.bytes = 0;
    NAT6_FLOWS
        .insert(out, &*v, 0)
        .map_err(|_| DropReason::TableFull)?;
    // The reply's entry, under the key the original one points to.
    let reply = v.peer;
    v.addr = out.src_addr;
    v.port = out.src_port;
    v.dir = DIR_REPLY;
    v.hook = HOOK_UPLINK_INGRESS;
    v.peer = *out;
    if NAT6_FLOWS.insert(&reply, &*v, 0).is_err() {
        let _ = NAT6_FLOWS.remove(out);
        return Err(DropReason::TableFull);
    }
    Ok(())
}

/// Store a forwarded flow's two entries: `inbound` (its first packet's
/// key, to the uplink's forwarded port), rewritten at the uplink's ingress
/// to `target`:`port`, and the replies', rewritten at its egress back to
/// the forwarded port.
#[inline(always)]
pub fn insert_forwarded(
    inbound: &Flow6Key,
    target: &[u8; 16],
    port: u16,
    now: u64,
) -> Result<(), DropReason> {
    let Some(v) = SCRATCH6.get_ptr_mut(0) else {
        return Err(DropReason::NoScratch);
    };
    let v = unsafe { &mut *v };
    v.addr = *target;
    v.port = port;
    v.dir = DIR_ORIGINAL;
    v.hook = HOOK_UPLINK_INGRESS;
    v.state = 0;
    v.peer = Flow6Key::new(
        *target,
        inbound.src_addr,
        port,
        inbound.src_port,
        inbound.proto,
    );
    v.created_ns = now;
    v.last_seen_ns = now;
    v.packets = 0;
    v.bytes = 0;
    NAT6_FLOWS
        .insert(inbound, &*v, 0)
        .map_err(|_| DropReason::TableFull)?;
    let reply = v.peer;
    v.addr = inbound.dst_addr;
    v.port = inbound.dst_port;
    v.dir = DIR_REPLY;
    v.hook = HOOK_UPLINK_EGRESS;
    v.peer = *inbound;
    if NAT6_FLOWS.insert(&reply, &*v, 0).is_err() {
        let _ = NAT6_FLOWS.remove(inbound);
        return Err(DropReason::TableFull);
    }
    Ok(())
}

/// Store a hairpinned flow's two entries, both rewritten at the bridge's
/// ingress: `opening` (a node to the uplink's `port`) goes to `target`
/// from the uplink's address and the client's `sport` (its own mapping);
/// the replies come back from the uplink's forwarded port.
#[inline(always)]
pub fn insert_hairpin(
    opening: &Flow6Key,
    target: &Endpoint6,
    uplink: &[u8; 16],
    sport: u16,
    now: u64,
) -> Result<(), DropReason> {
    let Some(v) = SCRATCH6.get_ptr_mut(0) else {
        return Err(DropReason::NoScratch);
    };
    let v = unsafe { &mut *v };
    v.addr = target.addr;
    v.port = target.port;
    v.hairpin_sport = sport;
    v.dir = DIR_ORIGINAL;
    v.hook = HOOK_BRIDGE_INGRESS;
    v.state = 0;
    v.peer = Flow6Key::new(target.addr, *uplink, target.port, sport, opening.proto);
    v.created_ns = now;
    v.last_seen_ns = now;
    v.packets = 0;
    v.bytes = 0;
    NAT6_FLOWS
        .insert(opening, &*v, 0)
        .map_err(|_| DropReason::TableFull)?;
    let reply = v.peer;
    v.addr = opening.src_addr;
    v.port = opening.src_port;
    v.hairpin_sport = opening.dst_port;
    v.dir = DIR_REPLY;
    v.peer = *opening;
    if NAT6_FLOWS.insert(&reply, &*v, 0).is_err() {
        let _ = NAT6_FLOWS.remove(opening);
        return Err(DropReason::TableFull);
    }
    Ok(())
}
