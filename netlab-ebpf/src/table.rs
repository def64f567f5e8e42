//! The flow tables' accounting: how many entries each holds, and whether a
//! new flow may take two more. At the limit a table is collected (by
//! `nl_gc` or `nl_gc6`, see `gc` and `gc6`), at most once per packet and at
//! most every [`gc_interval_ns`].

use aya_ebpf::{cty::c_void, helpers::generated::bpf_loop, maps::Array, programs::TcContext};
use netlab_common::{tail, Flow6Key, FlowKey, GcState, NatConfig};
use netlab_ebpf::NSEC_PER_SEC;

use crate::{
    flows, flows6,
    lab::config,
    maps::{GcResume, GC6_STATE, GC_RESUME, GC_STATE, TAILS},
};

/// Add `n` (wrapping: `u64::MAX` is -1) to the IPv4 flow entry count. Not
/// atomic (the programs' target has no atomic read-modify-write), so CPUs
/// racing may lose an update; each collection sets the exact count again.
#[inline(always)]
pub fn entries_add(n: u64) {
    add_to(&GC_STATE, n);
}

/// [`entries_add`] for the IPv6 table. Only new flows are counted there:
/// the entries that go otherwise are found by the next collection, which
/// comes early, not late, for it.
#[inline(always)]
pub fn entries6_add(n: u64) {
    add_to(&GC6_STATE, n);
}

#[inline(always)]
fn add_to(state: &Array<GcState>, n: u64) {
    if let Some(st) = state.get_ptr_mut(0) {
        unsafe { (*st).entries = (*st).entries.wrapping_add(n) };
    }
}

/// How often a full table may be collected: a walk costs about 40 ns per
/// entry, so 4 µs per entry of the limit keeps collections under 1% of a
/// CPU, whatever the table's size. Between 10 ms (a small table fills with
/// closed connections within milliseconds at a high connection rate, and
/// refusing new ones for a whole second would fail them) and a second.
#[inline(always)]
pub fn gc_interval_ns(limit: u32) -> u64 {
    (u64::from(limit) * 4_000).clamp(10_000_000, NSEC_PER_SEC)
}

#[inline(always)]
fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    a.src_addr == b.src_addr
        && a.dst_addr == b.dst_addr
        && a.src_port == b.src_port
        && a.dst_port == b.dst_port
        && a.proto == b.proto
}

/// What admission decided: the flow may take its entries, and a
/// collection is to run first.
const ADMIT: u32 = 1;
const COLLECT: u32 = 2;

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
    let (Some(st), Some(r)) = (GC_STATE.get_ptr_mut(0), GC_RESUME.get_ptr_mut(0)) else {
        return true;
    };
    let (st, r) = unsafe { (&mut *st, &mut *r) };
    let resumed = r.collected != 0 && same_key(&r.key, key);
    let verdict = decide(cfg.flow_limit, st, r, resumed, now);
    if verdict & COLLECT != 0 {
        r.key = *key;
        r.slot = resume;
        unsafe { TAILS.tail_call(ctx, tail::GC) };
    }
    verdict & ADMIT != 0
}

/// [`admit`] for a new IPv6 flow, collected by `nl_gc6`. The decision is
/// made in a `bpf_loop` callback, which Linux 6.1's verifier checks once:
/// inline, its branches multiplied the paths through `nl_bridge_in6` past
/// the million instructions it allows.
#[inline(always)]
pub fn admit6(ctx: &TcContext, key: &Flow6Key, resume: u32) -> bool {
    let Some(r) = GC_RESUME.get_ptr_mut(0) else {
        return true;
    };
    unsafe {
        (*r).asking6 = *key;
        (*r).verdict = ADMIT;
        bpf_loop(1, admit6_step as *mut c_void, core::ptr::null_mut(), 0);
        // Read again through the pointer: the compiler cannot see that
        // the callback wrote it.
        let verdict = core::ptr::read_volatile(&(*r).verdict);
        if verdict & COLLECT != 0 {
            (*r).slot = resume;
            TAILS.tail_call(ctx, tail::GC6);
        }
        verdict & ADMIT != 0
    }
}

/// [`admit6`]'s decision, for the key in `GC_RESUME`'s `asking6`.
extern "C" fn admit6_step(_: u64, _: *mut c_void) -> i64 {
    let (Some(cfg), Some(st), Some(r)) =
        (config(), GC6_STATE.get_ptr_mut(0), GC_RESUME.get_ptr_mut(0))
    else {
        return 1;
    };
    let (st, r) = unsafe { (&mut *st, &mut *r) };
    let resumed = r.collected != 0 && flows6::same_key(&r.key6, &r.asking6);
    let verdict = decide(cfg.flow_limit6, st, r, resumed, flows::now());
    if verdict & COLLECT != 0 {
        r.key6 = r.asking6;
    }
    r.verdict = verdict;
    1
}

/// The answer for a table of `limit` entries whose accounting is `st`;
/// `resumed`: the packet asked before (its key is `GC_RESUME`'s and a
/// collection has handed it back). A collection to run is recorded as
/// started now.
#[inline(always)]
fn decide(limit: u32, st: &mut GcState, r: &mut GcResume, resumed: bool, now: u64) -> u32 {
    let wanted = st.entries.wrapping_add(2);
    let due = now.wrapping_sub(st.last_run_ns) >= gc_interval_ns(limit);
    // This packet's collection has run (none has started since): its
    // answer stands.
    let answered = resumed && r.run_ns == st.last_run_ns;
    r.collected = 0;
    let limit = u64::from(limit);
    let verdict = if wanted <= limit {
        // Nearly full: collect while there is still room, so that new
        // flows on the other CPUs are not refused while the walk runs
        // (they would be, at the limit, until it ends).
        ADMIT
            | if wanted > limit - limit / 8 && due {
                COLLECT
            } else {
                0
            }
    } else if !answered && due {
        COLLECT
    } else {
        0
    };
    if verdict & COLLECT != 0 {
        st.last_run_ns = now;
        r.run_ns = now;
    }
    verdict
}
