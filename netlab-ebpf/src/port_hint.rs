//! Which outside ports are taken, as far as the port search has seen: a
//! bit per port and protocol in `PORT_USED`, so the search goes past a
//! full word of 64 ports in one read instead of 64 reservation attempts.
//!
//! A hint, never the reservation (that stays `NAT_PORTS`' exclusive
//! insert). A bit is set when the search takes its port or finds it taken
//! (reserved, forwarded, a host socket's); nothing tells the dataplane when
//! a reservation expires or is evicted, so a set bit may be stale. The
//! search re-checks the set bits of a word against `NAT_PORTS` before it
//! calls the range full (`port_search`), and clears the stale ones it finds.
//! Updates are plain read-modify-writes: a lost update between CPUs makes a
//! bit wrong, which costs work and is mended the same way.

use netlab_common::{IPPROTO_TCP, IPPROTO_UDP, PORT_HINT_WORDS};
use netlab_ebpf::PORT_WORD_BITS;

use crate::maps::PORT_USED;

/// The map index of `proto`'s word `word`.
#[inline(always)]
fn index(proto: u8, word: u16) -> u32 {
    let base = match proto {
        IPPROTO_TCP => 0,
        IPPROTO_UDP => PORT_HINT_WORDS,
        _ => 2 * PORT_HINT_WORDS,
    };
    base + u32::from(word)
}

/// The taken bits of `proto`'s ports `word * 64 ..` (none when unreadable).
#[inline(always)]
pub fn word(proto: u8, word: u16) -> u64 {
    PORT_USED.get(index(proto, word)).copied().unwrap_or(0)
}

/// Mark host-order `port` of `proto` taken.
#[inline(always)]
pub fn mark(proto: u8, port: u16) {
    if let Some(w) = PORT_USED.get_ptr_mut(index(proto, port / PORT_WORD_BITS)) {
        unsafe { *w |= 1 << (port % PORT_WORD_BITS) };
    }
}

/// Mark host-order `port` of `proto` free (found stale).
#[inline(always)]
pub fn unmark(proto: u8, port: u16) {
    if let Some(w) = PORT_USED.get_ptr_mut(index(proto, port / PORT_WORD_BITS)) {
        unsafe { *w &= !(1 << (port % PORT_WORD_BITS)) };
    }
}
