//! `cargo xtask fuzz [--time N] [--target NAME]`: the cargo-fuzz (libFuzzer)
//! targets of tests/fuzz, each for N seconds, with a corpus under
//! target/fuzz-corpus/<target> (rebuildable, never committed) seeded from
//! tests/fuzz/seeds/<target>, and a line of figures per target. A crash (or
//! a broken oracle) fails the run with the reproducer's path.
//!
//! The fuzz crate is built with nightly (`cargo +nightly fuzz`), without a
//! sanitizer (the code is safe Rust; coverage is what matters), with debug
//! assertions (overflow checks) on. It does not compile the eBPF programs a
//! second time: it is built with AYA_BUILD_SKIP=1 and the `packets` target
//! loads the object the workspace's own netlab build embedded
//! (NETLAB_EBPF_OBJECT), found through cargo's build-script messages.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::{is_root, run, workspace_root};

/// Every target, in the order they run.
pub const TARGETS: &[&str] = &["topology", "topology_shapes", "packets"];

/// Per-target seconds of `cargo xtask test`'s short pass.
pub const TEST_PASS_SECONDS: u64 = 20;

const FUZZ_DIR: &str = "tests/fuzz";

fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly");
    // `cargo xtask` runs under the stable toolchain's cargo, which exports
    // its choice of toolchain to children.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "CARGO",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `cargo install cargo-fuzz --locked` unless `cargo fuzz` is there already.
pub fn ensure_cargo_fuzz() -> Result<()> {
    let there = nightly_cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if there {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz (a minute or two, once)");
    let mut cmd = Command::new("cargo");
    cmd.env_remove("RUSTUP_TOOLCHAIN")
        .args(["install", "cargo-fuzz", "--locked"]);
    run(&mut cmd)
}

/// The eBPF object netlab's build script made for the workspace's debug
/// build (builds netlab if needed).
fn ebpf_object() -> Result<PathBuf> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--package", "netlab", "--message-format=json"])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build --package netlab")?;
    if !out.status.success() {
        bail!("cargo build --package netlab failed ({})", out.status);
    }
    let mut found = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let netlab = msg["package_id"]
            .as_str()
            .is_some_and(|id| id.contains("/netlab#") || id.starts_with("netlab "));
        if msg["reason"] == "build-script-executed" && netlab {
            if let Some(dir) = msg["out_dir"].as_str() {
                found = Some(Path::new(dir).join("netlab"));
            }
        }
    }
    let object = found.context("cargo did not report netlab's build-script output")?;
    let len = fs::metadata(&object)
        .with_context(|| format!("reading {}", object.display()))?
        .len();
    if len == 0 {
        bail!(
            "{} is empty (built with AYA_BUILD_SKIP?): the packets target needs the programs",
            object.display()
        );
    }
    Ok(object)
}

/// What one target's run reported.
#[derive(Debug, Default)]
struct Figures {
    executions: u64,
    exec_per_sec: u64,
    coverage: u64,
    features: u64,
    corpus: u64,
    reproducer: Option<PathBuf>,
    finding: Option<String>,
    known: Vec<String>,
}

fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn figures(log: &Path) -> Result<Figures> {
    let f = fs::File::open(log).with_context(|| format!("reading {}", log.display()))?;
    let mut fig = Figures::default();
    for line in BufReader::new(f).lines() {
        let line = line.unwrap_or_default();
        if line.starts_with('#') {
            if let Some(c) = number_after(&line, "cov:") {
                fig.coverage = c;
            }
            if let Some(c) = number_after(&line, "ft:") {
                fig.features = c;
            }
            if let Some(c) = number_after(&line, "corp:") {
                fig.corpus = c;
            }
        } else if let Some(n) = number_after(&line, "stat::number_of_executed_units:") {
            fig.executions = n;
        } else if let Some(n) = number_after(&line, "stat::average_exec_per_sec:") {
            fig.exec_per_sec = n;
        } else if let Some(i) = line.find("Test unit written to ") {
            fig.reproducer = Some(PathBuf::from(line[i + 21..].trim()));
        } else if line.contains("netlab-fuzz finding") || line.contains("panicked at") {
            if fig.finding.is_none() {
                fig.finding = Some(line.trim().to_string());
            }
        } else if line.starts_with("netlab-fuzz: known finding `") {
            if let Some(class) = line.split('`').nth(1) {
                fig.known.push(class.to_string());
            }
        }
    }
    Ok(fig)
}

/// What a target's failed run found, how to replay it, and where its log is.
fn finding(target: &str, fig: &Figures, log: &Path) -> String {
    let reproducer = fig.reproducer.as_ref().map(|p| p.display().to_string());
    format!(
        "{target}: {}\n  reproducer: {}\n  replay: cargo +nightly fuzz run --fuzz-dir {FUZZ_DIR} --sanitizer none {target} {}\n  log: {}",
        fig.finding
            .as_deref()
            .unwrap_or("the fuzzer failed (see the log)"),
        reproducer.as_deref().unwrap_or("(none written)"),
        reproducer.as_deref().unwrap_or_default(),
        log.display()
    )
}

/// Copy the checked-in seeds of a target into its corpus (files already
/// there are kept).
fn seed(target: &str, corpus: &Path) -> Result<()> {
    fs::create_dir_all(corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let seeds = workspace_root().join(FUZZ_DIR).join("seeds").join(target);
    let Ok(entries) = fs::read_dir(&seeds) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let to = corpus.join(format!("seed-{}", e.file_name().to_string_lossy()));
        if !to.exists() {
            fs::copy(e.path(), &to)
                .with_context(|| format!("copying {} to the corpus", e.path().display()))?;
        }
    }
    Ok(())
}

/// How one target's run ended.
pub enum Verdict {
    Clean,
    /// A crash or a broken oracle: what it found, the reproducer, the log.
    Finding(String),
    /// Not run (it says why).
    Skipped,
}

/// `cargo xtask fuzz`: build the targets, run each for `seconds`, fail on a finding.
pub fn fuzz(seconds: u64, only: Option<&str>) -> Result<()> {
    let findings: Vec<String> = run_targets(seconds, only)?
        .into_iter()
        .filter_map(|(_, v)| match v {
            Verdict::Finding(f) => Some(f),
            _ => None,
        })
        .collect();
    if !findings.is_empty() {
        bail!("fuzzing found a crash:\n{}", findings.join("\n"));
    }
    Ok(())
}

/// Build the targets and run each for `seconds`; each target's verdict.
pub fn run_targets(seconds: u64, only: Option<&str>) -> Result<Vec<(&'static str, Verdict)>> {
    let started = Instant::now();
    let targets: Vec<&'static str> = match only {
        Some(t) if TARGETS.contains(&t) => TARGETS.iter().copied().filter(|x| *x == t).collect(),
        Some(t) => bail!("no fuzz target `{t}` (targets: {})", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    ensure_cargo_fuzz()?;
    let root = workspace_root();
    let wants_programs = targets.contains(&"packets");
    let object = if wants_programs && is_root() {
        Some(ebpf_object()?)
    } else {
        None
    };
    // One build for every target (the same flags as the runs below, so
    // `cargo fuzz run` finds it up to date).
    let build_flags = ["--fuzz-dir", FUZZ_DIR, "--sanitizer", "none"];
    let mut build = nightly_cargo();
    build
        .args(["fuzz", "build"])
        .args(build_flags)
        .env("AYA_BUILD_SKIP", "1");
    if let [t] = targets[..] {
        build.arg(t);
    }
    run(&mut build).context("building the fuzz targets")?;
    let built = started.elapsed();

    let mut rows = Vec::new();
    let mut verdicts = Vec::new();
    for target in targets {
        if target == "packets" && object.is_none() {
            let why = "it loads eBPF programs, which needs root";
            println!("xtask: fuzz target packets skipped: {why}");
            verdicts.push((target, Verdict::Skipped));
            continue;
        }
        let corpus = root.join("target/fuzz-corpus").join(target);
        seed(target, &corpus)?;
        let artifacts = root.join("target/fuzz-artifacts").join(target);
        fs::create_dir_all(&artifacts)?;
        let logs = root.join("target/fuzz-logs");
        fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{target}.log"));
        println!(
            "xtask: fuzzing {target} for {seconds} s (corpus {}, log {})",
            corpus.display(),
            log.display()
        );
        let mut cmd = nightly_cargo();
        cmd.args(["fuzz", "run"])
            .args(build_flags)
            .env("AYA_BUILD_SKIP", "1")
            .arg(target)
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()));
        if target == "topology" {
            cmd.arg(format!(
                "-dict={}",
                root.join(FUZZ_DIR).join("topology.dict").display()
            ));
        }
        if let Some(o) = &object {
            cmd.env("NETLAB_EBPF_OBJECT", o);
        }
        let out = fs::File::create(&log)?;
        cmd.current_dir(&root)
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null());
        let status = cmd
            .status()
            .with_context(|| format!("starting cargo fuzz run {target}"))?;
        let fig = figures(&log)?;
        let verdict = if status.success() && fig.executions == 0 {
            // A run that tried nothing checked nothing.
            Verdict::Finding(format!(
                "{target}: libFuzzer ran no input (log {})",
                log.display()
            ))
        } else if status.success() {
            Verdict::Clean
        } else {
            Verdict::Finding(finding(target, &fig, &log))
        };
        verdicts.push((target, verdict));
        rows.push((target, fig, !status.success()));
    }
    println!();
    println!(
        "{:<16} {:>12} {:>9} {:>9} {:>9} {:>7}  result",
        "target", "executions", "exec/s", "coverage", "features", "corpus"
    );
    for (t, f, crashed) in &rows {
        let mut result = if *crashed { "CRASH" } else { "ok" }.to_string();
        if !f.known.is_empty() {
            result.push_str(&format!(" (known findings: {})", f.known.join(", ")));
        }
        println!(
            "{t:<16} {:>12} {:>9} {:>9} {:>9} {:>7}  {result}",
            f.executions, f.exec_per_sec, f.coverage, f.features, f.corpus
        );
    }
    println!(
        "xtask: fuzzing took {:.0?} (build {:.0?})",
        started.elapsed(),
        built
    );
    Ok(verdicts)
}
