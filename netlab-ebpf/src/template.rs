//! The one way flows are made. A [`FlowTemplate`] names both directions of
//! a new flow by the keys their packets will have at the hooks that
//! translate them; each direction's entry rewrites its packets into the
//! reverse of the other direction's key, so the two halves agree by
//! construction, whatever the kind. Every kind (masquerade, forward,
//! hairpin, routed, the lab host's own) is a constructor here.
//!
//! A masquerade (SNAT):  opening `I:i → D:d`,  other `D:d → U:p`
//! A forward (DNAT):     opening `R:r → U:f`,  other `T:t → R:r`
//! Across hosts:         opening `R:r → U:f`,  other `T:t → H:p`
//! A hairpin:            opening `I:i → U:f`,  other `T:t → U:p`
//! Routed (no rewrite):  opening `R:r → N:n`,  other `N:n → R:r`
//! The lab host's own:   opening `S:s → U:f`,  other `T:t → U:s`
//!
//! (U the uplink address, p a mapped port, f a forwarded one, T:t its target,
//! H the lab host's address on the target's stretched bridge.)

use netlab_common::{
    Endpoint, FlowKey, FlowValue, ForwardTarget, DIR_ORIGINAL, DIR_REPLY, HOOK_BRIDGE_INGRESS,
    HOOK_LOCAL_EGRESS, HOOK_UPLINK_EGRESS, HOOK_UPLINK_INGRESS, IPPROTO_TCP, KIND_DNAT,
    KIND_HAIRPIN, KIND_LOCAL, KIND_ROUTED, KIND_SNAT, LO_IFINDEX,
};
use netlab_ebpf::tcp_next_state;

use crate::{
    lab::{config, subnet_of},
    maps::{SCRATCH, SCRATCH_OPENING, SCRATCH_OTHER},
    packet::Pkt,
    verdict::DropReason,
};

/// One direction of a flow to be.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Half {
    /// The key its packets have at `hook`.
    pub key: FlowKey,
    /// The `HOOK_*` that translates them.
    pub hook: u8,
    /// `DIR_ORIGINAL` or `DIR_REPLY`.
    pub dir: u8,
    pub _pad: u16,
    /// Where that hook redirects them after the rewrite (0: nowhere).
    pub out_ifindex: u32,
}

/// Both directions of a new flow (see the module's table).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FlowTemplate {
    /// The direction of the packet that opens the flow: its key has just
    /// missed, so it is free.
    pub opening: Half,
    /// The other direction: its key may belong to another flow, so it is
    /// inserted first and exclusively (`flows::insert_pair`).
    pub other: Half,
    /// `KIND_*`.
    pub kind: u8,
    /// `STATE_*` bits both entries start with.
    pub state: u8,
    /// The counter of the forward the flow comes through (0: none),
    /// copied into both entries.
    pub forward: u16,
    /// The opening packet's length, counted on its entry; 0 when the caller
    /// accounts the packet itself (`flows::touch`).
    pub first_len: u32,
}

/// The state a flow starts in when `p` opens it in the original direction.
#[inline(always)]
fn opening_state(p: &Pkt) -> u8 {
    if p.proto == IPPROTO_TCP {
        tcp_next_state(0, p.tcp_flags, DIR_ORIGINAL)
    } else {
        0
    }
}

#[inline(always)]
const fn half(key: FlowKey, hook: u8, dir: u8, out_ifindex: u32) -> Half {
    Half {
        key,
        hook,
        dir,
        _pad: 0,
        out_ifindex,
    }
}

impl FlowTemplate {
    #[inline(always)]
    fn new(opening: Half, other: Half, kind: u8, state: u8, first_len: u32) -> Self {
        Self {
            opening,
            other,
            kind,
            state,
            forward: 0,
            first_len,
        }
    }

    /// The flow comes through the forward whose counter is `counter`.
    #[inline(always)]
    pub fn through_forward(mut self, counter: u16) -> Self {
        self.forward = counter;
        self
    }

    /// A node's packet to the outside, masqueraded behind `uplink` at a
    /// port the port search fills in ([`Self::set_port`]).
    #[inline(always)]
    pub fn masquerade(p: &Pkt, uplink: u32) -> Self {
        let reply = FlowKey::new(p.dst, uplink, p.dport, 0, p.proto);
        Self::new(
            half(p.key(), HOOK_UPLINK_EGRESS, DIR_ORIGINAL, 0),
            half(reply, HOOK_UPLINK_INGRESS, DIR_REPLY, 0),
            KIND_SNAT,
            opening_state(p),
            p.len,
        )
    }

    /// The outside reaching `inside` through its mapping (the packet's
    /// destination port): the reply direction opens a masquerade flow.
    #[inline(always)]
    pub fn inbound(p: &Pkt, inside: &Endpoint) -> Self {
        let original = FlowKey::new(inside.addr, p.src, inside.port, p.sport, p.proto);
        Self::new(
            half(p.key(), HOOK_UPLINK_INGRESS, DIR_REPLY, 0),
            half(original, HOOK_UPLINK_EGRESS, DIR_ORIGINAL, 0),
            KIND_SNAT,
            0,
            0,
        )
    }

    /// A new connection from the outside to a forwarded port.
    #[inline(always)]
    pub fn forward(p: &Pkt, target: &Endpoint) -> Self {
        let reply = FlowKey::new(target.addr, p.src, target.port, p.sport, p.proto);
        Self::new(
            half(p.key(), HOOK_UPLINK_INGRESS, DIR_ORIGINAL, 0),
            half(reply, HOOK_UPLINK_EGRESS, DIR_REPLY, 0),
            KIND_DNAT,
            opening_state(p),
            p.len,
        )
    }

    /// A new connection from the outside to a forward whose target is on
    /// another lab host: its source becomes `target.snat_addr` (this
    /// host's address on the stretched bridge) at a port the port search
    /// fills in, so the target's replies come back to this host. It leaves
    /// by the host port `to_target`; the replies arrive there and leave by
    /// the uplink `to_client`.
    #[inline(always)]
    pub fn forward_across(p: &Pkt, target: &ForwardTarget, to_target: u32, to_client: u32) -> Self {
        let reply = FlowKey::new(target.addr, target.snat_addr, target.port, 0, p.proto);
        Self::new(
            half(p.key(), HOOK_UPLINK_INGRESS, DIR_ORIGINAL, to_target),
            half(reply, HOOK_BRIDGE_INGRESS, DIR_REPLY, to_client),
            KIND_DNAT,
            opening_state(p),
            p.len,
        )
    }

    /// A node reaching `target` through the uplink address: both directions
    /// cross the lab host's bridges, redirected to the target's bridge and
    /// back to the client's; the port search fills in the client's mapping.
    #[inline(always)]
    pub fn hairpin(
        p: &Pkt,
        uplink: u32,
        target: &Endpoint,
        to_target: u32,
        to_client: u32,
    ) -> Self {
        let reply = FlowKey::new(target.addr, uplink, target.port, 0, p.proto);
        Self::new(
            half(p.key(), HOOK_BRIDGE_INGRESS, DIR_ORIGINAL, to_target),
            half(reply, HOOK_BRIDGE_INGRESS, DIR_REPLY, to_client),
            KIND_HAIRPIN,
            opening_state(p),
            p.len,
        )
    }

    /// The outside reaching a node of a routed subnet: nothing rewritten,
    /// but the flow is known, so the node's replies leave as they are.
    #[inline(always)]
    pub fn routed(p: &Pkt) -> Self {
        let reply = FlowKey::new(p.dst, p.src, p.dport, p.sport, p.proto);
        Self::new(
            half(p.key(), HOOK_UPLINK_INGRESS, DIR_ORIGINAL, 0),
            half(reply, HOOK_UPLINK_EGRESS, DIR_REPLY, 0),
            KIND_ROUTED,
            opening_state(p),
            0,
        )
    }

    /// The lab host's own connection to a forwarded port of the uplink
    /// address: it reaches the target from the uplink address and its own
    /// port, out of the target's bridge; the replies go back into `lo`.
    #[inline(always)]
    pub fn local(p: &Pkt, uplink: u32, target: &Endpoint, to_target: u32) -> Self {
        let reply = FlowKey::new(target.addr, uplink, target.port, p.sport, p.proto);
        Self::new(
            half(p.key(), HOOK_LOCAL_EGRESS, DIR_ORIGINAL, to_target),
            half(reply, HOOK_BRIDGE_INGRESS, DIR_REPLY, LO_IFINDEX),
            KIND_LOCAL,
            opening_state(p),
            p.len,
        )
    }

    /// The outside port of a mapped flow (masquerade, hairpin).
    #[inline(always)]
    pub fn set_port(&mut self, port: u16) {
        self.other.key.dst_port = port;
    }

    /// What the opening packet is rewritten to.
    #[inline(always)]
    pub fn translated(&self) -> FlowKey {
        reverse(&self.other.key)
    }

    /// Both entries, built in per-CPU scratch memory: (opening, other).
    #[inline(always)]
    pub fn entries(
        &self,
        now: u64,
    ) -> Result<(&'static FlowValue, &'static FlowValue), DropReason> {
        let opening = fill(SCRATCH_OPENING, &self.opening, &self.other.key, self, now)?;
        opening.packets = u64::from(self.first_len != 0);
        opening.bytes = u64::from(self.first_len);
        let other = fill(SCRATCH_OTHER, &self.other, &self.opening.key, self, now)?;
        Ok((opening, other))
    }

    /// The opening direction's entry alone (its other half exists).
    #[inline(always)]
    pub fn opening_entry(&self, now: u64) -> Result<&'static mut FlowValue, DropReason> {
        fill(SCRATCH_OPENING, &self.opening, &self.other.key, self, now)
    }
}

/// The key of the other direction of the flow whose packet `key` becomes
/// `key` reversed, and vice versa.
#[inline(always)]
const fn reverse(key: &FlowKey) -> FlowKey {
    FlowKey::new(
        key.dst_addr,
        key.src_addr,
        key.dst_port,
        key.src_port,
        key.proto,
    )
}

#[inline(always)]
fn zero<T: Default>(field: &mut T) {
    unsafe { core::ptr::write_volatile(field, T::default()) }
}

/// The entry of `half`: its packets become the reverse of `other_key`.
#[inline(always)]
fn fill(
    slot: u32,
    half: &Half,
    other_key: &FlowKey,
    t: &FlowTemplate,
    now: u64,
) -> Result<&'static mut FlowValue, DropReason> {
    let v = scratch(slot)?;
    set_translation(v, other_key);
    v.hook = half.hook;
    v.kind = t.kind;
    v.dir = half.dir;
    v.state = t.state;
    v.out_ifindex = half.out_ifindex;
    v.forward = t.forward;
    v.created_ns = now;
    v.last_seen_ns = now;
    clear_the_rest(v);
    Ok(v)
}

#[inline(always)]
fn scratch(slot: u32) -> Result<&'static mut FlowValue, DropReason> {
    SCRATCH
        .get_ptr_mut(slot)
        .map(|p| unsafe { &mut *p })
        .ok_or(DropReason::NoScratch)
}

#[inline(always)]
fn set_translation(v: &mut FlowValue, other_key: &FlowKey) {
    v.src_addr = other_key.dst_addr;
    v.dst_addr = other_key.src_addr;
    v.src_port = other_key.dst_port;
    v.dst_port = other_key.src_port;
}

/// Zero what a new entry has not learnt yet. Volatile, so LLVM cannot merge
/// these runs of zeros into `memset` calls: BPF-to-BPF calls whose frames
/// Linux 6.1's verifier adds to the caller's (the port search's callback
/// builds entries under a hook's frame, and the sum must stay within 512
/// bytes).
#[inline(always)]
fn clear_the_rest(v: &mut FlowValue) {
    zero(&mut v.flags);
    zero(&mut v._pad0);
    for b in v.l2.iter_mut() {
        zero(b);
    }
    zero(&mut v.last_ack);
    zero(&mut v.packets);
    zero(&mut v.bytes);
}

/// The hook that translates the other direction of an entry at `hook`.
#[inline(always)]
fn peer_hook(kind: u8, hook: u8) -> u8 {
    match hook {
        HOOK_UPLINK_EGRESS => HOOK_UPLINK_INGRESS,
        HOOK_UPLINK_INGRESS => HOOK_UPLINK_EGRESS,
        HOOK_LOCAL_EGRESS => HOOK_BRIDGE_INGRESS,
        HOOK_BRIDGE_INGRESS if kind == KIND_LOCAL => HOOK_LOCAL_EGRESS,
        h => h,
    }
}

/// The hook and the way out of the other half of a forward across hosts
/// ([`FlowTemplate::forward_across`]): the opening half's replies arrive
/// at the host port and leave by the uplink; the reply half's other
/// direction leaves by the host port, which its address (`key`'s
/// destination) names.
#[inline(always)]
fn across_peer(key: &FlowKey, v: &FlowValue) -> (u8, u32) {
    if v.hook == HOOK_UPLINK_INGRESS {
        let uplink = config().map(|c| c.uplink_ifindex).unwrap_or(0);
        (HOOK_BRIDGE_INGRESS, uplink)
    } else {
        let port = subnet_of(key.dst_addr).map(|s| s.ifindex).unwrap_or(0);
        (HOOK_UPLINK_INGRESS, port)
    }
}

/// The entry the other direction of `(key, v)` must have (to rebuild it
/// when it was evicted), built in scratch memory: it rewrites its packets
/// into `key` reversed.
#[inline(always)]
pub fn peer_entry(key: &FlowKey, v: &FlowValue) -> Result<&'static mut FlowValue, DropReason> {
    let (hook, out_ifindex) = if v.kind == KIND_DNAT && v.out_ifindex != 0 {
        across_peer(key, v)
    } else {
        let hook = peer_hook(v.kind, v.hook);
        // Its packets go where `key`'s came from.
        let out_ifindex = match hook {
            HOOK_BRIDGE_INGRESS if v.kind == KIND_LOCAL => LO_IFINDEX,
            HOOK_BRIDGE_INGRESS | HOOK_LOCAL_EGRESS => {
                subnet_of(key.src_addr).map(|s| s.ifindex).unwrap_or(0)
            }
            _ => 0,
        };
        (hook, out_ifindex)
    };
    let dir = if v.dir == DIR_ORIGINAL {
        DIR_REPLY
    } else {
        DIR_ORIGINAL
    };
    let peer = scratch(SCRATCH_OTHER)?;
    set_translation(peer, key);
    peer.hook = hook;
    peer.kind = v.kind;
    peer.dir = dir;
    peer.state = v.state;
    peer.out_ifindex = out_ifindex;
    peer.forward = v.forward;
    peer.created_ns = v.created_ns;
    peer.last_seen_ns = v.last_seen_ns;
    clear_the_rest(peer);
    Ok(peer)
}
