//! A flow's TCP state bits, shared by the CPUs that handle its two
//! directions. A connection's two FINs (or a FIN and a reset) often cross,
//! each direction on a CPU of its own: a plain store of the state each CPU
//! computed keeps only one of them, and the flow stays half-closed for the
//! closing timeout, where a SYN on its tuple no longer opens a new
//! connection. Bits are therefore set with an atomic OR of the 64-bit word
//! that holds the state byte (BPF has no atomic byte operations; Linux 5.12
//! has the OR). Only a SYN that restarts a closing flow clears bits, with a
//! plain store: nothing else of that connection is in flight then.

use netlab_common::{Flow6Value, FlowValue};

/// Make the state of `v` (an IPv4 flow entry in its map) `state`, which
/// came from `old`: bits added atomically, or stored when `state` restarts
/// the flow.
#[inline(always)]
pub fn set(v: *mut FlowValue, old: u8, state: u8) {
    set_at(v, core::mem::offset_of!(FlowValue, state), old, state);
}

/// [`set`] for the original entry of an IPv6 flow.
#[inline(always)]
pub fn set6(v: *mut Flow6Value, old: u8, state: u8) {
    set_at(v, core::mem::offset_of!(Flow6Value, state), old, state);
}

/// [`set`] for the state byte at `offset` of the map value `v`. Map values
/// are 8-aligned: the byte's word is at `offset` rounded down to 8, and
/// the byte is its `offset % 8`th (little-endian).
#[inline(always)]
fn set_at<T>(v: *mut T, offset: usize, old: u8, state: u8) {
    let base = v.cast::<u8>();
    unsafe {
        if restarts(old, state) {
            *base.add(offset) = state;
        } else {
            let word = base.add(offset & !7).cast::<u64>();
            or_word(word, u64::from(state) << ((offset & 7) * 8));
        }
    }
}

/// Whether going from `old` to `state` clears a bit.
#[inline(always)]
fn restarts(old: u8, state: u8) -> bool {
    state & old != old
}

/// `*word |= bits`, atomically.
///
/// # Safety
/// `word` points to an 8-aligned word of a map value.
#[inline(always)]
unsafe fn or_word(word: *mut u64, bits: u64) {
    core::arch::asm!(
        "lock *(u64 *)({word} + 0) |= {bits}",
        word = in(reg) word,
        bits = in(reg) bits,
        options(nostack),
    );
}
