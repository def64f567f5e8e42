//! Shared pieces of the reliability suites (`tests/tests/reliability/`):
//! short and long forms, figures, a lab host of the test's own, snapshots
//! of the machine's resources that tell a leak from other users' activity,
//! traffic whose every byte is checked, crafted packets and a port scanner.
//!
//! Everything here works in namespaces the tests create; addresses are
//! 198.51.100.0/24, 203.0.113.0/24 and the labs' 192.168.15.0/24.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{
    in_netns, netlab_bin, ok, run, run_netlab, run_netlab_ok, stdout, unique, wait_for, Lab, T,
};

pub const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const WAN2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

// ---------------------------------------------------------------- scale

/// True for the long forms (`cargo xtask stress` sets NETLAB_STRESS=1).
pub fn stress() -> bool {
    std::env::var("NETLAB_STRESS").is_ok_and(|v| v == "1")
}

/// `short` in `cargo xtask test`, `long` under `cargo xtask stress`.
pub fn pick<V>(short: V, long: V) -> V {
    if stress() {
        long
    } else {
        short
    }
}

/// How many times a short form repeats a slow step (a whole `up`/`down`
/// cycle, a kill during `up`): `short` on this machine, half of it (at
/// least 1) in an emulated VM ([`crate::time_scale`] above 1), where each
/// repetition takes four times as long and this machine's own run of the
/// suite does them all; `long` under `cargo xtask stress`. The figures say
/// how many ran.
pub fn repeats(short: u32, long: u32) -> u32 {
    if stress() {
        long
    } else if crate::time_scale() > 1.0 {
        short.div_ceil(2)
    } else {
        short
    }
}

pub fn mode() -> &'static str {
    if stress() {
        "long"
    } else {
        "short"
    }
}

pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("target")
}

/// Print a figure of a suite, past the test harness's output capture, and
/// append it to `target/reliability/figures-<short|long>.txt`. The first
/// figure of a run is preceded by one saying which form ran, with which
/// binary, on how many CPUs.
pub fn figure(suite: &str, line: impl AsRef<str>) {
    static MODE: std::sync::Once = std::sync::Once::new();
    MODE.call_once(|| {
        let cpus = aya::util::nr_cpus().map_or_else(|e| format!("? ({e:?})"), |n| n.to_string());
        let binary = netlab_bin();
        append_figure(
            "mode",
            &format!(
                "{} form, netlab binary {}, {cpus} CPUs",
                mode(),
                binary.display()
            ),
        );
    });
    append_figure(suite, line.as_ref());
}

fn append_figure(suite: &str, line: &str) {
    let line = format!("[reliability {}] {suite}: {line}\n", mode());
    let _ = io::stderr().write_all(line.as_bytes());
    let dir = target_dir().join("reliability");
    let _ = fs::create_dir_all(&dir);
    if let Ok(mut f) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("figures-{}.txt", mode())))
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let _ = f.write_all(format!("{now} {line}").as_bytes());
    }
}

// ---------------------------------------------------------------- locks

static GATE: RwLock<()> = RwLock::new(());
static HEAVY: Mutex<()> = Mutex::new(());

/// Run alone among the reliability tests (resource counts).
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    GATE.write().unwrap_or_else(|e| e.into_inner())
}

/// Run beside other light tests.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(|e| e.into_inner())
}

/// A test that loads the CPUs or measures time: one at a time (the machine
/// has two cores, and a light test may run beside it).
pub struct Heavy {
    _gate: RwLockReadGuard<'static, ()>,
    _heavy: MutexGuard<'static, ()>,
}

pub fn heavy() -> Heavy {
    let gate = shared();
    let heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    Heavy {
        _gate: gate,
        _heavy: heavy,
    }
}

/// Up to `want` open files (the soak and the table-full tests hold thousands of sockets).
pub fn raise_nofile(want: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

// ---------------------------------------------------------------- netlab

/// `netlab ARGS` with extra environment.
pub fn netlab_env(env: &[(&str, &str)], args: &[&str], timeout: Duration) -> Output {
    let bin = netlab_bin();
    let mut full: Vec<String> = vec!["env".into()];
    full.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    full.push(bin.display().to_string());
    full.extend(args.iter().map(|s| s.to_string()));
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    run(&full, timeout)
}

/// `netlab stats --json` of a lab, by counter name.
pub fn stats(lab: &Lab) -> BTreeMap<String, u64> {
    let out = lab.netlab_ok(&["stats", "--name", &lab.name, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("stats json");
    v.as_object()
        .expect("stats object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect()
}

/// Counter deltas between two `stats` readings (only those that moved).
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(*before.get(k).unwrap_or(&0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// `stats` once the counters' deltas since `before` satisfy `done`, or
/// after 10 s (times the time scale) when they never do, for the test to
/// fail on with its figures. The kernel counts a packet when it processes
/// it, which may be after the send that made it returned.
pub fn stats_when(
    lab: &Lab,
    before: &BTreeMap<String, u64>,
    done: impl Fn(&BTreeMap<String, u64>) -> bool,
) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(10).mul_f64(crate::time_scale());
    loop {
        let now = stats(lab);
        if done(&delta(before, &now)) || Instant::now() > deadline {
            return now;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A counter of a `delta` (0 when it did not move).
pub fn moved(delta: &BTreeMap<String, u64>, counter: &str) -> u64 {
    delta.get(counter).copied().unwrap_or(0)
}

/// The drop counters that are not zero.
pub fn drops(stats: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    stats
        .iter()
        .filter(|(k, v)| k.starts_with("drop_") && **v > 0)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// `netlab nat list --json`.
pub fn nat_list(lab: &Lab) -> Vec<serde_json::Value> {
    let out = lab.netlab_ok(&["nat", "list", "--name", &lab.name, "--json"]);
    serde_json::from_str::<serde_json::Value>(&out)
        .expect("nat list json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// IDs of the programs pinned for `lab` (`/sys/fs/bpf/netlab/<lab>/progs/*`), by pin name.
pub fn pinned_programs(lab: &str) -> BTreeMap<String, u32> {
    let dir = format!("/sys/fs/bpf/netlab/{lab}/progs");
    fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let id = aya::programs::SchedClassifier::from_pin(e.path())
                        .ok()?
                        .info()
                        .ok()?
                        .id();
                    Some((e.file_name().to_string_lossy().into_owned(), id))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What a bpffs pin holds, read from the fdinfo of the object BPF_OBJ_GET
/// opens. (Asking for program info on a link pin would read the link's id
/// as a program id: the object types' info structs differ.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinned {
    Prog(u32),
    Map(u32),
    Link { id: u32, prog: u32 },
}

pub fn pinned_object(path: &Path) -> Option<Pinned> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // union bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags, path_fd.
    let mut attr = [0u64; 16];
    attr[0] = c.as_ptr() as u64;
    const BPF_OBJ_GET: libc::c_long = 7;
    // SAFETY: bpf(2) with a zeroed attr holding a valid C string pointer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: bpf(2) returned a new descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    if let Some(id) = field("link_id:") {
        return Some(Pinned::Link {
            id,
            prog: field("prog_id:").unwrap_or(0),
        });
    }
    if let Some(id) = field("map_id:") {
        return Some(Pinned::Map(id));
    }
    field("prog_id:").map(Pinned::Prog)
}

/// Every BPF object of a lab reachable from its pins.
#[derive(Clone, Debug, Default)]
pub struct LabObjects {
    pub progs: BTreeSet<u32>,
    /// Pinned maps and the maps the programs use.
    pub maps: BTreeSet<u32>,
    pub links: BTreeSet<u32>,
}

impl LabObjects {
    pub fn extend(&mut self, o: LabObjects) {
        self.progs.extend(o.progs);
        self.maps.extend(o.maps);
        self.links.extend(o.links);
    }

    /// Those still loaded.
    pub fn loaded(&self) -> Vec<String> {
        let v = bpf_view();
        let links: BTreeSet<u32> = aya::programs::loaded_links()
            .flatten()
            .map(|l| l.id())
            .collect();
        let mut out: Vec<String> = self
            .progs
            .iter()
            .filter(|id| v.progs.contains_key(id))
            .map(|id| format!("program {id}"))
            .collect();
        out.extend(
            self.maps
                .iter()
                .filter(|id| v.maps.contains_key(id))
                .map(|id| format!("map {id}")),
        );
        out.extend(
            self.links
                .iter()
                .filter(|id| links.contains(id))
                .map(|id| format!("link {id}")),
        );
        out
    }
}

pub fn lab_objects(lab: &str) -> LabObjects {
    let mut o = LabObjects::default();
    for f in walk(&PathBuf::from(format!("/sys/fs/bpf/netlab/{lab}"))) {
        match pinned_object(&f) {
            Some(Pinned::Prog(id)) => {
                o.progs.insert(id);
            }
            Some(Pinned::Map(id)) => {
                o.maps.insert(id);
            }
            Some(Pinned::Link { id, prog }) => {
                o.links.insert(id);
                o.progs.insert(prog);
            }
            None => {}
        }
    }
    for p in aya::programs::loaded_programs().flatten() {
        if o.progs.contains(&p.id()) {
            o.maps
                .extend(p.map_ids().ok().flatten().unwrap_or_default());
        }
    }
    o
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(walk(&p)),
            Ok(_) => out.push(p),
            Err(_) => {}
        }
    }
    out
}

// ---------------------------------------------------------------- resources

/// The loaded BPF programs and maps of the whole machine.
#[derive(Clone, Debug, Default)]
pub struct BpfView {
    pub progs: BTreeMap<u32, String>,
    pub maps: BTreeMap<u32, String>,
}

pub fn bpf_view() -> BpfView {
    let mut v = BpfView::default();
    for p in aya::programs::loaded_programs().flatten() {
        v.progs
            .insert(p.id(), p.name_as_str().unwrap_or("?").to_string());
    }
    for m in aya::maps::loaded_maps().flatten() {
        v.maps
            .insert(m.id(), m.name_as_str().unwrap_or("?").to_string());
    }
    v
}

/// The BPF objects something holds: a pin anywhere in bpffs, a link, a
/// process's file descriptor, or (maps) a program that is itself held.
fn held_objects() -> (BTreeSet<u32>, BTreeSet<u32>) {
    let mut progs = BTreeSet::new();
    let mut maps = BTreeSet::new();
    for f in walk(Path::new("/sys/fs/bpf")) {
        match pinned_object(&f) {
            Some(Pinned::Prog(id)) | Some(Pinned::Link { prog: id, .. }) => {
                progs.insert(id);
            }
            Some(Pinned::Map(id)) => {
                maps.insert(id);
            }
            None => {}
        }
    }
    for l in aya::programs::loaded_links().flatten() {
        progs.insert(l.program_id());
    }
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(fds) = fs::read_dir(e.path().join("fdinfo")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(info) = fs::read_to_string(fd.path()) else {
                    continue;
                };
                for line in info.lines() {
                    let mut it = line.split_whitespace();
                    match (it.next(), it.next().and_then(|v| v.parse::<u32>().ok())) {
                        (Some("prog_id:"), Some(id)) => {
                            progs.insert(id);
                        }
                        (Some("map_id:"), Some(id)) => {
                            maps.insert(id);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    for p in aya::programs::loaded_programs().flatten() {
        if progs.contains(&p.id()) {
            maps.extend(p.map_ids().ok().flatten().unwrap_or_default());
        }
    }
    (progs, maps)
}

/// New netlab programs (`nl_*`) and new maps that nothing holds any more
/// (no pin, link, file descriptor or held program): leaked by the kernel
/// side of something that has exited. Objects of other users' live labs,
/// benchmarks and program tests are held, so they do not count.
pub fn unheld_new_objects(before: &BpfView) -> Vec<String> {
    let now = bpf_view();
    let (progs, maps) = held_objects();
    let mut out = Vec::new();
    for (id, name) in &now.progs {
        if !before.progs.contains_key(id) && name.starts_with("nl_") && !progs.contains(id) {
            out.push(format!("program {id} {name}"));
        }
    }
    // A map only lives while something refers to it; an unheld one is on
    // its way out (freed after an RCU grace period) or referenced by an
    // unheld program.
    for (id, name) in &now.maps {
        if !before.maps.contains_key(id) && !maps.contains(id) {
            out.push(format!("map {id} {name}"));
        }
    }
    out
}

/// The machine-wide figures churn must bring back.
#[derive(Clone, Debug)]
pub struct Resources {
    pub bpf: BpfView,
    pub netns: usize,
    /// Allocated file handles (`/proc/sys/fs/file-nr`, first field).
    pub files: i64,
    /// MemAvailable, kB.
    pub mem_available: i64,
    /// MemAvailable + AnonPages + PageTables, kB: what the kernel and the
    /// page cache leave, with user processes' memory (other users' compilers
    /// come and go) taken out.
    pub mem_kernel_view: i64,
    /// Unreclaimable slab + per-CPU allocations, kB: where namespaces,
    /// network devices and their queues live (no page cache, no user memory).
    pub kernel_unreclaimable: i64,
}

fn meminfo(key: &str) -> i64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with(&format!("{key}:")))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub fn resources() -> Resources {
    let files = fs::read_to_string("/proc/sys/fs/file-nr")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    let mem_available = meminfo("MemAvailable");
    Resources {
        bpf: bpf_view(),
        netns: fs::read_dir("/run/netns").map(|d| d.count()).unwrap_or(0),
        files,
        mem_available,
        mem_kernel_view: mem_available + meminfo("AnonPages") + meminfo("PageTables"),
        kernel_unreclaimable: meminfo("SUnreclaim") + meminfo("Percpu"),
    }
}

impl Resources {
    pub fn line(&self) -> String {
        let nl = self
            .bpf
            .progs
            .values()
            .filter(|n| n.starts_with("nl_"))
            .count();
        format!(
            "{} BPF programs ({nl} nl_*), {} maps, {} named netns, {} file handles, MemAvailable {} MiB (without user memory {} MiB), unreclaimable slab+percpu {} MiB",
            self.bpf.progs.len(),
            self.bpf.maps.len(),
            self.netns,
            self.files,
            self.mem_available / 1024,
            self.mem_kernel_view / 1024,
            self.kernel_unreclaimable / 1024
        )
    }
}

/// Tolerances for [`settle`]. Other users' builds and tests share the
/// machine (2 cores, 24 GB): they open and close a few hundred files, and
/// their compilers move MemAvailable by hundreds of MiB (taken out by adding
/// AnonPages and PageTables back) and the page cache by up to ~120 MiB (seen
/// in the long runs, which is why MemAvailable gets 256 MiB); their labs come
/// and go too (hence the retries). A 20-node lab holds tens of MiB while it is
/// up (mostly its preallocated BPF maps, checked by id anyway) and about
/// 12 MiB of slab and per-CPU memory (namespaces, devices), so a leaked lab
/// per cycle shows in the unreclaimable figure within a few cycles, and
/// 1.3 MiB or 2 file handles leaked per cycle over the long form's 200
/// cycles exceed the other two.
pub const FILES_TOLERANCE: i64 = 256;
pub const MEM_TOLERANCE_KB: i64 = 256 * 1024;
pub const UNRECLAIMABLE_TOLERANCE_KB: i64 = 32 * 1024;

/// Wait (up to `wait`) until the kernel has finished freeing what the
/// removed labs held: namespaces and BPF maps are freed by deferred work
/// (after RCU grace periods), tens of MiB after 200 cycles, seconds later.
/// Returns when memory stopped coming back (two readings a second apart
/// within 2 MiB, twice in a row).
pub fn quiesce(wait: Duration) -> Duration {
    let started = Instant::now();
    let mut last = resources().mem_kernel_view;
    let mut steady = 0;
    while started.elapsed() < wait && steady < 2 {
        thread::sleep(Duration::from_secs(1));
        let now = resources().mem_kernel_view;
        steady = if (now - last).abs() < 2048 {
            steady + 1
        } else {
            0
        };
        last = now;
    }
    started.elapsed()
}

/// Wait (up to `wait`) until the machine is back where `before` was:
/// no unheld new BPF object, file handles and memory within tolerance.
/// Returns the last reading and what is still off (empty when settled).
pub fn settle(before: &Resources, wait: Duration) -> (Resources, Vec<String>) {
    let deadline = Instant::now() + wait;
    loop {
        let now = resources();
        let mut off = unheld_new_objects(&before.bpf);
        // Machine-wide, so only in the long form: in the short one, other
        // users' processes move the count by more than a few cycles' leak
        // could; the short form checks what is attributable instead (BPF
        // objects by id, processes in the lab's namespaces).
        if stress() && now.files > before.files + FILES_TOLERANCE {
            off.push(format!(
                "file handles {} > {} + {FILES_TOLERANCE}",
                now.files, before.files
            ));
        }
        if now.mem_kernel_view < before.mem_kernel_view - MEM_TOLERANCE_KB {
            off.push(format!(
                "memory (MemAvailable+AnonPages+PageTables) {} MiB < {} MiB - {} MiB",
                now.mem_kernel_view / 1024,
                before.mem_kernel_view / 1024,
                MEM_TOLERANCE_KB / 1024
            ));
        }
        if now.kernel_unreclaimable > before.kernel_unreclaimable + UNRECLAIMABLE_TOLERANCE_KB {
            off.push(format!(
                "unreclaimable slab+percpu {} MiB > {} MiB + {} MiB",
                now.kernel_unreclaimable / 1024,
                before.kernel_unreclaimable / 1024,
                UNRECLAIMABLE_TOLERANCE_KB / 1024
            ));
        }
        if off.is_empty() || Instant::now() >= deadline {
            return (now, off);
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// The inodes of the named network namespaces whose names start with
/// `prefix` (a lab's nodes): what a process still inside one would show in
/// its `/proc/PID/ns/net` after the names are gone.
pub fn netns_inodes(prefix: &str) -> std::collections::BTreeSet<u64> {
    use std::os::unix::fs::MetadataExt as _;
    fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter_map(|e| fs::metadata(e.path()).ok())
        .map(|m| m.ino())
        .collect()
}

/// Processes (pid and name) whose network namespace is one of `inodes`.
pub fn processes_in(inodes: &std::collections::BTreeSet<u64>) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().to_string();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(link) = fs::read_link(e.path().join("ns/net")) else {
            continue;
        };
        let ino = link
            .to_string_lossy()
            .trim_start_matches("net:[")
            .trim_end_matches(']')
            .parse::<u64>()
            .unwrap_or(0);
        if inodes.contains(&ino) {
            let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            found.push(format!("{pid} {}", comm.trim()));
        }
    }
    found
}

// ---------------------------------------------------------------- a lab host of our own

/// A lab host and a wan namespace made by the test (as `--sandbox` does):
/// `eth0` 198.51.100.2/24 in the host, 198.51.100.1/24 (and 203.0.113.1 on
/// lo) in the wan, a default route. Both go when it is dropped.
pub struct HostPair {
    pub host: String,
    pub wan: String,
    children: Vec<Child>,
}

impl HostPair {
    pub fn new(tag: &str) -> HostPair {
        let base = unique(tag);
        let pair = HostPair {
            host: format!("{base}-lh"),
            wan: format!("{base}-lw"),
            children: Vec::new(),
        };
        let (h, w) = (pair.host.as_str(), pair.wan.as_str());
        ok(&["ip", "netns", "add", h], T);
        ok(&["ip", "netns", "add", w], T);
        for args in [
            &[
                "ip", "-n", h, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                "netns", w,
            ][..],
            &[
                "ip",
                "-n",
                h,
                "addr",
                "add",
                "198.51.100.2/24",
                "dev",
                "eth0",
            ],
            &[
                "ip",
                "-n",
                w,
                "addr",
                "add",
                "198.51.100.1/24",
                "dev",
                "eth0",
            ],
            &["ip", "-n", w, "addr", "add", "203.0.113.1/32", "dev", "lo"],
            &["ip", "-n", h, "link", "set", "lo", "up"],
            &["ip", "-n", w, "link", "set", "lo", "up"],
            &["ip", "-n", h, "link", "set", "eth0", "up"],
            &["ip", "-n", w, "link", "set", "eth0", "up"],
            &[
                "ip",
                "-n",
                h,
                "route",
                "add",
                "default",
                "via",
                "198.51.100.1",
            ],
        ] {
            ok(args, T);
        }
        pair
    }

    /// netlab's HTTP server on port 80 of the wan side.
    pub fn serve_http(&mut self) {
        let child = Command::new(netlab_bin())
            .args(["serve-http", "--netns", &self.wan, "--port", "80"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
        let wan = self.wan.clone();
        wait_for(
            &format!("the HTTP server in {wan} answering"),
            Duration::from_secs(5),
            || in_netns(&wan, || TcpStream::connect(("127.0.0.1", 80)).is_ok()),
        );
    }

    /// `netlab --host-netns HOST ARGS`.
    pub fn netlab(&self, args: &[&str]) -> Output {
        run_netlab(&[&["--host-netns", &self.host], args].concat())
    }

    #[track_caller]
    pub fn netlab_ok(&self, args: &[&str]) -> String {
        run_netlab_ok(&[&["--host-netns", &self.host], args].concat())
    }
}

impl Drop for HostPair {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.host, &self.wan] {
            let pids = stdout(&run(&["ip", "netns", "pids", ns], T));
            for pid in pids.split_whitespace() {
                let _ = run(&["kill", "-9", pid], T);
            }
            let _ = run(&["ip", "netns", "del", ns], T);
        }
    }
}

/// What a lab host holds that a lab may touch, normalised for comparison
/// (counters and timestamps taken out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostState {
    pub links: Vec<String>,
    pub addresses: String,
    pub routes: String,
    pub qdiscs: String,
    pub filters_ingress: String,
    pub filters_egress: String,
    pub tcx_ingress: Vec<u32>,
    pub tcx_egress: Vec<u32>,
    pub iptables: String,
    pub nft: String,
}

fn normalise_counters(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            // iptables-save `[p:b]`, nft `counter packets N bytes M`.
            let mut out = String::new();
            let mut words = l.split(' ').peekable();
            while let Some(w) = words.next() {
                if w.starts_with('[') && w.ends_with(']') && w.contains(':') {
                    out.push_str("[-:-]");
                } else if w == "packets" || w == "bytes" {
                    out.push_str(w);
                    out.push_str(" -");
                    words.next();
                } else {
                    out.push_str(w);
                }
                out.push(' ');
            }
            out.trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// TCX programs on `dev` in `netns`, in order (see [`tcx_programs`]).
pub fn tcx(netns: &str, dev: &str, ingress: bool) -> Vec<u32> {
    let dev = dev.to_string();
    in_netns(netns, move || tcx_programs(&dev, ingress))
}

/// Whether this kernel has TCX: Linux 6.6 and newer.
pub fn kernel_has_tcx() -> bool {
    let v = aya::util::KernelVersion::current().expect("reading the kernel version");
    v >= aya::util::KernelVersion::new(6, 6, 0)
}

/// The ids of the TCX programs on `dev` (of the calling thread's
/// namespace), in order. Where the kernel has no TCX (before 6.6) the
/// query must fail with EINVAL (an unknown attach type), and there are
/// none; any other answer fails the test.
pub fn tcx_programs(dev: &str, ingress: bool) -> Vec<u32> {
    let t = if ingress {
        aya::programs::TcAttachType::Ingress
    } else {
        aya::programs::TcAttachType::Egress
    };
    let kernel = aya::util::KernelVersion::current().expect("reading the kernel version");
    match aya::programs::SchedClassifier::query_tcx(dev, t) {
        Ok((_, progs)) => {
            assert!(
                kernel_has_tcx(),
                "kernel {kernel} answered a TCX query (TCX came in 6.6)"
            );
            progs.iter().map(|p| p.id()).collect()
        }
        Err(aya::programs::ProgramError::SyscallError(e)) if !kernel_has_tcx() => {
            assert_eq!(
                e.io_error.raw_os_error(),
                Some(libc::EINVAL),
                "kernel {kernel} (no TCX): the TCX query of {dev} failed otherwise: {e}"
            );
            Vec::new()
        }
        Err(e) => panic!("querying the TCX programs of {dev} on kernel {kernel}: {e}"),
    }
}

pub fn host_state(netns: &str) -> HostState {
    let ip = |args: &[&str]| {
        let mut full = vec!["ip", "-n", netns];
        full.extend_from_slice(args);
        stdout(&run(&full, T))
    };
    let exec = |args: &[&str]| {
        let mut full = vec!["ip", "netns", "exec", netns];
        full.extend_from_slice(args);
        stdout(&run(&full, T))
    };
    let links = ip(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect();
    let addresses = ip(&["-o", "-4", "addr", "show"])
        .lines()
        .map(|l| l.split("\\").next().unwrap_or(l).trim().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    HostState {
        links,
        addresses,
        routes: ip(&["-4", "route", "show", "table", "all"]),
        qdiscs: exec(&["tc", "qdisc", "show", "dev", "eth0"]),
        filters_ingress: exec(&["tc", "filter", "show", "dev", "eth0", "ingress"]),
        filters_egress: exec(&["tc", "filter", "show", "dev", "eth0", "egress"]),
        tcx_ingress: tcx(netns, "eth0", true),
        tcx_egress: tcx(netns, "eth0", false),
        iptables: normalise_counters(&exec(&["iptables-save"])),
        nft: normalise_counters(&exec(&["nft", "list", "ruleset"])),
    }
}

// ---------------------------------------------------------------- attach modes

/// How `up` attaches programs on this kernel, as it probes it: "tcx" (6.6+)
/// or "netlink" (clsact filters before). The probe must agree with the
/// kernel's version: every kernel of the matrix (Debian's 6.1 and 6.12,
/// the host's) has TCX exactly when it is 6.6 or newer.
pub fn attach_mode() -> &'static str {
    let f = netlab::dataplane::features::probe()
        .unwrap_or_else(|e| panic!("probing the kernel: {e:#}"));
    assert_eq!(
        f.tcx,
        kernel_has_tcx(),
        "kernel {}: the probe says TCX {}, expected TCX exactly from 6.6 ({})",
        f.kernel,
        f.tcx,
        f.tcx_why
    );
    if f.tcx {
        "tcx"
    } else {
        "netlink"
    }
}

/// The program ids of the bpf filters with priority `pref` in `tc filter
/// show` output.
pub fn filter_programs(tc: &str, pref: u16) -> Vec<u32> {
    let tag = format!(" pref {pref} bpf ");
    tc.lines()
        .filter(|l| l.contains(&tag))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "id")?;
            words.next()?.parse().ok()
        })
        .collect()
}

/// `tc filter show` output without the filters of priority `pref`.
pub fn without_filters(tc: &str, pref: u16) -> String {
    let tag = format!(" pref {pref} ");
    tc.lines()
        .filter(|l| !l.contains(&tag))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Check that every hook of a lab's dataplane (`dataplane` of `netlab status
/// --json`) is in place in the lab host `netns` and runs one of `progs`: a
/// TCX program on TCX kernels, a bpf filter with the lab's priority and
/// handle on netlink ones (exactly one per hook). Returns the attach mode and
/// how many hooks were checked, or what is wrong.
pub fn check_hooks(
    netns: &str,
    dataplane: &serde_json::Value,
    progs: &BTreeSet<u32>,
) -> Result<(String, usize), String> {
    let mode = dataplane["attach"]
        .as_str()
        .ok_or_else(|| format!("no attach mode in {dataplane}"))?
        .to_string();
    let hooks = dataplane["hooks"]
        .as_array()
        .ok_or_else(|| format!("no hooks in {dataplane}"))?;
    let field = |h: &serde_json::Value, k: &str| h[k].as_str().unwrap_or("?").to_string();
    // Netlink: every hooked interface's filters, in one shell.
    let mut filters: BTreeMap<(String, String), String> = BTreeMap::new();
    if mode == "netlink" {
        let script: String = hooks
            .iter()
            .map(|h| {
                let (dev, dir) = (field(h, "interface"), field(h, "direction"));
                format!("echo '@@ {dev} {dir}'; tc filter show dev '{dev}' '{dir}'; ")
            })
            .collect();
        let out = ok(&["ip", "netns", "exec", netns, "sh", "-c", &script], T);
        let mut current = None;
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("@@ ") {
                let (dev, dir) = rest.split_once(' ').unwrap_or((rest, ""));
                current = Some((dev.to_string(), dir.to_string()));
            } else if let Some(k) = &current {
                let text = filters.entry(k.clone()).or_default();
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    for h in hooks {
        let (prog, dev, dir) = (
            field(h, "program"),
            field(h, "interface"),
            field(h, "direction"),
        );
        let what = format!("{prog} on {dev} {dir}");
        if field(h, "mode") != mode {
            return Err(format!("{what}: mode {} in a {mode} lab", h["mode"]));
        }
        let ids = match mode.as_str() {
            "tcx" => tcx(netns, &dev, dir == "ingress"),
            "netlink" => {
                let pref = h["priority"].as_u64().unwrap_or(0) as u16;
                let handle = h["handle"].as_u64().unwrap_or(0);
                let tc = filters.get(&(dev.clone(), dir.clone())).cloned();
                let tc = tc.unwrap_or_default();
                let ids = filter_programs(&tc, pref);
                let named = format!(" handle {handle:#x} {prog} ");
                if pref < 0x4000 || ids.len() != 1 || !tc.contains(&named) {
                    return Err(format!(
                        "{what}: expected one bpf filter {prog}, pref {pref}, handle {handle:#x}; tc shows:\n{tc}"
                    ));
                }
                ids
            }
            m => return Err(format!("unknown attach mode {m}")),
        };
        if !ids.iter().any(|id| progs.contains(id)) {
            return Err(format!(
                "{what}: programs {ids:?} there, none of the lab's {progs:?}"
            ));
        }
    }
    Ok((mode, hooks.len()))
}

// ---------------------------------------------------------------- threads in namespaces

/// Run `f` on a new thread inside `netns` (sockets it makes live there).
pub fn spawn_in_netns<R: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> JoinHandle<R> {
    let ns = netns.to_string();
    thread::spawn(move || in_netns(&ns, f))
}

// ---------------------------------------------------------------- checked streams

/// Bytes `offset..offset+buf.len()` of the deterministic stream `seed`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut i = 0;
    while i < buf.len() {
        let pos = offset + i as u64;
        let block = pos / 8;
        let mut z = seed ^ block.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let bytes = z.to_le_bytes();
        let from = (pos % 8) as usize;
        let n = (8 - from).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&bytes[from..from + n]);
        i += n;
    }
}

/// The first offset where `got` differs from the stream.
fn mismatch(seed: u64, offset: u64, got: &[u8], scratch: &mut Vec<u8>) -> Option<u64> {
    scratch.resize(got.len(), 0);
    fill(seed, offset, scratch);
    if scratch[..] == got[..] {
        return None;
    }
    let i = got.iter().zip(scratch.iter()).position(|(a, b)| a != b)?;
    Some(offset + i as u64)
}

const CHUNK: usize = 64 * 1024;

/// How long a receiver of a checked transfer waits for the next bytes: long
/// enough for a [`Hold`] on a slow machine.
const TRANSFER_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Holds back the last chunk of paced transfers until released: they are
/// still running when the test does what they must run through (a program
/// swap, a flood), however long the steps before took on a busy or
/// emulated machine, and a test cannot pass because they had ended.
#[derive(Clone, Default)]
pub struct Hold(Arc<AtomicBool>);

impl Hold {
    pub fn new() -> Hold {
        Hold::default()
    }

    /// Let every transfer held by this finish.
    pub fn release(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// A guard that releases on drop (a test that fails on the way
    /// does not leave its transfers waiting).
    pub fn released_on_drop(&self) -> ReleaseOnDrop {
        ReleaseOnDrop(self.clone())
    }

    fn wait(&self) -> io::Result<()> {
        let started = Instant::now();
        while !self.0.load(Ordering::SeqCst) {
            if started.elapsed() > TRANSFER_READ_TIMEOUT / 2 {
                return Err(io::Error::other("held back and never released"));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

pub struct ReleaseOnDrop(Hold);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

fn paced_send(
    s: &mut TcpStream,
    seed: u64,
    len: u64,
    rate: u64,
    hold: Option<&Hold>,
) -> io::Result<()> {
    let start = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    while sent < len {
        let n = (len - sent).min(CHUNK as u64) as usize;
        if sent + n as u64 == len {
            if let Some(h) = hold {
                h.wait()?;
            }
        }
        fill(seed, sent, &mut buf[..n]);
        s.write_all(&buf[..n])?;
        sent += n as u64;
        if rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                thread::sleep(wait);
            }
        }
    }
    Ok(())
}

fn checked_recv(s: &mut TcpStream, seed: u64, len: u64) -> Result<(), String> {
    let mut buf = vec![0u8; CHUNK];
    let mut scratch = Vec::new();
    let mut got = 0u64;
    while got < len {
        let want = (len - got).min(CHUNK as u64) as usize;
        let n = s
            .read(&mut buf[..want])
            .map_err(|e| format!("read at byte {got} of {len}: {e}"))?;
        if n == 0 {
            return Err(format!("EOF at byte {got} of {len}"));
        }
        if let Some(at) = mismatch(seed, got, &buf[..n], &mut scratch) {
            return Err(format!("corrupted byte at offset {at}"));
        }
        got += n as u64;
    }
    Ok(())
}

/// A server for checked transfers, in a namespace, until dropped. A client
/// sends a 25-byte header (mode `U` or `D`, seed, length, rate): `U`
/// uploads the stream, which the server checks and answers with the number
/// of good bytes; `D` downloads it at the rate, checked by the client, its
/// last chunk held back by the server's [`Hold`], if any.
pub struct TransferServer {
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    pub errors: Arc<Mutex<Vec<String>>>,
    pub peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl TransferServer {
    pub fn start(netns: &str, port: u16, hold: Option<Hold>) -> TransferServer {
        let listener = in_netns(netns, move || TcpListener::bind(("0.0.0.0", port)).unwrap());
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let workers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (stop, errors, peers, workers) =
                (stop.clone(), errors.clone(), peers.clone(), workers.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, from)) => {
                            peers.lock().unwrap().push(from);
                            let errors = errors.clone();
                            let hold = hold.clone();
                            let h = thread::spawn(move || {
                                if let Err(e) = serve_transfer(s, hold.as_ref()) {
                                    errors.lock().unwrap().push(format!("{from}: {e}"));
                                }
                            });
                            workers.lock().unwrap().push(h);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        TransferServer {
            stop,
            accept: Some(accept),
            workers,
            errors,
            peers,
        }
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

impl Drop for TransferServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for h in self.workers.lock().unwrap().drain(..) {
            let _ = h.join();
        }
    }
}

fn serve_transfer(mut s: TcpStream, hold: Option<&Hold>) -> Result<(), String> {
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(TRANSFER_READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut h = [0u8; 25];
    s.read_exact(&mut h).map_err(|e| format!("header: {e}"))?;
    let seed = u64::from_le_bytes(h[1..9].try_into().unwrap());
    let len = u64::from_le_bytes(h[9..17].try_into().unwrap());
    let rate = u64::from_le_bytes(h[17..25].try_into().unwrap());
    match h[0] {
        b'U' => {
            let r = checked_recv(&mut s, seed, len);
            let answer = if r.is_ok() { len } else { u64::MAX };
            s.write_all(&answer.to_le_bytes())
                .map_err(|e| format!("answer: {e}"))?;
            r
        }
        b'D' => {
            paced_send(&mut s, seed, len, rate, hold).map_err(|e| format!("sending: {e}"))?;
            s.shutdown(std::net::Shutdown::Write)
                .map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(0) => Ok(()),
                Ok(_) => Err("data after a download".into()),
                Err(e) => Err(format!("waiting for the client's close: {e}")),
            }
        }
        m => Err(format!("bad mode {m}")),
    }
}

/// What a checked transfer saw.
#[derive(Clone, Debug)]
pub struct Transfer {
    pub bytes: u64,
    pub elapsed: Duration,
}

/// A checked transfer from a socket made in `netns` to `to`: `U`pload or
/// `D`ownload `len` bytes of stream `seed` at `rate` bytes/s, an upload's
/// last chunk held back by `hold`, if any (a download's by the server's).
/// Any reset, short read or corrupted byte is an error.
pub fn transfer(
    netns: &str,
    to: SocketAddr,
    mode: u8,
    seed: u64,
    len: u64,
    rate: u64,
    hold: Option<Hold>,
) -> Result<Transfer, String> {
    let start = Instant::now();
    let mut s = in_netns(netns, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5))
    })
    .map_err(|e| format!("connect {to}: {e}"))?;
    s.set_read_timeout(Some(TRANSFER_READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut h = [0u8; 25];
    h[0] = mode;
    h[1..9].copy_from_slice(&seed.to_le_bytes());
    h[9..17].copy_from_slice(&len.to_le_bytes());
    h[17..25].copy_from_slice(&rate.to_le_bytes());
    s.write_all(&h).map_err(|e| format!("header: {e}"))?;
    match mode {
        b'U' => {
            paced_send(&mut s, seed, len, rate, hold.as_ref())
                .map_err(|e| format!("sending: {e}"))?;
            let mut a = [0u8; 8];
            s.read_exact(&mut a)
                .map_err(|e| format!("reading the server's answer: {e}"))?;
            let good = u64::from_le_bytes(a);
            if good != len {
                return Err(format!("the server found the stream corrupted ({good})"));
            }
        }
        _ => {
            checked_recv(&mut s, seed, len)?;
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(0) => {}
                Ok(_) => return Err("more bytes than sent".into()),
                Err(e) => return Err(format!("at the end: {e}")),
            }
        }
    }
    Ok(Transfer {
        bytes: len,
        elapsed: start.elapsed(),
    })
}

// ---------------------------------------------------------------- echo servers

/// TCP and UDP echo on `port` in a namespace, until dropped; counts what
/// it echoed and remembers the peers' addresses and ports.
pub struct Echo {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    pub tcp_conns: Arc<AtomicU64>,
    pub udp_datagrams: Arc<AtomicU64>,
    pub peers: Arc<Mutex<BTreeSet<SocketAddr>>>,
}

impl Echo {
    pub fn start(netns: &str, port: u16) -> Echo {
        let (tcp, udp) = in_netns(netns, move || {
            let udp = UdpSocket::bind(("0.0.0.0", port)).unwrap();
            // Room for bursts of the soak.
            let fd = udp.as_raw_fd();
            let size: libc::c_int = 4 << 20;
            // SAFETY: setsockopt on an open socket with a c_int.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    &size as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as u32,
                );
            }
            (TcpListener::bind(("0.0.0.0", port)).unwrap(), udp)
        });
        let stop = Arc::new(AtomicBool::new(false));
        let tcp_conns = Arc::new(AtomicU64::new(0));
        let udp_datagrams = Arc::new(AtomicU64::new(0));
        let peers = Arc::new(Mutex::new(BTreeSet::new()));
        let workers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        tcp.set_nonblocking(true).unwrap();
        {
            let (stop, n, peers, workers) = (
                stop.clone(),
                tcp_conns.clone(),
                peers.clone(),
                workers.clone(),
            );
            threads.push(thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((mut s, from)) => {
                            n.fetch_add(1, Ordering::Relaxed);
                            peers.lock().unwrap().insert(from);
                            let stop = stop.clone();
                            let h = thread::spawn(move || echo_stream(&mut s, &stop));
                            let mut w = workers.lock().unwrap();
                            w.retain(|h| !h.is_finished());
                            w.push(h);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(1)),
                    }
                }
            }));
        }
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        for _ in 0..2 {
            let udp = udp.try_clone().unwrap();
            let (stop, n, peers) = (stop.clone(), udp_datagrams.clone(), peers.clone());
            threads.push(thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((len, from)) = udp.recv_from(&mut buf) {
                        n.fetch_add(1, Ordering::Relaxed);
                        peers.lock().unwrap().insert(from);
                        let _ = udp.send_to(&buf[..len], from);
                    }
                }
            }));
        }
        Echo {
            stop,
            threads,
            workers,
            tcp_conns,
            udp_datagrams,
            peers,
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        for h in self.workers.lock().unwrap().drain(..) {
            let _ = h.join();
        }
    }
}

/// Echoes one TCP connection until its peer closes it or the server stops.
/// An idle connection stays open however long it idles (tests hold
/// established flows across long waits, longer under emulation): the short
/// read timeout only lets the worker see `stop`.
fn echo_stream(s: &mut TcpStream, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 16384];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
}

/// One UDP exchange on `sock` (whose read timeout bounds each wait): `msg`
/// sent (again, up to `tries` times) until exactly it comes back from `to`.
/// Returns how many sends it took. Another datagram (a late echo of an
/// earlier exchange) is skipped and counted in the error if none matches.
pub fn udp_echo(sock: &UdpSocket, to: SocketAddr, msg: &[u8], tries: u32) -> Result<u32, String> {
    let mut buf = vec![0u8; msg.len() + 16];
    let mut other = 0;
    for attempt in 1..=tries {
        sock.send_to(msg, to).map_err(|e| format!("send: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == to && &buf[..n] == msg => return Ok(attempt),
                Ok(_) => other += 1,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    break
                }
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
    }
    Err(format!(
        "no answer after {tries} tries ({other} other datagrams came back)"
    ))
}

/// A TCP flow: connect, send `msg`, read exactly it back, close first.
pub fn tcp_echo(to: SocketAddr, msg: &[u8]) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(msg).map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
    if back != msg {
        return Err("echo differs".into());
    }
    s.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => Ok(()),
        Ok(_) => Err("bytes after the echo".into()),
        Err(e) => Err(format!("close: {e}")),
    }
}

/// A raw ICMP socket (root; no ping_group_range needed).
pub fn icmp_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2).
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: setsockopt with a timeval.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    Ok(fd)
}

fn sockaddr(addr: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    }
}

/// Echo requests with identifier `id` on a raw ICMP socket until each of
/// `count` comes back with its payload (`tries` sends each).
pub fn icmp_echo(
    fd: &OwnedFd,
    to: Ipv4Addr,
    id: u16,
    count: u16,
    tries: u32,
) -> Result<(), String> {
    let sa = sockaddr(to, 0);
    let mut buf = [0u8; 2048];
    for seq in 0..count {
        let payload: Vec<u8> = (0..56u16)
            .map(|i| (id as u8) ^ (seq as u8) ^ (i as u8))
            .collect();
        let mut l4 = crate::packet::icmp_echo(true, id, seq, &payload);
        let c = crate::packet::checksum(&l4, 0);
        l4[2..4].copy_from_slice(&c.to_be_bytes());
        let mut done = false;
        'tries: for _ in 0..tries {
            // SAFETY: sendto with a valid buffer and sockaddr_in.
            let r = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    l4.as_ptr() as *const libc::c_void,
                    l4.len(),
                    0,
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            if r < 0 {
                return Err(format!("sendto: {}", io::Error::last_os_error()));
            }
            let deadline = Instant::now() + Duration::from_millis(700);
            while Instant::now() < deadline {
                // SAFETY: recv into a local buffer.
                let n = unsafe {
                    libc::recv(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        0,
                    )
                };
                if n < 0 {
                    continue;
                }
                let p = &buf[..n as usize];
                let ihl = usize::from(p[0] & 0x0f) * 4;
                if p.len() < ihl + 8 || p[ihl] != 0 {
                    continue; // not an echo reply (our own requests loop back on raw sockets too)
                }
                let icmp = &p[ihl..];
                let rid = u16::from_be_bytes([icmp[4], icmp[5]]);
                let rseq = u16::from_be_bytes([icmp[6], icmp[7]]);
                if rid != id || rseq != seq {
                    continue;
                }
                if Ipv4Addr::new(p[12], p[13], p[14], p[15]) != to {
                    return Err(format!("echo reply id {id} from the wrong address"));
                }
                if icmp[8..] != payload[..] || crate::packet::checksum(icmp, 0) != 0 {
                    return Err(format!("echo reply id {id} seq {seq} corrupted"));
                }
                done = true;
                break 'tries;
            }
        }
        if !done {
            return Err(format!("no echo reply for id {id} seq {seq}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- crafted packets

/// A raw IPv4 socket (IP_HDRINCL) in a namespace: sends packets exactly as
/// built, any source address.
pub struct RawSender(OwnedFd);

impl RawSender {
    pub fn new(netns: &str) -> RawSender {
        let fd = in_netns(netns, || {
            // SAFETY: socket(2).
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            assert!(fd >= 0, "raw socket: {}", io::Error::last_os_error());
            // SAFETY: fd was just returned by socket(2).
            unsafe { OwnedFd::from_raw_fd(fd) }
        });
        RawSender(fd)
    }

    /// Send an IPv4 packet (header included) to its destination.
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
        let sa = sockaddr(dst, 0);
        loop {
            // SAFETY: sendto with a valid buffer and sockaddr_in.
            let r = unsafe {
                libc::sendto(
                    self.0.as_raw_fd(),
                    packet.as_ptr() as *const libc::c_void,
                    packet.len(),
                    0,
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOBUFS) {
                thread::sleep(Duration::from_millis(1));
                continue;
            }
            return Err(e);
        }
    }
}

/// A TCP segment with given sequence numbers.
pub fn tcp_segment(sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let mut t = crate::packet::tcp(sport, dport, flags, &[]);
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t
}

/// A small xorshift generator (tests need no cryptographic randomness).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

// ---------------------------------------------------------------- port scan

#[derive(Debug, Default)]
pub struct Scan {
    pub open: Vec<u16>,
    pub refused: usize,
    pub silent: usize,
    pub other: usize,
}

/// Non-blocking TCP connects from `netns` to every port of `ports` on
/// `addr`, `batch` at a time, each batch waited on for at most `wait`.
pub fn tcp_scan(
    netns: &str,
    addr: Ipv4Addr,
    ports: Vec<u16>,
    batch: usize,
    wait: Duration,
) -> Scan {
    in_netns(netns, move || {
        let mut scan = Scan::default();
        for chunk in ports.chunks(batch) {
            let mut pending: Vec<(OwnedFd, u16)> = Vec::new();
            for &port in chunk {
                // SAFETY: socket(2); owned at once.
                let fd = unsafe {
                    libc::socket(
                        libc::AF_INET,
                        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        0,
                    )
                };
                assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
                // SAFETY: as above.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let sa = sockaddr(addr, port);
                // SAFETY: connect with a sockaddr_in.
                let r = unsafe {
                    libc::connect(
                        fd.as_raw_fd(),
                        &sa as *const _ as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_in>() as u32,
                    )
                };
                if r == 0 {
                    scan.open.push(port);
                    continue;
                }
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINPROGRESS) => pending.push((fd, port)),
                    Some(libc::ECONNREFUSED) => scan.refused += 1,
                    _ => scan.other += 1,
                }
            }
            let deadline = Instant::now() + wait;
            while !pending.is_empty() && Instant::now() < deadline {
                let mut pfds: Vec<libc::pollfd> = pending
                    .iter()
                    .map(|(fd, _)| libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    })
                    .collect();
                let left = deadline.saturating_duration_since(Instant::now());
                // SAFETY: poll over a local array.
                let n = unsafe {
                    libc::poll(
                        pfds.as_mut_ptr(),
                        pfds.len() as libc::nfds_t,
                        left.as_millis().max(1) as i32,
                    )
                };
                if n <= 0 {
                    continue;
                }
                let mut still = Vec::new();
                for ((fd, port), p) in pending.into_iter().zip(pfds.iter()) {
                    if p.revents == 0 {
                        still.push((fd, port));
                        continue;
                    }
                    let mut err: libc::c_int = 0;
                    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                    // SAFETY: getsockopt into a local c_int.
                    unsafe {
                        libc::getsockopt(
                            fd.as_raw_fd(),
                            libc::SOL_SOCKET,
                            libc::SO_ERROR,
                            &mut err as *mut _ as *mut libc::c_void,
                            &mut len,
                        );
                    }
                    match err {
                        0 => scan.open.push(port),
                        libc::ECONNREFUSED => scan.refused += 1,
                        _ => scan.other += 1,
                    }
                }
                pending = still;
            }
            scan.silent += pending.len();
        }
        scan.open.sort_unstable();
        scan
    })
}

/// A TCP listener in a namespace that accepts (and closes) until dropped.
pub struct Listener {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Listener {
    pub fn start(netns: &str, port: u16) -> Listener {
        let l = in_netns(netns, move || TcpListener::bind(("0.0.0.0", port)).unwrap());
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Listener {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------- the variant build

/// Where xtask says the variant object is, already built (`cargo xtask
/// test` and `stress` build it before the tests; in a `--kernel` VM nothing
/// can be built: no toolchain, a read-only tree).
pub const VARIANT_ENV: &str = "NETLAB_VARIANT_OBJECT";

/// The eBPF object built with the `variant` feature (harmlessly different
/// code), for upgrade tests: the one $NETLAB_VARIANT_OBJECT names, which
/// `cargo xtask test` and `cargo xtask stress` build before the tests
/// (`xtask::stress::variant`).
pub fn variant_object() -> PathBuf {
    let p = std::env::var_os(VARIANT_ENV)
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "${VARIANT_ENV} is not set: run this test through `cargo xtask test` or \
                 `cargo xtask stress`, which build the variant eBPF object first"
            )
        });
    let p = PathBuf::from(p);
    assert!(
        p.is_file(),
        "${VARIANT_ENV} names {}, which is not there",
        p.display()
    );
    p
}

/// `addr:port`.
pub fn sa(addr: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(addr, port))
}

#[cfg(test)]
mod tests {
    use super::{filter_programs, without_filters};

    /// `tc filter show dev eth0 ingress` with a foreign bpf filter, u32
    /// filters and a lab's filter at priority 22462.
    const TC: &str = "filter protocol all pref 22462 bpf chain 0 \n\
filter protocol all pref 22462 bpf chain 0 handle 0x1 nl_uplink_in direct-action not_in_hw id 23199 name nl_uplink_in tag 0bc6d01bea856421 jited \n\
filter protocol all pref 49151 bpf chain 0 \n\
filter protocol all pref 49151 bpf chain 0 handle 0x1 nl_bridge_in direct-action not_in_hw id 351 name nl_bridge_in tag ca9b8e9194433fcb jited \n\
filter protocol all pref 49152 u32 chain 0 \n\
filter protocol all pref 49152 u32 chain 0 fh 800: ht divisor 1 \n\
filter protocol all pref 49152 u32 chain 0 fh 800::800 order 2048 key ht 800 bkt 0 *flowid 1:1 not_in_hw \n\
\x20 match 00000000/00000000 at 0\n";

    #[test]
    fn filters_are_told_apart_by_priority() {
        assert_eq!(filter_programs(TC, 22462), [23199]);
        assert_eq!(filter_programs(TC, 49151), [351]);
        assert!(filter_programs(TC, 49152).is_empty());
        assert!(filter_programs(TC, 2246).is_empty());
        let theirs = without_filters(TC, 22462);
        assert!(!theirs.contains("22462") && !theirs.contains("nl_uplink_in"));
        assert_eq!(theirs.lines().count(), TC.lines().count() - 2);
        assert!(theirs.contains("id 351 ") && theirs.contains("  match 00000000/00000000 at 0"));
    }
}
