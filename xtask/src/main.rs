//! `cargo xtask`: bootstrap a fresh machine, build, run the lab, run the tests.

mod fuzz;
mod setup;
mod stress;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (nightly rust-src, bpf-linker,
    /// Debian packages); quick when everything is already there.
    Setup,
    /// Build netlab with its eBPF programs.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Bootstrap, build, and bring up the default lab in a sandbox.
    Up {
        /// Extra arguments for `netlab up` (e.g. `-f lab.toml`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Take the sandboxed default lab down again.
    Down,
    /// Build netlab in release mode and run `netlab bench ARGS…`: the eBPF
    /// NAT against iptables MASQUERADE on this machine, in sandboxes of its
    /// own (e.g. `cargo xtask bench --quick`, `--micro`, `--json out.json`).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Every test: unit tests, then (as root) the eBPF program tests and the
    /// end-to-end lab tests, each in sandboxes of its own, then a smoke run
    /// of the benchmark.
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
        /// Run the privileged suites on other kernels instead: `host`, a
        /// Debian kernel series booted under qemu (`6.1`, `6.12`), or `all`.
        /// Prints a table per kernel and writes target/kernel-matrix.json.
        #[arg(long, value_name = "host|SERIES|all")]
        kernel: Option<String>,
    },
    /// The long forms of the reliability suites on a release build (churn,
    /// crash recovery, upgrade under load, a 5-minute soak, hostile traffic,
    /// a full flow table, coexistence); tens of minutes. Prints the figures.
    Stress {
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Fuzz with cargo-fuzz (libFuzzer, installed if missing): the topology
    /// parser and validator, and (as root) the eBPF programs on crafted
    /// frames. Corpora live in target/fuzz-corpus/; fails on a crash.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// Only this target (topology, topology_shapes, packets).
        #[arg(long)]
        target: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup::ensure(),
        Cmd::Build { release } => setup::ensure().and_then(|()| build(release)),
        Cmd::Up { args } => setup::ensure()
            .and_then(|()| build(false))
            .and_then(|()| up(&args)),
        Cmd::Down => down(),
        Cmd::Bench { args } => setup::ensure()
            .and_then(|()| build(true))
            .and_then(|()| bench(&args)),
        Cmd::Test {
            filter,
            kernel: None,
        } => test(filter.as_deref()),
        Cmd::Test {
            filter,
            kernel: Some(kernel),
        } => vm::test(&kernel, filter.as_deref()),
        Cmd::Stress { filter } => stress::stress(filter.as_deref()),
        Cmd::Fuzz { time, target } => fuzz::fuzz(time, target.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Run a command in the workspace root; fail with its name when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    cmd.current_dir(workspace_root());
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn build(release: bool) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--package", "netlab"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

pub fn netlab_bin(release: bool) -> PathBuf {
    workspace_root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("netlab")
}

fn up(args: &[String]) -> Result<()> {
    if !is_root() {
        bail!("`netlab up` needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF)");
    }
    let mut cmd = Command::new(netlab_bin(false));
    cmd.arg("up").arg("--sandbox").args(args);
    run(&mut cmd)?;
    println!();
    println!("Try it:");
    println!("  ip netns exec red ping -c1 blue                     # node to node, by name");
    println!(
        "  ip netns exec red curl http://198.51.100.1/         # out through the eBPF masquerade"
    );
    println!("  ip netns exec netlab-wan curl http://198.51.100.2/  # in through the port forward (start a server in blue)");
    println!(
        "  target/debug/netlab status; target/debug/netlab nat list; target/debug/netlab stats"
    );
    println!("  cargo xtask down                                    # remove it all");
    Ok(())
}

fn bench(args: &[String]) -> Result<()> {
    if !is_root() {
        bail!("`netlab bench` needs root (it builds namespaces and loads programs)");
    }
    let mut cmd = Command::new(netlab_bin(true));
    cmd.arg("bench").args(args);
    run(&mut cmd)
}

/// The benchmark as a smoke test: one short round of every mode, which
/// must give every metric a non-zero number (`--check`). Timing is never
/// judged: the machine may be busy.
fn bench_smoke() -> Result<()> {
    let started = Instant::now();
    let mut cmd = Command::new(netlab_bin(false));
    cmd.args([
        "bench",
        "--quick",
        "--rounds",
        "1",
        "--check",
        "--json",
        "target/bench/smoke.json",
        "--chart",
        "target/bench/smoke.svg",
    ]);
    run(&mut cmd).context("the benchmark's smoke run")?;
    println!(
        "xtask: benchmark smoke run passed in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

fn down() -> Result<()> {
    let mut cmd = Command::new(netlab_bin(false));
    cmd.args(["down", "--sandbox", "--name", "netlab"]);
    run(&mut cmd)
}

fn test(filter: Option<&str>) -> Result<()> {
    let started = Instant::now();
    setup::ensure()?;
    build(false)?;
    // Pure logic, no privileges: the model, shared types, program logic.
    let mut unit = cargo();
    unit.args([
        "test",
        "--workspace",
        "--exclude",
        "netlab-tests",
        "--exclude",
        "xtask",
    ]);
    if let Some(f) = filter {
        unit.arg(f);
    }
    run(&mut unit)?;
    if !is_root() {
        bail!(
            "the eBPF program tests and the lab tests need root (they create namespaces and load programs); \
             unit tests passed. Run `cargo xtask test` as root."
        );
    }
    // Privileged: each test builds its own sandbox namespaces.
    let mut privileged = cargo();
    privileged
        .args(["test", "--package", "netlab-tests"])
        .env("NETLAB_BIN", netlab_bin(false))
        .env("NETLAB_PRIVILEGED_TESTS", "1");
    if stress::variant_wanted(filter) {
        privileged.env(stress::VARIANT_ENV, stress::variant()?);
    }
    privileged.arg("--");
    if let Some(f) = filter {
        privileged.arg(f);
    }
    privileged.arg("--test-threads=2");
    run(&mut privileged)?;
    // A short fuzzing pass: every target for a few seconds.
    if filter.is_none_or(|f| "fuzz".contains(f)) {
        fuzz::fuzz(fuzz::TEST_PASS_SECONDS, None)?;
    }
    if filter.is_none_or(|f| "bench".contains(f)) {
        bench_smoke()?;
    }
    println!("xtask: all tests passed in {:.0?}", started.elapsed());
    Ok(())
}
