//! The per-lab state directory, `/run/netlab/<lab>/`, and its one owner,
//! [`LabDir`]: what `up` was given (`state.json`), what it attached
//! (`dataplane.json`), the services it started (`services.json`, and their
//! logs under `services/`), the impairments applied (`links.json`). The run locks live beside it (see [`crate::lock`]).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::model::topology::{Forward, Lab};

/// Where every lab's state directory lives.
pub const STATE_DIR: &str = "/run/netlab";

/// Per-lab runtime state: what `up` was given, so `down`, `status`, `exec`
/// and `fwd` work without repeating it. `down` does not need it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    /// The lab as its file describes it (never edited by `fwd`).
    pub lab: Lab,
    pub host_netns: Option<String>,
    pub sandbox: bool,
    pub source: Option<PathBuf>,
    /// `up` turned IPv4 forwarding on in the lab host: `down` turns it off
    /// again when no other lab on that host is left.
    #[serde(default)]
    pub enabled_host_forwarding: bool,
    /// The same for IPv6 forwarding (net.ipv6.conf.all.forwarding), which
    /// `up` turns on only for a lab with an IPv6 gateway.
    #[serde(default)]
    pub enabled_host_forwarding6: bool,
    /// The forwards in the dataplane when `fwd add`/`fwd del` changed them
    /// since `up`; `None` while they are the file's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_forwards: Option<Vec<Forward>>,
}

impl LabState {
    /// The forwards the dataplane holds now.
    pub fn forwards(&self) -> &[Forward] {
        self.live_forwards.as_deref().unwrap_or(&self.lab.forwards)
    }
}

/// One lab's state directory.
#[derive(Clone, Debug)]
pub struct LabDir {
    pub path: PathBuf,
}

const STATE_FILE: &str = "state.json";
const DATAPLANE_FILE: &str = "dataplane.json";
const SERVICES_FILE: &str = "services.json";
const SERVICES_DIR: &str = "services";
const LINKS_FILE: &str = "links.json";

impl LabDir {
    pub fn of(lab: &str) -> LabDir {
        LabDir {
            path: Path::new(STATE_DIR).join(lab),
        }
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    pub fn read_state(&self) -> Option<LabState> {
        self.read_json(STATE_FILE)
    }

    pub fn write_state(&self, state: &LabState) -> Result<()> {
        self.write_json(STATE_FILE, state)
            .context("saving the lab state")
    }

    /// What the dataplane attached (the dataplane layer's own record).
    pub fn read_dataplane<T: DeserializeOwned>(&self) -> Option<T> {
        self.read_json(DATAPLANE_FILE)
    }

    pub fn write_dataplane<T: Serialize>(&self, info: &T) -> Result<()> {
        self.write_json(DATAPLANE_FILE, info)
            .context("saving the dataplane state")
    }

    pub fn remove_dataplane(&self) {
        let _ = fs::remove_file(self.path.join(DATAPLANE_FILE));
    }

    /// The services `up` started (the services layer's own record).
    pub fn read_services<T: DeserializeOwned>(&self) -> Option<T> {
        self.read_json(SERVICES_FILE)
    }

    pub fn write_services<T: Serialize>(&self, records: &T) -> Result<()> {
        self.write_json(SERVICES_FILE, records)
            .context("saving the services' record")
    }

    /// The impairments applied (the links layer's own record).
    pub fn read_links<T: DeserializeOwned>(&self) -> Option<T> {
        self.read_json(LINKS_FILE)
    }

    pub fn write_links<T: Serialize>(&self, record: &T) -> Result<()> {
        self.write_json(LINKS_FILE, record)
            .context("saving the links' record")
    }

    /// Where a service's output goes (appended, across restarts), and the
    /// file its exit code is written to; `key` names the service.
    pub fn service_log(&self, key: &str) -> PathBuf {
        self.path.join(SERVICES_DIR).join(format!("{key}.log"))
    }

    pub fn service_exit(&self, key: &str) -> PathBuf {
        self.path.join(SERVICES_DIR).join(format!("{key}.exit"))
    }

    /// The whole directory goes (the lab is down, or never came up).
    pub fn remove(&self) -> Result<()> {
        match fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", self.path.display()))
            }
            _ => Ok(()),
        }
    }

    fn read_json<T: DeserializeOwned>(&self, file: &str) -> Option<T> {
        serde_json::from_str(&fs::read_to_string(self.path.join(file)).ok()?).ok()
    }

    /// Written to a temporary file and renamed: a reader never sees half.
    fn write_json<T: Serialize>(&self, file: &str, value: &T) -> Result<()> {
        fs::create_dir_all(&self.path)
            .with_context(|| format!("creating {}", self.path.display()))?;
        let tmp = self.path.join(format!("{file}.tmp"));
        fs::write(&tmp, serde_json::to_vec_pretty(value)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, self.path.join(file))
            .with_context(|| format!("renaming {}", tmp.display()))
    }
}

/// Labs with a state directory (entries starting with `.` are netlab's
/// own, such as the locks).
pub fn known_labs() -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(STATE_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Every lab's state that can be read.
pub fn known_states() -> Vec<LabState> {
    known_labs()
        .iter()
        .filter_map(|n| LabDir::of(n).read_state())
        .collect()
}
