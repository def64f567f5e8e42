//! `FORWARDED_PORTS`, the bitmap of forwarded ports the port search reads
//! (a word of 64 ports at a time) instead of looking each port up in
//! `FORWARD_RULES`. It is derived from `FORWARD_RULES` after every change to
//! it, so the two cannot disagree for longer than one write.

use std::borrow::{Borrow, BorrowMut};

use anyhow::{Context as _, Result};
use aya::maps::{Array, HashMap, MapData};
use netlab_common::{
    forwarded_port_bit, names, ForwardKey, ForwardTarget, FORWARDED_PORTS_ENTRIES,
};

/// The bitmap's words for the forwarded `keys` (network-order ports).
pub fn words(keys: impl IntoIterator<Item = ForwardKey>) -> Vec<u64> {
    let mut words = vec![0u64; FORWARDED_PORTS_ENTRIES as usize];
    for key in keys {
        if let Some((index, bit)) = forwarded_port_bit(key.proto, u16::from_be(key.port)) {
            words[index as usize] |= bit;
        }
    }
    words
}

/// Make `bitmap` say exactly which ports `rules` forwards. Writes only the
/// words that change: a new forward's bits appear after its rule (the
/// caller wrote the rules first), a removed one's go after its rule went.
pub fn sync<R: Borrow<MapData>, B: BorrowMut<MapData>>(
    rules: &HashMap<R, ForwardKey, ForwardTarget>,
    bitmap: &mut Array<B, u64>,
) -> Result<()> {
    let keys: Vec<ForwardKey> = rules
        .keys()
        .collect::<Result<_, _>>()
        .context("reading FORWARD_RULES")?;
    for (index, want) in (0u32..).zip(words(keys)) {
        let have = bitmap
            .get(&index, 0)
            .with_context(|| format!("reading FORWARDED_PORTS word {index}"))?;
        if have != want {
            bitmap
                .set(index, want, 0)
                .with_context(|| format!("writing FORWARDED_PORTS word {index}"))?;
        }
    }
    Ok(())
}

/// [`sync`] on a loaded object's two maps.
pub fn sync_object(ebpf: &mut aya::Ebpf) -> Result<()> {
    let (rules, bitmap) =
        super::fill::two_maps(ebpf, names::FORWARD_RULES, names::FORWARDED_PORTS)?;
    let rules: HashMap<_, ForwardKey, ForwardTarget> = HashMap::try_from(&*rules)?;
    let mut bitmap: Array<_, u64> = Array::try_from(bitmap)?;
    sync(&rules, &mut bitmap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlab_common::{port_to_net, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, PORT_HINT_WORDS};

    fn key(port: u16, proto: u8) -> ForwardKey {
        ForwardKey::new(port_to_net(port), proto)
    }

    #[test]
    fn each_forwarded_port_sets_its_own_bit_per_protocol() {
        let w = words([
            key(0, IPPROTO_TCP),
            key(80, IPPROTO_TCP),
            key(65535, IPPROTO_TCP),
            key(80, IPPROTO_UDP),
        ]);
        let hint = PORT_HINT_WORDS as usize;
        assert_eq!(w.len(), 2 * hint);
        assert_eq!(w[0], 1, "TCP port 0");
        assert_eq!(w[1], 1 << 16, "TCP port 80 is bit 16 of word 1");
        assert_eq!(w[hint - 1], 1 << 63, "TCP port 65535");
        assert_eq!(w[hint + 1], 1 << 16, "UDP port 80");
        let set: u32 = w.iter().map(|x| x.count_ones()).sum();
        assert_eq!(set, 4, "no other bit");
    }

    #[test]
    fn a_block_fills_whole_words_and_icmp_sets_nothing() {
        let block = (10_001..=11_000).map(|p| key(p, IPPROTO_TCP));
        let w = words(block.chain([key(7, IPPROTO_ICMP)]));
        let set: u32 = w.iter().map(|x| x.count_ones()).sum();
        assert_eq!(set, 1000);
        // 10,048..=10,943: words 157..=170 whole.
        assert!(w[157..=170].iter().all(|&x| x == u64::MAX));
        assert_eq!(w[156], u64::MAX << (10_001 % 64));
        assert_eq!(w[171], u64::MAX >> (63 - 11_000 % 64));
    }
}
