//! IPv6 fragments, as `frags` for IPv4: a datagram's later fragments come
//! without its upper-layer header, so they get the address its first
//! fragment was translated to (IPv6 has no header checksum to mend, and the
//! upper layer's went with the first fragment).

use netlab_common::Frag6Key;

use crate::{
    binding::BPF_ANY,
    maps::FRAG6_FLOWS,
    packet::FRAG_FIRST,
    packet6::{Ip6, Pkt6, Upper},
};

/// Note the translation of a first fragment `p` (its address as it came):
/// its later fragments get `to`.
#[inline(always)]
pub fn record(p: &Pkt6, to: &[u8; 16]) {
    if p.frag != FRAG_FIRST {
        return;
    }
    let key = Frag6Key {
        src_addr: p.key.src_addr,
        dst_addr: p.key.dst_addr,
        id: p.frag_id,
        proto: p.proto,
        _pad0: 0,
        _pad1: 0,
    };
    let _ = FRAG6_FLOWS.insert(&key, to, BPF_ANY);
}

/// The address a later fragment gets, when its first was translated.
#[inline(always)]
pub fn translation(ip: &Ip6, u: &Upper) -> Option<[u8; 16]> {
    let key = Frag6Key {
        src_addr: ip.src,
        dst_addr: ip.dst,
        id: u.frag_id,
        proto: u.proto,
        _pad0: 0,
        _pad1: 0,
    };
    FRAG6_FLOWS.get_ptr(&key).map(|a| unsafe { *a })
}
