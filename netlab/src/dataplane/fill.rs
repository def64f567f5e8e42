//! Writing a [`MapContents`] into the programs' maps: the one way the maps
//! get their contents, for `up` and for every harness that runs the
//! programs. Each map ends up holding exactly the description (entries it
//! no longer names are removed, so a re-`up` converges).

use anyhow::{Context as _, Result};
use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData};
use netlab_common::{names, ForwardKey, ForwardTarget, NatConfig, NodePort, SubnetInfo};

use super::contents::MapContents;

/// Make the maps hold exactly `want`.
pub fn fill_maps(ebpf: &mut aya::Ebpf, want: &MapContents) -> Result<()> {
    write_config(ebpf, &want.config)?;
    sync_subnets(ebpf, &want.subnets)?;
    sync_lab_ifaces(ebpf, &want.ifaces)?;
    let mut fwd: HashMap<_, ForwardKey, ForwardTarget> = HashMap::try_from(
        ebpf.map_mut(names::FORWARD_RULES)
            .context("map FORWARD_RULES")?,
    )?;
    sync_forwards(&mut fwd, &want.forwards)?;
    sync_node_ports(ebpf, &want.node_ports)
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

fn sync_subnets(ebpf: &mut aya::Ebpf, subnets: &[(Key<u32>, SubnetInfo)]) -> Result<()> {
    let mut trie: LpmTrie<_, u32, SubnetInfo> = LpmTrie::try_from(
        ebpf.map_mut(names::LAB_SUBNETS)
            .context("map LAB_SUBNETS")?,
    )?;
    let have: Vec<Key<u32>> = trie.keys().collect::<Result<_, _>>()?;
    for k in have {
        let stale = !subnets
            .iter()
            .any(|(w, _)| w.prefix_len() == k.prefix_len() && w.data() == k.data());
        if stale {
            trie.remove(&k)?;
        }
    }
    for (k, v) in subnets {
        trie.insert(k, v, 0).context("writing LAB_SUBNETS")?;
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

/// Make `LAB_IFACES` hold exactly `want` (ifindex, `LAB_IFACE_*` flags).
fn sync_lab_ifaces(ebpf: &mut aya::Ebpf, want: &[(u32, u32)]) -> Result<()> {
    let mut map: HashMap<_, u32, u32> =
        HashMap::try_from(ebpf.map_mut(names::LAB_IFACES).context("map LAB_IFACES")?)?;
    let have: Vec<u32> = map.keys().collect::<Result<_, _>>()?;
    for k in have {
        if !want.iter().any(|(i, _)| *i == k) {
            map.remove(&k).context("removing from LAB_IFACES")?;
        }
    }
    for (ifindex, flags) in want {
        map.insert(ifindex, flags, 0)
            .context("writing LAB_IFACES")?;
    }
    Ok(())
}

/// Make `FORWARD_RULES` hold exactly `want`.
pub fn sync_forwards<T: std::borrow::BorrowMut<MapData>>(
    map: &mut HashMap<T, ForwardKey, ForwardTarget>,
    want: &[(ForwardKey, ForwardTarget)],
) -> Result<()> {
    let wanted: std::collections::HashMap<ForwardKey, ForwardTarget> =
        want.iter().copied().collect();
    let have: Vec<ForwardKey> = map
        .keys()
        .collect::<Result<_, _>>()
        .context("reading FORWARD_RULES")?;
    for k in have {
        if !wanted.contains_key(&k) {
            map.remove(&k).context("removing a forward")?;
        }
    }
    for (k, v) in &wanted {
        if map.get(k, 0).ok() != Some(*v) {
            map.insert(k, v, 0).context("adding a forward")?;
        }
    }
    Ok(())
}
