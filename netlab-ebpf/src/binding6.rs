//! IPv6 mappings and their ports: an inside endpoint keeps its outside
//! port for every destination while it holds it (endpoint-independent
//! mapping, `NAT6_BIND`), and a new one is searched for through the whole
//! range, so a port is found whenever one is free (`NAT6_PORTS` says who
//! holds each, until when). A port is the flow's once its reply tuple is
//! claimed in the flow table, inside the search, so two CPUs never give the
//! same tuple to two flows.

use aya_ebpf::{
    cty::c_void,
    helpers::generated::{bpf_get_prandom_u32, bpf_loop},
};
use netlab_common::{Endpoint6, Flow6Key, ForwardKey, NatConfig, Reservation6};
use netlab_ebpf::{flow_timeout_secs, NSEC_PER_SEC};

use crate::{
    binding::host_socket_uses6,
    flows6,
    lab::{config, forwarded},
    maps::{Port6Cursor, NAT6_BIND, NAT6_PORTS, PORT6_CURSOR},
    verdict::DropReason,
};

/// Keep `port` reserved until `expires_ns`, if `inside` still holds it.
#[inline(always)]
pub fn refresh(port: u16, inside: &Endpoint6, expires_ns: u64) {
    let Some(r) = NAT6_PORTS.get_ptr_mut(&ForwardKey::new(port, inside.proto)) else {
        return;
    };
    let r = unsafe { &mut *r };
    if same(&r.inside, inside) {
        r.expires_ns = expires_ns;
    }
}

/// The outside port (network order) for the new flow whose first packet
/// has key `out`, with the flow's reply tuple claimed for it under the
/// entry the caller staged (`flows6::stage_*`): the inside endpoint's own
/// port while it holds one, else its previous one if free, else the first
/// free one from a random place in the range. Reserved for the time a flow
/// that opens waits for its answer. A port held for another destination
/// whose tuple with this one a flow holds fails as `drop_conflict`.
/// `skb`: the program's context, for the lookup of the lab host's sockets.
#[inline(always)]
pub fn map(skb: *mut c_void, cfg: &NatConfig, out: &Flow6Key, now: u64) -> Result<u16, DropReason> {
    let inside = Endpoint6::new(out.src_addr, out.src_port, out.proto);
    let previous = NAT6_BIND.get_ptr(&inside).map(|p| unsafe { *p });
    let Some(c) = PORT6_CURSOR.get_ptr_mut(0) else {
        return Err(DropReason::NoScratch);
    };
    unsafe {
        (*c).reply = flows6::reply_key(out, &cfg.uplink_addr6, 0);
        (*c).now = now;
    }
    let held = previous.is_some_and(|port| holds(&inside, port, now));
    unsafe {
        (*c).first = previous.unwrap_or(0);
        (*c).held = u8::from(held);
    }
    let port = search(skb, cfg, c)?;
    if held {
        return Ok(port);
    }
    let hold = u64::from(flow_timeout_secs(cfg, out.proto, 0)) * NSEC_PER_SEC;
    let r = Reservation6 {
        inside,
        _pad: 0,
        expires_ns: now + hold,
    };
    let reserved = NAT6_PORTS.insert(&ForwardKey::new(port, out.proto), &r, 0);
    if reserved.is_err() || NAT6_BIND.insert(&inside, &port, 0).is_err() {
        flows6::remove(unsafe { &(*c).reply });
        return Err(DropReason::TableFull);
    }
    Ok(port)
}

/// Take back what [`map`] wrote for the new flow `out` whose flow could
/// not be stored on `port`: its binding, and the reservation if it is
/// still this endpoint's.
#[inline(always)]
pub fn unmap(out: &Flow6Key, port: u16, now: u64) {
    let inside = Endpoint6::new(out.src_addr, out.src_port, out.proto);
    let _ = NAT6_BIND.remove(&inside);
    if holds(&inside, port, now) {
        let _ = NAT6_PORTS.remove(&ForwardKey::new(port, out.proto));
    }
}

/// Endpoint equality, field by field: a derived `==` on the address
/// array becomes a `memcmp` the BPF backend cannot lower.
#[inline(always)]
fn same(a: &Endpoint6, b: &Endpoint6) -> bool {
    a.port == b.port && a.proto == b.proto && crate::packet6::same_addr(&a.addr, &b.addr)
}

/// The inside endpoint holding the uplink's `port` (network order) now:
/// where a node's connection to another node's mapping goes (hairpin).
#[inline(always)]
pub fn holder(port: u16, proto: u8, now: u64) -> Option<Endpoint6> {
    let r = NAT6_PORTS.get_ptr(&ForwardKey::new(port, proto))?;
    let r = unsafe { &*r };
    (r.expires_ns > now).then_some(r.inside)
}

/// Whether `inside` holds `port` now.
#[inline(always)]
fn holds(inside: &Endpoint6, port: u16, now: u64) -> bool {
    match NAT6_PORTS.get_ptr(&ForwardKey::new(port, inside.proto)) {
        Some(r) => {
            let r = unsafe { &*r };
            same(&r.inside, inside) && r.expires_ns > now
        }
        None => false,
    }
}

/// Whether the new flow whose reply key is the cursor's (its destination
/// port aside) may take `port` (network order), and has: not forwarded,
/// reserved by nobody, no socket of the lab host's on it for the flow's
/// destination, and its reply tuple claimed (held by no flow, a live one
/// or one closed less than TIME_WAIT ago). Calls no function: it runs
/// under `bpf_loop`.
#[inline(always)]
fn take(skb: *mut c_void, cfg: &NatConfig, c: &mut Port6Cursor, port: u16) -> bool {
    free(cfg, c, port)
        && !host_socket_uses6(
            skb,
            c.reply.proto,
            &c.reply.src_addr,
            c.reply.src_port,
            &cfg.uplink_addr6,
            port,
        )
        && flows6::claim_reply(cfg, &c.reply, c.now)
}

/// Whether `port` looks free to the cursor's flow (see [`take`]).
#[inline(always)]
fn free(cfg: &NatConfig, c: &mut Port6Cursor, port: u16) -> bool {
    let proto = c.reply.proto;
    if forwarded(port, proto) {
        return false;
    }
    if let Some(r) = NAT6_PORTS.get_ptr(&ForwardKey::new(port, proto)) {
        if unsafe { (*r).expires_ns } > c.now {
            return false;
        }
    }
    c.reply.dst_port = port;
    match flows6::get(&c.reply) {
        Some(v) => !flows6::holds_tuple(cfg, proto, unsafe { &*flows6::tuple_state(v) }, c.now),
        None => true,
    }
}

/// The endpoint's previous port (the cursor's `first`), claimed if it
/// holds it, taken if it is free; else the first port taken (see
/// [`take`]) from a random place in the range, each port tried once:
/// bounded by the range's size, and failing only when every port is
/// taken. Every claim runs in the `bpf_loop` callback, whose frame the
/// verifier checks once, beside the hook's rather than inside it.
#[inline(always)]
fn search(skb: *mut c_void, cfg: &NatConfig, c: *mut Port6Cursor) -> Result<u16, DropReason> {
    let span = u32::from(cfg.port_max - cfg.port_min) + 1;
    // The callback reads the context from the stack: the verifier allows
    // no other way to hand it over.
    let mut skb = skb;
    unsafe {
        (*c).start = bpf_get_prandom_u32() % span;
        (*c).found = 0;
        (*c).conflict = 0;
        bpf_loop(
            span + 1,
            search_step as *mut c_void,
            &mut skb as *mut *mut c_void as *mut c_void,
            0,
        );
        // Read again through the pointer: the compiler cannot see that
        // the callback wrote it.
        match core::ptr::read_volatile(&(*c).found) {
            0 if core::ptr::read_volatile(&(*c).conflict) != 0 => Err(DropReason::Conflict),
            0 => Err(DropReason::PortExhausted),
            port => Ok(port),
        }
    }
}

/// One step of the search: 0 the previous port, the others one port of
/// the range each. Returns 1 (stop) once one is taken, or when the port
/// the endpoint holds cannot be claimed (another flow holds its tuple
/// with this destination: `drop_conflict`).
extern "C" fn search_step(index: u64, skb: *mut c_void) -> i64 {
    let skb = unsafe { *(skb as *const *mut c_void) };
    let Some(cfg) = config() else { return 1 };
    let Some(c) = PORT6_CURSOR.get_ptr_mut(0) else {
        return 1;
    };
    let c = unsafe { &mut *c };
    let port = if index == 0 {
        if c.first == 0 {
            return 0;
        }
        if c.held != 0 {
            c.reply.dst_port = c.first;
            if flows6::claim_reply(cfg, &c.reply, c.now) {
                c.found = c.first;
            } else {
                c.conflict = 1;
            }
            return 1;
        }
        c.first
    } else {
        let span = u32::from(cfg.port_max - cfg.port_min) + 1;
        let offset = (c.start + index as u32 - 1) % span;
        (cfg.port_min + offset as u16).to_be()
    };
    if take(skb, cfg, c, port) {
        c.found = port;
        return 1;
    }
    0
}
