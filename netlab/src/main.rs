use std::{path::PathBuf, process::ExitCode};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use netlab::{
    caps::{self, CapabilityError, CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN},
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
    /// Show each step, the whole error chain, and the programs' log.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Which {
    /// The lab's topology file.
    #[arg(short, long, value_name = "FILE", conflicts_with = "name")]
    file: Option<PathBuf>,
    /// The lab's name (as given by `name =` in its file).
    #[arg(long, value_name = "LAB")]
    name: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Create the lab (or converge it to an edited file). Without -f, the
    /// default lab: red and blue on bridge v-net-0.
    Up {
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
    Status {
        #[command(flatten)]
        which: Which,
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a node (as `ip netns exec` does).
    Exec {
        #[command(flatten)]
        which: Which,
        node: String,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Check a topology file and print what it describes; changes nothing.
    Check {
        #[arg(short, long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Port forwards on a live lab.
    #[command(subcommand)]
    Fwd(cli::FwdCommand),
    /// Live NAT translations.
    #[command(subcommand)]
    Nat(cli::NatCommand),
    /// Dataplane counters, summed over CPUs.
    Stats {
        #[command(flatten)]
        which: Which,
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
    },
    /// Serve HTTP inside a namespace (the sandbox's outside web server).
    #[command(hide = true)]
    ServeHttp {
        #[arg(long)]
        netns: String,
        #[arg(long, default_value_t = 80)]
        port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = cli.verbose;
    let result = match cli.command {
        // Both need a single-threaded process: no runtime for them.
        Command::Exec {
            which,
            node,
            command,
        } => run_exec(which, &node, &command),
        Command::ServeHttp { netns, port } => serve_http(&netns, port),
        // Threads of its own in many namespaces, and its own small runtime.
        Command::Bench {
            rounds,
            modes,
            quick,
            micro,
            json,
            chart,
            check,
        } => caps::require("bench", &[CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF]).and_then(|()| {
            netlab::bench::run(netlab::bench::Options {
                rounds,
                modes,
                quick,
                micro_only: micro,
                json,
                chart,
                check,
            })
        }),
        command => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the runtime")
            .and_then(|rt| rt.block_on(run(command, cli.host_netns, verbose))),
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

async fn run(command: Command, host_netns: Option<String>, verbose: bool) -> Result<()> {
    match command {
        Command::Up { file, sandbox } => {
            let (lab, source) = lab::load(file.as_deref())?;
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
                host_netns
            };
            let _locks = lock::lab_and_host(&lab.name, host_netns.as_deref(), "netlab up")?;
            let opts = lab::Options {
                host_netns,
                verbose,
                sandbox,
            };
            up_in_sandbox(&lab, source, &opts).await
        }
        Command::Down { which, sandbox } => {
            caps::require("down", &[CAP_NET_ADMIN, CAP_SYS_ADMIN])?;
            let (name, known) = match (&which.file, &which.name) {
                (Some(f), _) => {
                    let (lab, _) = lab::load(Some(f))?;
                    (lab.name.clone(), Some(lab))
                }
                (None, Some(n)) => (n.clone(), None),
                (None, None) => {
                    let state = lab::resolve(None, None, host_netns.as_deref())?;
                    (state.lab.name.clone(), Some(state.lab))
                }
            };
            let saved = lab::read_state(&name);
            let host = host_netns
                .clone()
                .or_else(|| saved.as_ref().and_then(|s| s.host_netns.clone()));
            let _locks = lock::lab_and_host(&name, host.as_deref(), "netlab down")?;
            let was_sandboxed = saved.is_some_and(|s| s.sandbox);
            let report = lab::down(&name, known.as_ref(), host_netns.as_deref(), verbose).await?;
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
        Command::Status { which, json } => {
            caps::require("status", &[CAP_NET_ADMIN, CAP_SYS_ADMIN])?;
            let state = lab::resolve(
                which.file.as_deref(),
                which.name.as_deref(),
                host_netns.as_deref(),
            )?;
            if cli::status(&state, host_netns.as_deref(), json).await? {
                Ok(())
            } else {
                Err(NotConverged.into())
            }
        }
        Command::Check { file } => {
            let (lab, _) = lab::load(file.as_deref())?;
            cli::print_check(&lab);
            Ok(())
        }
        Command::Fwd(cmd) => {
            caps::require("fwd", &[CAP_BPF, CAP_SYS_ADMIN])?;
            cli::fwd(cmd, host_netns.as_deref()).await
        }
        Command::Nat(cmd) => {
            caps::require("nat", &[CAP_BPF, CAP_SYS_ADMIN])?;
            cli::nat(cmd, host_netns.as_deref()).await
        }
        Command::Stats { which, json } => {
            caps::require("stats", &[CAP_BPF, CAP_SYS_ADMIN])?;
            let state = lab::resolve(
                which.file.as_deref(),
                which.name.as_deref(),
                host_netns.as_deref(),
            )?;
            cli::stats(&state, json, verbose).await
        }
        Command::Log { which, seconds } => {
            caps::require("log", &[CAP_BPF, CAP_SYS_ADMIN])?;
            let state = lab::resolve(
                which.file.as_deref(),
                which.name.as_deref(),
                host_netns.as_deref(),
            )?;
            netlab::dataplane::log_command(
                &state.lab.name,
                seconds.map(std::time::Duration::from_secs),
            )
            .await
        }
        Command::Exec { .. } | Command::ServeHttp { .. } | Command::Bench { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
}

/// `up`, making the lab's sandbox first when asked; a sandbox this run made
/// goes again when the lab does not come up.
async fn up_in_sandbox(
    lab: &netlab::model::topology::Lab,
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
        lab::up(lab, source, opts).await
    }
    .await;
    if result.is_err() && fresh && lab::read_state(&lab.name).is_none() {
        if let Err(e) = sandbox::remove(&lab.name).await {
            eprintln!("netlab: removing the sandbox of the failed run: {e:#}");
        }
    }
    result
}

fn run_exec(which: Which, node: &str, command: &[String]) -> Result<()> {
    caps::require("exec", &[CAP_SYS_ADMIN])?;
    let state = lab::resolve(which.file.as_deref(), which.name.as_deref(), None)?;
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

fn serve_http(netns: &str, port: u16) -> Result<()> {
    let ns = netlab::netns::Netns::open(netns)?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .context("entering the namespace")?;
    netlab::httpd::serve(port)
}
