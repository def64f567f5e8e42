//! The flow table's accounting: how many entries it holds, and whether a
//! new flow may take two more. At the limit the table is collected (by
//! `nl_gc`, see `gc`), at most once per packet and at most every
//! [`gc_interval_ns`].

use aya_ebpf::programs::TcContext;
use netlab_common::{tail, FlowKey, GcState, NatConfig};
use netlab_ebpf::NSEC_PER_SEC;

use crate::maps::{GcResume, GC_RESUME, GC_STATE, TAILS};

/// Add `n` (wrapping: `u64::MAX` is -1) to the flow entry count. Not
/// atomic (the programs' target has no atomic read-modify-write), so CPUs
/// racing may lose an update; each collection sets the exact count again.
#[inline(always)]
pub fn entries_add(n: u64) {
    if let Some(st) = GC_STATE.get_ptr_mut(0) {
        unsafe { (*st).entries = (*st).entries.wrapping_add(n) };
    }
}

/// How often a full table may be collected: a walk costs about 40 ns per
/// entry, so 4 µs per entry of the limit keeps collections under 1% of a
/// CPU, whatever the table's size. Between 10 ms (a small table fills with
/// closed connections within milliseconds at a high connection rate, and
/// refusing new ones for a whole second would fail them) and a second.
#[inline(always)]
pub fn gc_interval_ns(cfg: &NatConfig) -> u64 {
    (u64::from(cfg.flow_limit) * 4_000).clamp(10_000_000, NSEC_PER_SEC)
}

#[inline(always)]
fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    a.src_addr == b.src_addr
        && a.dst_addr == b.dst_addr
        && a.src_port == b.src_port
        && a.dst_port == b.dst_port
        && a.proto == b.proto
}

/// Whether a new flow (its opening packet's `key`) may take two more
/// entries. Within an eighth of the limit, and at the limit, expired flows
/// (and connections that are over) are collected and the entries counted
/// afresh; if the table is still full, the new flow is refused:
/// established flows are never evicted to make room for it.
///
/// The collection runs in `nl_gc`, tail-called here; it hands the packet
/// back to the program at `resume`, which asks again. That second answer
/// never starts another collection, however long the first took: the
/// per-CPU `GC_RESUME` tells the resumed packet from any other. Returns
/// only when the answer is known without a collection.
#[inline(always)]
pub fn admit(ctx: &TcContext, cfg: &NatConfig, key: &FlowKey, now: u64, resume: u32) -> bool {
    let Some(st) = GC_STATE.get_ptr_mut(0) else {
        return true;
    };
    let st = unsafe { &mut *st };
    let wanted = st.entries.wrapping_add(2);
    let limit = u64::from(cfg.flow_limit);
    let Some(r) = GC_RESUME.get_ptr_mut(0) else {
        return wanted <= limit;
    };
    let r: &mut GcResume = unsafe { &mut *r };
    let due = now.wrapping_sub(st.last_run_ns) >= gc_interval_ns(cfg);
    if wanted <= limit {
        // Nearly full: collect while there is still room, so that new
        // flows on the other CPUs are not refused while the walk runs
        // (they would be, at the limit, until it ends).
        if wanted > limit - limit / 8 && due {
            collect(ctx, st, r, key, now, resume);
        }
        r.collected = 0;
        return true;
    }
    if r.collected != 0 {
        r.collected = 0;
        if r.run_ns == st.last_run_ns && same_key(&r.key, key) {
            // This packet's collection has run: its answer stands.
            return false;
        }
    }
    if !due {
        return false;
    }
    collect(ctx, st, r, key, now, resume);
    false
}

/// Start a collection for the packet whose new flow is `key`, handed back
/// to `resume` afterwards. Returns only when the tail call cannot be made
/// (no `nl_gc` loaded).
#[inline(always)]
fn collect(
    ctx: &TcContext,
    st: &mut GcState,
    r: &mut GcResume,
    key: &FlowKey,
    now: u64,
    resume: u32,
) {
    st.last_run_ns = now;
    r.slot = resume;
    r.key = *key;
    r.run_ns = now;
    unsafe { TAILS.tail_call(ctx, tail::GC) };
}
