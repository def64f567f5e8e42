use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use netlab::{
    caps::{self, CapabilityError, CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN},
    cli, lab, lock,
    model::topology::ConfigError,
    sandbox,
};

/// Network-namespace labs in one command, with masquerade and port
/// forwarding in eBPF instead of iptables.
#[derive(Parser)]
#[command(name = "netlab", version)]
struct Cli {
    /// The lab host is this existing network namespace instead of the
    /// current one (a whole lab inside a sandbox).
    #[arg(long, global = true, env = "NETLAB_HOST_NETNS", value_name = "NAME")]
    host_netns: Option<String>,
    /// The lab to work on, by name (as given by `name =` in its file);
    /// without it and without -f, the only lab that is up.
    #[arg(long, global = true, value_name = "LAB")]
    name: Option<String>,
    /// In a lab over several lab hosts (`[[hosts]]`), the host this one is:
    /// its share of the lab (run as `<lab>@<host>`) is what is meant.
    #[arg(long = "host", global = true, env = "NETLAB_HOST", value_name = "HOST")]
    lab_host: Option<String>,
    /// Show each step, the whole error chain, and the programs' log.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

/// The options every command sees, wherever they were given.
struct Globals {
    host_netns: Option<String>,
    name: Option<String>,
    lab_host: Option<String>,
    verbose: bool,
}

#[derive(Args, Clone)]
struct Which {
    /// The lab's topology file (instead of --name).
    #[arg(short, long, value_name = "FILE")]
    file: Option<PathBuf>,
}

impl Which {
    /// The file or the name, never both.
    fn pick<'a>(&'a self, g: &'a Globals) -> Result<(Option<&'a Path>, Option<&'a str>)> {
        if self.file.is_some() && g.name.is_some() {
            bail!("give the lab by -f or by --name, not both");
        }
        Ok((self.file.as_deref(), g.name.as_deref()))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create the lab (or converge it to an edited file). Without -f, the
    /// default lab: red and blue on bridge v-net-0.
    Up {
        /// The lab's topology file [default: the default lab].
        #[arg(short, long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Build a throwaway lab host with a simulated outside and bring the
        /// lab up inside it.
        #[arg(long, conflicts_with = "host_netns")]
        sandbox: bool,
    },
    /// Remove everything the lab created, and the processes still in it.
    Down {
        #[command(flatten)]
        which: Which,
        /// Also remove the lab's sandbox.
        #[arg(long)]
        sandbox: bool,
    },
    /// Show the lab: nodes, links, addresses, routes, forwards, dataplane.
    /// Exits 3 when the lab is not up or not converged.
    Status {
        #[command(flatten)]
        which: Which,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The labs on this machine: name, lab host, nodes, up and converged.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a node (as `ip netns exec` does).
    Exec {
        #[command(flatten)]
        which: Which,
        /// The node (its name in the lab file).
        node: String,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// The output of a node's services (`run = [...]`), oldest first.
    Logs {
        /// The node (its name in the lab file).
        node: String,
        /// Keep printing what the services write, until Ctrl-C.
        #[arg(short, long)]
        follow: bool,
    },
    /// Capture packets as pcap (to a file, or stdout for `tcpdump -r -` or
    /// `wireshark -k -i -`) on a node's interface, the uplink or a bridge.
    Capture {
        #[command(flatten)]
        which: Which,
        /// NODE, NODE:IFACE (`any`: all of the node's), `uplink` (the lab
        /// host's, after translation) or a bridge (before it).
        target: String,
        /// Write to FILE instead of stdout.
        #[arg(short, value_name = "FILE")]
        write: Option<PathBuf>,
        /// Stop after COUNT packets.
        #[arg(short, value_name = "COUNT")]
        count: Option<u64>,
        /// A filter in tcpdump's syntax (`icmp`, `tcp port 80`, ...).
        #[arg(value_name = "FILTER")]
        filter: Vec<String>,
    },
    /// Check a topology file and print what it describes; changes nothing.
    Check {
        /// The topology file [default: the default lab].
        #[arg(short, long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Port forwards on a live lab.
    #[command(subcommand)]
    Fwd(cli::FwdCommand),
    /// Live NAT translations.
    #[command(subcommand)]
    Nat(cli::NatCommand),
    /// A running lab's links: impair them, take them down and up, show them.
    #[command(subcommand)]
    Link(cli::LinkCommand),
    /// Dataplane counters, summed over CPUs.
    Stats {
        #[command(flatten)]
        which: Which,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stream the dataplane programs' log (new flows, drops) until Ctrl-C.
    Log {
        #[command(flatten)]
        which: Which,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        seconds: Option<u64>,
    },
    /// Compare netlab's eBPF NAT with iptables MASQUERADE on this machine,
    /// in sandboxes of its own (veth, route, iptables, netlab, netlab-slow).
    Bench {
        /// Rounds; each measures every metric of every mode [default: 5, 2 with --quick].
        #[arg(long, value_name = "N")]
        rounds: Option<usize>,
        /// Modes to compare, comma-separated [default: veth,route,iptables,netlab,netlab-slow].
        #[arg(long, value_name = "MODES", value_delimiter = ',')]
        modes: Option<Vec<String>>,
        /// Shorter measurements and fewer rounds (under two minutes).
        #[arg(long)]
        quick: bool,
        /// Only the micro-benchmark of the programs (BPF_PROG_TEST_RUN).
        #[arg(long)]
        micro: bool,
        /// Write the results as JSON to PATH (stdout without PATH or with `-`).
        #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "-")]
        json: Option<PathBuf>,
        /// The SVG chart of the ratios.
        #[arg(long, value_name = "PATH", default_value = "target/bench/ratios.svg")]
        chart: PathBuf,
        /// Fail unless every mode produced a non-zero number for every metric
        /// (a smoke test: timing is never judged).
        #[arg(long)]
        check: bool,
        /// Only these metrics, comma-separated, by their JSON keys (e.g.
        /// tcp_connections_wrk) [default: all].
        #[arg(long, value_name = "METRICS", value_delimiter = ',')]
        metrics: Vec<String>,
        /// Profile every measurement with perf (cpu-clock, every CPU, call
        /// chains) into DIR, and show where the CPU time went.
        #[arg(long, value_name = "DIR")]
        perf: Option<PathBuf>,
    },
    /// Draw the lab: dot, Mermaid, JSON, or an SVG laid out by netlab (with
    /// the links' state when the lab is up).
    Graph {
        #[command(flatten)]
        which: Which,
        /// The output's format.
        #[arg(long, value_enum, default_value = "svg")]
        format: netlab::view::GraphFormat,
    },
    /// The read-only web view of the labs on the lab host: their picture
    /// with live figures, the JSON API, and Prometheus metrics at /metrics.
    Serve {
        /// Where to listen (another address than loopback is said loudly).
        #[arg(long, value_name = "ADDR:PORT", default_value = netlab::view::serve::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
    },
    /// A small HTTP server inside a namespace, for trying forwards and
    /// masquerade: answers with where it runs and who it saw (`/ip`: only
    /// the address), `/bytes/N` with N bytes. The sandbox's outside runs one.
    ServeHttp {
        /// The network namespace to serve in (a node's, or the sandbox's
        /// outside) [default: the one it runs in, as in a node's `run`].
        #[arg(long, value_name = "NETNS")]
        netns: Option<String>,
        /// The TCP port to listen on.
        #[arg(long, default_value_t = 80)]
        port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let globals = Globals {
        host_netns: cli.host_netns,
        name: cli.name,
        lab_host: cli.lab_host,
        verbose: cli.verbose,
    };
    let verbose = globals.verbose;
    let result = match cli.command {
        // Both need a single-threaded process: no runtime for them.
        Command::Exec {
            which,
            node,
            command,
        } => run_exec(&which, &globals, &node, &command),
        Command::ServeHttp { netns, port } => serve_http(netns.as_deref(), port),
        // Enters the namespace of what it captures on.
        Command::Capture {
            which,
            target,
            write,
            count,
            filter,
        } => run_capture(
            &which,
            &globals,
            netlab::capture::Request {
                target,
                write,
                count,
                filter,
            },
        ),
        // Enters the lab host's namespace before its runtime starts.
        Command::Serve { listen } => {
            caps::require("serve", &[CAP_BPF, CAP_SYS_ADMIN]).and_then(|()| {
                netlab::view::serve::run(netlab::view::serve::Options {
                    listen,
                    host_netns: globals.host_netns.clone(),
                    name: globals.name.clone(),
                })
            })
        }
        // Threads of its own in many namespaces, and its own small runtime.
        Command::Bench {
            rounds,
            modes,
            quick,
            micro,
            json,
            chart,
            check,
            metrics,
            perf,
        } => caps::require("bench", &[CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF]).and_then(|()| {
            netlab::bench::run(netlab::bench::Options {
                rounds,
                modes,
                quick,
                micro_only: micro,
                json,
                chart,
                check,
                metrics,
                perf,
            })
        }),
        command => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the runtime")
            .and_then(|rt| rt.block_on(run(command, &globals))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<NotConverged>() {
            Some(_) => ExitCode::from(NotConverged::CODE),
            None => report(&e, verbose),
        },
    }
}

/// `status` found the lab not up or not converged: it printed why; the exit
/// code says it to scripts.
#[derive(Debug)]
struct NotConverged;

impl NotConverged {
    const CODE: u8 = 3;
}

impl std::fmt::Display for NotConverged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the lab is not up or not converged")
    }
}

impl std::error::Error for NotConverged {}

fn report(e: &anyhow::Error, verbose: bool) -> ExitCode {
    if let Some(config) = e.chain().find_map(|c| c.downcast_ref::<ConfigError>()) {
        for line in config.to_string().lines() {
            eprintln!("netlab: {line}");
        }
        return ExitCode::from(2);
    }
    if let Some(cap) = e.chain().find_map(|c| c.downcast_ref::<CapabilityError>()) {
        eprintln!("netlab: {cap}");
        return ExitCode::from(1);
    }
    if verbose {
        eprintln!("netlab: error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
    } else {
        let root = e.root_cause().to_string();
        if e.chain().count() > 1 && root != e.to_string() {
            eprintln!("netlab: error: {e}: {root}");
        } else {
            eprintln!("netlab: error: {e}");
        }
    }
    ExitCode::from(1)
}

async fn run(command: Command, g: &Globals) -> Result<()> {
    let host_netns = g.host_netns.as_deref();
    match command {
        Command::Up { file, sandbox } => run_up(file.as_deref(), sandbox, g).await,
        Command::Down { which, sandbox } => run_down(&which, sandbox, g).await,
        Command::Status { which, json } => {
            caps::require("status", &[CAP_NET_ADMIN, CAP_SYS_ADMIN])?;
            let (file, name) = which.pick(g)?;
            let state = lab::resolve(file, name, host_netns, g.lab_host.as_deref())?;
            if cli::status(&state, host_netns, json).await? {
                Ok(())
            } else {
                Err(NotConverged.into())
            }
        }
        Command::List { json } => {
            caps::require("list", &[CAP_NET_ADMIN, CAP_SYS_ADMIN])?;
            cli::list(json).await
        }
        Command::Check { file } => run_check(file.as_deref(), host_netns).await,
        Command::Fwd(cmd) => {
            caps::require("fwd", &[CAP_BPF, CAP_SYS_ADMIN])?;
            cli::fwd(cmd, g.name.as_deref(), host_netns).await
        }
        Command::Link(cmd) => cli::link(cmd, g.name.as_deref(), host_netns).await,
        Command::Nat(cmd) => {
            caps::require("nat", &[CAP_BPF, CAP_SYS_ADMIN])?;
            cli::nat(cmd, g.name.as_deref(), host_netns).await
        }
        Command::Stats { which, json } => {
            caps::require("stats", &[CAP_BPF, CAP_SYS_ADMIN])?;
            let (file, name) = which.pick(g)?;
            let state = lab::resolve(file, name, host_netns, g.lab_host.as_deref())?;
            cli::stats(&state, json, g.verbose).await
        }
        Command::Log { which, seconds } => {
            caps::require("log", &[CAP_BPF, CAP_SYS_ADMIN])?;
            let (file, name) = which.pick(g)?;
            let state = lab::resolve(file, name, host_netns, g.lab_host.as_deref())?;
            netlab::dataplane::log_command(
                &state.lab.name,
                seconds.map(std::time::Duration::from_secs),
            )
            .await
        }
        Command::Logs { node, follow } => {
            let state = lab::resolve(None, g.name.as_deref(), host_netns, g.lab_host.as_deref())?;
            cli::logs(&state, &node, follow).await
        }
        Command::Graph { which, format } => {
            let (file, name) = which.pick(g)?;
            print!(
                "{}",
                netlab::view::graph_text(file, name, host_netns, format).await?
            );
            Ok(())
        }
        Command::Exec { .. }
        | Command::ServeHttp { .. }
        | Command::Bench { .. }
        | Command::Capture { .. }
        | Command::Serve { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
}

async fn run_up(file: Option<&Path>, sandbox: bool, g: &Globals) -> Result<()> {
    let (whole, sources, source) = lab::load_with_sources(file)?;
    let lab = lab::share_of(&whole, g.lab_host.as_deref())?;
    if let Some(name) = g
        .name
        .as_deref()
        .filter(|n| *n != lab.name && *n != whole.name)
    {
        bail!(
            "--name {name} does not match the lab's name {} (`up` takes the name from the file)",
            lab.name
        );
    }
    caps::require("up", &[CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF])?;
    // A kernel the programs cannot run on is refused before
    // anything (a sandbox included) is made. The probe only loads
    // throwaway programs and maps and queries `lo`.
    if netlab::dataplane::needed(&lab) {
        netlab::dataplane::features::probe()?;
    }
    let host_netns = if sandbox {
        Some(sandbox::Sandbox::of(&lab.name).host)
    } else {
        g.host_netns.clone()
    };
    let _locks = lock::lab_and_host(&lab.name, host_netns.as_deref(), "netlab up")?;
    let opts = lab::Options {
        host_netns,
        verbose: g.verbose,
        sandbox,
    };
    up_in_sandbox(&lab, &sources, source, &opts).await
}

/// `check`: the file's own checks, then (with the privileges to look) what
/// stands in its way on the lab host, reported the same way (exit code 2).
async fn run_check(file: Option<&Path>, host_netns: Option<&str>) -> Result<()> {
    let (lab, sources, _) = lab::load_with_sources(file)?;
    let needs = [CAP_NET_ADMIN, CAP_SYS_ADMIN];
    let look = match host_netns {
        Some(_) => caps::require("check --host-netns", &needs).map(|()| true)?,
        None => caps::require("check", &needs).is_ok(),
    };
    let host = look
        .then(|| netlab::netns::Netns::host(host_netns))
        .transpose()?;
    if let Some(host) = &host {
        netlab::host_facts::refuse_conflicts(&lab, &sources, host).await?;
        netlab::links::refuse_missing(&netlab::model::impair::impaired(&lab))?;
    }
    cli::print_check(&lab);
    match &host {
        Some(h) => println!("  nothing on {} stands in its way", h.label()),
        None => println!(
            "  host checks skipped: they need CAP_NET_ADMIN and CAP_SYS_ADMIN (run as root)"
        ),
    }
    Ok(())
}

async fn run_down(which: &Which, sandbox: bool, g: &Globals) -> Result<()> {
    caps::require("down", &[CAP_NET_ADMIN, CAP_SYS_ADMIN])?;
    let (name, known) = match which.pick(g)? {
        (Some(f), _) => {
            let (lab, _) = lab::load(Some(f), g.lab_host.as_deref())?;
            (lab.name.clone(), Some(lab))
        }
        (None, Some(n)) => (lab::name_on(n, g.lab_host.as_deref()), None),
        (None, None) => {
            let state = lab::resolve(None, None, g.host_netns.as_deref(), g.lab_host.as_deref())?;
            (state.lab.name.clone(), Some(state.lab))
        }
    };
    let saved = lab::read_state(&name);
    let host = g
        .host_netns
        .clone()
        .or_else(|| saved.as_ref().and_then(|s| s.host_netns.clone()));
    let _locks = lock::lab_and_host(&name, host.as_deref(), "netlab down")?;
    let was_sandboxed = saved.is_some_and(|s| s.sandbox);
    let report = lab::down(&name, known.as_ref(), g.host_netns.as_deref(), g.verbose).await?;
    for p in &report.ended {
        println!("ended {p}");
    }
    let mut removed = report.removed;
    if sandbox {
        let (ended, gone) = sandbox::remove(&name).await?;
        for p in ended {
            println!("ended {p}");
        }
        let left = sandbox::leftovers(&name).await?;
        if !left.is_empty() {
            bail!("lab {name}'s sandbox still has: {}", left.join(", "));
        }
        removed += gone;
    } else if was_sandboxed {
        println!("(its sandbox is still there: `netlab down --sandbox --name {name}` removes it)");
    }
    if removed == 0 {
        println!("lab {name} is not up; nothing to remove");
    } else {
        println!("lab {name} is down");
    }
    Ok(())
}

/// `up`, making the lab's sandbox first when asked; a sandbox this run made
/// goes again when the lab does not come up.
async fn up_in_sandbox(
    lab: &netlab::model::topology::Lab,
    sources: &netlab::model::SourceMap,
    source: Option<PathBuf>,
    opts: &lab::Options,
) -> Result<()> {
    let fresh = opts.sandbox && !netlab::netns::exists(&sandbox::Sandbox::of(&lab.name).host);
    let result = async {
        if opts.sandbox {
            let sb = sandbox::ensure(&lab.name).await?;
            println!(
                "sandbox: lab host netns {}, outside netns {} ({} with an HTTP server on port {})",
                sb.host,
                sb.wan,
                sandbox::WAN_ADDR.addr,
                sandbox::HTTP_PORT
            );
        }
        lab::up(lab, sources, source, opts).await
    }
    .await;
    if result.is_err() && fresh && lab::read_state(&lab.name).is_none() {
        if let Err(e) = sandbox::remove(&lab.name).await {
            eprintln!("netlab: removing the sandbox of the failed run: {e:#}");
        }
    }
    result
}

fn run_exec(which: &Which, g: &Globals, node: &str, command: &[String]) -> Result<()> {
    caps::require("exec", &[CAP_SYS_ADMIN])?;
    let (file, name) = which.pick(g)?;
    let state = lab::resolve(file, name, g.host_netns.as_deref(), g.lab_host.as_deref())?;
    let Some(n) = state.lab.node(node) else {
        let names: Vec<&str> = state.lab.nodes.iter().map(|n| n.name.as_str()).collect();
        bail!(
            "lab {} has no node {node} (its nodes: {})",
            state.lab.name,
            names.join(", ")
        );
    };
    let netns = n.netns.clone();
    netlab::exec::exec_in(&netns, command).map(|_| ())
}

fn serve_http(netns: Option<&str>, port: u16) -> Result<()> {
    let place = match netns {
        Some(netns) => {
            let ns = netlab::netns::Netns::open(netns)?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("entering the namespace")?;
            format!("netns {netns}")
        }
        // A service says which node it is in.
        None => match std::env::var("NETLAB_NODE") {
            Ok(node) => format!("node {node}"),
            Err(_) => "this namespace".to_string(),
        },
    };
    netlab::httpd::serve(port, &place)
}

fn run_capture(which: &Which, g: &Globals, req: netlab::capture::Request) -> Result<()> {
    caps::require("capture", &[CAP_NET_RAW, CAP_SYS_ADMIN])?;
    let (file, name) = which.pick(g)?;
    let state = lab::resolve(file, name, g.host_netns.as_deref(), g.lab_host.as_deref())?;
    let place = netlab::capture::resolve(&state, &req.target)?;
    netlab::capture::run(&place, &req)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn every_command_and_option_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.is_hide_set() {
                    missing.push(format!("{path} {} is hidden", sub.get_name()));
                }
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "netlab", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:?}");
    }

    #[test]
    fn lab_name_goes_before_or_after_the_subcommand() {
        for args in [
            &["netlab", "--name", "x", "status"][..],
            &["netlab", "status", "--name", "x"],
            &["netlab", "fwd", "--name", "x", "list"],
            &["netlab", "fwd", "list", "--name", "x"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.name.as_deref(), Some("x"), "{args:?}");
        }
        for args in [
            &["netlab", "--host", "a", "up", "-f", "lab.toml"][..],
            &["netlab", "up", "-f", "lab.toml", "--host", "a"],
            &["netlab", "down", "--name", "x", "--host", "a"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.lab_host.as_deref(), Some("a"), "{args:?}");
        }
        let g = Globals {
            host_netns: None,
            name: Some("x".into()),
            lab_host: None,
            verbose: false,
        };
        let which = Which {
            file: Some("lab.toml".into()),
        };
        assert!(which.pick(&g).is_err(), "-f and --name together");
    }
}
