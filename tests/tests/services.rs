//! Services in nodes (`run = [...]`) end to end: a service answers after
//! `up`, `up` restarts one only when its command changed (or it stopped),
//! `logs` has its output, `status` its state, and after `down` no process
//! of any service is left.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use netlab_tests::{netlab_bin, ok, require_root, text, wait_for, Lab, SEEDS_BODY, T};
use serde_json::Value;

/// A service as `status --json` shows it, with the start time its pid had
/// when the test read it (so a later check is never fooled by pid reuse).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    command: String,
    pid: i64,
    start_time: u64,
}

/// State (`R`, `S`, `Z`, ...), process group and start time of `pid`.
fn stat(pid: i64) -> Option<(char, i64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((
        f.first()?.chars().next()?,
        f.get(2)?.parse().ok()?,
        f.get(19)?.parse().ok()?,
    ))
}

fn start_time(pid: i64) -> Option<u64> {
    stat(pid).map(|(_, _, start)| start)
}

/// What is still running of the service: its leader (same pid and start
/// time) or any process of its process group. Zombies run nothing (this
/// machine's init does not reap them).
fn anything_left(s: &Seen) -> Vec<String> {
    let mut left = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        let Some((state, pgrp, start)) = stat(pid) else {
            continue;
        };
        let leader = pid == s.pid && start == s.start_time;
        if state != 'Z' && (leader || pgrp == s.pid) {
            left.push(format!("process {pid} of `{}`", s.command));
        }
    }
    left
}

fn status(lab: &Lab) -> Value {
    let o = lab.netlab(&["status", "--json", "--name", &lab.name]);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

/// Node `node`'s services in `status --json`.
fn services(lab: &Lab, node: &str) -> Vec<Value> {
    let st = status(lab);
    let n = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .unwrap_or_else(|| panic!("no node {node} in {st}"));
    n["services"].as_array().unwrap().clone()
}

/// The running service `command` of `node`.
#[track_caller]
fn running(lab: &Lab, node: &str, command: &str) -> Seen {
    let all = services(lab, node);
    let s = all
        .iter()
        .find(|s| s["command"] == command)
        .unwrap_or_else(|| panic!("no service `{command}` in {all:?}"));
    assert_eq!(s["state"], "running", "{s}");
    let pid = s["pid"].as_i64().unwrap();
    Seen {
        command: command.into(),
        pid,
        start_time: start_time(pid).expect("a running service has a /proc entry"),
    }
}

const SERVER: &str = r#""$NETLAB" serve-http --port 80"#;
const TALKER: &str = "echo ready in $NETLAB_NODE; sleep 600";
const QUITTER: &str = "echo bye; exit 7";

#[test]
fn a_service_answers_after_up_logs_its_output_and_is_gone_after_down() {
    require_root();
    let body = SEEDS_BODY.replace(
        "address = \"192.168.15.2\"\n",
        &format!("address = \"192.168.15.2\"\nrun = ['{SERVER}']\n"),
    );
    let body = body.replace(
        "address = \"192.168.15.1\"\n",
        &format!("address = \"192.168.15.1\"\nrun = [\"{TALKER}\", \"{QUITTER}\"]\n"),
    );
    let lab = Lab::new("sv", &body);
    let out = lab.up();
    assert!(
        out.contains(&format!("started service `{SERVER}` in node blue")),
        "{out}"
    );
    // Through the forward from the outside: the server in blue answers,
    // with no step but `up`.
    wait_for("blue's service answering", Duration::from_secs(10), || {
        let o = lab.wan(&["curl", "-s", "-m", "2", "http://198.51.100.2/"]);
        String::from_utf8_lossy(&o.stdout).contains("hello from netlab serve-http in node blue")
    });
    let logs = || {
        ok(
            &[
                netlab_bin().to_str().unwrap(),
                "logs",
                "--name",
                &lab.name,
                "red",
            ],
            T,
        )
    };
    wait_for("red's output in its log", Duration::from_secs(10), || {
        logs().contains("ready in red") && logs().contains("bye")
    });
    assert!(logs().contains(&format!("--- netlab: starting `{TALKER}` in node red")));
    // The command that ended is shown with its exit code.
    wait_for("the quitter's exit code", Duration::from_secs(10), || {
        services(&lab, "red")
            .iter()
            .any(|s| s["command"] == QUITTER && s["state"] == "exited" && s["exit_code"] == 7)
    });
    let text_status = lab.netlab(&["status", "--name", &lab.name]);
    let st = String::from_utf8_lossy(&text_status.stdout);
    assert!(
        st.contains(&format!("service `{QUITTER}`: exited (code 7)")),
        "{st}"
    );
    assert!(
        st.contains(&format!("service `{TALKER}`: running (pid ")),
        "{st}"
    );
    // An exited service is drift: `up` would start it again.
    assert_eq!(text_status.status.code(), Some(3), "{st}");
    assert!(
        st.contains(&format!("start service `{QUITTER}` in node red")),
        "{st}"
    );

    follow_sees_what_a_service_writes(&lab);

    let seen = [running(&lab, "blue", SERVER), running(&lab, "red", TALKER)];
    let down = lab.netlab_ok(&["down", "--sandbox", "--name", &lab.name]);
    for s in &seen {
        assert!(
            down.contains(&format!("ended service `{}`", s.command)),
            "{down}"
        );
        let left = anything_left(s);
        assert!(left.is_empty(), "after down: {left:?}");
    }
}

/// `logs -f` prints what is appended to a service's log after it started.
fn follow_sees_what_a_service_writes(lab: &Lab) {
    let all = services(lab, "red");
    let log = all.iter().find(|s| s["command"] == TALKER).unwrap()["log"]
        .as_str()
        .unwrap()
        .to_string();
    let mut follow = Command::new(netlab_bin())
        .args(["logs", "-f", "--name", &lab.name, "red"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // What was there before is printed first; then a line written now.
    let first = rx.recv_timeout(T).expect("logs -f printed nothing");
    assert!(first.starts_with("--- netlab: starting"), "{first}");
    let marker = format!("written after -f started {}", std::process::id());
    writeln!(
        fs::OpenOptions::new().append(true).open(&log).unwrap(),
        "{marker}"
    )
    .unwrap();
    let mut seen = false;
    while let Ok(line) = rx.recv_timeout(T) {
        if line == marker {
            seen = true;
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen, "logs -f did not print a line appended to {log}");
}

#[test]
fn up_restarts_a_service_only_when_its_command_changes_or_it_stopped() {
    require_root();
    let with_run = |cmds: &[&str]| {
        let list: Vec<String> = cmds.iter().map(|c| format!("\"{c}\"")).collect();
        SEEDS_BODY.replace(
            "address = \"192.168.15.1\"\n",
            &format!("address = \"192.168.15.1\"\nrun = [{}]\n", list.join(", ")),
        )
    };
    let lab = Lab::new("sr", &with_run(&["sleep 600", "sleep 601"]));
    lab.up();
    let a = running(&lab, "red", "sleep 600");
    let b = running(&lab, "red", "sleep 601");

    // Unchanged: nothing to do, the same processes.
    let again = lab.up();
    assert!(again.contains("nothing to change"), "{again}");
    assert_eq!(running(&lab, "red", "sleep 600"), a);
    assert_eq!(running(&lab, "red", "sleep 601"), b);

    // One command changed: that one is replaced, the other kept.
    lab.write(&with_run(&["sleep 600", "sleep 602"]));
    let changed = lab.up();
    assert!(
        changed.contains("stopped service `sleep 601` in node red"),
        "{changed}"
    );
    assert_eq!(running(&lab, "red", "sleep 600"), a);
    let c = running(&lab, "red", "sleep 602");
    let left = anything_left(&b);
    assert!(left.is_empty(), "the replaced service: {left:?}");
    assert!(services(&lab, "red")
        .iter()
        .all(|s| s["command"] != "sleep 601"));

    // One stopped from outside: `up` starts it again, and only it.
    let kill = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", a.pid)])
        .status()
        .unwrap();
    assert!(kill.success());
    wait_for("the killed service's group gone", T, || {
        anything_left(&a).is_empty()
    });
    let restarted = lab.up();
    assert!(
        restarted.contains("restarted service `sleep 600` in node red (it had exited)"),
        "{restarted}"
    );
    let a2 = running(&lab, "red", "sleep 600");
    assert_ne!(a2, a);
    assert_eq!(running(&lab, "red", "sleep 602"), c);

    // A service taken out of the file is stopped.
    lab.write(&with_run(&["sleep 602"]));
    let removed = lab.up();
    assert!(
        removed.contains("stopped service `sleep 600` in node red"),
        "{removed}"
    );
    assert!(anything_left(&a2).is_empty());
    assert_eq!(running(&lab, "red", "sleep 602"), c);
    lab.down();
    assert!(anything_left(&c).is_empty());
}
