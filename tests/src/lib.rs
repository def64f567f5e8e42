//! Harness for netlab's privileged tests. Every test works inside namespaces
//! it creates: a lab built with `netlab up --sandbox` gets its own lab-host
//! and "wan" namespaces (198.51.100.0/24), node namespaces under a unique
//! prefix, and a guard that takes it all down when the test ends, pass or
//! fail, and checks that nothing of it is left.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// The netlab binary under test (`cargo xtask test` sets NETLAB_BIN).
pub fn netlab_bin() -> PathBuf {
    std::env::var_os("NETLAB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/netlab"))
}

/// The first line of every privileged test. Without root the test fails,
/// saying how to run it: a privileged test never passes by doing nothing.
#[track_caller]
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test needs root (it creates namespaces and loads eBPF programs): \
             run it as root with `cargo xtask test` (or `cargo xtask test NAME`)"
        );
    }
}

/// How much slower than this machine the tests run: NETLAB_TEST_TIME_SCALE
/// (default 1). `cargo xtask test --kernel` sets it in emulated VMs, where
/// everything is several times slower.
pub fn time_scale() -> f64 {
    std::env::var("NETLAB_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| s.is_finite() && *s >= 1.0)
        .unwrap_or(1.0)
}

/// ping's `-W` (seconds to wait for each reply) for `secs` on this machine,
/// multiplied by [`time_scale`]: under emulation the first echo also
/// waits for neighbour discovery on every hop, which can take longer than
/// a second. An answered ping returns at once, so a long wait costs
/// nothing when it works, and a ping that must go unanswered is not
/// unanswered merely because its reply came late.
pub fn ping_wait(secs: u64) -> String {
    format!("-W{}", (secs as f64 * time_scale()).ceil() as u64)
}

/// Poll `done` (every 20 ms) until it holds; panics naming `what` when it
/// has not after `limit` (multiplied by [`time_scale`]). For what the test
/// waits on without controlling when it happens (a process starting, the
/// kernel counting a packet): the test goes on as soon as it happened, and
/// fails rather than going on without it. Returns how long it took.
#[track_caller]
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    let limit = limit.mul_f64(time_scale());
    loop {
        if done() {
            return started.elapsed();
        }
        if started.elapsed() > limit {
            panic!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `netlab ARGS` started in the background (stdout piped), its stderr
/// lines on a channel.
pub fn spawn_netlab(args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(netlab_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting netlab {args:?}: {e}"));
    let rx = lines_of(child.stderr.take().unwrap());
    (child, rx)
}

/// The lines `from` writes, on a channel, as they come.
pub fn lines_of(from: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Wait for a line containing `what` (60 s times the time scale), skipping
/// others; panics naming it when none comes.
#[track_caller]
pub fn expect_line(rx: &std::sync::mpsc::Receiver<String>, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60).mul_f64(time_scale());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(what) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line with {what:?}: {e}"),
        }
    }
}

/// Every line that comes on `rx` until `done` holds for those received or
/// `limit` (times the time scale) passed; the lines, for the test to judge.
pub fn lines_until(
    rx: &std::sync::mpsc::Receiver<String>,
    limit: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + limit.mul_f64(time_scale());
    let mut lines = Vec::new();
    while !done(&lines) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    lines
}

/// Send Ctrl-C (SIGINT) to a background netlab.
pub fn interrupt(child: &std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
}

/// Waits (60 s times the time scale at most) for a background netlab to
/// end; asserts it succeeded; its stdout. One that does not end is killed
/// and fails the test: a hang is a defect to name, not a wait for CI's
/// time limit.
#[track_caller]
pub fn finish(mut child: std::process::Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60).mul_f64(time_scale());
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let pid = child.id();
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("netlab (pid {pid}) did not end in time: {}", text(&o));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Run a command with a time bound; returns its output. The bound is
/// multiplied by [`time_scale`].
pub fn run(args: &[&str], timeout: Duration) -> Output {
    let secs = format!("{}", timeout.mul_f64(time_scale()).as_secs().max(1));
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "2", &secs]).args(args).stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Run and require success.
#[track_caller]
pub fn ok(args: &[&str], timeout: Duration) -> String {
    let o = run(args, timeout);
    assert!(o.status.success(), "{args:?} failed:\n{}", text(&o));
    stdout(&o)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short tag: labs of concurrent tests and test binaries never clash.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{tag}{:x}{n}", std::process::id() % 0xfff)
}

pub mod capture;
pub mod packet;
pub mod programs;

pub const T: Duration = Duration::from_secs(30);

/// Run `f` on a thread inside the named namespace: sockets it creates stay
/// in that namespace, so the test can then use them from anywhere.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    netlab::netns::Netns::open(netns)
        .unwrap_or_else(|e| panic!("opening netns {netns}: {e:#}"))
        .run(move || Ok(f()))
        .unwrap()
}

/// The netlab binary under test with `args`, bounded at 120 s.
pub fn run_netlab(args: &[&str]) -> Output {
    let bin = netlab_bin();
    let mut full = vec![bin.to_str().unwrap()];
    full.extend_from_slice(args);
    run(&full, Duration::from_secs(120))
}

/// As [`run_netlab`]; panics unless it succeeds, returns its stdout.
#[track_caller]
pub fn run_netlab_ok(args: &[&str]) -> String {
    let o = run_netlab(args);
    assert!(o.status.success(), "netlab {args:?} failed:\n{}", text(&o));
    stdout(&o)
}

/// A sandboxed lab, taken down on drop.
pub struct Lab {
    pub name: String,
    pub prefix: String,
    pub file: PathBuf,
    dir: PathBuf,
    /// The namespace [`Lab::own_host_netns`] made, if it was called.
    own_host: std::sync::OnceLock<String>,
}

impl Lab {
    /// A lab from `body` (the topology without `name`/`netns_prefix`), not up yet.
    pub fn new(tag: &str, body: &str) -> Lab {
        let name = unique(tag);
        let prefix = format!("{name}-");
        let dir = std::env::temp_dir().join(format!("netlab-test-{name}"));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("lab.toml");
        let lab = Lab {
            name,
            prefix,
            file,
            dir,
            own_host: std::sync::OnceLock::new(),
        };
        lab.write(body);
        lab
    }

    /// The default lab's network (the seeds'), under this lab's name.
    pub fn seeds(tag: &str) -> Lab {
        Lab::new(tag, SEEDS_BODY)
    }

    /// Replace the topology (to test convergence).
    pub fn write(&self, body: &str) {
        let text = format!(
            "name = \"{}\"\nnetns_prefix = \"{}\"\n{body}",
            self.name, self.prefix
        );
        fs::write(&self.file, text).unwrap();
    }

    pub fn netlab(&self, args: &[&str]) -> Output {
        run_netlab(args)
    }

    #[track_caller]
    pub fn netlab_ok(&self, args: &[&str]) -> String {
        run_netlab_ok(args)
    }

    /// `netlab up --sandbox -f <file>`; panics when it fails.
    #[track_caller]
    pub fn up(&self) -> String {
        let file = self.file.to_str().unwrap().to_string();
        self.netlab_ok(&["up", "--sandbox", "-f", &file])
    }

    pub fn netns(&self, node: &str) -> String {
        format!("{}{node}", self.prefix)
    }

    /// The ports the dataplane's bitmap of forwarded ports (pinned
    /// `FORWARDED_PORTS`) marks, as (protocol, port), ascending.
    pub fn forwarded_port_bits(&self) -> Vec<(u8, u16)> {
        use netlab_common::{forwarded_port_bit, IPPROTO_TCP, IPPROTO_UDP};
        let pins = netlab::dataplane::pins::LabPins::new(&self.name);
        let map = pins
            .open(netlab_common::names::FORWARDED_PORTS)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let words: aya::maps::Array<_, u64> = aya::maps::Array::try_from(map).unwrap();
        let words: Vec<u64> = words.iter().map(|w| w.unwrap()).collect();
        // Decoded through the layout's one definition.
        let mut bits = Vec::new();
        for proto in [IPPROTO_TCP, IPPROTO_UDP] {
            for port in 0..=u16::MAX {
                let (index, bit) = forwarded_port_bit(proto, port).unwrap();
                if words[index as usize] & bit != 0 {
                    bits.push((proto, port));
                }
            }
        }
        bits
    }

    pub fn host_netns(&self) -> String {
        format!("{}-host", self.name)
    }

    pub fn wan_netns(&self) -> String {
        format!("{}-wan", self.name)
    }

    /// A namespace of the test's own for `--host-netns` (the lab host as a
    /// namespace netlab did not make), made on the first call. It goes
    /// when the lab is dropped, after the lab is taken down: a failing
    /// test's cleanup still finds the lab host the lab is on.
    pub fn own_host_netns(&self) -> String {
        self.own_host
            .get_or_init(|| {
                let netns = format!("{}h", self.name);
                ok(&["ip", "netns", "add", &netns], T);
                netns
            })
            .clone()
    }

    /// Deletes the namespace [`Lab::own_host_netns`] made, if any; whether
    /// it is still there after.
    fn delete_own_host_netns(&self) -> Option<String> {
        let netns = self.own_host.get()?;
        let _ = run(&["ip", "netns", "del", netns], T);
        Path::new("/run/netns")
            .join(netns)
            .exists()
            .then(|| format!("netns {netns}"))
    }

    /// Run `args` inside `netns` (as `ip netns exec` does, /etc/netns files included).
    pub fn in_netns(&self, netns: &str, args: &[&str], timeout: Duration) -> Output {
        let mut full = vec!["ip", "netns", "exec", netns];
        full.extend_from_slice(args);
        run(&full, timeout)
    }

    /// Run inside a node.
    pub fn node(&self, node: &str, args: &[&str]) -> Output {
        self.in_netns(&self.netns(node), args, T)
    }

    #[track_caller]
    pub fn node_ok(&self, node: &str, args: &[&str]) -> String {
        let o = self.node(node, args);
        assert!(
            o.status.success(),
            "{args:?} in {node} failed:\n{}",
            text(&o)
        );
        stdout(&o)
    }

    pub fn wan(&self, args: &[&str]) -> Output {
        self.in_netns(&self.wan_netns(), args, T)
    }

    #[track_caller]
    pub fn wan_ok(&self, args: &[&str]) -> String {
        let o = self.wan(args);
        assert!(o.status.success(), "{args:?} in wan failed:\n{}", text(&o));
        stdout(&o)
    }

    pub fn host(&self, args: &[&str]) -> Output {
        self.in_netns(&self.host_netns(), args, T)
    }

    /// Start a long-running process inside a node (ended by `down`).
    pub fn spawn_in(&self, netns: &str, args: &[&str]) -> std::process::Child {
        Command::new("ip")
            .args(["netns", "exec", netns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// What `netlab log` printed while `act` ran: it starts once the log
    /// says it streams, and the lines are taken until `done` holds for
    /// them (however slowly, 20 s at most), then the log gets Ctrl-C.
    pub fn log_during(
        &self,
        act: impl FnOnce(),
        done: impl FnMut(&[String]) -> bool,
    ) -> Vec<String> {
        let (mut log, log_err) = spawn_netlab(&["log", "--name", &self.name]);
        let out = lines_of(log.stdout.take().unwrap());
        expect_line(&log_err, "streaming lab");
        act();
        let lines = lines_until(&out, Duration::from_secs(20), done);
        interrupt(&log);
        finish(log);
        lines
    }

    /// Start netlab's HTTP server inside a node and wait until it answers.
    pub fn http_server(&self, node: &str, port: u16) {
        let netns = self.netns(node);
        let bin = netlab_bin();
        let child = Command::new(&bin)
            .args(["serve-http", "--netns", &netns, "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::mem::forget(child);
        let url = format!("http://127.0.0.1:{port}/");
        wait_for(
            &format!("the HTTP server in {node} answering"),
            Duration::from_secs(5),
            || {
                self.node(node, &["curl", "-s", "-m", "1", &url])
                    .status
                    .success()
            },
        );
    }

    /// What this lab left behind anywhere on the machine.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let n = line.split_whitespace().next().unwrap_or("");
                if n.starts_with(&self.prefix) || n == self.host_netns() || n == self.wan_netns() {
                    left.push(format!("netns {n}"));
                }
            }
        }
        for p in [
            format!("/sys/fs/bpf/netlab/{}", self.name),
            format!("/run/netlab/{}", self.name),
        ] {
            if Path::new(&p).exists() {
                left.push(p);
            }
        }
        if let Ok(entries) = fs::read_dir("/etc/netns") {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.prefix) {
                    left.push(e.path().display().to_string());
                }
            }
        }
        left
    }

    /// Take the lab and its sandbox down and assert nothing is left.
    #[track_caller]
    pub fn down(&self) {
        let o = self.netlab(&["down", "--sandbox", "--name", &self.name]);
        assert!(o.status.success(), "netlab down failed:\n{}", text(&o));
        let left = self.leftovers();
        assert!(left.is_empty(), "lab {} left behind: {left:?}", self.name);
    }
}

/// One echo of `size` bytes from red to `to` (`family`: `-4` or `-6`)
/// that may not be fragmented on the way (`-M do`): what path-MTU
/// discovery is tried with.
pub fn ping_unfragmented(lab: &Lab, family: &str, size: u16, to: &str) -> Output {
    let size = size.to_string();
    lab.node(
        "red",
        &[
            "ping", family, "-n", "-c1", "-W2", "-M", "do", "-s", &size, to,
        ],
    )
}

/// A network behind the sandbox's outside host with a smaller MTU (1280,
/// IPv6's minimum): the namespace `<prefix>far` on a veth from the wan
/// namespace, 203.0.113.128/25 and 2001:db8:200::/64, the wan routing both
/// families to it. Where path-MTU discovery and traceroute through the NAT
/// are tried; deleted on drop.
pub struct FarNetwork {
    pub netns: String,
}

impl FarNetwork {
    pub const ADDR: &str = "203.0.113.130";
    pub const ADDR6: &str = "2001:db8:200::2";
    /// The wan's address on it (the router that answers with
    /// "fragmentation needed" or Packet Too Big).
    pub const ROUTER6: &str = "2001:db8:200::1";
    pub const MTU: u32 = 1280;

    pub fn behind(lab: &Lab) -> FarNetwork {
        let wan = lab.wan_netns();
        let far = FarNetwork {
            netns: format!("{}far", lab.prefix),
        };
        ok(&["ip", "netns", "add", &far.netns], T);
        let mtu = Self::MTU.to_string();
        let wan_ip = |args: &[&str]| ok(&[&["ip", "-n", &wan][..], args].concat(), T);
        let far_ip = |args: &[&str]| ok(&[&["ip", "-n", &far.netns][..], args].concat(), T);
        wan_ip(&[
            "link", "add", "far0", "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "netns",
            &far.netns,
        ]);
        wan_ip(&["addr", "add", "203.0.113.129/25", "dev", "far0"]);
        wan_ip(&["addr", "add", "2001:db8:200::1/64", "dev", "far0", "nodad"]);
        wan_ip(&["link", "set", "far0", "up"]);
        far_ip(&["link", "set", "eth0", "mtu", &mtu, "up"]);
        far_ip(&["link", "set", "lo", "up"]);
        far_ip(&["addr", "add", "203.0.113.130/25", "dev", "eth0"]);
        far_ip(&["addr", "add", "2001:db8:200::2/64", "dev", "eth0", "nodad"]);
        far_ip(&["route", "add", "default", "via", "203.0.113.129"]);
        far_ip(&["-6", "route", "add", "default", "via", "2001:db8:200::1"]);
        for sysctl in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            ok(&["ip", "netns", "exec", &wan, "sysctl", "-qw", sysctl], T);
        }
        far
    }
}

impl FarNetwork {
    /// Send `bytes` bytes to the first client of TCP `port` (both
    /// families), from the far side, then close: a bulk transfer over the
    /// small-MTU path.
    pub fn send_once(&self, port: u16, bytes: usize) {
        let listener = in_netns(&self.netns, move || {
            std::net::TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, port)).unwrap()
        });
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let _ = std::io::Write::write_all(&mut s, &vec![7u8; bytes]);
            }
        });
    }
}

impl Drop for FarNetwork {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.netns], T);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let o = self.netlab(&["down", "--sandbox", "--name", &self.name]);
        let mut left = self.leftovers();
        left.extend(self.delete_own_host_netns());
        let _ = fs::remove_dir_all(&self.dir);
        if std::thread::panicking() {
            if !left.is_empty() {
                eprintln!("cleanup of lab {} left {left:?}:\n{}", self.name, text(&o));
            }
            return;
        }
        assert!(o.status.success(), "netlab down failed:\n{}", text(&o));
        assert!(left.is_empty(), "lab {} left behind: {left:?}", self.name);
    }
}

/// The seeds' network: v-net-0 with the lab host as gateway, red and blue,
/// masquerade, and tcp/80 forwarded to blue.
pub const SEEDS_BODY: &str = r#"
[[bridges]]
name = "v-net-0"
subnet = "192.168.15.0/24"
gateway = "192.168.15.5"
masquerade = true

[[nodes]]
name = "red"
bridge = "v-net-0"
address = "192.168.15.1"

[[nodes]]
name = "blue"
bridge = "v-net-0"
address = "192.168.15.2"

[[forwards]]
protocol = "tcp"
port = 80
to = "blue:80"
"#;

pub mod reliability;
