//! A full flow table: new flows refused and counted, established ones kept, recovery.

use super::*;

/// Receive on every fill socket (non-blocking) until `done` says the
/// answers are complete, or 20 s (times the time scale) passed; which
/// sockets got an answer.
fn fill_answers(socks: &[UdpSocket], mut done: impl FnMut(&[bool]) -> bool) -> Vec<bool> {
    let mut answers = vec![false; socks.len()];
    let deadline = Instant::now() + Duration::from_secs(20).mul_f64(time_scale());
    loop {
        for (s, got) in socks.iter().zip(answers.iter_mut()) {
            let mut buf = [0u8; 64];
            while s.recv_from(&mut buf).is_ok() {
                *got = true;
            }
        }
        if done(&answers) || Instant::now() > deadline {
            return answers;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// One datagram on every fill socket, in batches each accounted for
/// (answered, or refused: `refused()` counts the table's refusals) before
/// the next. A burst of thousands would overflow the veth's backlog
/// (netdev_max_backlog) under emulation and be dropped before any program
/// saw it, neither admitted nor refused; a datagram unaccounted for after a
/// wait is sent again (an admitted flow answers again; a refused one is
/// counted again, which only ends the batch's wait sooner). Which sockets
/// got an answer.
fn paced_fill(socks: &[UdpSocket], mut refused: impl FnMut() -> u64) -> Vec<bool> {
    // Well under the default backlog of 1,000 packets per CPU.
    const BATCH: usize = 384;
    let mut answers = vec![false; socks.len()];
    for (batch, got) in socks.chunks(BATCH).zip(answers.chunks_mut(BATCH)) {
        let refused_before = refused();
        // Reading the counters costs a process: only when answers fall short.
        let mut accounted = |got: &[bool]| {
            let answered = got.iter().filter(|a| **a).count() as u64;
            answered == got.len() as u64
                || answered + refused() - refused_before >= got.len() as u64
        };
        for round in 0..4 {
            for (s, _) in batch.iter().zip(got.iter()).filter(|(_, g)| !**g) {
                let _ = s.send_to(format!("fill {round}").as_bytes(), (WAN, 7600));
            }
            let deadline = Instant::now() + Duration::from_secs(2).mul_f64(time_scale());
            while !accounted(receive_answers(batch, got)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            if accounted(got) {
                break;
            }
        }
    }
    answers
}

/// Marks the fill sockets that have an answer waiting (non-blocking).
fn receive_answers<'a>(socks: &[UdpSocket], got: &'a mut [bool]) -> &'a [bool] {
    for (s, g) in socks.iter().zip(got.iter_mut()) {
        let mut buf = [0u8; 64];
        while s.recv_from(&mut buf).is_ok() {
            *g = true;
        }
    }
    got
}

// Caught a regression at 64d0285 (the unpinned TAILS array emptied when `up`
// exited, so the collection never ran and a full table never drained), fixed in 7f80313.
#[test]
fn full_nat_table_refuses_new_flows_and_keeps_established_ones() {
    require_root();
    let _h = heavy();
    raise_nofile(20000);
    let max_flows = 4096u32;
    let limit = netlab::dataplane::flow_limit(max_flows) / 2;
    // The fill and the checks while full must end before the first fill
    // flows expire: 8 s on a host, scaled under emulation.
    let udp_timeout = (8.0 * time_scale()).ceil() as u64;
    let lab = Lab::new(
        "tf",
        &format!("{SEEDS_BODY}\n[nat]\nmax_flows = {max_flows}\n[nat.timeouts]\nudp = {udp_timeout}\nicmp = {udp_timeout}\n"),
    );
    lab.up();
    let echo = Echo::start(&lab.wan_netns(), 7600);
    // Established flows first.
    let mut established: Vec<TcpStream> = (0..8)
        .map(|_| {
            in_netns(&lab.netns("red"), || {
                TcpStream::connect((WAN, 7600)).unwrap()
            })
        })
        .collect();
    let echo_all = |conns: &mut Vec<TcpStream>, tag: &str| -> Result<(), String> {
        for (i, c) in conns.iter_mut().enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let msg = format!("{tag} {i}");
            c.write_all(msg.as_bytes())
                .map_err(|e| format!("{tag} {i}: {e}"))?;
            let mut back = vec![0u8; msg.len()];
            c.read_exact(&mut back)
                .map_err(|e| format!("{tag} {i}: {e}"))?;
            if back != msg.as_bytes() {
                return Err(format!("{tag} {i}: echo differs"));
            }
        }
        Ok(())
    };
    echo_all(&mut established, "before").unwrap();
    let s0 = stats(&lab);
    // Fill: more new UDP flows than the table admits, from blue.
    let want = limit as usize + 400;
    let fill_socks = in_netns(&lab.netns("blue"), move || {
        (0..want)
            .map(|_| {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect::<Vec<_>>()
    });
    let fill_started = Instant::now();
    let answers = paced_fill(&fill_socks, || {
        moved(&delta(&s0, &stats(&lab)), "drop_table_full")
    });
    let fill_took = fill_started.elapsed();
    let s1 = stats(&lab);
    let answered = answers.iter().filter(|a| **a).count();
    let listed_full = nat_list(&lab).len();
    // The table stays full only while the fill's flows live (udp_timeout
    // after their last packet): a datagram on each fill socket refreshes
    // the admitted ones (the refused are refused again) right before the
    // checks, which must end within the timeout (measured) to mean anything.
    let refreshed = Instant::now();
    for (i, s) in fill_socks.iter().enumerate() {
        let _ = s.send_to(format!("again {i}").as_bytes(), (WAN, 7600));
    }
    // New flows are refused and counted; established ones keep working.
    let new_tcp = in_netns(&lab.netns("red"), || {
        TcpStream::connect_timeout(&sa(WAN, 7600), Duration::from_secs(1)).is_ok()
    });
    let established_ok = echo_all(&mut established, "while full");
    let checks_took = refreshed.elapsed();
    let s2 = stats(&lab);
    // Recovery: the UDP flows expire and collection frees their entries,
    // `udp_timeout` after their last packet: the refresh's answers.
    fill_answers(&fill_socks, |got| {
        answers
            .iter()
            .zip(got)
            .all(|(first, again)| !first || *again)
    });
    thread::sleep(Duration::from_secs(udp_timeout + 2));
    drop(fill_socks);
    let s3 = stats(&lab);
    let recovered = in_netns(&lab.netns("red"), || -> Result<usize, String> {
        for i in 0..100 {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            udp_echo(&s, sa(WAN, 7600), format!("recovered {i}").as_bytes(), 5)?;
        }
        for i in 0..10 {
            tcp_echo(sa(WAN, 7600), format!("recovered tcp {i}").as_bytes())?;
        }
        Ok(110)
    });
    let established_after = echo_all(&mut established, "after");
    let s4 = stats(&lab);
    let full = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
        b.get("drop_table_full").copied().unwrap_or(0)
            - a.get("drop_table_full").copied().unwrap_or(0)
    };
    figure(
        "full NAT table",
        format!(
            "max_flows {max_flows} (admits {limit} flows on {} CPUs): {want} new UDP flows sent in {fill_took:.1?}, {answered} answered, drop_table_full +{} ({listed_full} flows listed); 8 established TCP flows while full: {}; a new TCP connection while full: {}, drop_table_full +{}; after {udp_timeout} s idle: {}, drop_table_full +{} meanwhile; established after: {}; gc runs {}, freed {}",
            aya::util::nr_cpus().map(|n| n.to_string()).unwrap_or_default(),
            full(&s0, &s1),
            if established_ok.is_ok() { "all echoed" } else { "FAILED" },
            if new_tcp { "connected (!)" } else { "refused" },
            full(&s1, &s2),
            match &recovered { Ok(n) => format!("{n} new flows all answered"), Err(e) => format!("FAILED {e}") },
            full(&s3, &s4),
            if established_after.is_ok() { "all echoed" } else { "FAILED" },
            s4.get(stat::NAMES[stat::GC_RUNS as usize]).copied().unwrap_or(0),
            s4.get(stat::NAMES[stat::GC_FREED as usize]).copied().unwrap_or(0),
        ),
    );
    assert!(
        fill_took < Duration::from_secs(udp_timeout),
        "the fill took {fill_took:?}: its first flows may have expired meanwhile"
    );
    assert!(
        checks_took < Duration::from_secs(udp_timeout),
        "the checks while full took {checks_took:?}: the fill's flows may have expired meanwhile"
    );
    assert!(full(&s0, &s1) > 0, "the table never filled");
    assert!(
        answered <= limit as usize,
        "{answered} flows admitted, limit {limit}"
    );
    assert!(
        answered + 8 >= limit as usize * 9 / 10,
        "only {answered} flows admitted"
    );
    established_ok.expect("established flows while the table is full");
    assert!(!new_tcp, "a new flow was admitted into a full table");
    assert!(full(&s1, &s2) > 0);
    recovered.expect("new flows after the table drained");
    established_after.expect("established flows after");
    assert_eq!(full(&s3, &s4), 0, "refusals after recovery");
    drop(established);
    drop(echo);
    lab.down();
}
