//! `cargo xtask setup`: what a fresh Debian machine with rustup's stable and
//! nightly toolchains lacks, installed idempotently.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::run;

/// Debian packages the tests and benchmarks use.
const PACKAGES: &[&str] = &[
    "iproute2",
    "iptables",
    "nftables",
    "iputils-ping",
    "iperf3",
    "curl",
    "traceroute",
    "coturn",
    "socat",
    "procps",
    "psmisc",
    "kmod",
    "python3",
    // `netlab capture`: the pcap crate links libpcap; the tests read captures back.
    "libpcap-dev",
    "tcpdump",
    // The view's tests: `dot` renders `netlab graph --format dot`, headless
    // Chromium (driven over WebDriver) loads the page; `promtool` (which
    // checks `/metrics`) is taken out of Debian's prometheus package, see
    // `promtool`.
    "graphviz",
    "chromium",
    "chromium-driver",
    // `netlab bench`'s third-party tools: nginx answers, wrk opens the
    // connections (`Connection: close`), sockperf measures ping-pong latency.
    "nginx-light",
    "wrk",
    "sockperf",
    // `netlab bench --perf`: where a measurement's CPU time goes.
    "linux-perf",
];

/// What `cargo xtask test --kernel` needs to boot other kernels; installed
/// only then.
const VM_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "kmod", "xz-utils"];

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn ensure() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    packages()?;
    promtool()?;
    Ok(())
}

/// Where the tests find `promtool` (the view's suite checks `/metrics`
/// with it).
fn promtool_path() -> PathBuf {
    crate::workspace_root().join("target/tools/promtool")
}

/// Prometheus' `promtool`, a static binary, unpacked from Debian's
/// prometheus package into target/tools/ without installing the package:
/// installing it would also enable and start a Prometheus server on the
/// developer's machine wherever systemd runs.
fn promtool() -> Result<()> {
    let dest = promtool_path();
    if quiet(Command::new(&dest).arg("--version")) {
        return Ok(());
    }
    eprintln!("xtask: unpacking promtool from Debian's prometheus package into target/tools/");
    let work = crate::workspace_root().join("target/tools/prometheus-deb");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let download = |dir: &Path| {
        Command::new("apt-get")
            .args(["download", "prometheus"])
            .current_dir(dir)
            .status()
            .is_ok_and(|s| s.success())
    };
    let apt_update = || {
        Command::new("apt-get")
            .arg("update")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !(download(&work) || (apt_update() && download(&work))) {
        bail!("apt-get could not download Debian's prometheus package (for promtool)");
    }
    let deb = std::fs::read_dir(&work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(work.join("root")))?;
    std::fs::copy(work.join("root/usr/bin/promtool"), &dest)
        .with_context(|| format!("copying promtool to {}", dest.display()))?;
    std::fs::remove_dir_all(&work)?;
    if !quiet(Command::new(&dest).arg("--version")) {
        bail!("{} does not run", dest.display());
    }
    Ok(())
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup (is rustup installed?)")?;
    if !out.status.success() {
        bail!("the nightly toolchain is missing: the eBPF programs build with nightly (`rustup toolchain install nightly`)");
    }
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for nightly");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
}

/// bpf-linker built against nightly's own LLVM (no prebuilt one exists for
/// this toolchain). It finds LLVM through an rpath, so the prefix lives in
/// CARGO_HOME, not a temporary directory.
fn bpf_linker() -> Result<()> {
    if quiet(Command::new("bpf-linker").arg("--version")) {
        return Ok(());
    }
    eprintln!("xtask: building bpf-linker against nightly's LLVM (about a minute)");
    let sysroot = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .context("asking nightly rustc for its sysroot")?;
    let sysroot = PathBuf::from(String::from_utf8(sysroot.stdout)?.trim());
    let lib = std::fs::read_dir(sysroot.join("lib"))
        .context("reading nightly's lib directory")?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so."))
        })
        .context("nightly has no libLLVM.so.* to build bpf-linker against")?;
    let name = lib
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    let major: String = name["libLLVM.so.".len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    if major.is_empty() {
        bail!("cannot tell the LLVM major version from {name}");
    }
    let prefix = cargo_home().join("netlab-llvm");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for link in [prefix_lib.join("libLLVM.so"), prefix_lib.join(&name)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    run(Command::new("cargo")
        .args([
            "+nightly",
            "install",
            "bpf-linker",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}"))
        .arg("--locked")
        .env("LLVM_PREFIX", &prefix))?;
    if !quiet(Command::new("bpf-linker").arg("--version")) {
        bail!(
            "bpf-linker was built but does not run (is {} on PATH?)",
            cargo_home().join("bin").display()
        );
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn packages() -> Result<()> {
    install(PACKAGES)
}

/// Debian's policy-rc.d hook, answering "101: not allowed" to every
/// service start a package's install script asks for, while it exists.
/// Left alone when the machine already has one (containers often do).
struct NoServiceStarts(Option<&'static Path>);

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

impl NoServiceStarts {
    fn new() -> Result<NoServiceStarts> {
        let path = Path::new(POLICY_RC_D);
        if path.exists() {
            return Ok(NoServiceStarts(None));
        }
        std::fs::write(
            path,
            "#!/bin/sh\n# netlab's xtask setup: no service starts while it installs.\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {POLICY_RC_D} executable"))?;
        Ok(NoServiceStarts(Some(path)))
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub fn vm_packages() -> Result<()> {
    install(VM_PACKAGES)
}

fn install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&missing);
    // Servers among them (nginx, coturn) are only started by the tests,
    // inside their namespaces: never as services of the machine.
    let _no_services = NoServiceStarts::new()?;
    // Fresh machines often have no package lists yet.
    let installed = apt(&install) || (apt(&["update"]) && apt(&install));
    if !installed {
        bail!(
            "apt-get could not install {} (are you root?)",
            missing.join(" ")
        );
    }
    Ok(())
}
