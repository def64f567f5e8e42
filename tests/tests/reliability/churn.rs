//! Churn: up and down of a 20-node lab, live forward edits; the machine's resources checked afterwards.

use super::*;

/// 20 nodes on one bridge, a TCP forward to each, a UDP port range.
fn twenty_nodes() -> String {
    let mut s = String::from(
        "[[bridges]]\nname = \"v-net-0\"\nsubnet = \"192.168.15.0/24\"\ngateway = \"192.168.15.5\"\n",
    );
    for i in 0..20 {
        s += &format!(
            "[[nodes]]\nname = \"n{i}\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.{}\"\n",
            10 + i
        );
    }
    for i in 0..20 {
        s += &format!(
            "[[forwards]]\nprotocol = \"tcp\"\nport = {}\nto = \"n{i}:80\"\n",
            8000 + i
        );
    }
    s += "[[forwards]]\nprotocol = \"udp\"\nport = \"9000-9009\"\nto = \"n0:9000-9009\"\n";
    s
}

#[test]
fn churn_up_down_of_a_20_node_lab() {
    require_root();
    let _alone = exclusive();
    let cycles = repeats(5, 200);
    // A lab host of our own that outlives the cycles, so what a cycle
    // leaves on its interfaces (links, tc filters, TCX links) shows.
    let mut pair = HostPair::new("cu");
    pair.serve_http();
    let lab = Lab::new("cu", &twenty_nodes());
    let file = lab.file.to_str().unwrap().to_string();
    let host_before = host_state(&pair.host);
    let before = resources();
    let mut made = LabObjects::default();
    let (mut ups, mut downs) = (Vec::new(), Vec::new());
    let mut footprint = None;
    let mut attach = None;
    let mut namespaces = std::collections::BTreeSet::new();
    let started = Instant::now();
    for c in 0..cycles {
        let t = Instant::now();
        let out = pair.netlab_ok(&["up", "-f", &file]);
        ups.push(t.elapsed());
        assert!(out.contains("20 nodes"), "cycle {c}: {out}");
        if c == 0 || c + 1 == cycles || c % 25 == 0 {
            let seen = lab.node_ok("n7", &["curl", "-s", "-m5", "http://198.51.100.1/ip"]);
            assert_eq!(seen.trim(), "198.51.100.2", "cycle {c}");
        }
        if footprint.is_none() {
            let now = resources();
            footprint = Some((
                before.mem_kernel_view - now.mem_kernel_view,
                now.kernel_unreclaimable - before.kernel_unreclaimable,
            ));
        }
        namespaces.extend(netns_inodes(&lab.prefix));
        let o = lab_objects(&lab.name);
        // Every hook in place with one of the lab's programs: pinned TCX
        // links where the kernel has TCX, netlink filters with the lab's
        // priority (and no links) where it has not.
        let status: serde_json::Value =
            serde_json::from_str(&pair.netlab_ok(&["status", "--name", &lab.name, "--json"]))
                .unwrap();
        let (mode, hooks) = check_hooks(&pair.host, &status["dataplane"], &o.progs)
            .unwrap_or_else(|e| panic!("cycle {c}: {e}"));
        assert_eq!(mode, attach_mode(), "cycle {c}");
        // Uplink in and out, a bridge, one per node.
        assert!(
            o.progs.len() >= 4 && hooks >= 23,
            "cycle {c}: {hooks} hooks, {o:?}"
        );
        match mode.as_str() {
            "tcx" => assert_eq!(o.links.len(), hooks, "cycle {c}: {o:?}"),
            _ => assert!(o.links.is_empty(), "cycle {c}: {o:?}"),
        }
        attach = Some((mode, hooks));
        made.extend(o);
        let t = Instant::now();
        pair.netlab_ok(&["down", "--name", &lab.name]);
        downs.push(t.elapsed());
        let left = lab.leftovers();
        assert!(left.is_empty(), "cycle {c} left {left:?}");
        let now = host_state(&pair.host);
        assert_eq!(now, host_before, "cycle {c}: the lab host is not as it was");
    }
    let total = started.elapsed();
    let left = still_loaded(&made, Duration::from_secs(60));
    let quiet = quiesce(pick(Duration::from_secs(3), Duration::from_secs(60)));
    let (after, off) = settle(&before, Duration::from_secs(60));
    figure(
        "churn up/down (20 nodes, 30 forwarded ports)",
        format!(
            "{cycles} cycles in {total:.1?}: {:.2} s/cycle (up mean {:.2?} max {:.2?}, down mean {:.2?} max {:.2?}); {} hooks attached as {} each cycle; {} programs, {} maps and {} TCX links made over the cycles, {} still loaded after down; lab footprint while up {} MiB ({} MiB of it slab+percpu)",
            total.as_secs_f64() / cycles as f64,
            mean(&ups),
            max(&ups),
            mean(&downs),
            max(&downs),
            attach.as_ref().map_or(0, |a| a.1),
            attach.as_ref().map_or("?", |a| a.0.as_str()),
            made.progs.len(),
            made.maps.len(),
            made.links.len(),
            left.len(),
            footprint.unwrap_or_default().0 / 1024,
            footprint.unwrap_or_default().1 / 1024
        ),
    );
    figure("churn up/down", format!("before: {}", before.line()));
    figure(
        "churn up/down",
        format!(
            "after:  {} (read once memory stopped coming back, {quiet:.0?})",
            after.line()
        ),
    );
    assert!(left.is_empty(), "still loaded after down: {left:?}");
    // Every node of every cycle had its namespace, and no process stayed
    // in one (which would keep it, its devices and its files alive).
    // (The kernel gives a freed namespace's number to the next one: 20.)
    assert!(
        namespaces.len() >= 20,
        "{} namespaces seen",
        namespaces.len()
    );
    let stayed = processes_in(&namespaces);
    assert!(
        stayed.is_empty(),
        "processes left in the lab's namespaces: {stayed:?}"
    );
    assert!(off.is_empty(), "the machine did not come back: {off:?}");
    // (The machine-wide count of named namespaces is printed, not compared:
    // other users' tests make and remove theirs meanwhile; this lab's own
    // were checked after every cycle.)
}

#[test]
fn churn_fwd_add_del_on_a_live_lab() {
    require_root();
    let _alone = exclusive();
    let cycles = repeats(20, 200);
    let check_every = pick(1, 5);
    let lab = Lab::seeds("cw");
    lab.up();
    lab.http_server("blue", 80);
    let name = lab.name.clone();
    let progs_before = pinned_programs(&name);
    let objects_before = lab_objects(&name);
    let fwd_before = lab.netlab_ok(&["fwd", "list", "--name", &name, "--json"]);
    let before = resources();
    let mut checks = 0;
    let started = Instant::now();
    for c in 0..cycles {
        let range = c % 2 == 1;
        let port = if range {
            "9000-9099".to_string()
        } else {
            (8100 + c % 50).to_string()
        };
        lab.netlab_ok(&["fwd", "add", "--name", &name, "tcp", &port, "blue:80"]);
        let probe = if range {
            9000 + (c * 7) % 100
        } else {
            8100 + c % 50
        };
        let url = format!("http://198.51.100.2:{probe}/ip");
        if c % check_every == 0 {
            let seen = lab.wan_ok(&["curl", "-s", "-m5", &url]);
            assert_eq!(seen.trim(), "198.51.100.1", "cycle {c}");
        }
        lab.netlab_ok(&["fwd", "del", "--name", &name, "tcp", &port]);
        if c % check_every == 0 {
            // Refused by the lab host's own stack (curl's exit 7): the
            // port is no longer forwarded (a timeout would prove nothing).
            let o = lab.wan(&["curl", "-s", "-m5", &url]);
            assert_eq!(
                o.status.code(),
                Some(7),
                "cycle {c}: still forwarded\n{}",
                text(&o)
            );
            checks += 1;
        }
    }
    let total = started.elapsed();
    let fwd_after = lab.netlab_ok(&["fwd", "list", "--name", &name, "--json"]);
    assert_eq!(fwd_after, fwd_before);
    let status: serde_json::Value =
        serde_json::from_str(&lab.netlab_ok(&["status", "--name", &name, "--json"])).unwrap();
    let ports = status["dataplane"]["forward_ports"]
        .as_u64()
        .or_else(|| status["forward_ports"].as_u64());
    assert_eq!(
        pinned_programs(&name),
        progs_before,
        "fwd reloaded programs"
    );
    let objects_after = lab_objects(&name);
    assert_eq!(objects_after.maps, objects_before.maps, "fwd replaced maps");
    assert_eq!(
        objects_after.links, objects_before.links,
        "fwd replaced links"
    );
    let (after, off) = settle(&before, Duration::from_secs(60));
    figure(
        "churn fwd add/del",
        format!(
            "{cycles} add/del cycles (single ports and a 100-port range) in {total:.1?}: {:.3} s/cycle, {checks} cycles checked from the wan side; forward_ports after: {ports:?}; programs and maps unchanged",
            total.as_secs_f64() / cycles as f64
        ),
    );
    figure("churn fwd add/del", format!("before: {}", before.line()));
    figure("churn fwd add/del", format!("after:  {}", after.line()));
    assert!(off.is_empty(), "the machine did not come back: {off:?}");
    if let Some(p) = ports {
        assert_eq!(p, 1, "FORWARD_RULES holds stale entries");
    }
    lab.down();
}
