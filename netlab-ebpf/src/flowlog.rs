//! Events for `netlab log`: one fixed-size record (`netlab_common::event`)
//! per new flow, from every place that makes flows, and per packet dropped
//! for want of a mapping or a port, reserved in the `FLOW_EVENTS` ring
//! buffer and filled in place (no stack), only while `netlab log` runs.
//! User space formats them; an aya-log line instead cost the verifier about
//! 35,000 steps at each place it was written.

use netlab_common::{event, FlowKey, NatConfig, CONFIG_LOG};

use crate::{maps::FLOW_EVENTS, packet::Pkt, template::FlowTemplate};

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
