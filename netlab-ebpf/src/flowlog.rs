//! Events for `netlab log`: one fixed-size record (`netlab_common::event`)
//! per new flow, from every place that makes flows, and per packet dropped
//! for want of a mapping or a port, reserved in the `FLOW_EVENTS` ring
//! buffer and filled in place (no stack), only while `netlab log` runs.
//! User space formats them; an aya-log line instead cost the verifier about
//! 35,000 steps at each place it was written.

use aya_ebpf::{cty::c_void, helpers::generated::bpf_loop};
use netlab_common::{
    event, Flow6Key, FlowKey, NatConfig, CONFIG_LOG, HOOK_BRIDGE_INGRESS, HOOK_LOCAL_EGRESS,
    HOOK_UPLINK_EGRESS, HOOK_UPLINK_INGRESS,
};

use crate::{flows6, lab::config, maps::FLOW_EVENTS, packet::Pkt, template::FlowTemplate};

pub use event::{
    NEW_DNAT as DNAT, NEW_HAIRPIN as HAIRPIN, NEW_LOCAL as LOCAL, NEW_ROUTED as ROUTED,
    NEW_SNAT_IN as SNAT_IN, NEW_SNAT_NODE as SNAT_NODE, NEW_SNAT_OUT as SNAT_OUT,
};

/// Report the new flow `t`, made at the place `what` (when `netlab log` runs).
#[inline(always)]
pub fn new_flow(cfg: &NatConfig, t: &FlowTemplate, what: u32) {
    if cfg.flags & CONFIG_LOG != 0 {
        emit(what, &t.opening.key, &t.translated());
    }
}

/// Report the packet `p`, dropped for `what` (`event::NO_MAPPING`,
/// `event::NO_FREE_PORT`), when `netlab log` runs.
#[inline(always)]
pub fn dropped(cfg: &NatConfig, p: &Pkt, what: u32) {
    if cfg.flags & CONFIG_LOG != 0 {
        emit(what, &p.key(), &FlowKey::default());
    }
}

/// A full ring (a reader that fell behind) loses the event, never the packet.
#[inline(always)]
fn emit(what: u32, opening: &FlowKey, translated: &FlowKey) {
    if let Some(mut entry) = FLOW_EVENTS.reserve::<event::Event>(0) {
        entry.write(event::Event {
            what,
            _pad: 0,
            opening: *opening,
            translated: *translated,
        });
        entry.submit(0);
    }
}

/// Report the IPv6 packet whose key is `opening`, dropped for want of a
/// free port (`event::NO_FREE_PORT`), when `netlab log` runs.
#[inline(always)]
pub fn no_free_port6(cfg: &NatConfig, opening: &Flow6Key) {
    if cfg.flags & CONFIG_LOG == 0 {
        return;
    }
    let none = (&[0u8; 16], 0);
    emit6(event::NO_FREE_PORT, opening, none, none);
}

/// Report the new IPv6 flow just stored (`flows6::just_stored`), when
/// `netlab log` runs: the place it was made and its translation, read from
/// its entries. In a one-step `bpf_loop` callback, which Linux 6.1's
/// verifier checks once, and with nothing on the stack: inline, or reading
/// the packet's key from the caller's stack, it took `nl_bridge_in6` past
/// the million instructions 6.1 allows.
#[inline(always)]
pub fn new_flow6() {
    unsafe {
        bpf_loop(1, new_flow6_step as *mut c_void, core::ptr::null_mut(), 0);
    }
}

extern "C" fn new_flow6_step(_: u64, _: *mut c_void) -> i64 {
    let Some(cfg) = config() else { return 1 };
    if cfg.flags & CONFIG_LOG == 0 {
        return 1;
    }
    let Some((v, k)) = flows6::just_stored() else {
        return 1;
    };
    // What the place rewrote: the source leaving the uplink (and both
    // ends of a hairpin), the destination elsewhere.
    let (from, to) = ((&k.src_addr, k.src_port), (&v.addr, v.port));
    match v.hook {
        HOOK_UPLINK_EGRESS => emit6(SNAT_OUT, k, (&v.addr, v.port), (&k.dst_addr, k.dst_port)),
        HOOK_UPLINK_INGRESS => emit6(DNAT, k, from, to),
        HOOK_BRIDGE_INGRESS => emit6(HAIRPIN, k, (&cfg.uplink_addr6, v.hairpin_sport), to),
        HOOK_LOCAL_EGRESS => emit6(LOCAL, k, from, to),
        _ => {}
    }
    1
}

/// One IPv6 event: the packet `opening`, which left as `src:sport ->
/// dst:dport` (ports in network order). Written in place in the ring: two
/// IPv6 keys do not fit beside an IPv6 program's stack.
#[inline(always)]
fn emit6(
    what: u32,
    opening: &Flow6Key,
    (src, sport): (&[u8; 16], u16),
    (dst, dport): (&[u8; 16], u16),
) {
    let Some(mut entry) = FLOW_EVENTS.reserve::<event::Event6>(0) else {
        return;
    };
    let e = entry.as_mut_ptr();
    unsafe {
        (*e).what = what;
        (*e)._pad = 0;
        (*e).opening = *opening;
        let t = &mut (*e).translated;
        t.src_addr = *src;
        t.dst_addr = *dst;
        t.src_port = sport;
        t.dst_port = dport;
        t.proto = opening.proto;
        t._pad0 = 0;
        t._pad1 = 0;
    }
    entry.submit(0);
}
