//! The lab's bpffs directory: `/sys/fs/bpf/netlab/<lab>/{maps,links,progs}`.

use std::{
    fs,
    mem::size_of,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use aya::maps::{HashMap, Map, MapData, MapInfo, MapType};
use netlab_common::{
    event, fwd_counter, names, stat, Binding, Endpoint, Endpoint6, Flow6Key, Flow6Value, FlowKey,
    FlowValue, Forward6Target, ForwardCounter, ForwardKey, ForwardTarget, FragKey, FragValue,
    GcState, NatConfig, NodePort, Reservation6, SubnetInfo, BINDING6_ENTRIES, BINDING_ENTRIES,
    FLOW6_ENTRIES, FORWARDED_PORTS_ENTRIES, FORWARD_ENTRIES, FRAG_ENTRIES, IFACE_ENTRIES,
    NODE_ENTRIES, SUBNET6_ENTRIES, SUBNET_ENTRIES,
};
use nix::mount::{mount, MsFlags};

pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mount bpffs on /sys/fs/bpf if it is not there (minimal systems, VMs).
pub fn ensure_bpffs() -> Result<()> {
    let is_bpffs =
        nix::sys::statfs::statfs(BPFFS).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC);
    if !is_bpffs {
        fs::create_dir_all(BPFFS).context("creating /sys/fs/bpf")?;
        mount(
            Some("bpf"),
            BPFFS,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .context("mounting bpffs on /sys/fs/bpf")?;
    }
    Ok(())
}

/// A state map: its name in the object and the layout it must have when
/// reused from a pin.
struct StateMap {
    name: &'static str,
    map_type: MapType,
    key: usize,
    value: usize,
    /// `None`: set per lab (the flow table size).
    entries: Option<u32>,
}

const STATE_MAPS: &[StateMap] = &[
    StateMap {
        name: "NAT_FLOWS",
        map_type: MapType::Hash,
        key: size_of::<FlowKey>(),
        value: size_of::<FlowValue>(),
        entries: None,
    },
    StateMap {
        name: "NAT_BIND",
        map_type: MapType::LruHash,
        key: size_of::<Endpoint>(),
        value: size_of::<Binding>(),
        entries: Some(BINDING_ENTRIES),
    },
    StateMap {
        name: "NAT_PORTS",
        map_type: MapType::LruHash,
        key: size_of::<Endpoint>(),
        value: size_of::<Binding>(),
        entries: Some(BINDING_ENTRIES),
    },
    StateMap {
        name: names::NAT6_FLOWS,
        map_type: MapType::Hash,
        key: size_of::<Flow6Key>(),
        value: size_of::<Flow6Value>(),
        entries: Some(FLOW6_ENTRIES),
    },
    StateMap {
        name: names::NAT6_BIND,
        map_type: MapType::LruHash,
        key: size_of::<Endpoint6>(),
        value: size_of::<u16>(),
        entries: Some(BINDING6_ENTRIES),
    },
    StateMap {
        name: names::NAT6_PORTS,
        map_type: MapType::LruHash,
        key: size_of::<ForwardKey>(),
        value: size_of::<Reservation6>(),
        entries: Some(BINDING6_ENTRIES),
    },
    StateMap {
        name: names::FORWARD6_RULES,
        map_type: MapType::Hash,
        key: size_of::<ForwardKey>(),
        value: size_of::<Forward6Target>(),
        entries: Some(FORWARD_ENTRIES),
    },
    StateMap {
        name: "FORWARD_RULES",
        map_type: MapType::Hash,
        key: size_of::<ForwardKey>(),
        value: size_of::<ForwardTarget>(),
        entries: Some(FORWARD_ENTRIES),
    },
    StateMap {
        name: names::FORWARDED_PORTS,
        map_type: MapType::Array,
        key: 4,
        value: size_of::<u64>(),
        entries: Some(FORWARDED_PORTS_ENTRIES),
    },
    StateMap {
        name: "LAB_SUBNETS",
        map_type: MapType::LpmTrie,
        key: 4 + size_of::<u32>(),
        value: size_of::<SubnetInfo>(),
        entries: Some(SUBNET_ENTRIES),
    },
    StateMap {
        name: names::LAB_SUBNETS6,
        map_type: MapType::LpmTrie,
        key: 4 + 16,
        value: size_of::<SubnetInfo>(),
        entries: Some(SUBNET6_ENTRIES),
    },
    StateMap {
        name: names::LAB_IFACES,
        map_type: MapType::Hash,
        key: 4,
        value: 4,
        entries: Some(IFACE_ENTRIES),
    },
    StateMap {
        name: names::TUNNEL_GATEWAYS,
        map_type: MapType::Hash,
        key: 4,
        value: 6,
        entries: Some(IFACE_ENTRIES),
    },
    StateMap {
        name: "CONFIG",
        map_type: MapType::Array,
        key: 4,
        value: size_of::<NatConfig>(),
        entries: Some(1),
    },
    StateMap {
        name: "STATS",
        map_type: MapType::PerCpuArray,
        key: 4,
        value: 8,
        entries: Some(stat::COUNT),
    },
    // Pinned so forwards' counts outlive a re-`up` and a program upgrade.
    StateMap {
        name: names::FORWARD_COUNTERS,
        map_type: MapType::PerCpuArray,
        key: 4,
        value: size_of::<ForwardCounter>(),
        entries: Some(fwd_counter::SLOTS),
    },
    StateMap {
        name: "GC_STATE",
        map_type: MapType::Array,
        key: 4,
        value: size_of::<GcState>(),
        entries: Some(1),
    },
    StateMap {
        name: names::GC6_STATE,
        map_type: MapType::Array,
        key: 4,
        value: size_of::<GcState>(),
        entries: Some(1),
    },
    StateMap {
        name: "NODE_PORTS",
        map_type: MapType::Hash,
        key: 4,
        value: size_of::<NodePort>(),
        entries: Some(NODE_ENTRIES),
    },
    StateMap {
        name: names::NODE_PORTS6,
        map_type: MapType::Hash,
        key: 16,
        value: size_of::<NodePort>(),
        entries: Some(NODE_ENTRIES),
    },
    StateMap {
        name: "FRAG_FLOWS",
        map_type: MapType::LruHash,
        key: size_of::<FragKey>(),
        value: size_of::<FragValue>(),
        entries: Some(FRAG_ENTRIES),
    },
    // Pinned so a `netlab log` that runs across a re-`up` keeps reading
    // the events of the new programs.
    StateMap {
        name: names::FLOW_EVENTS,
        map_type: MapType::RingBuf,
        key: 0,
        value: 0,
        entries: Some(event::RING_BYTES),
    },
];

pub struct LabPins {
    pub root: PathBuf,
}

impl LabPins {
    pub fn new(lab: &str) -> LabPins {
        LabPins {
            root: Path::new(BPFFS).join("netlab").join(lab),
        }
    }

    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn progs(&self) -> PathBuf {
        self.root.join("progs")
    }

    /// The programs' `TAILS` array. A program array is emptied by the
    /// kernel when no file or pin holds it any more, so the tail calls of
    /// a lab outliving `up` need it pinned; each load pins its own.
    pub fn tails(&self) -> PathBuf {
        self.root.join("tails")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    pub fn create(&self) -> Result<()> {
        for d in [self.maps(), self.links(), self.progs(), self.tails()] {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(())
    }

    pub fn state_map_paths(&self) -> Vec<(&'static str, PathBuf)> {
        STATE_MAPS
            .iter()
            .map(|m| (m.name, self.map(m.name)))
            .collect()
    }

    /// Pinned maps whose layout or size differs from what this netlab's
    /// programs expect (an older netlab, or a changed `max_flows`) cannot be
    /// reused: unpin them so fresh ones are made. Returns notes for the user.
    pub fn drop_incompatible_maps(&self, max_flows: u32) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        for m in STATE_MAPS {
            let path = self.map(m.name);
            if !path.exists() {
                continue;
            }
            let fits = MapInfo::from_pin(&path).is_ok_and(|info| {
                info.map_type().is_ok_and(|t| t == m.map_type)
                    && info.key_size() as usize == m.key
                    && info.value_size() as usize == m.value
                    && info.max_entries() == m.entries.unwrap_or(max_flows)
            });
            if !fits {
                fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
                notes.push(format!("map {} changed shape; it starts empty", m.name));
            }
        }
        Ok(notes)
    }

    /// Unpin everything left in the lab's directory and remove it; returns
    /// how many objects went.
    pub fn remove(&self) -> Result<usize> {
        let mut n = 0;
        if !self.root.exists() {
            return Ok(0);
        }
        self.empty_tails();
        for d in [self.links(), self.progs(), self.tails(), self.maps()] {
            if let Ok(entries) = fs::read_dir(&d) {
                for e in entries.flatten() {
                    fs::remove_file(e.path())
                        .with_context(|| format!("unpinning {}", e.path().display()))?;
                    n += 1;
                }
            }
            let _ = fs::remove_dir(&d);
        }
        fs::remove_dir(&self.root).with_context(|| format!("removing {}", self.root.display()))?;
        // The shared parent goes when the last lab is gone.
        if let Some(parent) = self.root.parent() {
            let _ = fs::remove_dir(parent);
        }
        Ok(n)
    }

    /// Empty the pinned `TAILS` array before it is unpinned. Its programs
    /// hold the array (their tail calls name it) and it holds them: the
    /// kernel breaks that cycle with deferred work once the last user
    /// reference goes, which was seen to leave arrays (and their programs'
    /// memory) behind on a busy 6.18 host. Emptying it here breaks the cycle
    /// at once; a slot that is already empty is no error.
    fn empty_tails(&self) {
        let Ok(data) = MapData::from_pin(self.tails().join(netlab_common::names::TAILS)) else {
            return;
        };
        let Ok(mut tails) = aya::maps::ProgramArray::try_from(Map::ProgramArray(data)) else {
            return;
        };
        for slot in 0..netlab_common::tail::COUNT {
            let _ = tails.clear_index(&slot);
        }
    }

    pub fn open(&self, name: &str) -> Result<Map> {
        let path = self.map(name);
        let data = MapData::from_pin(&path).with_context(|| {
            format!(
                "opening {} (is the lab up with its dataplane?)",
                path.display()
            )
        })?;
        Map::from_map_data(data).with_context(|| format!("map {name}"))
    }

    pub fn flow_count(&self) -> Result<usize> {
        let map: HashMap<_, FlowKey, FlowValue> = HashMap::try_from(self.open("NAT_FLOWS")?)?;
        Ok(map.keys().filter(|k| k.is_ok()).count())
    }

    /// The IPv6 flow table's entries (none in a dataplane made before it).
    pub fn flow_count6(&self) -> Result<usize> {
        if !self.map(names::NAT6_FLOWS).exists() {
            return Ok(0);
        }
        let map: HashMap<_, Flow6Key, Flow6Value> =
            HashMap::try_from(self.open(names::NAT6_FLOWS)?)?;
        Ok(map.keys().filter(|k| k.is_ok()).count())
    }

    pub fn forward_count(&self) -> Result<usize> {
        let map: HashMap<_, ForwardKey, ForwardTarget> =
            HashMap::try_from(self.open("FORWARD_RULES")?)?;
        Ok(map.keys().filter(|k| k.is_ok()).count())
    }
}
