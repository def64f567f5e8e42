//! Crash recovery (SIGKILL during `up`) and an upgrade of the programs under load.

use super::*;

#[test]
fn crash_recovery_sigkill_during_up() {
    require_root();
    let _h = heavy();
    let points = repeats(10, 50);
    let lab = Lab::seeds("kr");
    let file = lab.file.to_str().unwrap().to_string();
    // An uninterrupted `up`, measured three times; kills are spread over the median.
    let mut runs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        lab.up();
        runs.push(t.elapsed());
        lab.down();
    }
    runs.sort();
    let full = runs[1];
    let mut completed = 0;
    let mut recoveries = Vec::new();
    let started = Instant::now();
    for k in 0..points {
        let delay = full.mul_f64((k as f64 + 0.5) / points as f64);
        let mut child = Command::new(netlab_bin())
            .args(["up", "--sandbox", "-f", &file])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            completed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let t = Instant::now();
        let o = lab.netlab(&["down", "--sandbox", "--name", &lab.name]);
        assert!(
            o.status.success(),
            "down after a kill at {delay:?} failed:\n{}",
            text(&o)
        );
        let left = lab.leftovers();
        assert!(left.is_empty(), "kill at {delay:?}: left {left:?}");
        let o = lab.netlab(&["up", "--sandbox", "-f", &file]);
        assert!(
            o.status.success(),
            "up after a kill at {delay:?} and down failed:\n{}",
            text(&o)
        );
        lab.node_ok("red", &["ping", "-c1", "-W2", "198.51.100.1"]);
        let seen = lab.node_ok("blue", &["curl", "-s", "-m5", "http://198.51.100.1/ip"]);
        assert_eq!(seen.trim(), "198.51.100.2", "kill at {delay:?}");
        recoveries.push(t.elapsed());
        lab.down();
    }
    figure(
        "crash recovery (SIGKILL during up --sandbox)",
        format!(
            "uninterrupted up {full:.2?} (median of {runs:.2?}); {points} kills spread over it ({} interrupted a running up, {completed} came after it had finished); every time down, up, ping and curl worked; recovery (down+up+checks) mean {:.2?} max {:.2?}; {:.1?} in all",
            points - completed,
            mean(&recoveries),
            max(&recoveries),
            started.elapsed()
        ),
    );
    assert!(completed < points, "no kill landed during an up");
}

#[test]
fn upgrade_under_load_swaps_programs_without_losing_a_byte() {
    require_root();
    let _h = heavy();
    let object = variant_object();
    let object = object.to_str().unwrap().to_string();
    let lab = Lab::new(
        "ug",
        &format!(
            "{SEEDS_BODY}\n[[forwards]]\nprotocol = \"tcp\"\nport = 7100\nto = \"blue:7100\"\n"
        ),
    );
    let file = lab.file.to_str().unwrap().to_string();
    lab.up();
    // Every transfer holds its last chunk back until both swaps are done:
    // they run through both whatever an `up` takes (seconds in an emulated
    // VM), and the swaps land under load when the machine keeps pace.
    let hold = Hold::new();
    let _release = hold.released_on_drop();
    let wan_srv = TransferServer::start(&lab.wan_netns(), 7200, Some(hold.clone()));
    let blue_srv = TransferServer::start(&lab.netns("blue"), 7100, None);
    let len: u64 = pick(24 << 20, 128 << 20);
    // The swaps come `gap` apart; the transfers are paced to last `secs`
    // times the time scale.
    let gap = Duration::from_secs_f64(pick(9.0, 45.0) / 3.0);
    let secs: f64 = pick(9.0, 45.0) * time_scale();
    let rate = (len as f64 / secs) as u64;
    let ids0 = pinned_programs(&lab.name);
    let stats0 = stats(&lab);
    let (red, blue, wan) = (lab.netns("red"), lab.netns("blue"), lab.wan_netns());
    let (h1, h3) = (Some(hold.clone()), Some(hold.clone()));
    let transfers = vec![
        (
            "red uploads to the wan (masquerade)",
            thread::spawn(move || transfer(&red, sa(WAN, 7200), b'U', 1, len, rate, h1)),
        ),
        (
            "blue downloads from the wan (masquerade)",
            thread::spawn(move || transfer(&blue, sa(WAN, 7200), b'D', 2, len, rate, None)),
        ),
        (
            "the wan uploads to blue (port forward)",
            thread::spawn(move || transfer(&wan, sa(UPLINK, 7100), b'U', 3, len, rate, h3)),
        ),
    ];
    thread::sleep(gap);
    let t = Instant::now();
    let o = netlab_env(
        &[("NETLAB_EBPF_OBJECT", &object)],
        &["up", "--sandbox", "-f", &file],
        Duration::from_secs(120),
    );
    let up_variant = t.elapsed();
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("(1 change)"), "{}", text(&o));
    let running_at_upgrade = transfers.iter().filter(|(_, h)| !h.is_finished()).count();
    let ids1 = pinned_programs(&lab.name);
    thread::sleep(gap);
    // And back to the embedded build, still under load.
    let t = Instant::now();
    let out = lab.up();
    let up_back = t.elapsed();
    assert!(out.contains("(1 change)"), "{out}");
    let running_at_downgrade = transfers.iter().filter(|(_, h)| !h.is_finished()).count();
    let ids2 = pinned_programs(&lab.name);
    hold.release();
    let mut results = Vec::new();
    for (what, h) in transfers {
        let r = h.join().unwrap();
        results.push(format!(
            "{what}: {}",
            match &r {
                Ok(t) => format!(
                    "{} MB in {:.1?}, every byte checked",
                    t.bytes >> 20,
                    t.elapsed
                ),
                Err(e) => format!("FAILED: {e}"),
            }
        ));
        assert!(r.is_ok(), "{what}: {r:?}");
    }
    let server_errors: Vec<String> = wan_srv
        .errors()
        .into_iter()
        .chain(blue_srv.errors())
        .collect();
    let stats1 = stats(&lab);
    drop(wan_srv);
    drop(blue_srv);
    let old = LabObjects {
        progs: ids0.values().chain(ids1.values()).copied().collect(),
        ..LabObjects::default()
    };
    let gone = still_loaded(&old, Duration::from_secs(60));
    figure(
        "upgrade under load",
        format!(
            "3 transfers of {} MB at {:.1} MB/s each; up with the variant object in {up_variant:.2?} ({running_at_upgrade} transfers running), back to the embedded one in {up_back:.2?} ({running_at_downgrade} running); program ids {:?} -> {:?} -> {:?}; drops {:?}",
            len >> 20,
            rate as f64 / 1e6,
            ids0.values().collect::<Vec<_>>(),
            ids1.values().collect::<Vec<_>>(),
            ids2.values().collect::<Vec<_>>(),
            drops(&delta(&stats0, &stats1))
        ),
    );
    for r in &results {
        figure("upgrade under load", r);
    }
    assert!(server_errors.is_empty(), "{server_errors:?}");
    assert_eq!(
        running_at_upgrade, 3,
        "the transfers ended before the upgrade"
    );
    assert_eq!(
        running_at_downgrade, 3,
        "the transfers ended before the second swap"
    );
    assert!(ids0.len() >= 4, "{ids0:?}");
    for (pin, id) in &ids0 {
        assert_ne!(
            ids1.get(pin),
            Some(id),
            "{pin} was not swapped by the upgrade"
        );
        assert_ne!(ids2.get(pin), ids1.get(pin), "{pin} was not swapped back");
    }
    assert_eq!(
        ids1.keys().collect::<Vec<_>>(),
        ids0.keys().collect::<Vec<_>>()
    );
    assert!(gone.is_empty(), "old programs still loaded: {gone:?}");
    assert!(drops(&delta(&stats0, &stats1)).is_empty(), "{stats1:?}");
    lab.down();
}
