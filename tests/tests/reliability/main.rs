//! Reliability suites, each in sandboxes of its own: churn (up/down and
//! live forward edits, with the machine's resources checked afterwards),
//! crash recovery (SIGKILL during `up`) and an upgrade under load, a mixed
//! soak with every payload checked and the NAT table recovering after it,
//! hostile and odd traffic from the outside, a full flow table, and
//! coexistence with other programs and rules on the lab host.
//!
//! One module per feature (churn, upgrade, soak, hostile, routed,
//! odd_traffic, full_table, coexistence); the helpers they share live in
//! `netlab_tests::reliability`, the two only they need here.
//!
//! Short forms run in `cargo xtask test`; `cargo xtask stress` runs the long
//! forms (NETLAB_STRESS=1). Every test prints its figures (past the output
//! capture) and appends them to target/reliability/figures-<short|long>.txt.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use aya::programs::{
    tc::{NlOptions, TcAttachOptions},
    TcAttachType,
};
use netlab_common::stat;
use netlab_tests::{
    in_netns, netlab_bin, ok, packet,
    reliability::{
        attach_mode, check_hooks, delta, drops, exclusive, figure, filter_programs, heavy,
        host_state, icmp_echo, icmp_socket, lab_objects, moved, nat_list, netlab_env, netns_inodes,
        pick, pinned_programs, processes_in, quiesce, raise_nofile, repeats, resources, sa, settle,
        shared, spawn_in_netns, stats, stats_when, tcp_echo, tcp_scan, tcp_segment, transfer,
        udp_echo, variant_object, without_filters, Echo, Hold, HostPair, HostState, LabObjects,
        Listener, RawSender, Rng, TransferServer, UPLINK, WAN, WAN2,
    },
    require_root, run, stdout, text, time_scale, wait_for, Lab, SEEDS_BODY, T,
};

/// Idle timeouts short enough that a test sees flows expire.
const SHORT_TIMEOUTS: &str = "
[nat.timeouts]
tcp_syn = 5
tcp_closing = 5
tcp_rst = 5
udp = 5
icmp = 5
";

fn mean(d: &[Duration]) -> Duration {
    if d.is_empty() {
        return Duration::ZERO;
    }
    d.iter().sum::<Duration>() / d.len() as u32
}

fn max(d: &[Duration]) -> Duration {
    d.iter().copied().max().unwrap_or_default()
}

/// Wait until none of `objects` is loaded, up to `wait` (times the time
/// scale); returns those still there. The kernel frees them in deferred
/// work: maps after an RCU grace period, a lab's TAILS array and the
/// programs in it once it is emptied, programs held by the links of a
/// deleted namespace once its cleanup ran, which lags while other tests
/// delete namespaces too. (Seen once, with two test runs at once: 3 TAILS
/// maps of the lab never went, with no program, pin or descriptor left
/// holding them; 29 such TAILS arrays had piled up on this machine. A
/// longer wait does not help there.)
fn still_loaded(objects: &LabObjects, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait.mul_f64(time_scale());
    loop {
        let left = objects.loaded();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn socket_addr(a: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.octets()),
        },
        sin_zero: [0; 8],
    }
}

mod churn;
mod coexistence;
mod full_table;
mod hostile;
mod odd_traffic;
mod routed;
mod soak;
mod upgrade;
