//! Writing a [`MapContents`] into the programs' maps: the one way the maps
//! get their contents, for `up` and for every harness that runs the
//! programs. Each map ends up holding exactly the description (entries it
//! no longer names are removed, so a re-`up` converges).

use anyhow::{Context as _, Result};
use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray};
use netlab_common::{
    names, ForwardCounter, ForwardKey, ForwardTarget, NatConfig, NodePort, SubnetInfo,
};

use super::{contents::MapContents, forwarded_ports, fwd_counters};

/// Make the maps hold exactly `want`.
pub fn fill_maps(ebpf: &mut aya::Ebpf, want: &MapContents) -> Result<()> {
    write_config(ebpf, &want.config)?;
    sync_subnets(ebpf, names::LAB_SUBNETS, &want.subnets)?;
    sync_subnets(ebpf, names::LAB_SUBNETS6, &want.subnets6)?;
    sync_hash(ebpf, names::LAB_IFACES, &want.ifaces)?;
    sync_hash(ebpf, names::TUNNEL_GATEWAYS, &want.tunnel_gateways)?;
    sync_forwards(ebpf, &want.forwards)?;
    let forwards6 = {
        let rules: HashMap<_, ForwardKey, ForwardTarget> = HashMap::try_from(
            ebpf.map(names::FORWARD_RULES)
                .context("map FORWARD_RULES")?,
        )?;
        fwd_counters::with_counters6(&rules, &want.forwards6)?
    };
    sync_hash(ebpf, names::FORWARD6_RULES, &forwards6)?;
    sync_hash(ebpf, names::NODE_PORTS6, &want.node_ports6)?;
    sync_node_ports(ebpf, &want.node_ports)
}

/// `FORWARD_RULES` with each forward's counter in `FORWARD_COUNTERS`, then
/// the forwarded-port bitmap.
fn sync_forwards(ebpf: &mut aya::Ebpf, want: &[super::contents::ForwardEntries]) -> Result<()> {
    let (rules, counters) = two_maps(ebpf, names::FORWARD_RULES, names::FORWARD_COUNTERS)?;
    let mut rules: HashMap<_, ForwardKey, ForwardTarget> = HashMap::try_from(rules)?;
    let mut counters: PerCpuArray<_, ForwardCounter> = PerCpuArray::try_from(counters)?;
    fwd_counters::sync_forwards(&mut rules, Some(&mut counters), want)?;
    forwarded_ports::sync_object(ebpf)
}

/// Maps `a` and `b` of the object, borrowed at once.
pub fn two_maps<'a>(
    ebpf: &'a mut aya::Ebpf,
    a: &str,
    b: &str,
) -> Result<(&'a mut aya::maps::Map, &'a mut aya::maps::Map)> {
    let (mut first, mut second) = (None, None);
    for (name, map) in ebpf.maps_mut() {
        if name == a {
            first = Some(map);
        } else if name == b {
            second = Some(map);
        }
    }
    Ok((
        first.with_context(|| format!("map {a}"))?,
        second.with_context(|| format!("map {b}"))?,
    ))
}

fn write_config(ebpf: &mut aya::Ebpf, config: &NatConfig) -> Result<()> {
    let mut cfg: Array<_, NatConfig> =
        Array::try_from(ebpf.map_mut(names::CONFIG).context("map CONFIG")?)?;
    // Keep a log switch set by a running `netlab log`.
    let log = cfg
        .get(&0, 0)
        .map(|c| c.flags & netlab_common::CONFIG_LOG)
        .unwrap_or(0);
    let config = NatConfig {
        flags: config.flags | log,
        ..*config
    };
    cfg.set(0, config, 0).context("writing CONFIG")
}

/// Make the subnet trie `name` (`LAB_SUBNETS` or `LAB_SUBNETS6`, keyed by
/// the address as `K`) hold exactly `subnets`.
fn sync_subnets<K: aya::Pod + PartialEq>(
    ebpf: &mut aya::Ebpf,
    name: &str,
    subnets: &[(Key<K>, SubnetInfo)],
) -> Result<()> {
    let mut trie: LpmTrie<_, K, SubnetInfo> =
        LpmTrie::try_from(ebpf.map_mut(name).with_context(|| format!("map {name}"))?)?;
    let have: Vec<Key<K>> = trie.keys().collect::<Result<_, _>>()?;
    for k in have {
        let stale = !subnets
            .iter()
            .any(|(w, _)| w.prefix_len() == k.prefix_len() && w.data() == k.data());
        if stale {
            trie.remove(&k)?;
        }
    }
    for (k, v) in subnets {
        trie.insert(k, v, 0)
            .with_context(|| format!("writing {name}"))?;
    }
    Ok(())
}

fn sync_node_ports(ebpf: &mut aya::Ebpf, node_ports: &[(u32, String, NodePort)]) -> Result<()> {
    let mut ports: HashMap<_, u32, NodePort> =
        HashMap::try_from(ebpf.map_mut(names::NODE_PORTS).context("map NODE_PORTS")?)?;
    let stale: Vec<u32> = ports.keys().collect::<Result<_, _>>()?;
    for k in stale {
        if !node_ports.iter().any(|(a, _, _)| *a == k) {
            ports.remove(&k)?;
        }
    }
    for (addr, _, port) in node_ports {
        ports.insert(addr, port, 0).context("writing NODE_PORTS")?;
    }
    Ok(())
}

/// Make the hash map `name` hold exactly `want` (`LAB_IFACES`: ifindex,
/// `LAB_IFACE_*` flags; `TUNNEL_GATEWAYS`: ifindex, MAC address).
fn sync_hash<K: aya::Pod + PartialEq, V: aya::Pod>(
    ebpf: &mut aya::Ebpf,
    name: &str,
    want: &[(K, V)],
) -> Result<()> {
    let mut map: HashMap<_, K, V> =
        HashMap::try_from(ebpf.map_mut(name).with_context(|| format!("map {name}"))?)?;
    sync_entries(&mut map, name, want)
}

/// Make the hash map `map` (named `name`) hold exactly `want`.
pub fn sync_entries<
    T: std::borrow::BorrowMut<aya::maps::MapData>,
    K: aya::Pod + PartialEq,
    V: aya::Pod,
>(
    map: &mut HashMap<T, K, V>,
    name: &str,
    want: &[(K, V)],
) -> Result<()> {
    let have: Vec<K> = map.keys().collect::<Result<_, _>>()?;
    for k in have {
        if !want.iter().any(|(w, _)| *w == k) {
            map.remove(&k)
                .with_context(|| format!("removing from {name}"))?;
        }
    }
    for (k, v) in want {
        map.insert(k, v, 0)
            .with_context(|| format!("writing {name}"))?;
    }
    Ok(())
}
