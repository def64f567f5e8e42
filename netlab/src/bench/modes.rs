//! The sandboxes the modes run in, built and taken down by the bench.
//!
//! - `veth`: two namespaces of the bench's own joined by one veth pair
//!   (node 198.51.100.2, wan 198.51.100.1): what this machine can do at all.
//! - `route`, `iptables`, `netlab`, `netlab-slow`: a lab brought up with
//!   `netlab up --sandbox` by the very netlab binary that runs the bench: a
//!   node `n` (192.168.15.1) on bridge v-net-0, the lab host (`<lab>-host`,
//!   gateway 192.168.15.5, uplink eth0 198.51.100.2) and the wan
//!   (`<lab>-wan`, 198.51.100.1). `route` and `iptables` have
//!   `masquerade = false` and no forwards, so netlab attaches no program;
//!   `route` adds the wan's route back to 192.168.15.0/24, `iptables` loads
//!   MASQUERADE and DNAT rules into the lab host's namespace (only there).
//!   The netlab modes get `[nat] fast_path = true` / `false` and their
//!   forwards through `netlab fwd`.
//! - Every mode is dual-stack: the node also has fdec:60cc:b1bd:15::1 (the
//!   default lab's ULA subnet), the uplink 2001:db8:100::2 and the wan
//!   2001:db8:100::1 (the sandbox's); `route` routes the ULA subnet back,
//!   `iptables` loads the same rules through ip6tables, netlab's forwards
//!   apply to both families.
//!
//! Every namespace carries a unique prefix; [`Bench::teardown`] (also run
//! on drop, so on errors and on Ctrl-C) removes them and fails if anything
//! of them is left.

use std::{
    fs,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    tools,
    traffic::{self, Servers},
};
use crate::{
    lab,
    model::net::Ipv4Net,
    netlink,
    netns::{self, Netns},
    system,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Mode {
    #[serde(rename = "veth")]
    Veth,
    #[serde(rename = "route")]
    Route,
    #[serde(rename = "iptables")]
    Iptables,
    #[serde(rename = "netlab")]
    Netlab,
    #[serde(rename = "netlab-slow")]
    NetlabSlow,
}

impl Mode {
    /// Whether the traffic passes netlab's programs.
    pub fn runs_programs(self) -> bool {
        matches!(self, Mode::Netlab | Mode::NetlabSlow)
    }

    pub const ALL: [Mode; 5] = [
        Mode::Veth,
        Mode::Route,
        Mode::Iptables,
        Mode::Netlab,
        Mode::NetlabSlow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Veth => "veth",
            Mode::Route => "route",
            Mode::Iptables => "iptables",
            Mode::Netlab => "netlab",
            Mode::NetlabSlow => "netlab-slow",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Mode::Veth => "node and wan on one veth pair (the machine's limit)",
            Mode::Route => "the lab, routed, no NAT",
            Mode::Iptables => "the lab, iptables MASQUERADE and DNAT rules",
            Mode::Netlab => "the lab, netlab's eBPF NAT, fast_path = true",
            Mode::NetlabSlow => "the lab, netlab's eBPF NAT, fast_path = false",
        }
    }

    pub fn parse(s: &str) -> Result<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .with_context(|| {
                let names: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
                format!("unknown mode `{s}` (modes: {})", names.join(", "))
            })
    }

    /// The letter that ends the mode's lab name.
    fn letter(self) -> char {
        match self {
            Mode::Veth => 'v',
            Mode::Route => 'r',
            Mode::Iptables => 'i',
            Mode::Netlab => 'n',
            Mode::NetlabSlow => 's',
        }
    }
}

/// The lab's node, the lab host's uplink address, the first forwarded port.
pub const NODE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 15, 1);
pub const UPLINK_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// Their IPv6 twins: the default lab's ULA subnet, the sandbox's outside.
pub const SUBNET6: &str = "fdec:60cc:b1bd:15::/64";
pub const NODE_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfdec, 0x60cc, 0xb1bd, 0x15, 0, 0, 0, 1);
pub const UPLINK_ADDR6: Ipv6Addr = crate::sandbox::HOST_UPLINK_ADDR6.addr;
pub const FORWARD_BASE: u16 = 40_000;
/// The first forwarded port of the sets inside the NAT's port range
/// (10000-32767 by default).
pub const FORWARD_BASE_IN_RANGE: u16 = 10_001;
const NODE: &str = "n";

/// Run a tool (time-bounded by coreutils' `timeout`, in a process group of
/// its own so a Ctrl-C meant for the bench does not cut a step in half).
pub fn tool_output(
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    limit: Duration,
) -> Result<Output> {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "2", &limit.as_secs().max(1).to_string(), program])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let line = format!("{program} {}", args.join(" "));
    let mut child = cmd.spawn().with_context(|| format!("starting `{line}`"))?;
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().context("stdin pipe")?;
        pipe.write_all(data)
            .with_context(|| format!("feeding `{line}`"))?;
    }
    child
        .wait_with_output()
        .with_context(|| format!("waiting for `{line}`"))
}

/// Run a tool; its stdout, or an error naming it with its stderr.
pub fn tool(program: &str, args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Result<String> {
    let out = tool_output(program, args, stdin, limit)?;
    if !out.status.success() {
        let short: String = args.iter().take(8).copied().collect::<Vec<_>>().join(" ");
        bail!(
            "`{program} {short}{}` failed ({}): {}",
            if args.len() > 8 { " …" } else { "" },
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One mode's sandbox, its servers, and where its traffic goes.
pub struct Env {
    pub mode: Mode,
    pub node: Netns,
    pub wan: Netns,
    pub node_ns: String,
    pub wan_ns: String,
    pub host_ns: Option<String>,
    pub lab: Option<String>,
    /// Where the node's traffic goes (the wan's address).
    pub wan_addr: Ipv4Addr,
    pub wan_servers: Servers,
    pub node_servers: Servers,
    /// The wan side's next client port (see [`traffic::crr`]).
    pub client_ports: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Forwards now configured (NAT modes).
    forwards: Option<ForwardSet>,
    exe: PathBuf,
}

/// A set of TCP forwards on the lab host's uplink: ports `first..` to the
/// node's `to_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ForwardSet {
    pub count: usize,
    pub first: u16,
    pub to_port: u16,
}

impl ForwardSet {
    /// `count` forwards to the node's `to_port`, above the NAT's port range
    /// (from 40000) or inside it (from 10001, as a user forwarding a block
    /// of RTP or game ports would).
    pub fn new(count: usize, inside_nat_range: bool, to_port: u16) -> ForwardSet {
        let first = if inside_nat_range {
            FORWARD_BASE_IN_RANGE
        } else {
            FORWARD_BASE
        };
        ForwardSet {
            count,
            first,
            to_port,
        }
    }

    pub fn last(self) -> u16 {
        self.first + (self.count - 1) as u16
    }

    /// As `netlab fwd` writes ports: `P` or `P-Q`.
    fn ports(self) -> String {
        if self.count == 1 {
            self.first.to_string()
        } else {
            format!("{}-{}", self.first, self.last())
        }
    }
}

impl Env {
    /// Make the mode have exactly the forwards `set` (none: masquerade
    /// alone), over both families.
    pub fn set_forwards(&mut self, set: Option<ForwardSet>) -> Result<Option<ForwardSet>> {
        if let Some(s) = set {
            if s.count == 0 || usize::from(s.first) + s.count > usize::from(u16::MAX) {
                bail!("cannot forward {} ports from {}", s.count, s.first);
            }
        }
        if self.forwards != set {
            self.load_forwards(set)?;
            self.forwards = set;
        }
        Ok(set)
    }

    /// Where the wan connects to reach the node's `to_port` through `set`:
    /// the last forwarded port, or the node itself in the modes without
    /// NAT; over IPv6 with `v6`.
    pub fn dnat_target(&self, set: ForwardSet, v6: bool) -> SocketAddr {
        let (node, uplink): (IpAddr, IpAddr) = if v6 {
            (NODE_ADDR6.into(), UPLINK_ADDR6.into())
        } else {
            (NODE_ADDR.into(), UPLINK_ADDR.into())
        };
        match self.mode {
            Mode::Veth => SocketAddr::new(uplink, set.to_port),
            Mode::Route => SocketAddr::new(node, set.to_port),
            _ => SocketAddr::new(uplink, set.last()),
        }
    }

    /// Replace the mode's forwards (10,000 DNAT rules left from the last
    /// measurement would otherwise slow every new connection through
    /// iptables' nat table).
    fn load_forwards(&mut self, set: Option<ForwardSet>) -> Result<()> {
        match self.mode {
            Mode::Veth | Mode::Route => Ok(()),
            Mode::Iptables => {
                let host = self.host_ns.clone().context("the lab host namespace")?;
                iptables_load(&host, set)
            }
            Mode::Netlab | Mode::NetlabSlow => {
                let lab = self.lab.clone().context("the lab")?;
                if let Some(old) = self.forwards {
                    netlab(
                        &self.exe,
                        &["fwd", "del", "--name", &lab, "tcp", &old.ports()],
                    )?;
                }
                self.forwards = None;
                let Some(s) = set else { return Ok(()) };
                let to = format!("{NODE}:{}", s.to_port);
                netlab(
                    &self.exe,
                    &["fwd", "add", "--name", &lab, "tcp", &s.ports(), &to],
                )?;
                let have = crate::dataplane::pins::LabPins::new(&lab)
                    .forward_count()
                    .with_context(|| format!("counting lab {lab}'s forwards"))?;
                if have != s.count {
                    bail!("lab {lab} has {have} forwarded ports, not {}", s.count);
                }
                Ok(())
            }
        }
    }
}

fn netlab(exe: &Path, args: &[&str]) -> Result<String> {
    tool(
        &exe.display().to_string(),
        args,
        None,
        Duration::from_secs(120),
    )
}

/// The rules of the `iptables` mode for one family (`ip6tables` with
/// `v6`): MASQUERADE of the lab's subnet out of the uplink, and a DNAT rule
/// per forwarded port, loaded in one `iptables-restore` of the nat table.
fn iptables_rules(set: Option<ForwardSet>, v6: bool) -> String {
    let (uplink, node, subnet) = if v6 {
        (
            format!("{UPLINK_ADDR6}/128"),
            format!("[{NODE_ADDR6}]"),
            SUBNET6,
        )
    } else {
        (
            format!("{UPLINK_ADDR}/32"),
            NODE_ADDR.to_string(),
            "192.168.15.0/24",
        )
    };
    let mut r = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n",
    );
    if let Some(s) = set {
        for port in s.first..=s.last() {
            r.push_str(&format!(
                "-A PREROUTING -d {uplink} -p tcp -m tcp --dport {port} -j DNAT --to-destination {node}:{}\n",
                s.to_port
            ));
        }
    }
    r.push_str(&format!(
        "-A POSTROUTING -s {subnet} -o eth0 -j MASQUERADE\nCOMMIT\n"
    ));
    r
}

/// Both families' rules (iptables and ip6tables) into `host_ns`.
fn iptables_load(host_ns: &str, set: Option<ForwardSet>) -> Result<()> {
    for v6 in [false, true] {
        iptables_load_family(host_ns, set, v6)?;
    }
    Ok(())
}

fn iptables_load_family(host_ns: &str, set: Option<ForwardSet>, v6: bool) -> Result<()> {
    let rules = iptables_rules(set, v6);
    let forwards = set.map_or(0, |s| s.count);
    let cmd = if v6 { "ip6tables" } else { "iptables" };
    tool(
        "ip",
        &["netns", "exec", host_ns, &format!("{cmd}-restore")],
        Some(rules.as_bytes()),
        Duration::from_secs(60),
    )
    .with_context(|| format!("loading {forwards} DNAT rules into netns {host_ns} ({cmd})"))?;
    let saved = tool(
        "ip",
        &[
            "netns",
            "exec",
            host_ns,
            &format!("{cmd}-save"),
            "-t",
            "nat",
        ],
        None,
        Duration::from_secs(60),
    )?;
    let dnat = saved.lines().filter(|l| l.contains("-j DNAT")).count();
    let masq = saved
        .lines()
        .filter(|l| l.contains("-j MASQUERADE"))
        .count();
    if dnat != forwards || masq != 1 {
        bail!("netns {host_ns} has {dnat} DNAT and {masq} MASQUERADE rules ({cmd}), not {forwards} and 1");
    }
    Ok(())
}

/// /proc/net/stat/nf_conntrack (a header, then a row of hex per CPU) summed.
fn conntrack_stats(text: &str) -> serde_json::Value {
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let mut sums = vec![0u64; names.len()];
    for l in lines {
        for (i, v) in l.split_whitespace().enumerate().take(names.len()) {
            sums[i] += u64::from_str_radix(v, 16).unwrap_or(0);
        }
    }
    let mut m = serde_json::Map::new();
    for (n, v) in names.iter().zip(sums) {
        // "entries" is the same global count on every row.
        if *n != "entries" {
            m.insert((*n).to_string(), v.into());
        }
    }
    serde_json::Value::Object(m)
}

fn topology(lab: &str, masquerade: bool, fast_path: bool) -> String {
    format!(
        r#"# netlab bench: one node behind the lab host
name = "{lab}"
netns_prefix = "{lab}-"

[nat]
fast_path = {fast_path}

[[bridges]]
name = "v-net-0"
subnet = "192.168.15.0/24"
gateway = "192.168.15.5"
subnet6 = "{SUBNET6}"
gateway6 = "fdec:60cc:b1bd:15::5"
masquerade = {masquerade}

[[nodes]]
name = "{NODE}"
bridge = "v-net-0"
address = "{NODE_ADDR}"
address6 = "{NODE_ADDR6}"
"#
    )
}

/// Every sandbox of one bench run.
pub struct Bench {
    tag: String,
    dir: PathBuf,
    exe: PathBuf,
    rt: tokio::runtime::Runtime,
    envs: Vec<Env>,
    /// netlab labs (recorded before `up`, so a failed `up` is taken down too).
    labs: Vec<String>,
    /// The bench's own namespaces (veth mode).
    own: Vec<String>,
    /// The third-party servers (iperf3, nginx, sockperf).
    children: Vec<Child>,
    /// What netlab attached in each NAT mode (its dataplane state).
    pub dataplane: Vec<(Mode, serde_json::Value)>,
    torn_down: bool,
}

impl Bench {
    pub fn new() -> Result<Bench> {
        let exe = std::env::current_exe().context("finding the netlab executable")?;
        let taken = netns::list()?;
        let base = format!("nb{:04x}", std::process::id() & 0xffff);
        let tag = (0..26u8)
            .map(|i| format!("{base}{}", (b'a' + i) as char))
            .find(|t| {
                !taken.iter().any(|(n, _)| n.starts_with(t.as_str()))
                    && !lab::state_dir(&format!("{t}r")).exists()
            })
            .context("no free name for the bench's namespaces")?;
        let dir = std::env::temp_dir().join(format!("netlab-bench-{tag}"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime for netlink")?;
        Ok(Bench {
            tag,
            dir,
            exe,
            rt,
            envs: Vec::new(),
            labs: Vec::new(),
            own: Vec::new(),
            children: Vec::new(),
            dataplane: Vec::new(),
            torn_down: false,
        })
    }

    fn marker(&self) -> String {
        format!("netlab-bench:{}", self.tag)
    }

    pub fn env(&mut self, mode: Mode) -> &mut Env {
        self.envs
            .iter_mut()
            .find(|e| e.mode == mode)
            .expect("every measured mode has a sandbox")
    }

    /// Build `mode`'s sandbox, start its servers, check its paths.
    pub fn add(&mut self, mode: Mode) -> Result<()> {
        let (node_ns, wan_ns, host_ns, lab) = match mode {
            Mode::Veth => {
                let (n, w) = self.veth_pair()?;
                (n, w, None, None)
            }
            _ => {
                let lab = self.lab(mode)?;
                (
                    format!("{lab}-{NODE}"),
                    format!("{lab}-wan"),
                    Some(format!("{lab}-host")),
                    Some(lab),
                )
            }
        };
        let node = Netns::open(&node_ns)?;
        let wan = Netns::open(&wan_ns)?;
        self.start_tools(&wan_ns, &node_ns, &wan, &node)?;
        let wan_servers = Servers::wan(&wan)?;
        let node_servers = Servers::node(&node)?;
        let mut env = Env {
            mode,
            node,
            wan,
            node_ns,
            wan_ns,
            host_ns,
            lab,
            wan_addr: super::WAN_ADDR,
            wan_servers,
            node_servers,
            client_ports: Default::default(),
            forwards: None,
            exe: self.exe.clone(),
        };
        // Both directions work, over both families, before anything is
        // measured.
        let one = ForwardSet::new(1, false, traffic::NODE_PORT);
        env.set_forwards(Some(one))?;
        for (wan, v6) in [
            (IpAddr::from(env.wan_addr), false),
            (super::WAN_ADDR6.into(), true),
        ] {
            traffic::probe(&env.node, SocketAddr::new(wan, traffic::CRR_PORT), None)
                .with_context(|| format!("mode {}: node to wan", mode.name()))?;
            let target = env.dnat_target(one, v6);
            traffic::probe(&env.wan, target, Some(&env.client_ports))
                .with_context(|| format!("mode {}: wan to the node's server", mode.name()))?;
        }
        env.set_forwards(None)?;
        self.envs.push(env);
        Ok(())
    }

    /// The third-party servers: iperf3, nginx and sockperf in the wan,
    /// nginx in the node (the forwards' other target).
    fn start_tools(
        &mut self,
        wan_ns: &str,
        node_ns: &str,
        wan: &Netns,
        node: &Netns,
    ) -> Result<()> {
        let port = traffic::IPERF_PORT.to_string();
        let iperf = Command::new("ip")
            .args(["netns", "exec", wan_ns, "iperf3", "-s", "-p", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting iperf3 -s in netns {wan_ns}"))?;
        self.children.push(iperf);
        for ns in [wan_ns, node_ns] {
            let dir = self.dir.join(format!("nginx-{ns}"));
            self.children.push(tools::start_nginx(ns, &dir)?);
        }
        self.children.push(tools::start_sockperf(wan_ns)?);
        let within = Duration::from_secs(5);
        traffic::wait_listening(wan, traffic::IPERF_PORT, within)
            .with_context(|| format!("iperf3 -s in netns {wan_ns}"))?;
        for (ns, label) in [(wan, wan_ns), (node, node_ns)] {
            traffic::wait_listening(ns, tools::NGINX_PORT, within)
                .with_context(|| format!("nginx in netns {label}"))?;
        }
        Ok(())
    }

    /// The `veth` mode's two namespaces and their veth pair.
    fn veth_pair(&mut self) -> Result<(String, String)> {
        let node = format!("{}v-{NODE}", self.tag);
        let wan = format!("{}v-wan", self.tag);
        for name in [&node, &wan] {
            let m = self.marker();
            // Recorded first: a half-made namespace is still removed.
            self.own.push(name.clone());
            netns::create(name, move || system::mark_current_netns(&m))?;
        }
        let (n, w) = (node.clone(), wan.clone());
        self.rt
            .block_on(async move {
                let node = Netns::open(&n)?;
                let wan = Netns::open(&w)?;
                let node_nl = node.netlink().await?;
                let wan_nl = wan.netlink().await?;
                netlink::create_veth(
                    &node_nl,
                    "eth0",
                    0,
                    "eth0",
                    std::os::fd::AsRawFd::as_raw_fd(&wan),
                    None,
                )
                .await?;
                let sides = [
                    (&node_nl, UPLINK_ADDR, crate::sandbox::HOST_UPLINK_ADDR6),
                    (&wan_nl, super::WAN_ADDR, crate::sandbox::WAN_ADDR6),
                ];
                for (handle, addr, addr6) in sides {
                    let link = netlink::link_by_name(handle, "eth0")
                        .await?
                        .context("the veth just made")?;
                    let addr = Ipv4Net {
                        addr,
                        prefix_len: 24,
                    };
                    for a in [addr.into(), addr6.into()] {
                        netlink::add_address(handle, link.index, a).await?;
                    }
                    netlink::set_up(handle, link.index).await?;
                }
                anyhow::Ok(())
            })
            .with_context(|| format!("the veth pair between netns {node} and {wan}"))?;
        Ok((node, wan))
    }

    /// A lab for `mode`, up in its sandbox.
    fn lab(&mut self, mode: Mode) -> Result<String> {
        let lab = format!("{}{}", self.tag, mode.letter());
        let nat = matches!(mode, Mode::Netlab | Mode::NetlabSlow);
        let file = self.dir.join(format!("{lab}.toml"));
        fs::write(&file, topology(&lab, nat, mode != Mode::NetlabSlow))
            .with_context(|| format!("writing {}", file.display()))?;
        self.labs.push(lab.clone());
        netlab(
            &self.exe,
            &["up", "--sandbox", "-f", &file.display().to_string()],
        )
        .with_context(|| format!("bringing lab {lab} up"))?;
        let info = crate::dataplane::read_info(&lab);
        let attached = info.is_some();
        if let Some(info) = info {
            self.dataplane.push((mode, serde_json::to_value(info)?));
        }
        if attached != nat {
            bail!(
                "lab {lab} ({}) {} eBPF programs attached",
                mode.name(),
                if attached { "has" } else { "has no" }
            );
        }
        let wan = format!("{lab}-wan");
        match mode {
            Mode::Route => {
                let back = [
                    ("192.168.15.0/24", UPLINK_ADDR.to_string()),
                    (SUBNET6, UPLINK_ADDR6.to_string()),
                ];
                for (subnet, via) in back {
                    tool(
                        "ip",
                        &["-n", &wan, "route", "add", subnet, "via", &via],
                        None,
                        Duration::from_secs(10),
                    )
                    .with_context(|| format!("routing {subnet} back in netns {wan}"))?;
                }
            }
            Mode::Iptables => iptables_load(&format!("{lab}-host"), None)?,
            _ => {}
        }
        Ok(lab)
    }

    /// The NATs' own counters after the run: netlab's `stats`, and the
    /// conntrack statistics of the iptables lab host (summed over CPUs).
    pub fn counters(&self) -> Vec<(Mode, serde_json::Value)> {
        let mut out = Vec::new();
        for e in &self.envs {
            let value = match (e.mode, &e.lab, &e.host_ns) {
                (Mode::Netlab | Mode::NetlabSlow, Some(lab), _) => {
                    netlab(&self.exe, &["stats", "--name", lab, "--json"])
                        .ok()
                        .and_then(|t| serde_json::from_str(&t).ok())
                }
                (Mode::Iptables, _, Some(host)) => tool(
                    "ip",
                    &["netns", "exec", host, "cat", "/proc/net/stat/nf_conntrack"],
                    None,
                    Duration::from_secs(10),
                )
                .ok()
                .map(|t| conntrack_stats(&t)),
                _ => None,
            };
            if let Some(v) = value {
                out.push((e.mode, v));
            }
        }
        out
    }

    /// What of this run is still anywhere on the machine.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        if let Ok(list) = netns::list() {
            for (n, _) in list {
                if n.starts_with(&self.tag) {
                    left.push(format!("netns {n}"));
                }
            }
        }
        for lab in &self.labs {
            left.extend(
                [
                    lab::state_dir(lab),
                    crate::dataplane::pins::LabPins::new(lab).root,
                ]
                .into_iter()
                .filter(|p| p.exists())
                .map(|p| p.display().to_string()),
            );
        }
        if let Ok(entries) = fs::read_dir(crate::model::plan::NETNS_ETC) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.tag) {
                    left.push(e.path().display().to_string());
                }
            }
        }
        left
    }

    /// Stop the servers, take every sandbox down, and check nothing is left.
    pub fn teardown(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut errors = Vec::new();
        // Servers first: their sockets hold the namespaces.
        self.envs.clear();
        for c in &mut self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for c in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.children.clear();
        for lab in &self.labs {
            if let Err(e) = netlab(&self.exe, &["down", "--sandbox", "--name", lab]) {
                errors.push(format!("lab {lab}: {e:#}"));
            }
        }
        if !self.own.is_empty() {
            if let Err(e) = system::end_processes_in(&self.own) {
                errors.push(format!("{e:#}"));
            }
            for n in &self.own {
                if let Err(e) = netns::delete(n) {
                    errors.push(format!("netns {n}: {e:#}"));
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
        let left = self.leftovers();
        if !left.is_empty() {
            errors.push(format!("left behind: {}", left.join(", ")));
        }
        if !errors.is_empty() {
            bail!(
                "taking the bench's sandboxes down:\n  {}",
                errors.join("\n  ")
            );
        }
        Ok(())
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("netlab bench: {e:#}");
        }
    }
}
