//! `cargo xtask stress`: the long forms of the reliability suites
//! (tests/tests/reliability/ with NETLAB_STRESS=1) on a release build:
//! 200 up/down cycles of a 20-node lab, 200 forward edits, 50 kills during
//! `up`, an upgrade under 128 MB transfers, a 5-minute soak of 50,000+
//! flows, hostile traffic, a full flow table, coexistence. Tens of minutes.

use std::{fs, path::PathBuf, process::Command, time::Instant};

use anyhow::{bail, Result};

use crate::{build, cargo, is_root, netlab_bin, run, setup, workspace_root};

pub fn stress(filter: Option<&str>) -> Result<()> {
    let started = Instant::now();
    setup::ensure()?;
    if !is_root() {
        bail!("the reliability suites need root (they create namespaces and load programs)");
    }
    build(true)?;
    let variant = variant()?;
    let figures = workspace_root().join("target/reliability/figures-long.txt");
    let seen = fs::metadata(&figures).map(|m| m.len()).unwrap_or(0);
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--release",
        "--package",
        "netlab-tests",
        "--test",
        "reliability",
    ])
    .env("NETLAB_BIN", netlab_bin(true))
    .env("NETLAB_STRESS", "1")
    .env(VARIANT_ENV, &variant)
    .arg("--");
    if let Some(f) = filter {
        cmd.arg(f);
    }
    cmd.arg("--test-threads=2");
    let result = run(&mut cmd);
    // The figures of this run, together (the tests print them as they go).
    if let Ok(all) = fs::read(&figures) {
        let new = String::from_utf8_lossy(&all[(seen as usize).min(all.len())..]).into_owned();
        println!("\nxtask: figures of this run ({}):", figures.display());
        for line in new.lines() {
            // Each line starts with its Unix time.
            println!("  {}", line.split_once(' ').map_or(line, |(_, l)| l));
        }
    }
    result?;
    println!(
        "xtask: the long reliability suites passed in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

/// Tells the upgrade test where the variant object is
/// (`netlab_tests::reliability::VARIANT_ENV`).
pub const VARIANT_ENV: &str = "NETLAB_VARIANT_OBJECT";

/// The eBPF object with the `variant` feature, for the upgrade test, built
/// before the tests from the same sources as netlab (the test itself
/// cannot build it: inside a `--kernel` VM there is no toolchain).
/// Returns the object's path, which the test reads from [`VARIANT_ENV`].
pub fn variant() -> Result<PathBuf> {
    let flags = [
        "--cfg=bpf_target_arch=\"x86_64\"",
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
    ]
    .join("\x1f");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--release",
        "--features",
        "variant",
        "--target-dir",
    ])
    .arg(workspace_root().join("target/reliability/variant"))
    .env("CARGO_ENCODED_RUSTFLAGS", flags);
    for var in ["RUSTFLAGS", "CARGO", "CARGO_TARGET_DIR", "RUSTUP_TOOLCHAIN"] {
        cmd.env_remove(var);
    }
    cmd.current_dir(workspace_root().join("netlab-ebpf"));
    let status = cmd.status()?;
    if !status.success() {
        bail!("building the variant eBPF object failed ({status})");
    }
    let object =
        workspace_root().join("target/reliability/variant/bpfel-unknown-none/release/netlab");
    if !object.is_file() {
        bail!("the variant build left no {}", object.display());
    }
    Ok(object)
}

/// Whether a test filter (`cargo xtask test FILTER`) can select the upgrade
/// test, the one that needs the variant object.
pub fn variant_wanted(filter: Option<&str>) -> bool {
    filter.is_none_or(|f| "upgrade_under_load_swaps_programs_without_losing_a_byte".contains(f))
}
