//! Pure logic shared by the programs, kept apart from anything that needs a
//! packet so it is unit-tested on the host: checksum arithmetic, TCP state,
//! timeouts and port choice.
#![no_std]

use netlab_common::{
    NatConfig, DIR_ORIGINAL, IPPROTO_TCP, IPPROTO_UDP, STATE_FIN_ORIGINAL, STATE_FIN_REPLY,
    STATE_REPLIED, STATE_RST, STATE_SYN, TIME_WAIT_SECS,
};

pub const NSEC_PER_SEC: u64 = 1_000_000_000;

/// TCP flag bits as in the header's 14th byte.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// One's-complement checksum after a 16-bit word of the covered data changed
/// from `old` to `new` (RFC 1624, eqn. 3). Works on the raw (wire-order)
/// words: one's-complement sums are byte-order independent.
#[inline(always)]
pub fn csum_replace2(check: u16, old: u16, new: u16) -> u16 {
    let mut sum: u32 = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// As [`csum_replace2`] for a 32-bit field (an IPv4 address), given as the
/// wire bytes read as a native `u32`.
#[inline(always)]
pub fn csum_replace4(check: u16, old: u32, new: u32) -> u16 {
    let lo = |v: u32| v as u16;
    let hi = |v: u32| (v >> 16) as u16;
    csum_replace2(csum_replace2(check, lo(old), lo(new)), hi(old), hi(new))
}

/// A checksum after adding `diff`, a one's-complement sum of what changed
/// (as `bpf_csum_diff` returns it: the new words' sum minus the old's), to
/// what it covers (RFC 1624, eqn. 3 over many words at once).
#[inline(always)]
pub fn csum_add_diff(check: u16, diff: u32) -> u16 {
    let mut sum = u64::from(!check) + u64::from(diff);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// RFC 1071 checksum of `data` as big-endian 16-bit words, starting from
/// `initial` (a pseudo-header sum). For frames built on the host (the
/// programs only update checksums, through the kernel's helpers or
/// [`csum_replace2`]).
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from(chunk[0]) << 8
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Connection state after a packet with `flags` in direction `dir`.
/// A SYN on a closed or closing flow starts it afresh (a client reusing its
/// port), as conntrack does.
#[inline(always)]
pub fn tcp_next_state(state: u8, flags: u8, dir: u8) -> u8 {
    let closing = STATE_RST | STATE_FIN_ORIGINAL | STATE_FIN_REPLY;
    if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 && dir == DIR_ORIGINAL && state & closing != 0 {
        return STATE_SYN;
    }
    let mut next = state;
    if flags & TCP_SYN != 0 && dir == DIR_ORIGINAL {
        next |= STATE_SYN;
    }
    if dir != DIR_ORIGINAL {
        next |= STATE_REPLIED;
    }
    if flags & TCP_RST != 0 {
        next |= STATE_RST;
    }
    if flags & TCP_FIN != 0 {
        next |= if dir == DIR_ORIGINAL {
            STATE_FIN_ORIGINAL
        } else {
            STATE_FIN_REPLY
        };
    }
    next
}

/// State after a non-TCP packet: a reply makes the flow answered.
#[inline(always)]
pub fn datagram_next_state(state: u8, dir: u8) -> u8 {
    if dir != DIR_ORIGINAL {
        state | STATE_REPLIED
    } else {
        state
    }
}

/// Idle timeout of a flow in seconds.
#[inline(always)]
pub fn flow_timeout_secs(cfg: &NatConfig, proto: u8, state: u8) -> u32 {
    match proto {
        IPPROTO_TCP => {
            if state & STATE_RST != 0 {
                cfg.timeout_tcp_rst
            } else if state & (STATE_FIN_ORIGINAL | STATE_FIN_REPLY) != 0 {
                cfg.timeout_tcp_closing
            } else if state & STATE_REPLIED != 0 {
                cfg.timeout_tcp_established
            } else {
                cfg.timeout_tcp_syn
            }
        }
        IPPROTO_UDP => cfg.timeout_udp,
        _ => cfg.timeout_icmp,
    }
}

/// Whether a TCP connection closed with FINs at `closed` (ns) may still be
/// in TIME_WAIT at the remote end at `now`: closed less than
/// `TIME_WAIT_SECS` ago. Written out rather than with `saturating_sub`:
/// it runs under the port searches' `bpf_loop` callbacks, which must call
/// no function.
#[inline(always)]
pub fn in_time_wait(closed: u64, now: u64) -> bool {
    !(now > closed && now - closed >= TIME_WAIT_SECS * NSEC_PER_SEC)
}

/// A TCP connection that is over: reset, or closed both ways.
#[inline(always)]
pub fn tcp_closed(proto: u8, state: u8) -> bool {
    proto == IPPROTO_TCP
        && (state & STATE_RST != 0
            || state & (STATE_FIN_ORIGINAL | STATE_FIN_REPLY)
                == (STATE_FIN_ORIGINAL | STATE_FIN_REPLY))
}

/// How long a mapping stays reserved after its flow's last packet. A TCP
/// connection that is over frees its outside port at once, so connection
/// churn does not exhaust the port range; its flow entries still linger
/// (and translate stray retransmissions) until a new flow needs their
/// outside tuple or room in the table.
#[inline(always)]
pub fn binding_timeout_secs(cfg: &NatConfig, proto: u8, state: u8) -> u32 {
    if tcp_closed(proto, state) {
        0
    } else {
        flow_timeout_secs(cfg, proto, state)
    }
}

/// Whether a host-order port is in the NAT range.
#[inline(always)]
pub fn in_nat_range(cfg: &NatConfig, port: u16) -> bool {
    port >= cfg.port_min && port <= cfg.port_max
}

/// A candidate outside port (host order) from a random number.
#[inline(always)]
pub fn port_candidate(cfg: &NatConfig, random: u32) -> u16 {
    let span = u32::from(cfg.port_max - cfg.port_min) + 1;
    cfg.port_min + (random % span) as u16
}

/// Ports per word of the taken-port hint (`PORT_USED`).
pub const PORT_WORD_BITS: u16 = 64;

/// The words of the taken-port hint that hold the NAT range: first and
/// last word index (port / 64).
#[inline(always)]
pub fn port_words(cfg: &NatConfig) -> (u16, u16) {
    (cfg.port_min / PORT_WORD_BITS, cfg.port_max / PORT_WORD_BITS)
}

/// The bits of word `word` (ports `word * 64 ..`) that are in the NAT
/// range. `word` must be one of [`port_words`].
#[inline(always)]
pub fn port_word_mask(cfg: &NatConfig, word: u16) -> u64 {
    // A comparison rather than `min`: this runs under the port search's
    // `bpf_loop` callback, which must call no function.
    let base = u32::from(word) * u32::from(PORT_WORD_BITS);
    let (min, max) = (u32::from(cfg.port_min), u32::from(cfg.port_max));
    let lo = min.saturating_sub(base);
    let hi = if max >= base + 63 { 63 } else { max - base };
    (u64::MAX << (lo & 63)) & (u64::MAX >> ((63 - hi) & 63))
}

/// The index of the lowest set bit of `x` (nonzero). Written out rather than
/// `trailing_zeros`: the BPF target has no such instruction, and what LLVM
/// expands it to is not guaranteed to be a straight sequence.
#[inline(always)]
pub fn lowest_set_bit(x: u64) -> u16 {
    let mut x = x & x.wrapping_neg();
    let mut n = 0;
    if x & 0xffff_ffff == 0 {
        n += 32;
        x >>= 32;
    }
    if x & 0xffff == 0 {
        n += 16;
        x >>= 16;
    }
    if x & 0xff == 0 {
        n += 8;
        x >>= 8;
    }
    if x & 0xf == 0 {
        n += 4;
        x >>= 4;
    }
    if x & 0x3 == 0 {
        n += 2;
        x >>= 2;
    }
    if x & 0x1 == 0 {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use netlab_common::{DIR_REPLY, IPPROTO_ICMP};

    /// The whole-data checksum, to check the incremental updates against.
    fn checksum(data: &[u8]) -> u16 {
        super::checksum(data, 0)
    }

    #[test]
    fn incremental_update_matches_recomputation() {
        // An IPv4 header with its checksum, then a changed source address.
        let mut hdr: [u8; 20] = [
            0x45, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0, 192, 168, 15, 1, 198, 51, 100, 1,
        ];
        let c = checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&hdr), 0);
        let old = u32::from_ne_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]);
        let new_addr = [198, 51, 100, 2];
        let new = u32::from_ne_bytes(new_addr);
        let stored = u16::from_ne_bytes([hdr[10], hdr[11]]);
        let updated = csum_replace4(stored, old, new);
        hdr[12..16].copy_from_slice(&new_addr);
        hdr[10..12].copy_from_slice(&updated.to_ne_bytes());
        assert_eq!(checksum(&hdr), 0, "incrementally updated checksum verifies");
        // And a 16-bit change (a port) at an odd position in the data.
        let old16 = u16::from_ne_bytes([hdr[4], hdr[5]]);
        let new16 = u16::from_ne_bytes([0xff, 0xfe]);
        let stored = u16::from_ne_bytes([hdr[10], hdr[11]]);
        hdr[4..6].copy_from_slice(&[0xff, 0xfe]);
        hdr[10..12].copy_from_slice(&csum_replace2(stored, old16, new16).to_ne_bytes());
        assert_eq!(checksum(&hdr), 0);
    }

    #[test]
    fn exhaustive_small_updates_verify() {
        let base = [0x12u8, 0x34, 0xab, 0xcd, 0, 0];
        for old in [0u16, 1, 0x7fff, 0xfffe, 0xffff] {
            for new in [0u16, 2, 0x8000, 0xffff] {
                let mut d = base;
                d[0..2].copy_from_slice(&old.to_be_bytes());
                let c = checksum(&d);
                d[4..6].copy_from_slice(&c.to_be_bytes());
                let stored = u16::from_ne_bytes([d[4], d[5]]);
                let upd = csum_replace2(
                    stored,
                    u16::from_ne_bytes(old.to_be_bytes()),
                    u16::from_ne_bytes(new.to_be_bytes()),
                );
                d[0..2].copy_from_slice(&new.to_be_bytes());
                d[4..6].copy_from_slice(&upd.to_ne_bytes());
                assert_eq!(checksum(&d), 0, "old {old:#x} new {new:#x}");
            }
        }
    }

    fn cfg() -> NatConfig {
        NatConfig {
            port_min: 10000,
            port_max: 10009,
            timeout_tcp_syn: 240,
            timeout_tcp_established: 7440,
            timeout_tcp_closing: 240,
            timeout_tcp_rst: 10,
            timeout_udp: 300,
            timeout_icmp: 30,
            flow_limit: 1 << 20,
            uplink_addr6: [0; 16],
            ..Default::default()
        }
    }

    #[test]
    fn tcp_lifecycle() {
        let c = cfg();
        let s = tcp_next_state(0, TCP_SYN, DIR_ORIGINAL);
        assert_eq!(s, STATE_SYN);
        assert_eq!(flow_timeout_secs(&c, IPPROTO_TCP, s), 240);
        let s = tcp_next_state(s, TCP_SYN | TCP_ACK, DIR_REPLY);
        assert_eq!(
            flow_timeout_secs(&c, IPPROTO_TCP, s),
            7440,
            "established ≥ 2 h 4 min"
        );
        let s = tcp_next_state(s, TCP_FIN | TCP_ACK, DIR_ORIGINAL);
        assert_eq!(flow_timeout_secs(&c, IPPROTO_TCP, s), 240);
        assert_eq!(
            binding_timeout_secs(&c, IPPROTO_TCP, s),
            240,
            "half closed keeps its port"
        );
        let s = tcp_next_state(s, TCP_FIN | TCP_ACK, DIR_REPLY);
        assert_eq!(
            binding_timeout_secs(&c, IPPROTO_TCP, s),
            0,
            "closed frees its port at once"
        );
        assert!(tcp_closed(IPPROTO_TCP, s));
        // A new SYN on the closed flow starts over.
        assert_eq!(tcp_next_state(s, TCP_SYN, DIR_ORIGINAL), STATE_SYN);
        let r = tcp_next_state(STATE_SYN | STATE_REPLIED, TCP_RST, DIR_REPLY);
        assert_eq!(flow_timeout_secs(&c, IPPROTO_TCP, r), 10);
    }

    #[test]
    fn datagram_timeouts() {
        let c = cfg();
        assert!(
            flow_timeout_secs(&c, IPPROTO_UDP, 0) >= 120,
            "RFC 4787: UDP mappings last ≥ 2 min"
        );
        assert_eq!(flow_timeout_secs(&c, IPPROTO_ICMP, 0), 30);
        assert_eq!(datagram_next_state(0, DIR_REPLY), STATE_REPLIED);
        assert_eq!(datagram_next_state(0, DIR_ORIGINAL), 0);
    }

    #[test]
    fn candidates_stay_in_range() {
        let c = cfg();
        for r in [0u32, 1, 9, 10, 12345, u32::MAX] {
            let p = port_candidate(&c, r);
            assert!(in_nat_range(&c, p), "{p}");
        }
        assert!(!in_nat_range(&c, 9999));
        assert!(!in_nat_range(&c, 10010));
    }

    #[test]
    fn lowest_set_bit_of_every_position() {
        for i in 0..64u16 {
            assert_eq!(lowest_set_bit(1 << i), i);
            assert_eq!(lowest_set_bit(u64::MAX << i), i);
        }
    }

    /// The words' masks cover the range exactly: every port in it once,
    /// none outside it, whatever the range's alignment.
    #[test]
    fn word_masks_cover_the_range_exactly() {
        for (min, max) in [
            (10000, 32767),
            (20000, 20000),
            (0, 65535),
            (64, 127),
            (63, 64),
        ] {
            let c = NatConfig {
                port_min: min,
                port_max: max,
                ..cfg()
            };
            let (first, last) = port_words(&c);
            let mut covered = 0u32;
            for w in first..=last {
                let m = port_word_mask(&c, w);
                for b in 0..64u32 {
                    let port = u32::from(w) * 64 + b;
                    let in_range = port >= u32::from(min) && port <= u32::from(max);
                    assert_eq!(m & (1 << b) != 0, in_range, "{min}-{max}: port {port}");
                }
                covered += m.count_ones();
            }
            assert_eq!(covered, u32::from(max - min) + 1);
        }
    }

    #[test]
    fn a_checksum_difference_updates_as_a_recomputation_would() {
        let mut before = [0u8; 18];
        before[..16].copy_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        before[16..].copy_from_slice(&[0x12, 0x34]);
        let mut after = before;
        after[..16].copy_from_slice(&[
            0xfd, 0xec, 0x60, 0xcc, 0xb1, 0xbd, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 1,
        ]);
        // As bpf_csum_diff returns it: the new 32-bit words' sum plus the
        // complement of each old one, folded to 32 bits (native order).
        let word = |b: &[u8], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut sum = 0u64;
        for i in (0..16).step_by(4) {
            sum += u64::from(word(&after, i)) + u64::from(!word(&before, i));
        }
        while sum >> 32 != 0 {
            sum = (sum & 0xffff_ffff) + (sum >> 32);
        }
        // The checksums as stored on the wire, read natively.
        let stored = |c: u16| u16::from_ne_bytes(c.to_be_bytes());
        assert_eq!(
            csum_add_diff(stored(checksum(&before)), sum as u32),
            stored(checksum(&after))
        );
    }
}
