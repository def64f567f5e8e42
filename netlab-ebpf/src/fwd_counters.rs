//! Per-forward cumulative counters (`FORWARD_COUNTERS`): a packet of a flow
//! made through a forward counts on the forward's slot, per CPU, as long as
//! the slot still belongs to that forward (see `netlab_common::fwd_counter`).

use netlab_common::{fwd_counter, DIR_ORIGINAL};

use crate::maps::FORWARD_COUNTERS;

/// Count a packet of `len` bytes in direction `dir` (`DIR_ORIGINAL`: to the
/// forward's target) on the forward whose counter is `id` (0: none).
#[inline(always)]
pub fn add(id: u16, dir: u8, len: u32) {
    if id == 0 {
        return;
    }
    let Some(c) = FORWARD_COUNTERS.get_ptr_mut(fwd_counter::slot(id)) else {
        return;
    };
    let c = unsafe { &mut *c };
    // The slot went to another forward since the flow was made.
    if c.id != id {
        return;
    }
    if dir == DIR_ORIGINAL {
        c.packets_in += 1;
        c.bytes_in += u64::from(len);
    } else {
        c.packets_out += 1;
        c.bytes_out += u64::from(len);
    }
}
