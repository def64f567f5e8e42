//! What the running kernel offers the dataplane, probed once at `up`.
//!
//! Each helper and map type the programs use is probed the way libbpf does
//! (a two-instruction program calling it, a tiny map of the type), so a
//! distribution kernel with backports, or one built without some option, is
//! judged by what it has rather than by its version. The programs need
//! `bpf_loop` (5.17), the newest of them: that is netlab's minimum. TCX links
//! (6.6) are used where present, netlink clsact filters otherwise. The fast
//! path's own helpers (`bpf_fib_lookup`, `bpf_check_mtu`) are
//! optional: without them it is off and every packet takes the slow path.

use anyhow::{bail, Result};
use aya::{
    maps::MapType,
    programs::{ProgramType, SchedClassifier, TcAttachType},
    sys::{is_helper_supported, is_map_supported, is_program_supported, BpfHelper},
    util::KernelVersion,
};
use serde::{Deserialize, Serialize};

/// Use netlink clsact filters even where TCX exists (to test the path
/// older kernels take, or to sit among other tools' tc filters).
pub const FORCE_NETLINK_ENV: &str = "NETLAB_FORCE_NETLINK";

/// Treat these helpers (comma-separated names, `bpf_check_mtu`) as missing:
/// lets the tests take the fallbacks of a kernel that lacks them on one
/// that has them.
pub const HIDE_HELPERS_ENV: &str = "NETLAB_PROBE_HIDE";

/// The oldest kernel the programs load on, and why.
pub const MINIMUM: (u8, u8) = (5, 17);

/// Every program needs these (name, helper, the mainline kernel that has it).
const REQUIRED_HELPERS: &[(&str, BpfHelper, &str)] = &[
    ("bpf_loop", BpfHelper::BPF_FUNC_loop, "5.17"),
    (
        "bpf_for_each_map_elem",
        BpfHelper::BPF_FUNC_for_each_map_elem,
        "5.13",
    ),
    (
        "bpf_ktime_get_coarse_ns",
        BpfHelper::BPF_FUNC_ktime_get_coarse_ns,
        "5.11",
    ),
    (
        "bpf_redirect_peer",
        BpfHelper::BPF_FUNC_redirect_peer,
        "5.10",
    ),
    (
        "bpf_redirect_neigh",
        BpfHelper::BPF_FUNC_redirect_neigh,
        "5.10",
    ),
    (
        "bpf_sk_lookup_tcp",
        BpfHelper::BPF_FUNC_sk_lookup_tcp,
        "4.20",
    ),
    (
        "bpf_sk_lookup_udp",
        BpfHelper::BPF_FUNC_sk_lookup_udp,
        "4.20",
    ),
    ("bpf_tail_call", BpfHelper::BPF_FUNC_tail_call, "4.2"),
    // Replies to the lab host's own connections to its forwards go into its `lo`.
    ("bpf_redirect", BpfHelper::BPF_FUNC_redirect, "4.4"),
    (
        "bpf_l4_csum_replace",
        BpfHelper::BPF_FUNC_l4_csum_replace,
        "4.1",
    ),
    // `netlab log`'s events.
    (
        "bpf_ringbuf_reserve",
        BpfHelper::BPF_FUNC_ringbuf_reserve,
        "5.8",
    ),
    (
        "bpf_ringbuf_submit",
        BpfHelper::BPF_FUNC_ringbuf_submit,
        "5.8",
    ),
];

/// Only the fast path (`nl_node_in`, `nl_node_new`) needs these.
const FAST_PATH_HELPERS: &[(&str, BpfHelper, &str)] = &[
    ("bpf_fib_lookup", BpfHelper::BPF_FUNC_fib_lookup, "4.18"),
    ("bpf_check_mtu", BpfHelper::BPF_FUNC_check_mtu, "5.12"),
];

/// The map types of the programs' maps.
const REQUIRED_MAPS: &[(&str, MapType, &str)] = &[
    ("LRU hash", MapType::LruHash, "4.10"),
    ("LPM trie", MapType::LpmTrie, "4.11"),
    ("per-CPU array", MapType::PerCpuArray, "4.6"),
    ("program array", MapType::ProgramArray, "4.2"),
    ("hash", MapType::Hash, "3.19"),
    ("array", MapType::Array, "3.19"),
    ("ring buffer", MapType::RingBuf, "5.8"),
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    pub kernel: String,
    /// TCX links can be made here.
    pub tcx: bool,
    pub tcx_why: String,
    /// The fast path's helpers are there.
    #[serde(default = "yes")]
    pub fast_path: bool,
    #[serde(default)]
    pub fast_path_why: String,
    /// The kernel describes itself in BTF (/sys/kernel/btf/vmlinux). The
    /// programs do not need it; `status` reports it for bug reports.
    #[serde(default)]
    pub btf: bool,
}

fn yes() -> bool {
    true
}

fn version() -> Result<KernelVersion> {
    KernelVersion::current().map_err(|e| anyhow::anyhow!("reading the kernel version: {e}"))
}

fn hidden() -> Vec<String> {
    std::env::var(HIDE_HELPERS_ENV)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether TC programs may call `helper` here.
fn helper(name: &str, helper: BpfHelper, hidden: &[String]) -> Result<bool> {
    if hidden.iter().any(|h| h == name) {
        return Ok(false);
    }
    is_helper_supported(ProgramType::SchedClassifier, helper)
        .map_err(|e| anyhow::anyhow!("probing the kernel for {name}: {e}"))
}

/// Probe the kernel, in the lab host's namespace (TCX is probed on its `lo`).
/// Fails with one line naming what is missing when the programs cannot run.
pub fn probe() -> Result<Features> {
    let v = version()?;
    let hidden = hidden();
    let minimum = format!(
        "netlab's NAT needs Linux {}.{} or newer",
        MINIMUM.0, MINIMUM.1
    );
    let tc = is_program_supported(ProgramType::SchedClassifier)
        .map_err(|e| anyhow::anyhow!("probing the kernel for TC programs: {e}"))?;
    if !tc {
        bail!("{minimum}: kernel {v} cannot load TC (sched_cls) BPF programs");
    }
    for (name, map, since) in REQUIRED_MAPS {
        let there = is_map_supported(*map)
            .map_err(|e| anyhow::anyhow!("probing the kernel for {name} maps: {e}"))?;
        if !there {
            bail!("{minimum}: kernel {v} has no {name} BPF maps (Linux {since})");
        }
    }
    for (name, h, since) in REQUIRED_HELPERS {
        if !helper(name, *h, &hidden)? {
            bail!(
                "{minimum}: kernel {v} lacks the BPF helper {name} for TC programs (Linux {since})"
            );
        }
    }
    let mut missing = Vec::new();
    for (name, h, since) in FAST_PATH_HELPERS {
        if !helper(name, *h, &hidden)? {
            missing.push(format!("{name} (Linux {since})"));
        }
    }
    let (fast_path, fast_path_why) = if missing.is_empty() {
        (
            true,
            format!(
                "kernel {v} has bpf_fib_lookup, bpf_check_mtu, bpf_redirect and bpf_redirect_peer"
            ),
        )
    } else {
        (false, format!("kernel {v} lacks {}", missing.join(", ")))
    };
    let btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    // Asking for the TCX programs of an interface answers on kernels that
    // have TCX and fails on the others, whatever the version says.
    let tcx = SchedClassifier::query_tcx("lo", TcAttachType::Ingress).is_ok();
    let base = Features {
        kernel: v.to_string(),
        tcx,
        tcx_why: String::new(),
        fast_path,
        fast_path_why,
        btf,
    };
    if tcx && std::env::var_os(FORCE_NETLINK_ENV).is_some() {
        return Ok(Features {
            tcx: false,
            tcx_why: format!(
                "netlink clsact filters, as ${FORCE_NETLINK_ENV} asks (kernel {v} has TCX)"
            ),
            ..base
        });
    }
    let tcx_why = if tcx {
        format!("kernel {v} has TCX links: pinned links, swapped atomically on re-up")
    } else {
        format!(
            "kernel {v} has no TCX links (6.6+): netlink clsact filters with netlab's own priority"
        )
    };
    Ok(Features { tcx_why, ..base })
}
