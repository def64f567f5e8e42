//! `netlab exec NODE -- CMD…`: what `ip netns exec` does, natively. Runs
//! before any other thread exists (unsharing the mount namespace needs a
//! single-threaded process).

use std::{ffi::CString, fs, os::fd::AsFd as _, path::Path};

use anyhow::{bail, Context as _, Result};
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{setns, unshare, CloneFlags},
};

use crate::{model::plan::NETNS_ETC, netns::Netns};

/// Enter `netns` (with its /etc/netns files in place of /etc's and a /sys
/// of its own) and replace this process with `argv`.
pub fn exec_in(netns: &str, argv: &[String]) -> Result<std::convert::Infallible> {
    if argv.is_empty() {
        bail!("no command given (netlab exec NODE -- CMD…)");
    }
    let ns = Netns::open(netns)?;
    unshare(CloneFlags::CLONE_NEWNS).context("unsharing the mount namespace")?;
    // Our mounts below must not leak back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("making / a slave mount")?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering netns {netns}"))?;
    // /sys shows the network devices of the namespace that mounted it.
    let _ = umount2("/sys", MntFlags::MNT_DETACH);
    let _ = mount(
        Some(netns),
        "/sys",
        Some("sysfs"),
        MsFlags::empty(),
        None::<&str>,
    );
    let etc = Path::new(NETNS_ETC).join(netns);
    if let Ok(entries) = fs::read_dir(&etc) {
        for e in entries.flatten() {
            let target = Path::new("/etc").join(e.file_name());
            if target.exists() {
                mount(
                    Some(&e.path()),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .with_context(|| {
                    format!(
                        "bind-mounting {} onto {}",
                        e.path().display(),
                        target.display()
                    )
                })?;
            }
        }
    }
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .context("a NUL byte in the command")?;
    let err = nix::unistd::execvp(&cargs[0], &cargs).unwrap_err();
    Err(err).with_context(|| format!("running {}", argv[0]))
}
