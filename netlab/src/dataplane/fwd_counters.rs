//! Per-forward cumulative counters, user side. Which counter id (slot and
//! generation, `netlab_common::fwd_counter`) each forward gets, so that a
//! forward that stays keeps its count across `up` and `fwd add`/`del` of
//! others ([`plan`], pure); writing the forwards with their ids into
//! `FORWARD_RULES`, a reused slot zeroed first ([`sync_forwards`]); and
//! reading each forward's totals, summed over CPUs ([`totals`]).

use std::{
    borrow::BorrowMut,
    collections::{BTreeSet, HashMap as StdHashMap},
};

use anyhow::{Context as _, Result};
use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuValues};
use netlab_common::{
    fwd_counter, names, Forward6Target, ForwardCounter, ForwardKey, ForwardTarget,
};
use serde::Serialize;

use super::{
    contents::{forward_entries, ForwardEntries},
    pins::LabPins,
};
use crate::model::topology::Forward;

/// What [`sync_forwards`] writes: the counter ids whose slots are zeroed
/// and given to them, then every `FORWARD_RULES` entry with its counter.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub resets: Vec<u16>,
    pub entries: Vec<(ForwardKey, ForwardTarget)>,
}

/// Counter ids for the forwards `want` (each one's entries, counters 0),
/// given what `FORWARD_RULES` holds (`have`) and the id each slot holds
/// now (`slot_ids`, by slot). A forward keeps its id when exactly its ports
/// carry it, each to the same target. Any other (new, moved, or the parts
/// of a range that `fwd del` cut: their labels are new too) gets the free
/// slot used least (lowest generation, so a generation comes round again
/// as late as can be), with the next generation; with no slot free, it is
/// forwarded but not counted (0).
pub fn plan(
    have: &StdHashMap<ForwardKey, ForwardTarget>,
    slot_ids: &[u16],
    want: &[ForwardEntries],
) -> Plan {
    let mut carriers: StdHashMap<u16, usize> = StdHashMap::new();
    for t in have.values().filter(|t| t.counter != 0) {
        *carriers.entry(t.counter).or_default() += 1;
    }
    let kept: Vec<Option<u16>> = want
        .iter()
        .map(|entries| kept_id(have, &carriers, entries))
        .collect();
    let generation = |slot: usize| {
        slot_ids
            .get(slot)
            .map_or(0, |&id| fwd_counter::generation(id))
    };
    let mut taken = vec![false; fwd_counter::SLOTS as usize];
    for id in kept.iter().flatten() {
        taken[fwd_counter::slot(*id) as usize] = true;
    }
    let mut plan = Plan {
        resets: Vec::new(),
        entries: Vec::new(),
    };
    for (entries, kept) in want.iter().zip(kept) {
        let fresh = || {
            let slot = (0..taken.len())
                .filter(|&s| !taken[s])
                .min_by_key(|&s| (generation(s), s))?;
            Some(fwd_counter::id(
                slot as u32,
                fwd_counter::next_generation(generation(slot)),
            ))
        };
        let id = match kept {
            Some(id) => id,
            None => match fresh() {
                Some(id) => {
                    taken[fwd_counter::slot(id) as usize] = true;
                    plan.resets.push(id);
                    id
                }
                None => 0,
            },
        };
        plan.entries.extend(
            entries
                .iter()
                .map(|(k, t)| (*k, ForwardTarget { counter: id, ..*t })),
        );
    }
    plan
}

/// The id a forward keeps: the one all its ports carry, to the same
/// targets, and no other port carries.
fn kept_id(
    have: &StdHashMap<ForwardKey, ForwardTarget>,
    carriers: &StdHashMap<u16, usize>,
    entries: &ForwardEntries,
) -> Option<u16> {
    let (first, _) = entries.first()?;
    let id = have.get(first)?.counter;
    let all = entries.iter().all(|(k, t)| {
        have.get(k)
            .is_some_and(|h| h.counter == id && h.same_target(t))
    });
    (id != 0 && all && carriers.get(&id) == Some(&entries.len())).then_some(id)
}

/// Make `FORWARD_RULES` hold exactly the forwards `want`, each with its
/// counter (see [`plan`]). A slot given to a new forward is zeroed, with
/// the new id, before any rule names it. Without `counters` (a dataplane
/// of a netlab that had none), the forwards are written uncounted.
pub fn sync_forwards<R: BorrowMut<MapData>, C: BorrowMut<MapData>>(
    rules: &mut HashMap<R, ForwardKey, ForwardTarget>,
    counters: Option<&mut PerCpuArray<C, ForwardCounter>>,
    want: &[ForwardEntries],
) -> Result<()> {
    let have: StdHashMap<ForwardKey, ForwardTarget> = rules
        .iter()
        .collect::<Result<_, _>>()
        .context("reading FORWARD_RULES")?;
    let entries = match counters {
        Some(counters) => {
            let plan = plan(&have, &slot_ids(counters)?, want);
            for id in &plan.resets {
                reset(counters, *id)?;
            }
            plan.entries
        }
        None => want.iter().flatten().copied().collect(),
    };
    let wanted: StdHashMap<ForwardKey, ForwardTarget> = entries.into_iter().collect();
    for k in have.keys() {
        if !wanted.contains_key(k) {
            rules.remove(k).context("removing a forward")?;
        }
    }
    for (k, v) in &wanted {
        if have.get(k) != Some(v) {
            rules.insert(k, v, 0).context("adding a forward")?;
        }
    }
    Ok(())
}

/// The IPv6 side of the forwards `want6`, each counting on its IPv4 rule's
/// counter (`rules`, as `sync_forwards` left them: one forward, one count,
/// whichever family its packets come in by).
pub fn with_counters6<R: std::borrow::Borrow<MapData>>(
    rules: &HashMap<R, ForwardKey, ForwardTarget>,
    want6: &[(ForwardKey, Forward6Target)],
) -> Result<Vec<(ForwardKey, Forward6Target)>> {
    let have: StdHashMap<ForwardKey, ForwardTarget> = rules
        .iter()
        .collect::<Result<_, _>>()
        .context("reading FORWARD_RULES")?;
    Ok(want6
        .iter()
        .map(|(k, t)| {
            let counter = have.get(k).map_or(0, |r| r.counter);
            (*k, Forward6Target { counter, ..*t })
        })
        .collect())
}

/// The id each slot holds (every CPU's copy is written alike).
fn slot_ids<C: BorrowMut<MapData>>(counters: &PerCpuArray<C, ForwardCounter>) -> Result<Vec<u16>> {
    (0..fwd_counter::SLOTS)
        .map(|slot| {
            let values = counters
                .get(&slot, 0)
                .with_context(|| format!("reading FORWARD_COUNTERS slot {slot}"))?;
            Ok(values.iter().map(|c| c.id).max().unwrap_or(0))
        })
        .collect()
}

/// Zero `id`'s slot on every CPU and give it to `id`.
fn reset<C: BorrowMut<MapData>>(
    counters: &mut PerCpuArray<C, ForwardCounter>,
    id: u16,
) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    let fresh = ForwardCounter {
        id,
        ..ForwardCounter::default()
    };
    let values = PerCpuValues::try_from(vec![fresh; cpus]).context("per-CPU counter values")?;
    counters
        .set(fwd_counter::slot(id), values, 0)
        .context("zeroing a FORWARD_COUNTERS slot")
}

/// A forward's packets and bytes since it was made (or last moved): `in`
/// toward its target, `out` its replies, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ForwardTotals {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
}

impl ForwardTotals {
    /// The totals of `id` over its slot's per-CPU values (a CPU's value
    /// that holds another id is not its).
    pub fn add(&mut self, id: u16, per_cpu: &[ForwardCounter]) {
        for c in per_cpu.iter().filter(|c| c.id == id) {
            self.packets_in += c.packets_in;
            self.bytes_in += c.bytes_in;
            self.packets_out += c.packets_out;
            self.bytes_out += c.bytes_out;
        }
    }
}

/// Each forward's totals, in the order of `forwards`; `None` for one not
/// counted (not in the dataplane, or no slot was free for it).
pub fn totals(lab: &str, forwards: &[Forward]) -> Result<Vec<Option<ForwardTotals>>> {
    let pins = LabPins::new(lab);
    let rules: HashMap<_, ForwardKey, ForwardTarget> =
        HashMap::try_from(pins.open(names::FORWARD_RULES)?)?;
    let counters: PerCpuArray<_, ForwardCounter> =
        PerCpuArray::try_from(pins.open(names::FORWARD_COUNTERS)?)?;
    let mut out = Vec::new();
    for entries in forward_entries(forwards) {
        let ids: BTreeSet<u16> = entries
            .iter()
            .filter_map(|(k, _)| rules.get(k, 0).ok())
            .map(|t| t.counter)
            .filter(|&id| id != 0)
            .collect();
        if ids.is_empty() {
            out.push(None);
            continue;
        }
        let mut sum = ForwardTotals::default();
        for id in ids {
            let per_cpu = counters
                .get(&fwd_counter::slot(id), 0)
                .context("reading FORWARD_COUNTERS")?;
            sum.add(id, &per_cpu);
        }
        out.push(Some(sum));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlab_common::{port_to_net, IPPROTO_TCP};

    fn entry(port: u16, to: u32) -> (ForwardKey, ForwardTarget) {
        (
            ForwardKey::new(port_to_net(port), IPPROTO_TCP),
            ForwardTarget {
                addr: to,
                port: port_to_net(80),
                counter: 0,
                snat_addr: 0,
            },
        )
    }

    fn fwd(ports: std::ops::RangeInclusive<u16>, to: u32) -> ForwardEntries {
        ports.map(|p| entry(p, to)).collect()
    }

    /// Apply a plan as `sync_forwards` does: (rules, slot ids).
    fn apply(
        have: &StdHashMap<ForwardKey, ForwardTarget>,
        slots: &[u16],
        want: &[ForwardEntries],
    ) -> (StdHashMap<ForwardKey, ForwardTarget>, Vec<u16>, Plan) {
        let p = plan(have, slots, want);
        let mut slots = slots.to_vec();
        slots.resize(fwd_counter::SLOTS as usize, 0);
        for id in &p.resets {
            slots[fwd_counter::slot(*id) as usize] = *id;
        }
        (p.entries.iter().copied().collect(), slots, p)
    }

    fn id_of(rules: &StdHashMap<ForwardKey, ForwardTarget>, port: u16) -> u16 {
        rules[&entry(port, 0).0].counter
    }

    #[test]
    fn forwards_that_stay_keep_their_counters_and_new_ones_get_fresh_slots() {
        let (a, b) = (fwd(80..=80, 2), fwd(8000..=8009, 3));
        let (rules, slots, p) = apply(&StdHashMap::new(), &[], &[a.clone(), b.clone()]);
        let (ida, idb) = (id_of(&rules, 80), id_of(&rules, 8005));
        assert_ne!(ida, idb);
        assert!(ida != 0 && idb != 0);
        assert_eq!(p.resets, vec![ida, idb], "fresh slots are zeroed");
        assert!((8000..=8009).all(|port| id_of(&rules, port) == idb));
        // `up` again, and `fwd add` of another: a and b stay as they are.
        let c = fwd(9000..=9000, 2);
        let (rules, _, p) = apply(&rules, &slots, &[a.clone(), b.clone(), c]);
        assert_eq!((id_of(&rules, 80), id_of(&rules, 8000)), (ida, idb));
        assert_eq!(p.resets.len(), 1, "only the new forward's slot");
        assert!(!p.resets.contains(&ida) && !p.resets.contains(&idb));
    }

    #[test]
    fn a_moved_or_cut_forward_starts_afresh_and_a_reused_slot_gets_a_new_generation() {
        let a = fwd(8000..=8009, 3);
        let (rules, slots, _) = apply(&StdHashMap::new(), &[], &[a]);
        let old = id_of(&rules, 8000);
        // `fwd del tcp 8005`: both parts are new forwards (new labels).
        let parts = [fwd(8000..=8004, 3), fwd(8006..=8009, 3)];
        let (cut, slots, p) = apply(&rules, &slots, &parts);
        assert_eq!(p.resets.len(), 2);
        assert!(![id_of(&cut, 8000), id_of(&cut, 8006)].contains(&old));
        assert_ne!(id_of(&cut, 8000), id_of(&cut, 8006));
        // Moved to another target: a new counter too.
        let (moved, _, _) = apply(&cut, &slots, &[fwd(8000..=8004, 4), fwd(8006..=8009, 3)]);
        assert_ne!(id_of(&moved, 8000), id_of(&cut, 8000));
        assert_eq!(id_of(&moved, 8006), id_of(&cut, 8006));
        // Once every slot has been used once, a freed one comes back with
        // the next generation: flows of its old forward no longer match.
        let all_used: Vec<u16> = (0..fwd_counter::SLOTS)
            .map(|s| fwd_counter::id(s, 1))
            .collect();
        let (rules, _, p) = apply(&StdHashMap::new(), &all_used, &[fwd(80..=80, 2)]);
        assert_eq!(id_of(&rules, 80), fwd_counter::id(0, 2));
        assert_eq!(p.resets, vec![fwd_counter::id(0, 2)]);
    }

    #[test]
    fn without_a_free_slot_a_forward_is_not_counted() {
        let want: Vec<ForwardEntries> = (0..=fwd_counter::SLOTS as u16)
            .map(|i| fwd(1000 + i..=1000 + i, 2))
            .collect();
        let (rules, _, p) = apply(&StdHashMap::new(), &[], &want);
        assert_eq!(p.resets.len(), fwd_counter::SLOTS as usize);
        assert_eq!(id_of(&rules, 1000 + fwd_counter::SLOTS as u16), 0);
        let ids: BTreeSet<u16> = rules.values().map(|t| t.counter).collect();
        assert_eq!(
            ids.len(),
            fwd_counter::SLOTS as usize + 1,
            "distinct, and 0"
        );
    }

    #[test]
    fn totals_leave_out_a_cpu_whose_slot_went_to_another_forward() {
        let id = fwd_counter::id(3, 2);
        let mine = ForwardCounter {
            packets_in: 5,
            bytes_in: 500,
            packets_out: 4,
            bytes_out: 4000,
            id,
            ..Default::default()
        };
        let other = ForwardCounter {
            id: fwd_counter::id(3, 3),
            ..mine
        };
        let mut t = ForwardTotals::default();
        t.add(id, &[mine, other, mine]);
        assert_eq!(
            t,
            ForwardTotals {
                packets_in: 10,
                bytes_in: 1000,
                packets_out: 8,
                bytes_out: 8000
            }
        );
    }
}
