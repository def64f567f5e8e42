//! What stands in a lab's way on its lab host is refused before anything is
//! made, located in the file like the file's own problems (exit code 2):
//! a subnet over one of the host's routes, a forward of a port the host
//! listens on (naming who listens), another lab's namespace (naming that
//! lab). `check --host-netns` finds the same; `fwd add` refuses the port too.

use std::{
    process::{Child, Output},
    time::{Duration, Instant},
};

use netlab_tests::{require_root, text, Lab, SEEDS_BODY, T};

/// A lab that would put its bridge on the sandbox uplink's subnet
/// (198.51.100.0/24): on a real host this cuts the host off.
fn overlapping_body(bridge: &str) -> String {
    format!(
        r#"
[[bridges]]
name = "{bridge}"
subnet = "198.51.100.0/25"
gateway = "198.51.100.100"
masquerade = false

[[nodes]]
name = "red"
bridge = "{bridge}"
address = "198.51.100.10"
"#
    )
}

/// netlab with `args`, which must refuse with exit code 2; returns stderr.
#[track_caller]
fn refused(lab: &Lab, args: &[&str]) -> String {
    let o = lab.netlab(args);
    assert_eq!(o.status.code(), Some(2), "not refused:\n{}", text(&o));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn file_of(lab: &Lab) -> String {
    lab.file.to_str().unwrap().to_string()
}

/// Nothing of `lab` exists anywhere, and no state of it either.
#[track_caller]
fn made_nothing(lab: &Lab) {
    let left = lab.leftovers();
    assert!(left.is_empty(), "a refused up made {left:?}");
}

#[test]
fn lab_subnet_over_a_host_route_is_refused_before_anything_and_host_keeps_upstream() {
    require_root();
    let first = Lab::seeds("hcr");
    first.up();
    let host = first.host_netns();
    let second = Lab::new("hco", &overlapping_body("hco-br"));
    let file = file_of(&second);

    let err = refused(&second, &["up", "-f", &file, "--host-netns", &host]);
    assert!(
        err.contains("lab.toml:")
            && err.contains("bridges[0].subnet")
            && err.contains("198.51.100.0/24 dev eth0"),
        "the route is not named with the field's line: {err}"
    );
    made_nothing(&second);
    let links = first.host(&["ip", "-o", "link", "show", "hco-br"]);
    assert!(
        !links.status.success(),
        "the bridge was made: {}",
        text(&links)
    );
    let routes = String::from_utf8_lossy(&first.host(&["ip", "route"]).stdout).into_owned();
    assert!(!routes.contains("198.51.100.0/25"), "{routes}");
    // The lab host still reaches the outside over its uplink.
    let ping = first.host(&["ping", "-c", "1", "-W", "2", "198.51.100.1"]);
    assert!(ping.status.success(), "upstream lost: {}", text(&ping));

    // `check --host-netns` finds the same problem, the same way.
    let checked = refused(&second, &["check", "-f", &file, "--host-netns", &host]);
    let line = |s: &str| {
        s.lines()
            .find(|l| l.contains("bridges[0].subnet"))
            .map(str::to_string)
    };
    assert_eq!(line(&checked), line(&err), "check: {checked}\nup: {err}");
    // The lab that is up does not stand in its own way.
    let ok = first.netlab_ok(&["check", "-f", &file_of(&first), "--host-netns", &host]);
    assert!(ok.contains("stands in its way"), "{ok}");
    first.down();
}

/// A process listening in a namespace, ended on drop.
struct Listening(Child);

impl Listening {
    /// `python3 -m http.server PORT` in `netns`, once it accepts connections.
    fn http(lab: &Lab, netns: &str, port: u16) -> Listening {
        let port_text = port.to_string();
        let child = lab.spawn_in(
            netns,
            &[
                "python3",
                "-m",
                "http.server",
                &port_text,
                "--bind",
                "0.0.0.0",
            ],
        );
        let me = Listening(child);
        let url = format!("http://127.0.0.1:{port}/");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let o = lab.in_netns(
                netns,
                &["curl", "-s", "-o", "/dev/null", "-m", "1", &url],
                T,
            );
            if o.status.success() {
                return me;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("python3 -m http.server did not listen in {netns}");
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn forward_of_a_port_the_host_listens_on_is_refused_naming_the_process_unless_overridden() {
    require_root();
    let lab = Lab::seeds("hcl");
    lab.up();
    let file = file_of(&lab);
    let host = lab.host_netns();
    let listener = Listening::http(&lab, &host, 8081);
    // `ip netns exec` execs python3 itself: the pid is the child's.
    let who = format!("python3 (pid {})", listener.0.id());

    // At `up`: the file's forward of that port.
    let with_fwd = |extra: &str| {
        format!("{SEEDS_BODY}\n[[forwards]]\nprotocol = \"tcp\"\nport = 8081\nto = \"blue:8080\"\n{extra}")
    };
    lab.write(&with_fwd(""));
    let err = refused(&lab, &["up", "--sandbox", "-f", &file]);
    assert!(
        err.contains("forwards[1].port") && err.contains(&who) && err.contains("take_host_port"),
        "{err}"
    );

    // At `fwd add`, with the same wording and the command line's override.
    let o = lab.netlab(&[
        "fwd",
        "--name",
        &lab.name,
        "add",
        "tcp",
        "8081",
        "blue:8080",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stderr(&o).contains(&who), "{}", text(&o));
    assert!(stderr(&o).contains("--take-host-port"), "{}", text(&o));
    let listed = lab.netlab_ok(&["fwd", "--name", &lab.name, "list"]);
    assert!(!listed.contains("8081"), "refused yet added: {listed}");

    lab.netlab_ok(&[
        "fwd",
        "--name",
        &lab.name,
        "add",
        "--take-host-port",
        "tcp",
        "8081",
        "blue:8080",
    ]);
    // The override does what it says: the outside reaches blue, not python3.
    lab.http_server("blue", 8080);
    let got = lab.wan_ok(&["curl", "-s", "-m", "5", "http://198.51.100.2:8081/"]);
    assert!(got.contains(&lab.netns("blue")), "{got}");
    lab.netlab_ok(&["fwd", "--name", &lab.name, "del", "tcp", "8081"]);

    // The file's override is accepted by `up`.
    lab.write(&with_fwd("take_host_port = true\n"));
    lab.netlab_ok(&["up", "--sandbox", "-f", &file]);
    drop(listener);
    lab.down();
}

#[test]
fn namespace_of_another_lab_is_named_with_its_owner_not_a_deletion_hint() {
    require_root();
    let first = Lab::seeds("hcn");
    first.up();
    // Another lab whose nodes would take the first lab's namespaces.
    let second = Lab::seeds("hcm");
    std::fs::write(
        &second.file,
        format!(
            "name = \"{}\"\nnetns_prefix = \"{}\"\n{}",
            second.name,
            first.prefix,
            SEEDS_BODY.replace("v-net-0", "v-net-7")
        ),
    )
    .unwrap();
    let file = file_of(&second);
    let err = refused(&second, &["up", "--sandbox", "-f", &file]);
    assert_owner_named(&err, &first);
    // `check` against the first lab's host finds the same owner.
    let host = first.host_netns();
    let err = refused(&second, &["check", "-f", &file, "--host-netns", &host]);
    assert_owner_named(&err, &first);
    made_nothing(&second);
    first.netlab_ok(&["status", "--name", &first.name]);
    first.down();
}

#[track_caller]
fn assert_owner_named(err: &str, owner: &Lab) {
    let ns = owner.netns("red");
    assert!(
        err.contains(&format!("namespace `{ns}` belongs to lab {}", owner.name)),
        "{err}"
    );
    assert!(!err.contains("ip netns del"), "advises deleting: {err}");
}

#[test]
fn uplink_that_is_not_there_is_refused_before_anything_is_made() {
    require_root();
    let lab = Lab::new(
        "hcu",
        &format!("[uplink]\ninterface = \"nonexistent0\"\n{SEEDS_BODY}"),
    );
    let err = refused(&lab, &["up", "--sandbox", "-f", &file_of(&lab)]);
    assert!(
        err.contains("uplink.interface") && err.contains("no interface `nonexistent0`"),
        "{err}"
    );
    made_nothing(&lab);
}
