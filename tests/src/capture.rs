//! `netlab capture` as the suites drive it: start one and wait until it
//! captures, end it as Ctrl-C would, wait for it, read its file back with
//! tcpdump. (Defined once: the capture suite and the links suite use it.)

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{netlab_bin, ok, time_scale, Lab, T};

/// `netlab capture` with `args`, once it captures (it says so on stderr
/// after the capture is open and its filter set).
pub fn start(lab: &Lab, args: &[&str], stdout: Stdio) -> Child {
    let mut child = Command::new(netlab_bin())
        .args(["capture", "--name", &lab.name])
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("capturing on"), "capture {args:?}: {first}");
    child
}

/// Wait (bounded) for `child` to exit; its status must be success.
#[track_caller]
pub fn finished(mut child: Child, what: &str) {
    let limit = T.mul_f64(time_scale());
    let started = std::time::Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "{what} exited with {st}");
            return;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ctrl-C to a capture (it ends with its file whole).
pub fn interrupt(child: &Child) {
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// tcpdump's lines for a pcap file.
pub fn read_back(file: &Path) -> Vec<String> {
    ok(&["tcpdump", "-n", "-r", file.to_str().unwrap()], T)
        .lines()
        .map(str::to_string)
        .collect()
}

/// How many of `lines` contain `needle`.
pub fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

/// tcpdump in namespace `netns` writing what `iface` carries (that
/// `filter` selects) to `file`, once it captures (it says so on stderr
/// after its filter is set). End it with [`interrupt`].
pub fn tcpdump(netns: &str, iface: &str, filter: &str, file: &Path) -> Child {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "tcpdump", "-U", "-n", "-i", iface])
        .args(["-w", file.to_str().unwrap()])
        .args(filter.split_whitespace())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `-i any` says which link type it uses first.
    let mut said = String::new();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    for _ in 0..3 {
        err.read_line(&mut said).unwrap();
        if said.contains("listening on") {
            // Read the rest (its summary at exit) so it never meets a closed pipe.
            std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
            return child;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("tcpdump on {iface} does not capture: {said}");
}

/// tcpdump's lines for a pcap file with link-level headers (`-e`): for
/// VXLAN on its port, each inner frame is a line of its own that begins
/// with the frame's source MAC address.
pub fn read_back_ethernet(file: &Path) -> Vec<String> {
    ok(&["tcpdump", "-n", "-e", "-r", file.to_str().unwrap()], T)
        .lines()
        .map(str::to_string)
        .collect()
}
