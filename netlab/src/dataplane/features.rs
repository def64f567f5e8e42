//! What the running kernel offers the dataplane, probed once at `up`.
//!
//! The programs need `bpf_loop` (5.17): that is netlab's minimum. TCX links
//! (6.6) are used where present, netlink clsact filters otherwise. The fast
//! path needs `bpf_redirect_peer` (5.10) and `bpf_check_mtu` (5.12), both
//! below the minimum, so it is always available.

use anyhow::{bail, Result};
use aya::{
    programs::{SchedClassifier, TcAttachType},
    util::KernelVersion,
};
use serde::{Deserialize, Serialize};

/// Use netlink clsact filters even where TCX exists (to test the path
/// older kernels take, or to sit among other tools' tc filters).
pub const FORCE_NETLINK_ENV: &str = "NETLAB_FORCE_NETLINK";

/// The oldest kernel the programs load on, and why.
pub const MINIMUM: (u8, u8) = (5, 17);
const MINIMUM_NEEDS: &str = "bpf_loop, which the NAT port search runs in";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    pub kernel: String,
    /// TCX links can be made here.
    pub tcx: bool,
    pub tcx_why: String,
}

fn version() -> Result<KernelVersion> {
    KernelVersion::current().map_err(|e| anyhow::anyhow!("reading the kernel version: {e}"))
}

/// Probe the kernel, in the lab host's namespace (TCX is probed on its `lo`).
/// Fails with one line when the kernel is older than netlab supports.
pub fn probe() -> Result<Features> {
    let v = version()?;
    if v < KernelVersion::new(MINIMUM.0, MINIMUM.1, 0) {
        bail!(
            "netlab's NAT needs Linux {}.{} or newer ({MINIMUM_NEEDS}); this kernel is {v}",
            MINIMUM.0,
            MINIMUM.1
        );
    }
    // Asking for the TCX programs of an interface answers on kernels that
    // have TCX and fails on the others, whatever the version says.
    let tcx = SchedClassifier::query_tcx("lo", TcAttachType::Ingress).is_ok();
    if tcx && std::env::var_os(FORCE_NETLINK_ENV).is_some() {
        return Ok(Features {
            kernel: v.to_string(),
            tcx: false,
            tcx_why: format!(
                "netlink clsact filters, as ${FORCE_NETLINK_ENV} asks (kernel {v} has TCX)"
            ),
        });
    }
    let tcx_why = if tcx {
        format!("kernel {v} has TCX links: pinned links, swapped atomically on re-up")
    } else {
        format!(
            "kernel {v} has no TCX links (6.6+): netlink clsact filters with netlab's own priority"
        )
    };
    Ok(Features {
        kernel: v.to_string(),
        tcx,
        tcx_why,
    })
}
