//! A mixed soak with every payload checked, then the NAT table and ports recovering.

use super::*;

#[derive(Default)]
struct Tally {
    flows: u64,
    retries: u64,
    errors: Vec<String>,
}

/// How long and how much one soak worker runs: paced at `per_sec` until
/// `until` and until `quota` flows are done (a busy machine takes longer, it
/// does not check less), but never past `limit`.
#[derive(Clone, Copy)]
struct Pace {
    per_sec: f64,
    until: Instant,
    quota: u64,
    limit: Instant,
}

/// Flows of one kind from one node, as `pace` says.
fn worker(kind: &'static str, node: u8, pace: Pace, seed: u64) -> Tally {
    let mut t = Tally::default();
    let mut rng = Rng::new(seed);
    let icmp = if kind == "icmp" {
        Some(icmp_socket().unwrap())
    } else {
        None
    };
    let start = Instant::now();
    let per_sec = pace.per_sec;
    let mut i: u64 = 0;
    let going = |t: &Tally| {
        let now = Instant::now();
        (now < pace.until || t.flows < pace.quota) && now < pace.limit && t.errors.len() < 10
    };
    while going(&t) {
        let due = start + Duration::from_secs_f64(i as f64 / per_sec);
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            thread::sleep(w);
        }
        let size = 1 + rng.below(1400) as usize;
        let msg: Vec<u8> = (0..size)
            .map(|j| (rng.next_u64() as u8) ^ (j as u8) ^ node)
            .collect();
        let r = match kind {
            "tcp" => tcp_echo(sa(WAN, 7300), &msg),
            "udp" => UdpSocket::bind("0.0.0.0:0")
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    s.set_read_timeout(Some(Duration::from_millis(200)))
                        .map_err(|e| e.to_string())?;
                    let mut tries = 0;
                    for k in 0..2 {
                        tries += udp_echo(&s, sa(WAN, 7300), &msg[..msg.len().min(900 + k)], 5)?;
                    }
                    t.retries += u64::from(tries - 2);
                    Ok(())
                }),
            _ => {
                // 0x4000 apart per node, so the two nodes' identifiers never meet.
                let id = (u16::from(node) << 14) | (i % 0x4000) as u16;
                icmp_echo(icmp.as_ref().unwrap(), WAN, id, 2, 5)
            }
        };
        match r {
            Ok(()) => t.flows += 1,
            Err(e) => t
                .errors
                .push(format!("{kind} flow {i} from node {node}: {e}")),
        }
        i += 1;
    }
    t
}

#[test]
fn soak_mixed_traffic_then_the_table_and_ports_recover() {
    require_root();
    let _h = heavy();
    raise_nofile(20000);
    let secs = pick(30u64, 300);
    let min_flows = pick(3000u64, 50000);
    // Flows per second per node and kind, a margin above what the target needs.
    let per_sec = min_flows as f64 * 1.25 / secs as f64 / 5.0;
    let lab = Lab::new("so", &format!("{SEEDS_BODY}{SHORT_TIMEOUTS}"));
    lab.up();
    let echo = Echo::start(&lab.wan_netns(), 7300);
    let stats0 = stats(&lab);
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    // A machine too slow for the pace runs on until the flows are done
    // (each worker its share of `min_flows`, with a margin for flows that
    // reuse a live tuple), within a bound.
    let limit = started + Duration::from_secs(secs).mul_f64(4.0 * time_scale());
    let mut workers = Vec::new();
    for (n, node) in ["red", "blue"].into_iter().enumerate() {
        for (kind, share) in [("tcp", 2.0), ("udp", 2.0), ("icmp", 1.0)] {
            let seed = 1000 + n as u64 * 10 + share as u64 + kind.len() as u64;
            let pace = Pace {
                per_sec: per_sec * share,
                until,
                quota: (min_flows as f64 * 1.1 * share / 10.0).ceil() as u64,
                limit,
            };
            workers.push((
                kind,
                spawn_in_netns(&lab.netns(node), move || {
                    worker(kind, n as u8 + 1, pace, seed)
                }),
            ));
        }
    }
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut retries, mut errors) = (0, Vec::new());
    for (kind, h) in workers {
        let t = h.join().unwrap();
        *by_kind.entry(kind).or_default() += t.flows;
        retries += t.retries;
        errors.extend(t.errors);
    }
    let soak_time = started.elapsed();
    let flows: u64 = by_kind.values().sum();
    let stats1 = stats(&lab);
    let d = delta(&stats0, &stats1);
    let outside_ports: BTreeSet<u16> = echo
        .peers
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.port())
        .collect();
    let from_uplink = echo.peers.lock().unwrap().iter().all(|p| p.ip() == UPLINK);
    figure(
        "soak",
        format!(
            "{flows} flows ({} distinct NAT flows: new_snat_flows) in {soak_time:.1?} from red and blue ({by_kind:?}; {:.0} flows/s), every payload checked, {retries} UDP resends, {} errors; {} TCP connections and {} UDP datagrams echoed; {} distinct outside ports; counters moved: {d:?}",
            d.get("new_snat_flows").copied().unwrap_or(0),
            flows as f64 / soak_time.as_secs_f64(),
            errors.len(),
            echo.tcp_conns.load(std::sync::atomic::Ordering::Relaxed),
            echo.udp_datagrams.load(std::sync::atomic::Ordering::Relaxed),
            outside_ports.len(),
        ),
    );
    assert!(errors.is_empty(), "{errors:#?}");
    let distinct = d.get("new_snat_flows").copied().unwrap_or(0);
    assert!(
        flows >= min_flows && distinct >= min_flows,
        "only {flows} flows ({distinct} new NAT flows)"
    );
    assert!(from_uplink, "the outside saw a lab address");
    assert!(
        drops(&stats1).is_empty(),
        "drops without a configured limit: {:?}",
        drops(&stats1)
    );
    // The flows end: the table empties (5 s timeouts) ...
    let t = Instant::now();
    let soak_flow = |f: &serde_json::Value| {
        f["original"]["dst"]
            .as_str()
            .is_some_and(|d| d.starts_with("198.51.100.1"))
    };
    let peak = nat_list(&lab).iter().filter(|f| soak_flow(f)).count();
    let mut left = peak;
    while left > 0 && t.elapsed() < Duration::from_secs(30).mul_f64(time_scale()) {
        thread::sleep(Duration::from_millis(500));
        left = nat_list(&lab).iter().filter(|f| soak_flow(f)).count();
    }
    let drained = t.elapsed();
    assert_eq!(left, 0, "flows still listed {drained:?} after the soak");
    // ... and new flows get ports again.
    let (red, blue) = (lab.netns("red"), lab.netns("blue"));
    let udp_new = spawn_in_netns(&red, || -> Result<usize, String> {
        let socks: Vec<UdpSocket> = (0..300)
            .map(|_| UdpSocket::bind("0.0.0.0:0").unwrap())
            .collect();
        for (i, s) in socks.iter().enumerate() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            udp_echo(s, sa(WAN, 7300), format!("again {i}").as_bytes(), 5)?;
        }
        Ok(socks.len())
    });
    let tcp_new = spawn_in_netns(&blue, || -> Result<usize, String> {
        for i in 0..100 {
            tcp_echo(sa(WAN, 7300), format!("again {i}").as_bytes())?;
        }
        let fd = icmp_socket().map_err(|e| e.to_string())?;
        for id in 0..20 {
            icmp_echo(&fd, WAN, 0x3000 + id, 1, 5)?;
        }
        Ok(120)
    });
    let udp_new = udp_new
        .join()
        .unwrap()
        .expect("new UDP flows after the soak");
    let tcp_new = tcp_new
        .join()
        .unwrap()
        .expect("new TCP/ICMP flows after the soak");
    let listed = nat_list(&lab).iter().filter(|f| soak_flow(f)).count();
    let stats2 = stats(&lab);
    // Each is a new flow with an outside port of its own: the 300 UDP
    // sockets are open at once and the 20 echo identifiers differ. (How
    // many are still listed depends on how long they took: 5 s timeouts.)
    let new_after = moved(&delta(&stats1, &stats2), "new_snat_flows");
    figure(
        "soak",
        format!(
            "after the soak: {peak} flows listed at the end, none after {drained:.1?}; then {udp_new} new UDP and {tcp_new} new TCP/ICMP flows all answered (new_snat_flows +{new_after}, {listed} still listed); drops {:?}",
            drops(&stats2)
        ),
    );
    assert!(
        new_after >= 320,
        "only {new_after} new NAT flows after the soak"
    );
    assert!(drops(&stats2).is_empty(), "{stats2:?}");
    drop(echo);
    lab.down();
}
