//! Fragments: everything but a datagram's first fragment comes without its
//! L4 header, so the rest follow the translation recorded for the first.

use netlab_common::{FragKey, FragValue};

use crate::{
    binding::BPF_ANY,
    maps::FRAG_FLOWS,
    packet::{Pkt, FRAG_FIRST},
};

#[inline(always)]
fn key_of(p: &Pkt) -> FragKey {
    FragKey {
        src_addr: p.src,
        dst_addr: p.dst,
        id: p.ip_id,
        proto: p.proto,
        _pad: 0,
    }
}

/// Remember how the first fragment of a datagram was translated.
#[inline(always)]
pub fn record(p: &Pkt, src: u32, dst: u32) {
    if p.frag != FRAG_FIRST {
        return;
    }
    let _ = FRAG_FLOWS.insert(
        &key_of(p),
        &FragValue {
            src_addr: src,
            dst_addr: dst,
        },
        BPF_ANY,
    );
}

/// The translation recorded for a later fragment.
#[inline(always)]
pub fn translation(p: &Pkt) -> Option<FragValue> {
    FRAG_FLOWS.get_ptr(&key_of(p)).map(|v| unsafe { *v })
}
