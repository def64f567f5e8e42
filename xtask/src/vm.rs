//! `cargo xtask test --kernel <host|SERIES|all>`: the privileged suites on
//! the kernels lab hosts run. Debian's own kernel packages (bookworm's 6.1,
//! bookworm-backports' 6.12) boot under qemu (TCG: KVM does not work here)
//! with the host's root shared read-only over 9p, so the VM runs the very
//! binaries built on the host. Results come back over the serial console.

use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::json;

use crate::{
    build, cargo, is_root, netlab_bin, run, setup, stress,
    tally::{Suite, Tally},
    workspace_root,
};

/// What `all` means: Debian 12's kernel, its backports kernel, this machine's.
const ALL: &[&str] = &["6.1", "6.12", "host"];
/// Debian suites the kernels come from (a private apt configuration: the
/// machine's own sources stay untouched).
const SUITES: &[&str] = &["bookworm", "bookworm-backports"];
/// Loaded before the tests (the kernel asks for more through a modprobe
/// wrapper): links, TC hooks, and what iptables-nft and nft need.
const MODULES: &str = "veth bridge sch_ingress cls_bpf act_bpf \
    nf_conntrack nf_nat nf_tables nft_chain_nat nft_masq nft_ct nft_compat \
    xt_conntrack xt_MASQUERADE xt_nat xt_tcpudp xt_addrtype";
/// Command timeouts inside the VM are multiplied by this (TCG is slow).
const TIME_SCALE: &str = "4";
/// Bound on one VM run, boot to power-off.
const VM_LIMIT: Duration = Duration::from_secs(45 * 60);
/// Bound on one test binary on the host.
const HOST_LIMIT: Duration = Duration::from_secs(20 * 60);
/// The VM: TCG (KVM does not work here), 2 vCPUs, 3 GiB, console on stdio.
const QEMU: &str = "-accel tcg,thread=multi -cpu max -smp 2 -m 3G \
    -nographic -monitor none -serial stdio -no-reboot -nic none";
/// Prefix of the lines the VM's init reports with.
const MARK: &str = "@@netlab-vm ";
/// Prefix of the line where a test says what netlab uses on the kernel
/// (tests/tests/lab.rs, `dataplane_features_of_this_kernel`).
const FEATURES: &str = "netlab features: ";

struct TestBin {
    name: String,
    path: PathBuf,
}

/// What every kernel runs: the test binaries, the filter, and the variant
/// eBPF object for the upgrade test (built on the host: the VM has no
/// toolchain and a read-only tree).
struct Suites {
    bins: Vec<TestBin>,
    filter: Option<String>,
    variant: Option<PathBuf>,
}

impl Suites {
    /// The environment each test binary gets besides NETLAB_BIN.
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        if let Some(v) = &self.variant {
            env.push((stress::VARIANT_ENV, v.display().to_string()));
        }
        env
    }
}

/// One kernel's verdict.
#[derive(Default)]
struct Outcome {
    /// `uname -r` (or the series asked for when it never booted).
    kernel: String,
    log: Option<PathBuf>,
    /// Boot (in a VM) and every test binary.
    duration: Duration,
    tally: Tally,
    /// What netlab uses there (attach mode, fast path, programs).
    features: Option<String>,
    /// Why the run itself went wrong (no boot, timeout, …).
    error: Option<String>,
}

impl Outcome {
    /// The tests' verdicts, with a run that went wrong (no boot, a
    /// timeout) as one more failure.
    fn counted(&self) -> Tally {
        let mut t = self.tally.clone();
        if let Some(e) = &self.error {
            t.fail(format!("kernel {}: {e}", self.kernel));
        }
        t
    }
}

/// `cargo xtask test --kernel SPEC`: the matrix alone, with its table and
/// the total line.
pub fn test(spec: &str, filter: Option<&str>) -> Result<()> {
    let kernels: Vec<&str> = match spec {
        "all" => ALL.to_vec(),
        s => vec![s],
    };
    let started = Instant::now();
    let rows = passes(&kernels, filter)?;
    let bad = report(&rows)?;
    let mut total = Tally::default();
    for (_, o) in &rows {
        total.add(&o.counted());
    }
    println!(
        "xtask: {} (the privileged suites on {} kernel{}, {:.0?})",
        total.line(),
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        started.elapsed()
    );
    if bad {
        bail!("tests failed on some kernel (see the table above)");
    }
    Ok(())
}

/// `cargo xtask test --vm SERIES…`: the privileged suites in each VM after
/// the host's suites, as suites of the run's total (the matrix table and
/// target/kernel-matrix.json as with `--kernel`).
pub fn suites(series: &[String], filter: Option<&str>) -> Vec<Suite> {
    let started = Instant::now();
    let kernels: Vec<&str> = series.iter().map(String::as_str).collect();
    let rows = match passes(&kernels, filter) {
        Ok(rows) => rows,
        Err(e) => {
            let mut tally = Tally::default();
            tally.fail(format!("preparing the VM pass: {e:#}"));
            return vec![Suite {
                name: format!("vm {}", series.join(", ")),
                tally,
                duration: started.elapsed(),
            }];
        }
    };
    if let Err(e) = report(&rows) {
        eprintln!("xtask: warning: {e:#}");
    }
    rows.iter()
        .map(|(_, o)| Suite {
            name: format!("vm {}", o.kernel),
            tally: o.counted(),
            duration: o.duration,
        })
        .collect()
}

/// The privileged suites on each kernel: set up, build, then run.
fn passes(kernels: &[&str], filter: Option<&str>) -> Result<Vec<(String, Outcome)>> {
    for k in kernels {
        if *k != "host" && !is_series(k) {
            bail!("--kernel {k}: expected host, all, or a version series such as 6.1 or 6.12");
        }
    }
    if kernels.contains(&"host") && !is_root() {
        bail!("the privileged tests on the host kernel need root");
    }
    setup::ensure()?;
    if kernels.iter().any(|k| *k != "host") {
        setup::vm_packages()?;
    }
    build(false)?;
    let suites = Suites {
        bins: test_binaries()?,
        filter: filter.map(String::from),
        variant: if stress::variant_wanted(filter) {
            Some(stress::variant()?)
        } else {
            None
        },
    };
    let dir = vm_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut online = None;
    let mut rows = Vec::new();
    for k in kernels {
        let outcome = if *k == "host" {
            on_host(&suites)
        } else {
            let online = *online.get_or_insert_with(|| match apt_update() {
                Ok(()) => true,
                Err(e) => {
                    eprintln!("xtask: warning: {e:#}; trying cached kernels");
                    false
                }
            });
            match prepare_kernel(k, online) {
                Ok(kernel) => in_vm(&kernel, &suites),
                Err(e) => Outcome {
                    kernel: k.to_string(),
                    error: Some(format!("{e:#}")),
                    ..Outcome::default()
                },
            }
        };
        rows.push((k.to_string(), outcome));
    }
    Ok(rows)
}

fn is_series(s: &str) -> bool {
    let mut parts = s.split('.');
    let ok =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn vm_dir() -> PathBuf {
    workspace_root().join("target").join("vm")
}

/// Build the privileged suites without running them; their executables.
fn test_binaries() -> Result<Vec<TestBin>> {
    let manifest = workspace_root().join("tests").join("Cargo.toml");
    let out = cargo()
        .args([
            "test",
            "--package",
            "netlab-tests",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("building the test binaries of netlab-tests")?;
    if !out.status.success() {
        bail!(
            "building the test binaries of netlab-tests failed ({})",
            out.status
        );
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(exe), Some(name)) = (msg["executable"].as_str(), msg["target"]["name"].as_str())
        else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["profile"]["test"] == true
            && msg["manifest_path"].as_str() == manifest.to_str()
        {
            bins.push(TestBin {
                name: name.to_string(),
                path: exe.into(),
            });
        }
    }
    if bins.is_empty() {
        bail!("cargo reported no test binaries for netlab-tests");
    }
    bins.sort_by_key(|b| (AFTER_BOOT.contains(&b.name.as_str()), b.name.clone()));
    Ok(bins)
}

/// Test binaries whose tests load the programs through the test
/// `Dataplane`, which first waits for the kernel's clock to pass 130 s (it
/// ages timestamps back by up to that): they run after the others, by
/// when a freshly booted VM's clock has, rather than wait (in the 6.1 VM,
/// `fuzz_regressions` ran second and spent about 95 of its 116 s waiting).
const AFTER_BOOT: &[&str] = &[
    "fuzz_regressions",
    "programs",
    "programs_local",
    "programs_v6",
];

/// Each test binary straight on this machine's kernel.
fn on_host(suites: &Suites) -> Outcome {
    let log_path = vm_dir().join("host.log");
    let started = Instant::now();
    let mut outcome = Outcome {
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| format!("host {}", s.trim()))
            .unwrap_or_else(|_| "host".into()),
        ..Outcome::default()
    };
    let mut log = match File::create(&log_path) {
        Ok(f) => f,
        Err(e) => {
            outcome.error = Some(format!("creating {}: {e}", log_path.display()));
            return outcome;
        }
    };
    eprintln!(
        "xtask: running the privileged suites on the host kernel (log: {})",
        log_path.display()
    );
    for bin in &suites.bins {
        let mut cmd = Command::new(&bin.path);
        cmd.current_dir(workspace_root().join("tests"))
            .env("NETLAB_BIN", netlab_bin(false))
            .envs(suites.env())
            .args(&suites.filter)
            .arg("--test-threads=2");
        match stream(cmd, &mut log, HOST_LIMIT) {
            Ok((lines, status)) => {
                outcome.features = features(&lines).or(outcome.features.take());
                outcome
                    .tally
                    .add_binary(&bin.name, &lines, status.map(|s| s.success()));
            }
            Err(e) => outcome.tally.fail(format!("{}: {e:#}", bin.name)),
        }
    }
    outcome.log = Some(log_path);
    outcome.duration = started.elapsed();
    outcome
}

/// Run `cmd` with stdout and stderr on one pipe; echo each line, append it to
/// `log`, and keep it. Killed after `limit` (status None then).
pub fn stream(
    mut cmd: Command,
    log: &mut File,
    limit: Duration,
) -> Result<(Vec<String>, Option<ExitStatus>)> {
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone().context("duplicating a pipe")?)
        .stderr(writer);
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    drop(cmd); // our copies of the pipe's write end: EOF when the child is done
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut lines = Vec::new();
    let mut exited = None;
    loop {
        let wait = match exited {
            // Leftover lines after exit; a grandchild may hold the pipe open.
            Some(_) => Duration::from_secs(1),
            None => Duration::from_millis(200),
        };
        match rx.recv_timeout(wait) {
            Ok(line) => {
                println!("{line}");
                let _ = writeln!(log, "{line}");
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) if exited.is_some() => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                exited = child.try_wait().context("waiting for the child")?;
                if exited.is_none() && Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    let note = format!("xtask: killed after {limit:?}");
                    println!("{note}");
                    let _ = writeln!(log, "{note}");
                    return Ok((lines, None));
                }
            }
        }
    }
    let status = match exited {
        Some(s) => s,
        None => child.wait().context("waiting for the child")?,
    };
    Ok((lines, Some(status)))
}

/// What a test said netlab uses on the kernel ([`FEATURES`]).
fn features(lines: &[String]) -> Option<String> {
    lines.iter().rev().find_map(|l| {
        l.find(FEATURES)
            .map(|i| l[i + FEATURES.len()..].to_string())
    })
}

fn apt_dir() -> PathBuf {
    vm_dir().join("apt")
}

/// apt-get/apt-cache on the private configuration under target/vm/apt.
fn apt(tool: &str) -> Command {
    let dir = apt_dir();
    let mut cmd = Command::new(tool);
    for (key, value) in [
        ("Dir::Etc::SourceList", dir.join("sources.list")),
        ("Dir::Etc::SourceParts", "/dev/null".into()),
        ("Dir::State::Lists", dir.join("lists")),
        ("Dir::Cache", dir.join("cache")),
        ("APT::Sandbox::User", "root".into()),
    ] {
        cmd.arg("-o").arg(format!("{key}={}", value.display()));
    }
    cmd
}

fn apt_update() -> Result<()> {
    let dir = apt_dir();
    for d in ["lists/partial", "cache/archives/partial", "debs"] {
        fs::create_dir_all(dir.join(d))
            .with_context(|| format!("creating {}", dir.join(d).display()))?;
    }
    let sources: String = SUITES
        .iter()
        .map(|s| {
            format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {s} main\n"
            )
        })
        .collect();
    let list = dir.join("sources.list");
    fs::write(&list, sources).with_context(|| format!("writing {}", list.display()))?;
    run(apt("apt-get").args(["-qq", "update"]))
        .context("updating the private apt lists (suites bookworm, bookworm-backports)")
}

/// The kernel package's version, or None unless it is a generic amd64 image
/// of `series` (`linux-image-6.1.0-50-amd64`, `…-6.12.95+deb12-amd64-unsigned`;
/// not -cloud, -rt, -dbg). Compared numerically: [6, 1, 0, 50].
fn image_version(package: &str, series: &str) -> Option<Vec<u64>> {
    let rest = package.strip_prefix("linux-image-")?;
    let rest = rest
        .strip_suffix("-unsigned")
        .unwrap_or(rest)
        .strip_suffix("-amd64")?;
    if !rest.starts_with(&format!("{series}.")) {
        return None;
    }
    let parts: Vec<&str> = rest.split(['.', '-', '+']).collect();
    if !parts
        .iter()
        .all(|p| p.starts_with("deb") || p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    Some(parts.iter().filter_map(|p| p.parse().ok()).collect())
}

struct Kernel {
    /// `uname -r` inside the VM.
    version: String,
    /// The unpacked package: boot/vmlinuz-*, lib/modules/<version>.
    root: PathBuf,
}

/// The newest generic image of `series`, unpacked and depmod'ed under
/// target/vm/kernels/<package> (kept: later runs reuse it).
fn prepare_kernel(series: &str, online: bool) -> Result<Kernel> {
    let kernels = vm_dir().join("kernels");
    let newest = |names: Vec<String>| {
        names
            .into_iter()
            .filter_map(|n| Some((image_version(&n, series)?, n)))
            .max()
            .map(|(_, n)| n)
    };
    let package = if online {
        let out = apt("apt-cache")
            .args(["search", "--names-only"])
            .arg(format!("^linux-image-{}\\.", series.replace('.', "\\.")))
            .output()
            .context("searching the private apt lists for kernel images")?;
        let names = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        newest(names)
            .with_context(|| format!("no generic amd64 linux-image of {series} in {SUITES:?}"))?
    } else {
        let names = fs::read_dir(&kernels)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        newest(names).with_context(|| {
            format!(
                "no cached kernel of {series} in {} and apt is unavailable",
                kernels.display()
            )
        })?
    };
    let root = kernels.join(&package);
    if !root.exists() {
        unpack(&package, &root)?;
    }
    let version = module_version(&root)?;
    Ok(Kernel { version, root })
}

fn module_version(root: &Path) -> Result<String> {
    let modules = root.join("lib").join("modules");
    fs::read_dir(&modules)
        .with_context(|| format!("reading {}", modules.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .with_context(|| format!("{} is empty", modules.display()))
}

fn unpack(package: &str, root: &Path) -> Result<()> {
    eprintln!("xtask: downloading and unpacking {package}");
    let debs = apt_dir().join("debs");
    // Not `run`: that one works in the workspace root, and download saves to
    // the current directory.
    let status = apt("apt-get")
        .args(["-qq", "download", package])
        .current_dir(&debs)
        .status()
        .context("running apt-get download")?;
    if !status.success() {
        bail!("apt-get download {package} failed ({status})");
    }
    let deb = fs::read_dir(&debs)
        .with_context(|| format!("reading {}", debs.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| {
            format!(
                "apt-get download left no {package}_*.deb in {}",
                debs.display()
            )
        })?;
    let partial = PathBuf::from(format!("{}.partial", root.display()));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&partial))
        .with_context(|| format!("unpacking {}", deb.display()))?;
    let version = module_version(&partial)?;
    run(Command::new("depmod").arg("-b").arg(&partial).arg(&version))
        .with_context(|| format!("depmod for {package}"))?;
    fs::rename(&partial, root)
        .with_context(|| format!("moving {} into place", partial.display()))?;
    let _ = fs::remove_file(&deb);
    Ok(())
}

/// POSIX shell quoting.
fn quote(s: impl AsRef<std::ffi::OsStr>) -> String {
    format!("'{}'", s.as_ref().to_string_lossy().replace('\'', r"'\''"))
}

/// busybox, the modules 9p needs (in dependency order, decompressed: busybox's
/// insmod only takes plain ELF), and an /init that mounts the host's root,
/// loads the test's modules with the host's modprobe, runs each test binary
/// in a chroot and reports on the console.
fn initramfs(kernel: &Kernel, suites: &Suites) -> Result<PathBuf> {
    let dir = vm_dir().join(&kernel.version);
    let stage = dir.join("initramfs");
    let _ = fs::remove_dir_all(&stage);
    for d in ["bin", "sbin", "dev", "proc", "mnt", "modules"] {
        fs::create_dir_all(stage.join(d))
            .with_context(|| format!("creating {}", stage.join(d).display()))?;
    }
    fs::copy("/bin/busybox", stage.join("bin/busybox"))
        .context("copying /bin/busybox (busybox-static)")?;
    let deps = Command::new("modprobe")
        .arg("-d")
        .arg(&kernel.root)
        .args([
            "-S",
            &kernel.version,
            "-a",
            "--show-depends",
            "virtio_pci",
            "9pnet_virtio",
            "9p",
        ])
        .output()
        .context("running modprobe --show-depends")?;
    if !deps.status.success() {
        bail!(
            "modprobe --show-depends for 9p in {} failed: {}",
            kernel.root.display(),
            String::from_utf8_lossy(&deps.stderr)
        );
    }
    let mut seen = Vec::new();
    for line in String::from_utf8_lossy(&deps.stdout).lines() {
        let Some(path) = line
            .strip_prefix("insmod ")
            .and_then(|l| l.split_whitespace().next())
        else {
            continue; // "builtin …"
        };
        if seen.iter().any(|p| p == path) {
            continue;
        }
        seen.push(path.to_string());
        let name = Path::new(path)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let name = name.split(".ko").next().unwrap_or_default();
        let target = stage
            .join("modules")
            .join(format!("{:02}-{name}.ko", seen.len()));
        let data = match Path::new(path).extension().and_then(|e| e.to_str()) {
            Some(tool @ ("xz" | "zst")) => {
                let tool = if tool == "xz" { "xz" } else { "zstd" };
                let out = Command::new(tool)
                    .args(["-dc", path])
                    .output()
                    .with_context(|| format!("running {tool} -dc {path}"))?;
                if !out.status.success() {
                    bail!("{tool} -dc {path} failed");
                }
                out.stdout
            }
            _ => fs::read(path).with_context(|| format!("reading {path}"))?,
        };
        fs::write(&target, data).with_context(|| format!("writing {}", target.display()))?;
    }
    let script = init_script(suites);
    let init = stage.join("init");
    fs::write(&init, &script).with_context(|| format!("writing {}", init.display()))?;
    let modprobe = stage.join("sbin/modprobe");
    fs::write(
        &modprobe,
        format!(
            "#!/bin/sh\nexec /bin/chroot /mnt /usr/sbin/modprobe -d {} \"$@\"\n",
            quote(&kernel.root)
        ),
    )
    .with_context(|| format!("writing {}", modprobe.display()))?;
    for f in [&init, &modprobe] {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(f, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", f.display()))?;
    }
    let image = dir.join("initramfs.cpio");
    run(Command::new("sh").arg("-c").arg(format!(
        "cd {} && find . | busybox cpio -o -H newc -R 0:0 > {}",
        quote(&stage),
        quote(&image)
    )))
    .with_context(|| format!("packing {}", image.display()))?;
    Ok(image)
}

/// Test binaries that run on the host's kernel only: the view (issue 17) is
/// user space (HTTP, promtool, a browser) whose kernel side, the pinned
/// maps and link counters, the other suites cover on every kernel, and
/// headless Chromium under the VM's emulation takes minutes per page.
const HOST_ONLY: &[&str] = &["view"];

fn runs_in_vm(bin: &TestBin) -> bool {
    !HOST_ONLY.contains(&bin.name.as_str())
}

fn init_script(suites: &Suites) -> String {
    let tests_dir = workspace_root().join("tests");
    // A workspace under a directory the VM covers with tmpfs (a CI clone in
    // /tmp) is bound aside first and back into the tmpfs after.
    let root = workspace_root();
    let hidden = ["/run", "/tmp", "/etc/netns"]
        .iter()
        .any(|d| root.starts_with(d));
    let (keep, restore) = if hidden {
        let ws = quote(&root);
        (
            format!("mkdir -p /workspace && mount -o bind /mnt{ws} /workspace || fail \"keeping the workspace {ws}\"\n"),
            format!("mkdir -p /mnt{ws} && mount -o bind /workspace /mnt{ws} || fail \"restoring the workspace {ws}\"\n"),
        )
    } else {
        (String::new(), String::new())
    };
    let env: String = suites
        .env()
        .iter()
        .map(|(k, v)| format!(" {k}={}", quote(v)))
        .collect();
    let mut runs = String::new();
    for bin in suites.bins.iter().filter(|b| runs_in_vm(b)) {
        runs += &format!(
            "say begin {name}\n\
             chroot /mnt /usr/bin/env -i -C {dir} PATH=\"$PATH\" HOME=/root NETLAB_BIN={netlab}\
             {env} NETLAB_TEST_TIME_SCALE={TIME_SCALE} {path}{filter} --test-threads=2 2>&1\n\
             r=$?; say end {name} $r; [ $r = 0 ] || rc=1\n",
            name = bin.name,
            dir = quote(&tests_dir),
            netlab = quote(netlab_bin(false)),
            path = quote(&bin.path),
            filter = suites
                .filter
                .as_ref()
                .map(|f| format!(" {}", quote(f)))
                .unwrap_or_default(),
        );
    }
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
say() {{ echo "{MARK}$*"; }}
fail() {{ say "failed: $*"; poweroff -f; }}
mount -t proc proc /proc
for m in /modules/*.ko; do insmod "$m" || fail "insmod $m"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /mnt || fail "mounting the host's root over 9p"
mount -t proc proc /mnt/proc || fail "mounting /proc"
mount -t sysfs sysfs /mnt/sys || fail "mounting /sys"
mount -t devtmpfs devtmpfs /mnt/dev || fail "mounting /dev"
mount -t bpf bpf /mnt/sys/fs/bpf || fail "mounting bpffs"
{keep}for d in /run /tmp /etc/netns; do mount -t tmpfs tmpfs /mnt$d || fail "mounting tmpfs on $d"; done
{restore}for m in {modules}; do /sbin/modprobe $m || say "warning: no module $m"; done
ulimit -n {nofile} || fail "raising the open-file limit to {nofile}"
say "kernel $(uname -r), $(nproc) CPUs, $(free -m | awk '/Mem:/ {{print $2}}') MiB"
rc=0
{runs}say exit $rc
poweroff -f
"#,
        modules = MODULES,
        nofile = nofile_limit(),
        runs = runs,
        keep = keep,
        restore = restore,
    )
}

/// This process's open-file limit, for the tests in the VM: the kernel's
/// default there (1024) is too low for the 1,200-flow test.
fn nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur.clamp(1024, 1 << 20)
}

/// Boot `kernel` and run every test binary inside; the console goes to
/// target/vm/<version>.log.
fn in_vm(kernel: &Kernel, suites: &Suites) -> Outcome {
    let log_path = vm_dir().join(format!("{}.log", kernel.version));
    let mut outcome = Outcome {
        kernel: kernel.version.clone(),
        ..Outcome::default()
    };
    let started = Instant::now();
    let result = (|| -> Result<(Vec<String>, Option<ExitStatus>)> {
        let initramfs = initramfs(kernel, suites)?;
        let mut log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        outcome.log = Some(log_path.clone());
        eprintln!(
            "xtask: booting {} under qemu (log: {})",
            kernel.version,
            log_path.display()
        );
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(QEMU.split_whitespace())
            .arg("-kernel")
            .arg(
                kernel
                    .root
                    .join("boot")
                    .join(format!("vmlinuz-{}", kernel.version)),
            )
            .arg("-initrd")
            .arg(&initramfs)
            .args(["-append", "console=ttyS0 loglevel=5 panic=-1"])
            .args([
                "-virtfs",
                "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            ]);
        stream(qemu, &mut log, VM_LIMIT)
    })();
    outcome.duration = started.elapsed();
    let (lines, status) = match result {
        Ok(r) => r,
        Err(e) => {
            outcome.error = Some(format!("{e:#}"));
            return outcome;
        }
    };
    // Split the console at the init's markers, one part per test binary.
    let mut current: Option<(String, Vec<String>)> = None;
    let mut ran = Vec::new();
    let mut exit = None;
    for line in &lines {
        let Some(report) = line.find(MARK).map(|i| &line[i + MARK.len()..]) else {
            if let Some((_, part)) = &mut current {
                part.push(line.clone());
            }
            continue;
        };
        let words: Vec<&str> = report.split_whitespace().collect();
        match words[..] {
            ["begin", name] => current = Some((name.to_string(), Vec::new())),
            ["end", name, rc] => {
                if let Some((_, part)) = current.take() {
                    outcome.features = features(&part).or(outcome.features.take());
                    outcome.tally.add_binary(name, &part, Some(rc == "0"));
                }
                ran.push(name.to_string());
            }
            ["exit", rc] => exit = Some(rc.to_string()),
            ["failed:", ..] => outcome.error = Some(report.to_string()),
            _ => {}
        }
    }
    if let Some((name, part)) = current {
        outcome.tally.add_binary(&name, &part, None);
        ran.push(name);
    }
    for bin in suites
        .bins
        .iter()
        .filter(|b| runs_in_vm(b) && !ran.contains(&b.name))
    {
        outcome.tally.fail(format!("{}: did not run", bin.name));
    }
    if exit.is_none() && outcome.error.is_none() {
        outcome.error = Some(match status {
            None => format!("killed after {VM_LIMIT:?}"),
            Some(s) => format!("the VM ended ({s}) before reporting"),
        });
    }
    outcome
}

/// The table and target/kernel-matrix.json; whether anything failed.
fn report(rows: &[(String, Outcome)]) -> Result<bool> {
    println!();
    println!(
        "{:<28} {:>7} {:>7} {:>7} {:>9}  note",
        "kernel", "passed", "failed", "skipped", "duration"
    );
    let mut entries = Vec::new();
    let mut bad = false;
    for (spec, o) in rows {
        let t = o.counted();
        println!(
            "{:<28} {:>7} {:>7} {:>7} {:>8.0}s  {}",
            o.kernel,
            t.passed,
            t.failed,
            t.skipped,
            o.duration.as_secs_f64(),
            o.error.as_deref().unwrap_or_default()
        );
        if let Some(f) = &o.features {
            println!("    features: {f}");
        }
        for f in &t.failures {
            println!("    FAILED {f}");
        }
        bad |= t.failed > 0;
        entries.push(json!({
            "spec": spec,
            "kernel": o.kernel,
            "passed": t.passed,
            "failed": t.failed,
            "skipped": t.skipped,
            "failures": t.failures,
            "features": o.features,
            "error": o.error,
            "duration_secs": o.duration.as_secs_f64(),
            "log": o.log,
        }));
    }
    let path = workspace_root().join("target").join("kernel-matrix.json");
    let text = serde_json::to_string_pretty(&entries).context("encoding the kernel matrix")?;
    fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!("xtask: wrote {}", path.display());
    Ok(bad)
}
