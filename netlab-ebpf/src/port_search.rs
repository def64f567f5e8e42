//! A new mapping's outside port: the endpoint's live mapping if it has one
//! (endpoint-independent mapping), else its previous port when free (a
//! server that holds the tuple in TIME_WAIT then sees the same client
//! connection's tuple again, whose timestamps go on, and accepts the SYN, as
//! with conntrack's reopened TIME_WAIT entries), else the inside port when
//! it is in the NAT range and free, else a free port of the range, found through the
//! taken-port hint (`port_hint`) from a random start. A port is taken only
//! when it is forwarded, used by a socket of the lab host, or reserved by
//! another endpoint; the flow is made (`flows::insert_pair`) before the
//! search ends, so two flows never share an outside tuple.
//!
//! The search goes word by word (64 ports) from the random start's word.
//! Its first pass trusts the hint: it tries the ports whose bit is clear
//! and passes a full word in one step. Should the hint call every word full,
//! a second pass checks each word's set bits against `NAT_PORTS` and tries
//! every port not really taken, so the search fails (`drop_port_exhausted`)
//! only when every port of the range is taken. The first word is checked
//! that way at once when the hint calls it full: a stale word mends where a
//! search lands, so stale bits do not pile up. Each step tries one port or
//! passes one word, so the work is bounded by twice the words plus ports
//! of the range.
//!
//! A free port whose reply tuple holds a TCP connection another inside
//! endpoint closed less than `TIME_WAIT_SECS` ago is passed over: the remote
//! end may still hold that tuple in TIME_WAIT and refuse the new SYN. The
//! oldest such port seen is the fallback, taken once `PASS_OVER_MAX` of
//! them were passed over (one, on a CPU whose last searches all ended on
//! such a port: `CROWDED_STREAK`) or when the range has no other free port,
//! so the search still fails only when every port is taken, and the
//! preference costs at most `PASS_OVER_MAX` flow lookups per new flow.

use aya_ebpf::{
    cty::c_void,
    helpers::generated::{bpf_get_prandom_u32, bpf_loop},
    programs::TcContext,
    EbpfContext as _,
};
use netlab_common::{Endpoint, NatConfig, IPPROTO_ICMP};
use netlab_ebpf::{
    in_nat_range, lowest_set_bit, port_candidate, port_word_mask, port_words, PORT_WORD_BITS,
};

use crate::{
    binding::{self, holder, host_socket_uses, last_binding, lifetime_ns},
    flows::{closed_recently, insert_pair},
    lab::{config, forwarded, forwarded_word},
    maps::{PortCursor, PORT_CURSOR},
    port_hint, table,
    template::FlowTemplate,
    verdict::DropReason,
};

/// Make the mapped flow `t` (masquerade or hairpin), its outside port
/// found here; the template comes back with that port. `resume`: the
/// calling program's `TAILS` slot, should the table need a collection.
///
/// The steps run as a `bpf_loop` callback, which the verifier checks once
/// rather than once per step.
#[inline(always)]
pub fn map_flow(
    ctx: &TcContext,
    cfg: &NatConfig,
    t: FlowTemplate,
    now: u64,
    resume: u32,
) -> Result<FlowTemplate, DropReason> {
    if !table::admit(ctx, cfg, &t.opening.key, now, resume) {
        return Err(DropReason::TableFull);
    }
    let Some(cursor) = PORT_CURSOR.get_ptr_mut(0) else {
        return Err(DropReason::NoScratch);
    };
    let (first, last) = port_words(cfg);
    let words = last - first + 1;
    let streak = unsafe { (*cursor).closed_streak };
    unsafe {
        *cursor = PortCursor {
            candidates: 0,
            used: 0,
            fallback_ns: 0,
            // Drawn by the first step (see `search_step`).
            start: first,
            word: first,
            words_left: words,
            found: 0,
            fallback: 0,
            pass: PASS_TRUST,
            loaded: 0,
            checking: 0,
            passed_over: 0,
            has_fallback: 0,
            take_closed: 0,
            last_port: 0,
            has_last: 0,
            pass_over_max: pass_over_max(streak),
            closed_streak: streak,
            _pad: [0; 3],
        };
    }
    let mut search = Search {
        skb: ctx.as_ptr(),
        template: t,
        now,
    };
    // Three steps before the passes; each pass passes every word once and
    // tries each port at most once; one more step finds the range full;
    // the fallback is tried at most once, and its step may come before
    // the word's.
    let ports = u32::from(cfg.port_max - cfg.port_min) + 1;
    let steps = 3 + 2 * (u32::from(words) + ports) + 1 + 2;
    unsafe {
        bpf_loop(
            steps,
            search_step as *mut c_void,
            &mut search as *mut Search as *mut c_void,
            0,
        );
    }
    let c = unsafe { &mut *cursor };
    if c.found == 0 {
        return Err(DropReason::PortExhausted);
    }
    c.closed_streak = match c.take_closed {
        0 => 0,
        _ => c.closed_streak.saturating_add(1),
    };
    let found = c.found;
    // The template's port is the last one tried: set the one found.
    search.template.set_port(found);
    Ok(search.template)
}

/// Draws of the random start after the first (see [`start_word`]).
const START_REDRAWS: u32 = 3;

/// The search's first word: a random one, drawn again (at most
/// `START_REDRAWS` times) while it lands on a forwarded port of a word with
/// no port the hint calls free. A block of forwarded ports in the range
/// (RTP, a range of test services) would otherwise cost every search that
/// starts in it a step per word to the block's end. A full word of ports
/// that are not forwarded is still landed on, and mended if its bits are
/// stale.
#[inline(always)]
fn start_word(cfg: &NatConfig, proto: u8) -> u16 {
    let mut port = port_candidate(cfg, unsafe { bpf_get_prandom_u32() });
    for _ in 0..START_REDRAWS {
        let word = port / PORT_WORD_BITS;
        let mask = port_word_mask(cfg, word);
        let forwarded = forwarded_word(proto, word);
        let full = (port_hint::word(proto, word) | forwarded) & mask == mask;
        if !full || forwarded & (1 << (port % PORT_WORD_BITS)) == 0 {
            break;
        }
        port = port_candidate(cfg, unsafe { bpf_get_prandom_u32() });
    }
    port / PORT_WORD_BITS
}

const PASS_TRUST: u8 = 0;
const PASS_CHECK: u8 = 1;

/// Recently closed tuples passed over before the oldest of them is taken:
/// bounds the work where every free port has one (a connection rate above
/// the range per `TIME_WAIT_SECS` to one remote endpoint).
const PASS_OVER_MAX: u8 = 8;

/// Searches in a row that ended on a recently closed tuple, after which a
/// CPU passes over only one: there every free port has such a tuple (the
/// load tools' case, tens of thousands of connections a second to one
/// server), so the oldest of eight buys nothing and costs seven flow
/// lookups, cache misses in a table that full, per new connection. The
/// first search that finds a port with no such tuple ends the streak.
const CROWDED_STREAK: u8 = 4;

/// The bound on pass-overs for a search after `streak` (see above).
#[inline(always)]
fn pass_over_max(streak: u8) -> u8 {
    if streak >= CROWDED_STREAK {
        1
    } else {
        PASS_OVER_MAX
    }
}

/// What the `bpf_loop` callback works on (on the caller's stack; where
/// the search is, and what it found, lives in `PORT_CURSOR`).
#[repr(C)]
struct Search {
    skb: *mut c_void,
    template: FlowTemplate,
    now: u64,
}

/// What a step does after choosing.
enum Step {
    /// Try this host-order port.
    Try(u16),
    /// Nothing to try in this step; go on.
    Next,
    /// The search is over.
    Stop,
}

/// One step: 0 draws the start word and reuses the endpoint's live
/// mapping (or notes its expired one), 1 tries the expired mapping's port again, 2 tries to keep the
/// inside port, then the fallback when it is due, one port of the word at
/// hand, or the next word. Returns 1 to stop the loop. Calls no function
/// (see `template::clear_the_rest`).
#[inline(never)]
extern "C" fn search_step(index: u64, search: *mut c_void) -> i64 {
    let search = unsafe { &mut *(search as *mut Search) };
    let Some(cfg) = config() else { return 1 };
    let Some(c) = PORT_CURSOR.get_ptr_mut(0) else {
        return 1;
    };
    let c = unsafe { &mut *c };
    let opening = search.template.opening.key;
    let proto = opening.proto;
    let inside = Endpoint::new(opening.src_addr, opening.src_port, proto);
    if index == 0 {
        // Drawn here rather than by `map_flow`: the callback's stack frame
        // has room where the calling program's has not.
        c.start = start_word(cfg, proto);
        c.word = c.start;
        let Some((port, live)) = last_binding(cfg, &inside, search.now) else {
            return 0;
        };
        if live {
            search.template.set_port(port);
            if insert_pair(cfg, &search.template, search.now).is_ok() {
                c.found = port;
                return 1;
            }
        } else if in_nat_range(cfg, u16::from_be(port)) {
            c.last_port = u16::from_be(port);
            c.has_last = 1;
        }
        return 0;
    }
    let port = match choose(index, c, cfg, &inside, search.now) {
        Step::Try(port) => port,
        Step::Next => return 0,
        Step::Stop => return 1,
    };
    let found = try_port(search, c, cfg, &inside, port);
    // A checked word is checked to its end (its stale bits cleared).
    i64::from(found && c.checking == 0)
}

/// The port a step tries, if any. From step 1: the endpoint's previous
/// outside port, the inside port, then the
/// fallback once `pass_over_max` recently closed tuples were passed over or
/// both passes are over, else the word at hand's next candidate.
#[inline(always)]
fn choose(index: u64, c: &mut PortCursor, cfg: &NatConfig, inside: &Endpoint, now: u64) -> Step {
    let proto = inside.proto;
    if index == 1 {
        if c.has_last != 0 {
            return Step::Try(c.last_port);
        }
        return Step::Next;
    }
    if index == 2 {
        let preferred = u16::from_be(inside.port);
        if proto != IPPROTO_ICMP && in_nat_range(cfg, preferred) {
            return Step::Try(preferred);
        }
        return Step::Next;
    }
    let fallback_due = c.found == 0 && c.take_closed == 0 && c.has_fallback != 0;
    if fallback_due && c.passed_over >= c.pass_over_max {
        c.take_closed = 1;
        return Step::Try(c.fallback);
    }
    if c.loaded == 0 && !load_word(c, cfg, proto) {
        // Every port of the range looked at: the fallback, or none.
        if fallback_due {
            c.take_closed = 1;
            return Step::Try(c.fallback);
        }
        return Step::Stop;
    }
    if c.candidates == 0 {
        if c.found != 0 {
            return Step::Stop; // found, and the word checked to its end
        }
        next_word(c, cfg);
        return Step::Next;
    }
    let bit = lowest_set_bit(c.candidates);
    c.candidates &= !(1u64 << bit);
    let port = c.word * PORT_WORD_BITS + bit;
    if c.used & (1u64 << bit) != 0 {
        // Checking a set bit: skip a port really taken, clear a stale bit.
        let outside = Endpoint::new(cfg.uplink_addr, port.to_be(), proto);
        if holder(&outside, now).is_some() {
            return Step::Next;
        }
        if c.found != 0 {
            port_hint::unmark(proto, port);
            return Step::Next;
        }
    } else if c.found != 0 {
        return Step::Next;
    }
    Step::Try(port)
}

/// Read the word at hand; at the end of the first pass, start the second.
/// False when the second pass is over too.
#[inline(always)]
fn load_word(c: &mut PortCursor, cfg: &NatConfig, proto: u8) -> bool {
    let (first, last) = port_words(cfg);
    let words = last - first + 1;
    if c.words_left == 0 {
        if c.pass == PASS_CHECK {
            return false;
        }
        c.pass = PASS_CHECK;
        c.words_left = words;
        c.word = c.start;
    }
    let used = port_hint::word(proto, c.word);
    let forwarded = forwarded_word(proto, c.word);
    // Forwarded ports are never candidates, in either pass.
    let mask = port_word_mask(cfg, c.word) & !forwarded;
    let landing = c.pass == PASS_TRUST && c.words_left == words;
    let check = c.pass == PASS_CHECK || (landing && used & mask == mask);
    c.used = if check { used } else { 0 };
    c.candidates = if check { mask } else { !used & mask };
    c.checking = u8::from(check);
    c.loaded = 1;
    true
}

/// Pass on to the next word of the range (after the last, the first).
#[inline(always)]
fn next_word(c: &mut PortCursor, cfg: &NatConfig) {
    let (first, last) = port_words(cfg);
    c.loaded = 0;
    c.checking = 0;
    c.words_left -= 1;
    c.word = if c.word >= last { first } else { c.word + 1 };
}

/// Try host-order `port` for the search's flow: not forwarded, its reply
/// tuple not recently closed by another endpoint (unless the search takes
/// those now; it is remembered as the fallback if it is the oldest), no
/// host socket's, reserved for `inside`, and the flow made. Marks the port
/// taken in the hint whatever the outcome (a port that stays free, its
/// flow's tuple being another's, is found again by a check).
#[inline(always)]
fn try_port(
    search: &mut Search,
    c: &mut PortCursor,
    cfg: &NatConfig,
    inside: &Endpoint,
    host_order: u16,
) -> bool {
    let proto = inside.proto;
    port_hint::mark(proto, host_order);
    let port = host_order.to_be();
    if forwarded(port, proto) {
        return false;
    }
    let now = search.now;
    // The other direction's key: the template's destination to this port.
    search.template.set_port(port);
    if c.take_closed == 0 {
        if let Some(closed) = closed_recently(&search.template.other.key, inside, now) {
            if c.has_fallback == 0 || closed < c.fallback_ns {
                c.fallback = host_order;
                c.fallback_ns = closed;
                c.has_fallback = 1;
            }
            c.passed_over += 1;
            return false;
        }
    }
    let remote = &search.template.other.key;
    if host_socket_uses(
        search.skb,
        proto,
        remote.src_addr,
        remote.src_port,
        cfg.uplink_addr,
        port,
    ) {
        return false;
    }
    let outside = Endpoint::new(cfg.uplink_addr, port, proto);
    let expires = now + lifetime_ns(cfg, proto, search.template.state);
    let Some(fresh) = binding::reserve_port(&outside, inside, expires, now) else {
        return false;
    };
    if insert_pair(cfg, &search.template, now).is_ok() {
        binding::bind(inside, &outside, expires);
        c.found = port;
        return true;
    }
    if fresh {
        binding::release_port(&outside);
    }
    false
}
