//! What a program does with a packet, and why it drops one. Handlers return
//! a [`Verdict`]; [`finish`] is the one place a drop reason is counted, so
//! no packet is dropped without a counted reason.

use aya_ebpf::bindings::TC_ACT_SHOT;
use netlab_common::stat;

use crate::maps::STATS;

/// "No opinion": continue with the next program on the hook (TCX) or the
/// next filter (clsact), so programs of others on the same interface still run.
pub const TC_ACT_UNSPEC: i32 = -1;

/// Why a packet is dropped: each reason is a counter of `stat`.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum DropReason {
    NoMapping = stat::DROP_NO_MAPPING,
    PortExhausted = stat::DROP_PORT_EXHAUSTED,
    BadHeader = stat::DROP_BAD_HEADER,
    Fragment = stat::DROP_FRAGMENT,
    Spoofed = stat::DROP_SPOOFED,
    Unsolicited = stat::DROP_UNSOLICITED,
    Conflict = stat::DROP_CONFLICT,
    TableFull = stat::DROP_TABLE_FULL,
    Filtered = stat::DROP_FILTERED,
    OutOfWindow = stat::DROP_OUT_OF_WINDOW,
    Protocol = stat::DROP_PROTOCOL,
    UnknownSource = stat::DROP_UNKNOWN_SOURCE,
    RewriteFailed = stat::DROP_REWRITE_FAILED,
    NoScratch = stat::DROP_NO_SCRATCH,
    V6Untranslated = stat::DROP_V6_UNTRANSLATED,
    V6HeaderChain = stat::DROP_V6_HEADER_CHAIN,
    GatewayIntoTunnel = stat::DROP_GATEWAY_INTO_TUNNEL,
}

/// A TC action, or the reason the packet is dropped.
pub type Verdict = Result<i32, DropReason>;

/// The action for a handler's verdict, counting a drop's reason.
#[inline(always)]
pub fn finish(verdict: Verdict) -> i32 {
    match verdict {
        Ok(action) => action,
        Err(reason) => {
            count(reason as u32);
            TC_ACT_SHOT
        }
    }
}

/// Add one to a `stat` counter (this CPU's).
#[inline(always)]
pub fn count(index: u32) {
    add(index, 1);
}

#[inline(always)]
pub fn add(index: u32, n: u64) {
    if let Some(c) = STATS.get_ptr_mut(index) {
        unsafe { *c += n };
    }
}
