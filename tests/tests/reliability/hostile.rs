//! Hostile traffic from the outside: scans, unsolicited and spoofed packets, RST and FIN floods.

use super::*;

#[test]
fn hostile_port_scan_finds_only_the_forwards() {
    require_root();
    let _h = heavy();
    raise_nofile(20000);
    let lab = Lab::new(
        "ps",
        &format!(
            "{SEEDS_BODY}
[[forwards]]
protocol = \"tcp\"
port = 2222
to = \"red:22\"
[[forwards]]
protocol = \"tcp\"
port = \"15000-15002\"
to = \"blue:9000-9002\"
[[forwards]]
protocol = \"udp\"
port = 5353
to = \"red:53\"
"
        ),
    );
    lab.up();
    lab.http_server("blue", 80);
    let _listeners: Vec<Listener> = [("red", 22), ("blue", 9000), ("blue", 9001), ("blue", 9002)]
        .iter()
        .map(|(n, p)| Listener::start(&lab.netns(n), *p))
        .collect();
    let s0 = stats(&lab);
    let t = Instant::now();
    let scan = tcp_scan(
        &lab.wan_netns(),
        UPLINK,
        (1..=65535).collect(),
        4096,
        Duration::from_millis(pick(300, 1500)),
    );
    let took = t.elapsed();
    let nat_range_unforwarded = (32767 - 10000 + 1) - 3;
    let mut scan = scan;
    // A forwarded port whose answer came after the batch's wait (a busy
    // machine) was counted silent: it gets one connect with time to answer.
    let forwarded = [80u16, 2222, 15000, 15001, 15002];
    let mut late = Vec::new();
    for port in forwarded {
        if scan.open.contains(&port) {
            continue;
        }
        let connected = in_netns(&lab.wan_netns(), move || {
            TcpStream::connect_timeout(&sa(UPLINK, port), Duration::from_secs(5)).is_ok()
        });
        if connected && scan.silent > 0 {
            scan.silent -= 1;
            scan.open.push(port);
            late.push(port);
        }
    }
    scan.open.sort_unstable();
    // Every unforwarded NAT port's SYN counted (the kernel may count after
    // the scan's connect returned).
    let d = delta(
        &s0,
        &stats_when(&lab, &s0, |d| {
            moved(d, "drop_no_mapping") >= nat_range_unforwarded
        }),
    );
    figure(
        "port scan of the uplink address",
        format!(
            "65535 TCP ports in {took:.1?}: open {:?} ({late:?} of them answered after the batch's wait), refused {} (the lab host's own RST outside the NAT range), silent {} , other {}; counters moved: {d:?}",
            scan.open, scan.refused, scan.silent, scan.other
        ),
    );
    assert_eq!(scan.open, forwarded);
    assert!(
        d.get("drop_no_mapping").copied().unwrap_or(0) >= nat_range_unforwarded,
        "{d:?}"
    );
    assert!(scan.silent >= nat_range_unforwarded as usize, "{scan:?}");
    assert_eq!(scan.other, 0, "{scan:?}");
    drop(_listeners);
    lab.down();
}

fn udp_to(netns: &str, to: (Ipv4Addr, u16), n: usize) {
    let s = in_netns(netns, || UdpSocket::bind("0.0.0.0:0").unwrap());
    for i in 0..n {
        let _ = s.send_to(format!("probe {i}").as_bytes(), to);
    }
}

#[test]
fn hostile_unsolicited_spoofed_and_unmapped_packets_are_dropped_and_counted() {
    require_root();
    let _s = shared();
    let lab = Lab::seeds("hu");
    lab.up();
    lab.http_server("blue", 80);
    let wan = lab.wan_netns();
    // A wan host that routes the lab's subnet to the uplink address.
    ok(
        &[
            "ip",
            "-n",
            &wan,
            "route",
            "add",
            "192.168.15.0/24",
            "via",
            "198.51.100.2",
        ],
        T,
    );
    let raw = RawSender::new(&wan);
    let mut rng = Rng::new(77);
    let n = pick(200u64, 5000);
    // 1. Straight at the nodes: nothing gets in.
    let s0 = stats(&lab);
    // No answer at all (curl's exit 28, a timeout): neither blue nor a
    // reset from anywhere.
    let o = lab.wan(&["curl", "-s", "-m2", "http://192.168.15.2/ip"]);
    assert_eq!(
        o.status.code(),
        Some(28),
        "reached blue directly:\n{}",
        text(&o)
    );
    let o = lab.wan(&["ping", "-c3", "-i0.2", "-W1", "192.168.15.1"]);
    assert!(!o.status.success(), "pinged red directly:\n{}", text(&o));
    udp_to(&wan, (Ipv4Addr::new(192, 168, 15, 1), 9999), n as usize);
    for _ in 0..n {
        let dst = Ipv4Addr::new(192, 168, 15, 1 + rng.below(2) as u8);
        let p = packet::Ip::new(
            WAN,
            dst,
            packet::TCP,
            tcp_segment(
                40000 + rng.below(1000) as u16,
                80,
                packet::SYN,
                rng.next_u64() as u32,
                0,
            ),
        );
        raw.send(&p.bytes()).unwrap();
    }
    let s1 = stats_when(&lab, &s0, |d| moved(d, "drop_unsolicited") >= 2 * n + 3);
    let d1 = delta(&s0, &s1);
    let unsolicited = d1.get("drop_unsolicited").copied().unwrap_or(0);
    // The forward still works meanwhile.
    assert_eq!(
        lab.wan_ok(&["curl", "-s", "-m5", "http://198.51.100.2/ip"])
            .trim(),
        "198.51.100.1"
    );
    // 2. To NAT ports that have no mapping.
    let s1 = stats(&lab);
    for i in 0..n {
        let dport = 10000 + rng.below(22768) as u16;
        let sport = 1024 + rng.below(60000) as u16;
        let l4 = if i % 2 == 0 {
            packet::udp(sport, dport, b"unmapped")
        } else {
            tcp_segment(
                sport,
                dport,
                packet::ACK,
                rng.next_u64() as u32,
                rng.next_u64() as u32,
            )
        };
        let proto = if i % 2 == 0 { packet::UDP } else { packet::TCP };
        raw.send(&packet::Ip::new(WAN, UPLINK, proto, l4).bytes())
            .unwrap();
    }
    let s2 = stats_when(&lab, &s1, |d| moved(d, "drop_no_mapping") >= n);
    let d2 = delta(&s1, &s2);
    let no_mapping = d2.get("drop_no_mapping").copied().unwrap_or(0);
    // 3. A lab source arriving on the uplink: to a forwarded port, a NAT
    // port, and an echo request.
    for i in 0..n {
        let src = Ipv4Addr::new(192, 168, 15, [1, 2, 77][i as usize % 3]);
        let p = match i % 3 {
            0 => packet::Ip::new(
                src,
                UPLINK,
                packet::TCP,
                tcp_segment(
                    40000 + (i % 1000) as u16,
                    80,
                    packet::SYN,
                    rng.next_u64() as u32,
                    0,
                ),
            ),
            1 => packet::Ip::new(src, UPLINK, packet::UDP, packet::udp(5000, 20000, b"spoof")),
            _ => packet::Ip::new(
                src,
                UPLINK,
                packet::ICMP,
                packet::icmp_echo(true, 0x4242, i as u16, b"spoof"),
            ),
        };
        raw.send(&p.bytes()).unwrap();
    }
    // Every spoofed packet counted: then no forward flow can come later.
    let s3 = stats_when(&lab, &s2, |d| moved(d, "drop_spoofed_source") >= n);
    let d3 = delta(&s2, &s3);
    let spoofed = d3.get("drop_spoofed_source").copied().unwrap_or(0);
    let dnat_from_spoof = d3.get("new_dnat_flows").copied().unwrap_or(0);
    figure(
        "unsolicited, unmapped, spoofed",
        format!(
            "straight to the nodes (curl, 3 pings, {n} UDP, {n} SYNs): drop_unsolicited +{unsolicited}; {n} packets to unmapped NAT ports: drop_no_mapping +{no_mapping}; {n} lab-sourced packets on the uplink: drop_spoofed_source +{spoofed}, new DNAT flows +{dnat_from_spoof}"
        ),
    );
    assert!(unsolicited >= 2 * n + 3, "{d1:?}");
    assert!(no_mapping >= n, "{d2:?}");
    assert!(spoofed >= n, "{d3:?}");
    assert_eq!(
        dnat_from_spoof, 0,
        "a spoofed SYN made a forward flow: {d3:?}"
    );
    lab.down();
}

/// The outside port a node's flow to `dst` is translated to, from `nat list`.
/// The NAT state of the flow whose original source is `src` (ip:port).
fn flow_state(lab: &Lab, src: &str) -> Option<String> {
    nat_list(lab)
        .iter()
        .find(|f| f["original"]["src"] == src)
        .map(|f| f["state"].as_str().unwrap_or("?").to_string())
}

/// `msg` sent on `conn` and read back whole.
fn echo_once(conn: &mut TcpStream, msg: &[u8]) -> Result<(), String> {
    conn.write_all(msg).map_err(|e| e.to_string())?;
    let mut back = vec![0u8; msg.len()];
    conn.read_exact(&mut back).map_err(|e| e.to_string())?;
    if back != msg {
        return Err("echo differs".into());
    }
    Ok(())
}

fn mapped_port(lab: &Lab, src_prefix: &str, dst: &str) -> u16 {
    let list = nat_list(lab);
    let f = list
        .iter()
        .find(|f| {
            f["original"]["src"]
                .as_str()
                .is_some_and(|s| s.starts_with(src_prefix))
                && f["original"]["dst"] == dst
        })
        .unwrap_or_else(|| panic!("no flow {src_prefix}* -> {dst} in {list:#?}"));
    let t = f["translated"]["src"].as_str().unwrap();
    t.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn hostile_rst_and_fin_floods_do_not_break_live_flows() {
    require_root();
    let _h = heavy();
    let lab = Lab::new(
        "fl",
        &format!(
            "{SEEDS_BODY}\n[[forwards]]\nprotocol = \"tcp\"\nport = 7410\nto = \"blue:7410\"\n"
        ),
    );
    lab.up();
    let wan = lab.wan_netns();
    // Both transfers hold their last chunk back until the flood is over:
    // they run through all of it however long sending it takes.
    let hold = Hold::new();
    let _release = hold.released_on_drop();
    let wan_srv = TransferServer::start(&wan, 7400, None);
    let blue_srv = TransferServer::start(&lab.netns("blue"), 7410, None);
    let len: u64 = pick(16 << 20, 64 << 20);
    // Paced to last `secs` (longer by the time scale in an emulated VM,
    // where the steps before the flood take seconds).
    let secs: f64 = pick(8.0, 40.0) * time_scale();
    let rate = (len as f64 / secs) as u64;
    let transfers_started = Instant::now();
    let (red, wan2) = (lab.netns("red"), wan.clone());
    let (h1, h2) = (Some(hold.clone()), Some(hold.clone()));
    let up = thread::spawn(move || transfer(&red, sa(WAN, 7400), b'U', 11, len, rate, h1));
    let fwd = thread::spawn(move || transfer(&wan2, sa(UPLINK, 7410), b'U', 12, len, rate, h2));
    wait_for(
        "the masqueraded transfer's flow listed",
        Duration::from_secs(10),
        || {
            nat_list(&lab)
                .iter()
                .any(|f| f["original"]["dst"] == "198.51.100.1:7400")
        },
    );
    let port = mapped_port(&lab, "192.168.15.1:", "198.51.100.1:7400");
    let wan_client = wan_srv_peer_port(&blue_srv);
    let s0 = stats(&lab);
    let raw = RawSender::new(&wan);
    let mut rng = Rng::new(5);
    let n = pick(5000u64, 50000);
    let started = Instant::now();
    // Spread over most of what is left of the transfers' run, in bursts of
    // 1000 rounds: every segment is sent while both run (checked below).
    let spread = Duration::from_secs_f64(secs)
        .saturating_sub(transfers_started.elapsed())
        .mul_f64(0.6);
    let mut sent = 0u64;
    for i in 0..n {
        if i % 1000 == 0 {
            let due = spread.mul_f64(i as f64 / n as f64);
            if let Some(w) = due.checked_sub(started.elapsed()) {
                thread::sleep(w);
            }
        }
        let flags = if i % 2 == 0 {
            packet::RST
        } else {
            0x01 | packet::ACK // FIN|ACK
        };
        let (seq, ack) = (rng.next_u64() as u32, rng.next_u64() as u32);
        let segments = [
            // Random ports of the uplink address, random sources.
            (
                WAN,
                UPLINK,
                1024 + rng.below(64000) as u16,
                1 + rng.below(65535) as u16,
            ),
            // The live mapping's port, from other ports and another address.
            (WAN, UPLINK, 1024 + rng.below(64000) as u16, port),
            (WAN2, UPLINK, 7400, port),
            // The live flows' exact tuples, with random sequence numbers.
            (WAN, UPLINK, 7400, port),
            (WAN, UPLINK, wan_client, 7410),
        ];
        for (src, dst, sport, dport) in segments {
            let p = packet::Ip::new(
                src,
                dst,
                packet::TCP,
                tcp_segment(sport, dport, flags, seq, ack),
            );
            raw.send(&p.bytes()).unwrap();
            sent += 1;
        }
    }
    let flood_time = started.elapsed();
    let running = !up.is_finished() && !fwd.is_finished();
    hold.release();
    let r_up = up.join().unwrap();
    let r_fwd = fwd.join().unwrap();
    let d = delta(&s0, &stats(&lab));
    let errors: Vec<String> = wan_srv
        .errors()
        .into_iter()
        .chain(blue_srv.errors())
        .collect();
    figure(
        "RST/FIN floods",
        format!(
            "{sent} RST and FIN segments over {flood_time:.1?} (random uplink ports, the live mapping's port {port} from strangers, the live flows' exact tuples with random sequence numbers) during two {} MB transfers: masquerade {}, forward {}; counters moved: {d:?}",
            len >> 20,
            r_up.as_ref().map(|t| format!("ok in {:.1?}", t.elapsed)).unwrap_or_else(|e| e.clone()),
            r_fwd.as_ref().map(|t| format!("ok in {:.1?}", t.elapsed)).unwrap_or_else(|e| e.clone()),
        ),
    );
    assert!(running, "a transfer ended before the flood did");
    r_up.expect("the masqueraded transfer under the flood");
    r_fwd.expect("the forwarded transfer under the flood");
    assert!(errors.is_empty(), "{errors:?}");
    drop(wan_srv);
    drop(blue_srv);
    lab.down();
}

/// The wan client's port of the (single) connection a transfer server saw.
fn wan_srv_peer_port(srv: &TransferServer) -> u16 {
    wait_for(
        "a connection reaching the server",
        Duration::from_secs(5),
        || !srv.peers.lock().unwrap().is_empty(),
    );
    srv.peers.lock().unwrap()[0].port()
}

/// An idle connection gets RSTs with its exact tuple (spoofed from the
/// outside peer) but sequence numbers far outside the window: the node's TCP
/// ignores them (RFC 5961), and so must the NAT. Masqueraded (red to the
/// wan) or through a forward (the wan to blue).
fn idle_connection_survives_out_of_window_rsts(tag: &str, forwarded: bool) {
    // Default timeouts: a flow marked closed by RST is forgotten after 10 s.
    let lab = Lab::new(
        tag,
        &format!(
            "{SEEDS_BODY}\n[[forwards]]\nprotocol = \"tcp\"\nport = 7451\nto = \"blue:7451\"\n"
        ),
    );
    lab.up();
    let echo = if forwarded {
        Echo::start(&lab.netns("blue"), 7451)
    } else {
        Echo::start(&lab.wan_netns(), 7450)
    };
    // Each RST's sequence number is random: one of 200 lands in the flow's
    // 64 KiB acceptance window in about 0.3% of rounds, which rightly closes
    // the flow and says nothing about out-of-window RSTs. Such a round is
    // done again with a new connection (at most 3 rounds).
    let mut rng = Rng::new(9);
    let mut round = 0;
    let (mut conn, flow_src, s0) = loop {
        round += 1;
        let mut conn = if forwarded {
            in_netns(&lab.wan_netns(), || {
                TcpStream::connect((UPLINK, 7451)).unwrap()
            })
        } else {
            in_netns(&lab.netns("red"), || {
                TcpStream::connect((WAN, 7450)).unwrap()
            })
        };
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        echo_once(&mut conn, b"before").unwrap();
        // The segments as the outside peer would send them.
        let local = conn.local_addr().unwrap().port();
        let (flow_src, sport, dport) = if forwarded {
            (format!("198.51.100.1:{local}"), local, 7451)
        } else {
            let src = format!("192.168.15.1:{local}");
            let mapped = mapped_port(&lab, &src, "198.51.100.1:7450");
            (src, 7450, mapped)
        };
        let s0 = stats(&lab);
        let raw = RawSender::new(&lab.wan_netns());
        for i in 0..200 {
            let flags = if i % 2 == 0 {
                packet::RST
            } else {
                packet::RST | packet::ACK
            };
            let p = packet::Ip::new(
                WAN,
                UPLINK,
                packet::TCP,
                tcp_segment(
                    sport,
                    dport,
                    flags,
                    rng.next_u64() as u32,
                    rng.next_u64() as u32,
                ),
            );
            raw.send(&p.bytes()).unwrap();
        }
        let counted = |s: &BTreeMap<String, u64>| moved(&delta(&s0, s), "drop_out_of_window");
        let deadline = Instant::now() + Duration::from_secs(5).mul_f64(time_scale());
        while counted(&stats(&lab)) < 200 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
        let oow = counted(&stats(&lab));
        if oow == 200 {
            break (conn, flow_src, s0);
        }
        let state = flow_state(&lab, &flow_src);
        assert!(
            round < 3 && state.as_deref() != Some("ESTABLISHED"),
            "round {round}: {oow} of 200 RSTs counted out of window, NAT state {state:?}"
        );
        figure(
            "out-of-window RST on an idle flow",
            format!("round {round}: an RST landed in the window ({oow} of 200 out of it, NAT state {state:?}): again with a new connection"),
        );
    };
    thread::sleep(Duration::from_millis(200));
    let state = flow_state(&lab, &flow_src);
    // Idle for longer than the RST timeout (10 s), then talk again.
    thread::sleep(Duration::from_secs(12));
    let after = echo_once(&mut conn, b"after 12 s idle");
    let d = delta(&s0, &stats(&lab));
    figure(
        "out-of-window RST on an idle flow",
        format!(
            "{}: 200 RSTs with the flow's tuple and random sequence numbers (round {round}): NAT state {state:?}; after 12 s idle the connection {}; counters moved: {d:?}",
            if forwarded { "forwarded (wan to blue)" } else { "masqueraded (red to the wan)" },
            match &after {
                Ok(()) => "still echoes".to_string(),
                Err(e) => format!("is broken: {e}"),
            }
        ),
    );
    drop(conn);
    drop(echo);
    lab.down();
    after.expect("the idle connection after spoofed out-of-window RSTs");
}

// Found by this suite, fixed in 2a8ac36: any RST with the tuple closed the flow and, since 6ba05e5, freed its port at once.
#[test]
fn hostile_out_of_window_rst_does_not_end_an_idle_masqueraded_connection() {
    require_root();
    let _s = shared();
    idle_connection_survives_out_of_window_rsts("ir", false);
}

// Found by this suite, fixed in 2a8ac36: any RST with the tuple closed the flow; the forward could not be re-created mid-stream.
#[test]
fn hostile_out_of_window_rst_does_not_end_an_idle_forwarded_connection() {
    require_root();
    let _s = shared();
    idle_connection_survives_out_of_window_rsts("iw", true);
}

/// A spoofed RST with a live connection's exact tuple (random sequence
/// number, which red's TCP ignores) must not free that connection's outside
/// tuple for another flow: blue, asking for the same port (port preservation
/// tries the inside port first), must get another one, and red's connection
/// must go on.
// Found by this suite, fixed in 2a8ac36: since 6ba05e5, one blind RST freed a live tuple for another flow.
#[test]
fn hostile_spoofed_rst_does_not_hand_a_live_tuple_to_another_flow() {
    require_root();
    let _s = shared();
    let lab = Lab::seeds("rt");
    lab.up();
    let echo = Echo::start(&lab.wan_netns(), 7460);
    let mut red = in_netns(&lab.netns("red"), || {
        TcpStream::connect((WAN, 7460)).unwrap()
    });
    red.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    echo_once(&mut red, b"red before").unwrap();
    let port = mapped_port(&lab, "192.168.15.1:", "198.51.100.1:7460");
    let raw = RawSender::new(&lab.wan_netns());
    let p = packet::Ip::new(
        WAN,
        UPLINK,
        packet::TCP,
        tcp_segment(7460, port, packet::RST, 0x1234_5678, 0),
    );
    let s0 = stats(&lab);
    raw.send(&p.bytes()).unwrap();
    // The RST has been judged (and dropped) before blue asks: otherwise
    // blue could not have been handed the tuple whatever the NAT does.
    let judged = moved(
        &delta(
            &s0,
            &stats_when(&lab, &s0, |d| moved(d, "drop_out_of_window") >= 1),
        ),
        "drop_out_of_window",
    );
    let red_after_rst = echo_once(&mut red, b"red after the RST");
    // blue asks for the same port number, to the same server.
    let blue = in_netns(&lab.netns("blue"), move || -> Result<TcpStream, String> {
        // SAFETY: socket(2); handed to std at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        let s = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        let local = socket_addr(Ipv4Addr::UNSPECIFIED, port);
        let remote = socket_addr(WAN, 7460);
        // SAFETY: setsockopt/bind/connect with local values.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                &one as *const _ as *const libc::c_void,
                4,
            );
            if libc::bind(
                fd,
                &local as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            ) != 0
            {
                return Err(format!("bind: {}", std::io::Error::last_os_error()));
            }
            if libc::connect(
                fd,
                &remote as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            ) != 0
            {
                return Err(format!("connect: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(s)
    });
    let blue_result = blue.and_then(|mut b| {
        b.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        echo_once(&mut b, b"blue")
    });
    let blue_port = nat_list(&lab)
        .iter()
        .find(|f| {
            f["original"]["src"]
                .as_str()
                .is_some_and(|s| s.starts_with("192.168.15.2:"))
        })
        .and_then(|f| f["translated"]["src"].as_str().map(str::to_string));
    let red_at_end = echo_once(&mut red, b"red at the end");
    figure(
        "spoofed RST and a live tuple",
        format!(
            "red's connection on outside port {port}; one RST with its tuple and a random sequence number; red then: {:?}; blue from local port {port} to the same server: {:?}, translated to {blue_port:?}; red at the end: {:?}",
            red_after_rst, blue_result, red_at_end
        ),
    );
    drop(red);
    drop(echo);
    lab.down();
    assert_eq!(
        judged, 1,
        "the spoofed RST was not counted as out of window"
    );
    red_after_rst.expect("red right after the spoofed RST");
    blue_result.expect("blue's connection");
    assert_ne!(
        blue_port.as_deref(),
        Some(format!("198.51.100.2:{port}").as_str()),
        "blue was given red's live outside tuple"
    );
    red_at_end.expect("red's connection after blue's");
}
