//! Output of the read-mostly commands: `status`, `check`, and the dataplane
//! commands `fwd`, `nat`, `stats`. The CLI binary stays a thin parser.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use crate::{
    dataplane,
    lab::{self, LabState},
    model::{
        plan::{plan, Desired},
        topology::{Attachment, Lab},
    },
    netns::{self, Netns},
    system::{self, System},
};

#[derive(Subcommand)]
pub enum FwdCommand {
    /// Forward PORT (or a range a-b) on the uplink address to NODE[:PORT].
    Add {
        #[arg(long, value_name = "LAB")]
        name: Option<String>,
        protocol: String,
        port: String,
        to: String,
    },
    /// Remove the forward of PORT (or the range it starts).
    Del {
        #[arg(long, value_name = "LAB")]
        name: Option<String>,
        protocol: String,
        port: String,
    },
    /// List the live forwards.
    List {
        #[arg(long, value_name = "LAB")]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum NatCommand {
    /// Live translations, like `conntrack -L`.
    List {
        #[arg(long, value_name = "LAB")]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub fn print_check(lab: &Lab) {
    println!("lab {} is valid", lab.name);
    for b in &lab.bridges {
        let gw = b
            .gateway_net()
            .map(|g| g.to_string())
            .unwrap_or_else(|| "no gateway".into());
        println!(
            "  bridge {} {} ({gw}{}{})",
            b.name,
            b.subnet,
            if b.masquerade { ", masquerade" } else { "" },
            if b.routed { ", routed" } else { "" }
        );
    }
    for n in &lab.nodes {
        let ifs: Vec<String> = n
            .interfaces
            .iter()
            .map(|i| format!("{} {}", i.name, i.address))
            .collect();
        let gw = n
            .gateway
            .map(|g| format!(", default via {g}"))
            .unwrap_or_default();
        println!(
            "  node {} (netns {}): {}{gw}",
            n.name,
            n.netns,
            ifs.join(", ")
        );
    }
    for f in &lab.forwards {
        println!("  forward {f}");
    }
}

/// `netlab status`.
pub async fn status(state: &LabState, host_override: Option<&str>, json_out: bool) -> Result<()> {
    let lab = &state.lab;
    let host_netns = host_override
        .map(str::to_string)
        .or_else(|| state.host_netns.clone());
    let up = lab::read_state(&lab.name).is_some();
    let host_present = host_netns.as_deref().is_none_or(netns::exists);
    let (actual, drift) = if host_present {
        let mut sys = System::new(Netns::host(host_netns.as_deref())?).await?;
        let actual = sys.observe(&lab.name).await?;
        let desired = Desired::from_lab(lab, &system::host_nameservers());
        let drift: Vec<String> = plan(&desired, &actual)
            .iter()
            .map(|a| a.to_string())
            .collect();
        (Some(actual), drift)
    } else {
        (
            None,
            vec![format!(
                "the lab host namespace {} is gone",
                host_netns.clone().unwrap_or_default()
            )],
        )
    };
    let dp = dataplane::status(&lab.name)?;

    if json_out {
        let nodes: Vec<_> = lab
            .nodes
            .iter()
            .map(|n| {
                let have = actual.as_ref().and_then(|a| a.nodes.get(&n.netns));
                json!({
                    "name": n.name,
                    "netns": n.netns,
                    "present": have.is_some(),
                    "interfaces": n.interfaces.iter().map(|i| {
                        let l = have.and_then(|h| h.links.get(&i.name));
                        json!({
                            "name": i.name,
                            "address": i.address,
                            "up": l.is_some_and(|l| l.up),
                            "attachment": i.attachment,
                        })
                    }).collect::<Vec<_>>(),
                    "gateway": n.gateway,
                    "routes": n.routes,
                    "forwarding": n.forwarding,
                })
            })
            .collect();
        let out = json!({
            "lab": lab.name,
            "up": up,
            "source": state.source.as_ref().map(|p: &PathBuf| p.display().to_string()),
            "host_netns": host_netns,
            "sandbox": state.sandbox,
            "bridges": lab.bridges,
            "nodes": nodes,
            "cables": lab.cables,
            "forwards": lab.forwards,
            "converged": up && drift.is_empty(),
            "drift": drift,
            "dataplane": dp,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }

    let where_ = match &host_netns {
        Some(n) => format!(
            "lab host: netns {n}{}",
            if state.sandbox { " (sandbox)" } else { "" }
        ),
        None => "lab host: this namespace".to_string(),
    };
    if !up {
        println!("lab {} is not up", lab.name);
        return Ok(());
    }
    println!("lab {} ({where_})", lab.name);
    if let Some(src) = &state.source {
        println!("  file: {}", src.display());
    }
    for b in &lab.bridges {
        let l = actual.as_ref().and_then(|a| a.host_links.get(&b.name));
        let gw = b
            .gateway_net()
            .map(|g| g.to_string())
            .unwrap_or_else(|| "no gateway".into());
        println!(
            "  bridge {:<10} {gw:<18} {}",
            b.name,
            match l {
                Some(l) if l.up => "up",
                Some(_) => "down",
                None => "missing",
            }
        );
    }
    for n in &lab.nodes {
        let have = actual.as_ref().and_then(|a| a.nodes.get(&n.netns));
        let ifs: Vec<String> = n
            .interfaces
            .iter()
            .map(|i| {
                let st = match have.and_then(|h| h.links.get(&i.name)) {
                    Some(l) if l.up => "up",
                    Some(_) => "down",
                    None => "missing",
                };
                let via = match &i.attachment {
                    Attachment::Bridge { bridge, .. } => format!("on {bridge}"),
                    Attachment::Cable { peer_node, .. } => format!("to {peer_node}"),
                };
                format!("{} {} {via} {st}", i.name, i.address)
            })
            .collect();
        let gw = n
            .gateway
            .map(|g| format!("; default via {g}"))
            .unwrap_or_default();
        println!(
            "  node {:<8} netns {:<10} {}{gw}{}",
            n.name,
            n.netns,
            ifs.join(", "),
            if have.is_none() {
                " [namespace missing]"
            } else {
                ""
            }
        );
    }
    for f in &lab.forwards {
        println!("  forward {f}");
    }
    for line in dataplane::status_lines(&dp) {
        println!("  {line}");
    }
    if drift.is_empty() {
        println!("  converged: yes");
    } else {
        println!("  converged: no; `netlab up` would:");
        for d in &drift {
            println!("    {d}");
        }
    }
    Ok(())
}

pub async fn fwd(cmd: FwdCommand) -> Result<()> {
    dataplane::fwd_command(cmd).await
}

pub async fn nat(cmd: NatCommand) -> Result<()> {
    dataplane::nat_command(cmd).await
}

pub async fn stats(state: &LabState, json_out: bool, verbose: bool) -> Result<()> {
    dataplane::stats_command(state, json_out, verbose).await
}
