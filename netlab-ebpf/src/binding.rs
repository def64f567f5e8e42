//! Endpoint-independent mappings (RFC 4787): an inside endpoint's outside
//! port, kept in two tables, `NAT_BIND` (inside → outside) and `NAT_PORTS`
//! (outside → inside, the port reservation), and the lab host's own sockets,
//! whose ports a mapping must never take.

use aya_ebpf::{
    bindings::bpf_sock_tuple,
    cty::c_void,
    helpers::generated::{bpf_sk_lookup_tcp, bpf_sk_lookup_udp, bpf_sk_release},
};
use netlab_common::{
    Binding, Endpoint, FlowKey, FlowValue, NatConfig, DIR_ORIGINAL, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_TCP, KIND_DNAT, KIND_LOCAL, KIND_ROUTED,
};
use netlab_ebpf::{binding_timeout_secs, NSEC_PER_SEC};

use crate::maps::{NAT_BIND, NAT_PORTS, SOCK_TUPLE};

pub const BPF_ANY: u64 = 0;
pub const BPF_NOEXIST: u64 = 1;

/// How long a new mapping is reserved for a flow in `state`.
#[inline(always)]
pub fn lifetime_ns(cfg: &NatConfig, proto: u8, state: u8) -> u64 {
    u64::from(binding_timeout_secs(cfg, proto, state)) * NSEC_PER_SEC
}

/// The outside port `inside` is or was last mapped to, and whether that
/// mapping is live (endpoint-independent mapping: the same port for every
/// destination). An expired mapping stays until the LRU map needs room.
#[inline(always)]
pub fn last_binding(cfg: &NatConfig, inside: &Endpoint, now: u64) -> Option<(u16, bool)> {
    let b = NAT_BIND.get_ptr(inside)?;
    let b = unsafe { &*b };
    if b.peer.addr != cfg.uplink_addr {
        return None;
    }
    Some((b.peer.port, b.expires_ns > now))
}

/// The inside endpoint holding a live mapping of `outside`.
#[inline(always)]
pub fn holder(outside: &Endpoint, now: u64) -> Option<Endpoint> {
    let b = unsafe { *NAT_PORTS.get_ptr(outside)? };
    if b.expires_ns > now {
        Some(b.peer)
    } else {
        None
    }
}

/// Reserve `outside` for `inside` until `expires`: free, expired, or
/// already `inside`'s. Returns whether the reservation is new (to undo it
/// if the flow cannot be made), `None` when the port is another's.
///
/// A reservation that exists is taken over in place ([`set_in_place`]): an
/// LRU map's update takes a node off the map's free list and gives the old
/// one back, the costliest step of a new flow when a high connection rate
/// reuses the range's ports (a quarter of the programs' time under wrk).
#[inline(always)]
pub fn reserve_port(outside: &Endpoint, inside: &Endpoint, expires: u64, now: u64) -> Option<bool> {
    if let Some(cur) = NAT_PORTS.get_ptr_mut(outside) {
        let held = unsafe { (*cur).peer != *inside && (*cur).expires_ns > now };
        if held {
            return None;
        }
        set_in_place(cur, inside, expires);
        return Some(false);
    }
    let binding = Binding {
        peer: *inside,
        expires_ns: expires,
    };
    // Fails when another CPU reserved the port since the lookup.
    NAT_PORTS.insert(outside, &binding, BPF_NOEXIST).ok()?;
    Some(true)
}

/// Point the existing entry `b` at `peer` until `expires`. The expiry is
/// written first, so a reader between the two writes sees the entry live
/// (the port taken, never free twice). Racing writers are no worse off
/// than two updates of the map: the flow's reply tuple, claimed next, is
/// what keeps two flows off one outside tuple.
#[inline(always)]
fn set_in_place(b: *mut Binding, peer: &Endpoint, expires: u64) {
    unsafe {
        core::ptr::write_volatile(&mut (*b).expires_ns, expires);
        core::ptr::write_volatile(&mut (*b).peer, *peer);
    }
}

/// Undo a new reservation of [`reserve_port`].
#[inline(always)]
pub fn release_port(outside: &Endpoint) {
    let _ = NAT_PORTS.remove(outside);
}

/// Bind `inside` to `outside` (the mapping's other table), in place when
/// `inside` had a mapping before (see [`reserve_port`]).
#[inline(always)]
pub fn bind(inside: &Endpoint, outside: &Endpoint, expires: u64) {
    if let Some(b) = NAT_BIND.get_ptr_mut(inside) {
        set_in_place(b, outside, expires);
        return;
    }
    let _ = NAT_BIND.insert(
        inside,
        &Binding {
            peer: *outside,
            expires_ns: expires,
        },
        BPF_ANY,
    );
}

/// The inside endpoint and outside port of a flow entry, when it holds a
/// mapping (forwards and the lab host's own flows use a fixed port, routed
/// flows none).
#[inline(always)]
pub fn mapping_of(key: &FlowKey, v: &FlowValue) -> Option<(Endpoint, u16)> {
    if v.kind == KIND_DNAT || v.kind == KIND_ROUTED || v.kind == KIND_LOCAL {
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
pub fn refresh(cfg: &NatConfig, inside: &Endpoint, ext_port: u16, expires: u64) {
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
    socket_for(skb, proto, tuple, 12)
}

/// [`host_socket_uses`] over IPv6: a socket of the lab host would receive
/// a packet from `remote:remote_port` to `local:port`.
#[inline(always)]
pub fn host_socket_uses6(
    skb: *mut c_void,
    proto: u8,
    remote: &[u8; 16],
    remote_port: u16,
    local: &[u8; 16],
    port: u16,
) -> bool {
    if proto == IPPROTO_ICMPV6 {
        return false;
    }
    let Some(tuple) = SOCK_TUPLE.get_ptr_mut(0) else {
        return false;
    };
    unsafe {
        let v6 = &mut (*tuple).__bindgen_anon_1.ipv6;
        v6.saddr = words(remote);
        v6.daddr = words(local);
        v6.sport = remote_port;
        v6.dport = port;
    }
    socket_for(skb, proto, tuple, 36)
}

/// An address as the four wire-order words of `bpf_sock_tuple`.
#[inline(always)]
fn words(a: &[u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// Whether the TCP or UDP socket lookup of the first `size` bytes of
/// `tuple` finds a socket in the lab host's namespace.
#[inline(always)]
fn socket_for(skb: *mut c_void, proto: u8, tuple: *mut bpf_sock_tuple, size: u32) -> bool {
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
