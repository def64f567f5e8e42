//! `cargo xtask`: bootstrap a fresh machine, build, run the lab, run the tests.

mod fuzz;
mod setup;
mod stress;
mod tally;
mod vm;

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use tally::{Suite, Tally};

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
    /// end-to-end lab tests, each in sandboxes of its own, a short fuzzing
    /// pass, a smoke run of the benchmark, and with `--vm` the privileged
    /// suites again on other kernels. Every suite runs even when one fails;
    /// the last line counts them all: `N passed, N failed, N skipped`.
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
        /// Also run the privileged suites on this Debian kernel series,
        /// booted under qemu (`6.1`, `6.12`), after the host's suites;
        /// repeatable. CI: `--vm 6.1`.
        #[arg(long, value_name = "SERIES", conflicts_with = "kernel")]
        vm: Vec<String>,
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
            vm,
            kernel: None,
        } => test(filter.as_deref(), &vm),
        Cmd::Test {
            filter,
            kernel: Some(kernel),
            ..
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
    println!("  ip netns exec netlab-wan curl http://198.51.100.2/  # in through the port forward to blue's web server");
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
    run(&mut cmd).context("the benchmark's smoke run")
}

fn down() -> Result<()> {
    let mut cmd = Command::new(netlab_bin(false));
    cmd.args(["down", "--sandbox", "--name", "netlab"]);
    run(&mut cmd)
}

/// `cargo xtask test`: every suite, each counted even when another fails;
/// a table of the suites and the one total line at the end.
fn test(filter: Option<&str>, vms: &[String]) -> Result<()> {
    let started = Instant::now();
    setup::ensure()?;
    build(false)?;
    let mut suites = vec![timed("unit", || unit_suite(filter))];
    if is_root() {
        suites.push(timed("privileged", || privileged_suite(filter)));
    } else {
        let mut t = Tally::default();
        t.fail(
            "the eBPF program tests and the lab tests need root (they create namespaces and \
             load programs): run `cargo xtask test` as root"
                .into(),
        );
        suites.push(Suite {
            name: "privileged".into(),
            tally: t,
            duration: Duration::ZERO,
        });
    }
    if filter.is_none_or(|f| "fuzz".contains(f)) {
        suites.push(timed("fuzz (one test per target)", fuzz_suite));
    }
    if filter.is_none_or(|f| "bench".contains(f)) {
        suites.push(timed("bench smoke", || {
            let mut t = Tally::default();
            t.one("bench smoke", bench_smoke().map_err(|e| format!("{e:#}")));
            t
        }));
    }
    if !vms.is_empty() {
        suites.extend(vm::suites(vms, filter));
    }
    let mut total = Tally::default();
    println!();
    println!("xtask: suites");
    for s in &suites {
        println!("  {s}");
        for f in &s.tally.failures {
            println!("      FAILED {f}");
        }
        total.add(&s.tally);
    }
    println!("xtask: {} in {:.0?}", total.line(), started.elapsed());
    if total.failed > 0 {
        bail!(
            "{} of {} tests failed",
            total.failed,
            total.passed + total.failed
        );
    }
    Ok(())
}

fn timed(name: &str, f: impl FnOnce() -> Tally) -> Suite {
    let started = Instant::now();
    let tally = f();
    Suite {
        name: name.into(),
        tally,
        duration: started.elapsed(),
    }
}

/// Run `cargo test ARGS`, echoing its output and logging it to
/// target/xtask-test/<log>.log; its verdicts.
fn cargo_test(log: &str, cmd: Command) -> Tally {
    let mut t = Tally::default();
    let dir = workspace_root().join("target").join("xtask-test");
    let path = dir.join(format!("{log}.log"));
    let result = fs::create_dir_all(&dir)
        .and_then(|()| File::create(&path))
        .with_context(|| format!("creating {}", path.display()))
        .and_then(|mut file| vm::stream(cmd, &mut file, CARGO_TEST_LIMIT));
    match result {
        Ok((lines, status)) => t.add_cargo_test(log, &lines, status.map(|s| s.success())),
        Err(e) => t.fail(format!("{log}: {e:#}")),
    }
    t
}

/// Bound on one `cargo test` of the host's suites.
const CARGO_TEST_LIMIT: Duration = Duration::from_secs(40 * 60);

/// Pure logic, no privileges: the model, shared types, program logic, xtask.
fn unit_suite(filter: Option<&str>) -> Tally {
    let mut cmd = cargo();
    cmd.current_dir(workspace_root())
        .env("CARGO_TERM_COLOR", "never")
        .args([
            "test",
            "--workspace",
            "--no-fail-fast",
            "--exclude",
            "netlab-tests",
        ]);
    if let Some(f) = filter {
        cmd.arg("--").arg(f);
    }
    cargo_test("unit", cmd)
}

/// The privileged suites (tests/), each test in sandboxes of its own.
fn privileged_suite(filter: Option<&str>) -> Tally {
    let mut t = Tally::default();
    let mut cmd = cargo();
    cmd.current_dir(workspace_root())
        .env("CARGO_TERM_COLOR", "never")
        .args(["test", "--package", "netlab-tests", "--no-fail-fast"])
        .env("NETLAB_BIN", netlab_bin(false));
    if stress::variant_wanted(filter) {
        match stress::variant() {
            Ok(v) => {
                cmd.env(stress::VARIANT_ENV, v);
            }
            Err(e) => t.fail(format!("building the variant eBPF object: {e:#}")),
        }
    }
    cmd.arg("--");
    if let Some(f) = filter {
        cmd.arg(f);
    }
    cmd.arg("--test-threads=2");
    t.add(&cargo_test("privileged", cmd));
    t
}

/// A short fuzzing pass: every target for a few seconds, one test each.
fn fuzz_suite() -> Tally {
    let mut t = Tally::default();
    match fuzz::run_targets(fuzz::TEST_PASS_SECONDS, None) {
        Ok(verdicts) => {
            for (_, verdict) in verdicts {
                match verdict {
                    fuzz::Verdict::Clean => t.passed += 1,
                    fuzz::Verdict::Finding(f) => t.fail(f),
                    fuzz::Verdict::Skipped => t.skipped += 1,
                }
            }
        }
        Err(e) => t.fail(format!("fuzzing: {e:#}")),
    }
    t
}
