//! See the lab (issue 17) end to end, in sandboxes: `netlab graph` rendered
//! by graphviz, `/metrics` checked by promtool and moving with traffic, the
//! read-only JSON API and its survival of abusive clients, and the page in
//! headless Chromium.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

use netlab_tests::{
    expect_line, in_netns, require_root, run, run_netlab_ok, spawn_netlab, stdout, text,
    time_scale, wait_for, Lab, T,
};

const WAN: &str = "198.51.100.1";
const UPLINK: &str = "198.51.100.2";
const PORT: u16 = 9480;

/// `netlab serve` in the lab's host namespace, ended on drop.
struct View {
    _server: Guard,
    host: String,
}

impl View {
    fn start(lab: &Lab, extra: &[&str]) -> View {
        let host = lab.host_netns();
        let mut args = vec!["serve", "--host-netns", host.as_str()];
        args.extend_from_slice(extra);
        let (child, said) = spawn_netlab(&args);
        expect_line(&said, "the view of the labs on lab host netns");
        let view = View {
            _server: Guard(child),
            host,
        };
        wait_for("netlab serve answering", Duration::from_secs(10), || {
            view.get("/api/labs").0 == 200
        });
        view
    }

    /// GET `path` with curl inside the lab host: (status, body).
    fn get(&self, path: &str) -> (u16, String) {
        self.request(&["-X", "GET"], path)
    }

    fn request(&self, opts: &[&str], path: &str) -> (u16, String) {
        let url = format!("http://127.0.0.1:{PORT}{path}");
        let mut args = vec!["ip", "netns", "exec", &self.host, "curl", "-s", "-m", "10"];
        args.extend_from_slice(opts);
        args.extend(["-w", "\n%{http_code}", url.as_str()]);
        let out = stdout(&run(&args, T));
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    #[track_caller]
    fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }
}

/// The value of the sample `name{labels}` in a scrape (labels as written).
fn sample(scrape: &str, series: &str) -> Option<u64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Prometheus' promtool, which `cargo xtask setup` unpacks into
/// target/tools/ (not installed system-wide: the package would start a
/// Prometheus server).
fn promtool() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/promtool");
    assert!(
        p.is_file(),
        "{} is missing: `cargo xtask setup` (which `cargo xtask test` runs) unpacks it",
        p.display()
    );
    p
}

/// Keep a scrape under target/view/`file` and check it with promtool.
#[track_caller]
fn promtool_passes(scrape: &str, file: &str) {
    let file = artifacts().join(file);
    std::fs::write(&file, scrape).unwrap();
    let check = run(
        &[
            "sh",
            "-c",
            &format!(
                "{} check metrics < {}",
                promtool().display(),
                file.display()
            ),
        ],
        T,
    );
    assert!(
        check.status.success() && stdout(&check).trim().is_empty(),
        "promtool:\n{}",
        text(&check)
    );
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/view");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn star_lab_body(n: usize) -> String {
    let mut body = String::from(
        "[[bridges]]\nname = \"br0\"\nsubnet = \"192.168.15.0/24\"\ngateway = \"192.168.15.254\"\nmasquerade = true\n",
    );
    for i in 1..=n {
        body.push_str(&format!(
            "[[nodes]]\nname = \"n{i}\"\nbridge = \"br0\"\naddress = \"192.168.15.{i}\"\n"
        ));
    }
    body.push_str("[[forwards]]\nprotocol = \"tcp\"\nport = 8080\nto = \"n1:80\"\n");
    body
}

#[test]
fn view_graph_of_default_and_30_node_labs_in_every_format() {
    require_root();
    let labs = [Lab::seeds("gr"), Lab::new("gr", &star_lab_body(30))];
    let names = [
        vec!["red".to_string(), "blue".to_string()],
        (1..=30).map(|i| format!("n{i}")).collect(),
    ];
    for (lab, nodes) in labs.iter().zip(names) {
        let file = lab.file.to_str().unwrap();
        let graph = |format: &str| run_netlab_ok(&["graph", "-f", file, "--format", format]);
        // dot: graphviz draws it, and its drawing names every node.
        let dot_file = lab.file.with_extension("dot");
        std::fs::write(&dot_file, graph("dot")).unwrap();
        let drawn = run(&["dot", "-Tsvg", dot_file.to_str().unwrap()], T);
        assert!(
            drawn.status.success(),
            "dot refused the graph:\n{}",
            text(&drawn)
        );
        let drawn = stdout(&drawn);
        let json: serde_json::Value = serde_json::from_str(&graph("json")).unwrap();
        let mermaid = graph("mermaid");
        let svg = graph("svg");
        assert!(mermaid.starts_with("flowchart LR"));
        for n in &nodes {
            assert!(
                drawn.contains(&format!(">{n}</text>")),
                "{n} not in graphviz's drawing"
            );
            assert!(
                mermaid.contains(&format!("\"{n}<br/>")),
                "{n} not in mermaid"
            );
            assert!(
                svg.contains(&format!("id=\"node-{n}\"")),
                "{n} not in the SVG"
            );
        }
        let vertices = json["vertices"].as_array().unwrap();
        assert_eq!(
            vertices.len(),
            3 + nodes.len(),
            "outside, lab host, bridge, nodes"
        );
        assert!(svg.contains("forwards (on the uplink address)"));
    }
    // The default lab is dual-stack: graphviz draws its IPv6 addresses too.
    let default =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../netlab/src/model/default-lab.toml");
    let dot = run_netlab_ok(&["graph", "-f", default.to_str().unwrap(), "--format", "dot"]);
    let dot_file = labs[0].file.with_extension("v6.dot");
    std::fs::write(&dot_file, dot).unwrap();
    let drawn = stdout(&run(&["dot", "-Tsvg", dot_file.to_str().unwrap()], T));
    for a in [
        "fdec:60cc:b1bd:15::/64",
        "fdec:60cc:b1bd:15::5/64",
        "veth&#45;red fdec:60cc:b1bd:15::1/64", // graphviz writes `-` as `&#45;`
    ] {
        assert!(
            drawn.contains(&format!(">{a}</text>")),
            "{a} not in graphviz's drawing"
        );
    }
    std::fs::write(
        artifacts().join("star30.svg"),
        run_netlab_ok(&["graph", "-f", labs[1].file.to_str().unwrap()]),
    )
    .unwrap();
}

#[test]
fn view_metrics_pass_promtool_and_move_with_traffic() {
    require_root();
    let lab = Lab::seeds("mx");
    lab.up();
    lab.http_server("blue", 80);
    let view = View::start(&lab, &[]);
    let name = &lab.name;
    let scrape = || {
        let (code, body) = view.get("/metrics");
        assert_eq!(code, 200, "{body}");
        body
    };
    let started = Instant::now();
    let before = scrape();
    let scrape_time = started.elapsed();
    promtool_passes(&before, &format!("metrics-{name}.txt"));
    // Traffic: pings out (masquerade) and HTTP in through the forward.
    lab.node_ok("red", &["ping", "-c3", "-i0.2", "-W2", WAN]);
    for _ in 0..3 {
        lab.wan_ok(&["curl", "-s", "-m5", &format!("http://{UPLINK}/")]);
    }
    let after = scrape();
    let l = format!("lab=\"{name}\"");
    for series in [
        format!("netlab_translated_packets_total{{{l},direction=\"out\",family=\"ipv4\"}}"),
        format!("netlab_translated_packets_total{{{l},direction=\"in\",family=\"ipv4\"}}"),
        format!("netlab_new_flows_total{{{l},kind=\"snat\",family=\"ipv4\"}}"),
        format!("netlab_new_flows_total{{{l},kind=\"dnat\",family=\"ipv4\"}}"),
        format!("netlab_link_transmit_packets_total{{{l},place=\"red\",interface=\"veth-red\",role=\"node\"}}"),
        format!("netlab_link_receive_bytes_total{{{l},place=\"lab-host\",interface=\"eth0\",role=\"uplink\"}}"),
    ] {
        let (a, b) = (sample(&before, &series), sample(&after, &series));
        assert!(a.is_some() && b > a, "{series}: {a:?} -> {b:?}");
    }
    assert_eq!(sample(&after, &format!("netlab_lab_up{{{l}}}")), Some(1));
    assert!(sample(
        &after,
        &format!("netlab_dropped_packets_total{{{l},reason=\"table_full\"}}")
    )
    .is_some());
    assert!(sample(
        &after,
        &format!("netlab_nat_table_limit_entries{{{l},family=\"ipv4\"}}")
    )
    .is_some_and(|v| v > 0));
    let fwd = format!("netlab_forward_flows{{{l},forward=\"tcp/80 -> blue:80\"}}");
    assert!(
        sample(&after, &fwd).is_some_and(|v| v >= 1),
        "{fwd} in\n{after}"
    );
    assert!(
        after.contains(&format!(
            "netlab_nat_flows{{{l},protocol=\"icmp\",kind=\"snat\"}}"
        )),
        "icmp snat flows in\n{after}"
    );
    println!(
        "view: /metrics of a lab up took {:?} (curl included)",
        scrape_time
    );
}

/// A forward's cumulative counts in a scrape: (packets in, packets out,
/// bytes in, bytes out); `None` when the forward is not in it.
fn forward_totals(scrape: &str, lab: &str, forward: &str) -> Option<[u64; 4]> {
    let series = |family: &str, direction: &str| {
        sample(
            scrape,
            &format!("{family}{{lab=\"{lab}\",forward=\"{forward}\",direction=\"{direction}\"}}"),
        )
    };
    Some([
        series("netlab_forward_packets_total", "in")?,
        series("netlab_forward_packets_total", "out")?,
        series("netlab_forward_bytes_total", "in")?,
        series("netlab_forward_bytes_total", "out")?,
    ])
}

/// The per-forward counters are the programs' own cumulative counts: they
/// move by what a known number of requests through the forward sends, not
/// at all for traffic elsewhere; they do not fall when the flows expire;
/// and a forward keeps its count while others come and go (`fwd add`,
/// `fwd del`) and across `up` again, while one made anew starts at 0.
#[test]
fn view_forward_counters_are_cumulative_and_stay_with_their_forward() {
    require_root();
    let body = format!(
        "{}\n[nat.timeouts]\ntcp_closing = 2\ntcp_rst = 2\n",
        netlab_tests::SEEDS_BODY
    );
    let lab = Lab::new("fc", &body);
    lab.up();
    lab.http_server("blue", 80);
    lab.http_server("red", 80);
    let view = View::start(&lab, &[]);
    let name = lab.name.clone();
    let scrape = || {
        let (code, body) = view.get("/metrics");
        assert_eq!(code, 200, "{body}");
        body
    };
    let web = "tcp/80 -> blue:80";
    let before = scrape();
    assert_eq!(
        forward_totals(&before, &name, web),
        Some([0; 4]),
        "{before}"
    );
    const REQUESTS: u64 = 3;
    for _ in 0..REQUESTS {
        lab.wan_ok(&["curl", "-s", "-m5", &format!("http://{UPLINK}/")]);
    }
    // Masqueraded traffic counts on no forward.
    lab.node_ok("red", &["ping", "-c2", "-i0.2", "-W2", WAN]);
    let after = scrape();
    let [pin, pout, bin, bout] = forward_totals(&after, &name, web).unwrap();
    // Each request: SYN, the request, its ACKs and FIN in; SYN-ACK, the
    // answer and FIN out. Bounded above by what a short exchange sends.
    assert!(
        (4 * REQUESTS..=20 * REQUESTS).contains(&pin)
            && (3 * REQUESTS..=20 * REQUESTS).contains(&pout),
        "packets in {pin}, out {pout} for {REQUESTS} requests"
    );
    assert!(bin >= 54 * pin && bout >= 54 * pout, "bytes {bin} {bout}");
    promtool_passes(&after, &format!("metrics-{name}-forwards.txt"));
    let flows = format!("netlab_forward_flows{{lab=\"{name}\",forward=\"{web}\"}}");
    wait_for(
        "the forward's flows to expire",
        Duration::from_secs(30).mul_f64(time_scale()),
        || sample(&scrape(), &flows) == Some(0),
    );
    let expired = scrape();
    assert_eq!(
        forward_totals(&expired, &name, web),
        Some([pin, pout, bin, bout]),
        "the counts fell or moved with the flows' expiry"
    );
    let kept = [pin, pout, bin, bout];

    // Another forward comes and goes: this one keeps its count.
    let other = "tcp/8080 -> red:80";
    lab.netlab_ok(&["fwd", "add", "--name", &name, "tcp", "8080", "red:80"]);
    lab.wan_ok(&["curl", "-s", "-m5", &format!("http://{UPLINK}:8080/")]);
    let with_other = scrape();
    assert_eq!(forward_totals(&with_other, &name, web), Some(kept));
    let theirs = forward_totals(&with_other, &name, other).unwrap();
    assert!(theirs[0] >= 4 && theirs[1] >= 3, "{other}: {theirs:?}");
    // (Not converged while a live forward differs from the file: exit 3.)
    let status = lab.netlab(&["status", "--name", &name, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    let counters = &status["dataplane"]["forward_counters"];
    assert_eq!(counters[0]["totals"]["packets_in"], pin, "{counters}");
    assert_eq!(counters[1]["totals"]["packets_in"], theirs[0], "{counters}");
    lab.netlab_ok(&["fwd", "del", "--name", &name, "tcp", "8080"]);
    let without = scrape();
    assert_eq!(forward_totals(&without, &name, web), Some(kept));
    assert_eq!(forward_totals(&without, &name, other), None);
    lab.up();
    assert_eq!(
        forward_totals(&scrape(), &name, web),
        Some(kept),
        "after up again"
    );
    lab.netlab_ok(&["fwd", "add", "--name", &name, "tcp", "8080", "red:80"]);
    assert_eq!(
        forward_totals(&scrape(), &name, other),
        Some([0; 4]),
        "a forward made anew starts at 0"
    );
    println!("view: {REQUESTS} requests through {web}: {pin} packets in ({bin} B), {pout} out ({bout} B)");
}

/// Connect from inside `netns`.
fn connect(netns: &str) -> TcpStream {
    let s = in_netns(netns, || TcpStream::connect(("127.0.0.1", PORT)).unwrap());
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Read until the server closes (or the read timeout); whether it closed.
fn closed_by_server(mut s: TcpStream) -> (bool, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (true, got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (true, got),
            Err(_) => return (false, got),
        }
    }
}

#[test]
fn view_api_is_read_only_and_answers_while_clients_abuse_it() {
    require_root();
    let lab = Lab::seeds("ap");
    lab.up();
    let view = View::start(&lab, &[]);
    let name = lab.name.clone();
    let labs = view.json("/api/labs");
    assert_eq!(labs[0]["lab"], name.as_str(), "{labs}");
    let status = view.json(&format!("/api/labs/{name}/status"));
    assert_eq!(status["lab"], name.as_str());
    assert_eq!(status["converged"], true, "{status}");
    let stats = view.json(&format!("/api/labs/{name}/stats"));
    let cli_stats: serde_json::Value =
        serde_json::from_str(&run_netlab_ok(&["stats", "--name", &name, "--json"])).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&stats),
        keys(&cli_stats),
        "the API's stats are the CLI's"
    );
    assert!(view.json(&format!("/api/labs/{name}/nat")).is_array());
    // Read-only: no method but GET, no body, nothing but localhost.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let (code, _) = view.request(&["-X", method], &format!("/api/labs/{name}/stats"));
        assert_eq!(code, 405, "{method}");
    }
    let (code, _) = view.request(&["-d", "x=1", "-X", "GET"], "/api/labs");
    assert_eq!(code, 413, "a body");
    let (code, _) = view.request(&["-H", "Host: rebinding.example"], "/api/labs");
    assert_eq!(code, 421, "a foreign Host");
    assert_eq!(view.get("/api/labs/nosuchlab/status").0, 404);

    // Abuse: idle connections, a slowloris, a huge head, a client that
    // never reads what it asked for.
    let host = lab.host_netns();
    let idle: Vec<TcpStream> = (0..100).map(|_| connect(&host)).collect();
    let mut slow = connect(&host);
    slow.write_all(b"GET /api/labs HTTP/1.1\r\n").unwrap();
    let slow_start = Instant::now();
    let mut huge = connect(&host);
    let head = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(256 * 1024)
    );
    let _ = huge.write_all(head.as_bytes());
    let mut greedy = connect(&host);
    let many =
        format!("GET /api/labs/{name}/graph.svg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").repeat(2000);
    greedy
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = greedy.write_all(many.as_bytes());
    let slowloris = std::thread::spawn(move || {
        for _ in 0..40 {
            if slow.write_all(b"X").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        closed_by_server(slow)
    });
    // Others still get answers, quickly, and concurrently.
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(view.get("/api/labs").0, 200);
        worst = worst.max(t.elapsed());
    }
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let host = host.clone();
            let name = name.clone();
            std::thread::spawn(move || {
                let url = format!("http://127.0.0.1:{PORT}/api/labs/{name}/stats");
                (0..5).all(|_| {
                    let o = run(
                        &[
                            "ip", "netns", "exec", &host, "curl", "-sf", "-m", "10", &url,
                        ],
                        T,
                    );
                    o.status.success()
                })
            })
        })
        .collect();
    for c in clients {
        assert!(c.join().unwrap(), "a concurrent client failed");
    }
    assert!(
        worst < Duration::from_secs(2).mul_f64(time_scale()),
        "an answer took {worst:?} under abuse"
    );
    let (closed, answer) = closed_by_server(huge);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        closed && (answer.is_empty() || answer.starts_with("HTTP/1.1 431")),
        "huge head: {answer}"
    );
    let (closed, _) = slowloris.join().unwrap();
    let slow_for = slow_start.elapsed();
    assert!(
        closed && slow_for < Duration::from_secs(9),
        "the slowloris lasted {slow_for:?}"
    );
    drop(idle);
    drop(greedy);
    println!("view: worst answer under abuse {worst:?}; the slowloris was cut after {slow_for:?}");

    // Labs come and go: the view follows.
    run_netlab_ok(&["down", "--name", &name]);
    assert_eq!(view.json("/api/labs"), serde_json::json!([]));
    assert_eq!(view.get("/metrics").0, 200);
    lab.up();
    assert_eq!(view.json("/api/labs")[0]["lab"], name.as_str());
}

#[test]
fn view_listens_on_loopback_and_warns_elsewhere() {
    require_root();
    let lab = Lab::seeds("ls");
    lab.up();
    let view = View::start(&lab, &[]);
    let listening = stdout(&lab.host(&["ss", "-ltnH"]));
    assert!(
        listening.contains(&format!("127.0.0.1:{PORT} ")),
        "{listening}"
    );
    drop(view);
    let listen = format!("0.0.0.0:{PORT}");
    let (open, said) = spawn_netlab(&[
        "serve",
        "--host-netns",
        &lab.host_netns(),
        "--listen",
        &listen,
    ]);
    let _open = Guard(open);
    let said = expect_line(&said, "WARNING");
    assert!(said.contains("WARNING: serving on 0.0.0.0:9480"), "{said}");
}

/// chromedriver's port inside the lab host.
const DRIVER_PORT: u16 = 9515;

/// Headless Chromium inside the lab host, driven over WebDriver (plain HTTP
/// and JSON to chromedriver): the page runs in real time, and the test reads
/// its DOM while it updates itself.
struct Browser {
    host: String,
    session: String,
    driver: Option<Guard>,
    /// chromedriver's and Chromium's TMPDIR (profiles, shared memory files):
    /// the test's own, removed when the browser closes.
    tmp: PathBuf,
}

impl Browser {
    fn open(lab: &Lab) -> Browser {
        let host = lab.host_netns();
        let port = format!("--port={DRIVER_PORT}");
        let tmp = std::env::temp_dir().join(netlab_tests::unique("chromium"));
        std::fs::create_dir(&tmp).unwrap();
        let tmpdir = format!("TMPDIR={}", tmp.display());
        let driver = lab.spawn_in(&host, &["env", &tmpdir, "chromedriver", &port]);
        let mut b = Browser {
            host,
            session: String::new(),
            driver: Some(Guard(driver)),
            tmp,
        };
        wait_for("chromedriver answering", Duration::from_secs(20), || {
            b.call("GET", "/status", None)["ready"] == true
        });
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"],
        }}}});
        let session = b.call("POST", "/session", Some(caps));
        b.session = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {session}"))
            .to_string();
        b
    }

    /// One WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{DRIVER_PORT}{path}");
        let body = body.map(|b| b.to_string());
        let mut args = vec![
            "ip", "netns", "exec", &self.host, "curl", "-s", "-m", "60", "-X", method,
        ];
        if let Some(b) = &body {
            args.extend(["-H", "Content-Type: application/json", "-d", b]);
        }
        args.push(&url);
        let out = stdout(&run(&args, Duration::from_secs(90)));
        serde_json::from_str::<serde_json::Value>(&out)
            .map(|v| v["value"].clone())
            .unwrap_or(serde_json::Value::Null)
    }

    fn session(
        &self,
        method: &str,
        what: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        self.call(method, &format!("/session/{}/{what}", self.session), body)
    }

    /// Run `script` (a function body) in the page; what it returns.
    fn eval(&self, script: &str) -> serde_json::Value {
        let body = serde_json::json!({"script": script, "args": []});
        self.session("POST", "execute/sync", Some(body))
    }
}

impl Browser {
    /// End the session and the driver, remove the temporary files, and
    /// check that none is left (Chromium writes there until it exits).
    fn close(mut self) {
        self.end();
        assert!(!self.tmp.exists(), "{} left behind", self.tmp.display());
    }

    fn end(&mut self) {
        if !self.session.is_empty() {
            self.call("DELETE", &format!("/session/{}", self.session), None);
            self.session.clear();
        }
        self.driver.take();
        // Chromium's last writes can race the first removal.
        for _ in 0..50 {
            if std::fs::remove_dir_all(&self.tmp).is_ok() || !self.tmp.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.end();
    }
}

#[test]
fn view_page_in_chromium_shows_the_lab_and_live_figures() {
    require_root();
    let lab = Lab::seeds("pg");
    lab.up();
    let _view = View::start(&lab, &[]);
    let browser = Browser::open(&lab);
    let t = Instant::now();
    browser.session(
        "POST",
        "url",
        Some(serde_json::json!({"url": format!("http://127.0.0.1:{PORT}/")})),
    );
    let stat = "const r = document.getElementById('stat-translated_out'); \
                return r ? Number(r.cells[1].textContent) : null;";
    wait_for("the page's first figures", Duration::from_secs(20), || {
        browser.eval(stat).is_number()
    });
    let load = t.elapsed();
    let nodes = browser
        .eval("return [...document.querySelectorAll('#picture g.node')].map(g => g.dataset.node);");
    assert_eq!(
        nodes,
        serde_json::json!(["red", "blue"]),
        "the picture's nodes"
    );
    // The page is never reloaded: this mark stays while its figures change.
    browser.eval("window.netlabTestMark = 1; return null;");
    let before = browser.eval(stat).as_u64().unwrap();
    let _pinger = Guard(lab.spawn_in(&lab.netns("red"), &["ping", "-c", "40", "-i", "0.2", WAN]));
    let red_rate = "const t = document.querySelector('#picture text.live[data-node=\"red\"][data-iface=\"veth-red\"]'); \
                    return t ? t.textContent : null;";
    let mut seen = (0, String::new());
    wait_for(
        "the page's figures moving with the pings",
        Duration::from_secs(20),
        || {
            seen = (
                browser.eval(stat).as_u64().unwrap_or(0),
                browser.eval(red_rate).as_str().unwrap_or("").to_string(),
            );
            let rate: f64 = seen
                .1
                .strip_prefix("in ")
                .and_then(|r| r.split(' ').next())
                .and_then(|r| r.parse().ok())
                .unwrap_or(0.0);
            seen.0 > before && rate > 0.0
        },
    );
    assert_eq!(
        browser.eval("return window.netlabTestMark || null;"),
        1,
        "the page reloaded"
    );
    let forward = browser.eval(
        "return document.getElementById('forwards').tBodies[0].rows[0].cells[0].textContent;",
    );
    assert_eq!(forward, "tcp/80 -> blue:80");
    let png = browser.session("GET", "screenshot", None);
    let b64 = std::env::temp_dir().join(format!("netlab-{}.png.b64", lab.name));
    std::fs::write(&b64, png.as_str().expect("a screenshot")).unwrap();
    let shot = artifacts().join("page.png");
    let decoded = run(
        &[
            "sh",
            "-c",
            &format!("base64 -d {} > {}", b64.display(), shot.display()),
        ],
        T,
    );
    let _ = std::fs::remove_file(&b64);
    assert!(decoded.status.success(), "{}", text(&decoded));
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "no screenshot at {}",
        shot.display()
    );
    browser.close();
    println!(
        "view: page to its first figures in headless chromium: {load:?}; translated_out {before} -> {}, red {}",
        seen.0, seen.1
    );
}

/// Ends a child process on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
