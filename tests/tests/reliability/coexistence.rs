//! Coexistence with other programs, rules and qdiscs on the lab host.

use super::*;

#[test]
fn coexistence_up_and_down_leave_foreign_rules_and_programs_alone() {
    require_root();
    let _s = shared();
    let mut pair = HostPair::new("co");
    pair.serve_http();
    let h = pair.host.clone();
    let exec = |args: &[&str]| {
        let mut full = vec!["ip", "netns", "exec", h.as_str()];
        full.extend_from_slice(args);
        ok(&full, T);
    };
    // Someone else's rules, qdisc, filters and programs on the lab host.
    exec(&[
        "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "9999", "-j", "ACCEPT",
    ]);
    exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "eth0",
        "-p",
        "udp",
        "--dport",
        "9998",
        "-j",
        "RETURN",
    ]);
    exec(&["nft", "add", "table", "inet", "foreign"]);
    exec(&[
        "nft",
        "add",
        "chain",
        "inet",
        "foreign",
        "input",
        "{ type filter hook input priority 10; policy accept; }",
    ]);
    exec(&[
        "nft", "add", "rule", "inet", "foreign", "input", "udp", "dport", "9997", "counter",
        "accept",
    ]);
    exec(&["tc", "qdisc", "add", "dev", "eth0", "clsact"]);
    // Non-BPF classifiers (this kernel has u32 but neither matchall nor
    // gact): one that matches every packet, one that matches a port.
    exec(&[
        "tc", "filter", "add", "dev", "eth0", "ingress", "u32", "match", "u32", "0", "0",
        "classid", "1:1",
    ]);
    exec(&[
        "tc", "filter", "add", "dev", "eth0", "egress", "protocol", "ip", "u32", "match", "ip",
        "sport", "9999", "0xffff", "classid", "1:3",
    ]);
    // The foreign program goes where netlab's will: a TCX program on TCX
    // kernels, a netlink bpf filter (the kernel picks its priority, as for
    // any tool that does not choose one) on the others.
    let mode = attach_mode();
    let (foreign, foreign_id) = in_netns(&h, move || {
        let mut ebpf = aya::EbpfLoader::new()
            .load(netlab::dataplane::EBPF_OBJECT)
            .unwrap();
        let p: &mut aya::programs::SchedClassifier = ebpf
            .program_mut("nl_bridge_in")
            .unwrap()
            .try_into()
            .unwrap();
        p.load().unwrap();
        let options = || match mode {
            "tcx" => TcAttachOptions::TcxOrder(aya::programs::LinkOrder::default()),
            _ => TcAttachOptions::Netlink(NlOptions::default()),
        };
        p.attach_with_options("eth0", TcAttachType::Ingress, options())
            .unwrap();
        p.attach_with_options("eth0", TcAttachType::Egress, options())
            .unwrap();
        let id = p.info().unwrap().id();
        (ebpf, id)
    });
    let forwarding = |ns: &str| {
        stdout(&run(
            &[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-n",
                "net.ipv4.ip_forward",
            ],
            T,
        ))
        .trim()
        .to_string()
    };
    let fwd_before = forwarding(&h);
    let before = host_state(&h);
    assert!(before.filters_ingress.contains("u32"), "{before:#?}");
    assert!(before.filters_egress.contains("u32"), "{before:#?}");
    let foreign_filter = format!(" nl_bridge_in direct-action not_in_hw id {foreign_id} ");
    if mode == "tcx" {
        assert_eq!(before.tcx_ingress, [foreign_id], "{before:#?}");
        assert_eq!(before.tcx_egress, [foreign_id], "{before:#?}");
    } else {
        assert!(before.tcx_ingress.is_empty() && before.tcx_egress.is_empty());
        assert!(
            before.filters_ingress.contains(&foreign_filter)
                && before.filters_egress.contains(&foreign_filter),
            "{before:#?}"
        );
    }
    let lab = Lab::seeds("co");
    let file = lab.file.to_str().unwrap().to_string();
    pair.netlab_ok(&["up", "-f", &file]);
    let status: serde_json::Value =
        serde_json::from_str(&pair.netlab_ok(&["status", "--name", &lab.name, "--json"])).unwrap();
    assert_eq!(status["dataplane"]["attach"], mode, "{status:#}");
    // Netlab's netlink filters carry the lab's priority (none on TCX).
    let pref = (mode == "netlink").then(|| {
        let p = status["dataplane"]["hooks"][0]["priority"]
            .as_u64()
            .unwrap() as u16;
        assert!(
            !before.filters_ingress.contains(&format!(" pref {p} "))
                && !before.filters_egress.contains(&format!(" pref {p} ")),
            "the foreign filters have the lab's priority {p}: {before:#?}"
        );
        p
    });
    // The lab host as the foreign rules, filters and programs make it, and
    // netlab's own programs on eth0 (ingress, egress), told apart by mode.
    let split = |s: &HostState| -> (HostState, Vec<u32>, Vec<u32>) {
        let mut theirs = s.clone();
        let (ours_in, ours_out) = match pref {
            None => {
                theirs.tcx_ingress.retain(|id| *id == foreign_id);
                theirs.tcx_egress.retain(|id| *id == foreign_id);
                let ours = |v: &[u32]| v.iter().copied().filter(|id| *id != foreign_id).collect();
                (ours(&s.tcx_ingress), ours(&s.tcx_egress))
            }
            Some(p) => {
                theirs.filters_ingress = without_filters(&s.filters_ingress, p);
                theirs.filters_egress = without_filters(&s.filters_egress, p);
                (
                    filter_programs(&s.filters_ingress, p),
                    filter_programs(&s.filters_egress, p),
                )
            }
        };
        (theirs, ours_in, ours_out)
    };
    // Only what a lab adds may differ: its bridge and veths, routes and addresses.
    let foreign_diff = |a: &HostState, b: &HostState| -> Vec<&'static str> {
        let mut diff = Vec::new();
        if a.iptables != b.iptables {
            diff.push("iptables-save");
        }
        if a.nft != b.nft {
            diff.push("nft list ruleset");
        }
        if a.qdiscs != b.qdiscs {
            diff.push("tc qdisc show dev eth0");
        }
        if a.filters_ingress != b.filters_ingress {
            diff.push("tc filter show dev eth0 ingress");
        }
        if a.filters_egress != b.filters_egress {
            diff.push("tc filter show dev eth0 egress");
        }
        if a.tcx_ingress != b.tcx_ingress {
            diff.push("TCX ingress of eth0");
        }
        if a.tcx_egress != b.tcx_egress {
            diff.push("TCX egress of eth0");
        }
        diff
    };
    // Theirs untouched; ours there, one program each way; on TCX behind theirs.
    let check = |s: &HostState, when: &str| {
        let (theirs, ours_in, ours_out) = split(s);
        let diff = foreign_diff(&before, &theirs);
        assert!(
            diff.is_empty(),
            "{when}: {diff:?} changed\nbefore {before:#?}\n{when} {s:#?}"
        );
        assert_eq!((ours_in.len(), ours_out.len()), (1, 1), "{when}: {s:#?}");
        if pref.is_none() {
            assert_eq!(s.tcx_ingress.first(), Some(&foreign_id), "{when}: {s:#?}");
            assert_eq!(s.tcx_egress.first(), Some(&foreign_id), "{when}: {s:#?}");
        }
        (ours_in, ours_out)
    };
    let during = host_state(&h);
    let ours_during = check(&during, "during");
    // The lab works with them in place.
    let seen = lab.node_ok("red", &["curl", "-s", "-m5", "http://198.51.100.1/ip"]);
    assert_eq!(seen.trim(), "198.51.100.2");
    lab.http_server("blue", 80);
    let seen = stdout(&run(
        &[
            "ip",
            "netns",
            "exec",
            &pair.wan,
            "curl",
            "-s",
            "-m5",
            "http://198.51.100.2/ip",
        ],
        T,
    ));
    assert_eq!(seen.trim(), "198.51.100.1");
    let again = pair.netlab_ok(&["up", "-f", &file]);
    assert!(again.contains("nothing to change"), "{again}");
    // (A second up loads the programs again and swaps them in, so netlab's
    // own program ids change; everything else stays.)
    let again_state = host_state(&h);
    let ours_again = check(&again_state, "after a second up");
    assert_eq!(again_state.links, during.links);
    pair.netlab_ok(&["down", "--name", &lab.name]);
    let after = host_state(&h);
    assert_eq!(after, before, "down did not leave the lab host as it was");
    let extra = pick(0, 20);
    for c in 0..extra {
        pair.netlab_ok(&["up", "-f", &file]);
        check(&host_state(&h), &format!("cycle {c}"));
        pair.netlab_ok(&["down", "--name", &lab.name]);
        assert_eq!(host_state(&h), before, "cycle {c}");
    }
    let fwd_after = forwarding(&h);
    assert_eq!(
        fwd_after, fwd_before,
        "down left net.ipv4.ip_forward changed"
    );
    figure(
        "coexistence",
        format!(
            "with an iptables filter and nat rule, an nft table, a clsact qdisc with u32 filters and a foreign {} on eth0 (both ways): up, a second up and down{} left iptables-save, nft list ruleset, tc qdisc/filter and the foreign program (id {foreign_id}) as they were; netlab's own on eth0 (ingress, egress): {:?}, after a second up {:?}, after down none; the lab worked both ways; net.ipv4.ip_forward {fwd_before} -> {fwd_after} (down turns forwarding off again only where up turned it on)",
            match pref {
                None => "TCX program".to_string(),
                Some(p) => format!("netlink bpf filter (netlab's filters: priority {p})"),
            },
            if extra > 0 { format!(", then {extra} more up/down cycles,") } else { String::new() },
            ours_during,
            ours_again,
        ),
    );
    drop(foreign);
    drop(lab);
    drop(pair);
}
