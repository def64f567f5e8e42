//! Servers and generators. Sockets are created on threads that entered the
//! sandbox's namespaces and keep that namespace wherever they are used;
//! every loop is bounded in count and time and stops on Ctrl-C.
//!
//! - TCP throughput: iperf3 (client in the node, server in the wan).
//! - UDP packets/s: one socket per flow in the node, `sendmmsg` batches of
//!   [`UDP_BATCH`] from several threads; a sink of `SO_REUSEPORT` sockets in
//!   the wan drains with `recvmmsg` and counts. What is counted is what the
//!   sink received in the window after a warm-up (every flow is then known
//!   to the NAT).
//! - New connections/s: client threads connect, send a small request, read
//!   a small response and close with `SO_LINGER` 0 (a reset: no TIME_WAIT on
//!   either side, so the ports of the node, the wan and the NAT are never
//!   held by a closed connection's timer; the NAT keeps a reset flow for its
//!   reset timeout, 10 s, which the count bound per measurement respects).
//! - Latency: one connection, small ping-pong, every round trip timed.

use std::{
    io::{Read as _, Write as _},
    net::{
        IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
        UdpSocket,
    },
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Barrier,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use nix::sys::{
    socket::{
        self, setsockopt, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6,
        SockaddrStorage,
    },
    time::TimeVal,
};
use serde::Serialize;

use super::{interrupted, modes, Profile};
use crate::netns::Netns;

/// The wan side's UDP sink.
pub const UDP_PORT: u16 = 9000;
/// The wan side's connect/request/response/close server.
pub const CRR_PORT: u16 = 9001;
/// The wan side's echo server (latency).
pub const ECHO_PORT: u16 = 9002;
/// iperf3's server in the wan.
pub const IPERF_PORT: u16 = 5201;
/// The node's server, the target of the DNAT forwards.
pub const NODE_PORT: u16 = 7000;
/// Request, response and ping-pong message size.
pub const MESSAGE: usize = 32;
/// Datagrams per `sendmmsg`/`recvmmsg`.
pub const UDP_BATCH: usize = 32;
const SINK_BATCH: usize = 64;
const SINK_SOCKETS: usize = 2;
const CRR_SERVER_THREADS: usize = 4;
/// How often blocked server threads look at their stop flag.
const POLL: Duration = Duration::from_millis(200);

fn timeout_opt(d: Duration) -> TimeVal {
    TimeVal::new(d.as_secs() as _, d.subsec_micros() as _)
}

fn set_recv_timeout(fd: &impl AsFd, d: Duration) -> Result<()> {
    setsockopt(fd, sockopt::ReceiveTimeout, &timeout_opt(d)).context("setting SO_RCVTIMEO")
}

/// Close with a reset: no TIME_WAIT.
fn set_linger_zero(fd: &impl AsFd) -> Result<()> {
    setsockopt(
        fd,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .context("setting SO_LINGER 0")
}

fn udp_reuseport(port: u16) -> Result<UdpSocket> {
    let fd: OwnedFd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("creating a UDP socket")?;
    setsockopt(&fd, sockopt::ReusePort, &true).context("setting SO_REUSEPORT")?;
    // Room for bursts; the sink is meant never to be what drops.
    setsockopt(&fd, sockopt::RcvBufForce, &(8 << 20)).context("setting SO_RCVBUFFORCE")?;
    socket::bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)),
    )
    .with_context(|| format!("binding UDP port {port}"))?;
    Ok(UdpSocket::from(fd))
}

/// A listener on TCP `port` of one family (IPv6 only with `v6`: the IPv4
/// measurements keep IPv4 sockets of their own).
fn listen(port: u16, v6: bool) -> Result<TcpListener> {
    let l = if v6 {
        listen6(port)
    } else {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(anyhow::Error::from)
    }
    .with_context(|| {
        format!(
            "listening on TCP port {port}{}",
            if v6 { " (IPv6)" } else { "" }
        )
    })?;
    set_recv_timeout(&l, POLL)?;
    Ok(l)
}

fn listen6(port: u16) -> Result<TcpListener> {
    let fd: OwnedFd = socket::socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    let any = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0);
    socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(any))?;
    socket::listen(&fd, socket::Backlog::new(1024)?)?;
    Ok(TcpListener::from(fd))
}

/// Enter `ns` on the calling thread (a thread made for it).
fn enter(ns: &OwnedFd, what: &str) -> Result<()> {
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering the namespace of {what}"))
}

fn ns_fd(ns: &Netns) -> Result<OwnedFd> {
    ns.as_fd()
        .try_clone_to_owned()
        .with_context(|| format!("duplicating the fd of {}", ns.label()))
}

/// Servers running in one namespace until dropped.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Datagrams the UDP sink received.
    pub udp_received: Arc<AtomicU64>,
    /// Requests the connect/request/response/close servers answered.
    pub served: Arc<AtomicU64>,
}

impl Servers {
    fn empty() -> Servers {
        Servers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            udp_received: Arc::new(AtomicU64::new(0)),
            served: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The wan side: UDP sink, connection server, echo server.
    pub fn wan(ns: &Netns) -> Result<Servers> {
        let (udp, tcp) = ns
            .run(|| {
                let udp = (0..SINK_SOCKETS)
                    .map(|_| udp_reuseport(UDP_PORT))
                    .collect::<Result<Vec<_>>>()?;
                let tcp = [false, true]
                    .into_iter()
                    .map(|v6| Ok((listen(CRR_PORT, v6)?, listen(ECHO_PORT, v6)?)))
                    .collect::<Result<Vec<_>>>()?;
                Ok((udp, tcp))
            })
            .with_context(|| format!("starting the servers in {}", ns.label()))?;
        let mut s = Servers::empty();
        for sock in udp {
            set_recv_timeout(&sock, POLL)?;
            let (count, stop) = (s.udp_received.clone(), s.stop.clone());
            s.spawn("udp-sink", move || udp_sink(sock, &count, &stop))?;
        }
        for (crr, echo) in tcp {
            s.crr_server(crr)?;
            let stop = s.stop.clone();
            s.spawn("echo", move || echo_server(echo, &stop))?;
        }
        Ok(s)
    }

    /// The node side: the server the forwards lead to.
    pub fn node(ns: &Netns) -> Result<Servers> {
        let listeners = ns
            .run(|| {
                [false, true]
                    .into_iter()
                    .map(|v6| listen(NODE_PORT, v6))
                    .collect::<Result<Vec<_>>>()
            })
            .with_context(|| format!("starting the server in {}", ns.label()))?;
        let mut s = Servers::empty();
        for l in listeners {
            s.crr_server(l)?;
        }
        Ok(s)
    }

    fn spawn(&mut self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let t = thread::Builder::new()
            .name(format!("bench-{name}"))
            .spawn(f)
            .with_context(|| format!("starting the {name} thread"))?;
        self.threads.push(t);
        Ok(())
    }

    fn crr_server(&mut self, l: TcpListener) -> Result<()> {
        for _ in 0..CRR_SERVER_THREADS {
            let l = l.try_clone().context("sharing a listener")?;
            let (served, stop) = (self.served.clone(), self.stop.clone());
            self.spawn("crr-server", move || crr_server(l, &served, &stop))?;
        }
        Ok(())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn udp_sink(sock: UdpSocket, count: &AtomicU64, stop: &AtomicBool) {
    let mut bufs = vec![[0u8; 2048]; SINK_BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; zero is a valid empty header.
    let mut msgs: Vec<libc::mmsghdr> = (0..SINK_BATCH)
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let fd = sock.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs and the buffers they point to outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                SINK_BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            count.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

fn crr_server(l: TcpListener, served: &AtomicU64, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut s, _)) = l.accept() else { continue };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = s.set_nodelay(true);
        let mut buf = [0u8; MESSAGE];
        if s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {
            served.fetch_add(1, Ordering::Relaxed);
            // The client closes (with a reset); wait for it so this side
            // never closes first and never holds TIME_WAIT.
            let _ = s.read(&mut buf);
        }
    }
}

fn echo_server(l: TcpListener, stop: &Arc<AtomicBool>) {
    let mut conns = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut s, _)) = l.accept() else { continue };
        let stop = stop.clone();
        conns.push(thread::spawn(move || {
            let _ = s.set_read_timeout(Some(POLL));
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; MESSAGE];
            while !stop.load(Ordering::Relaxed) {
                match s.read_exact(&mut buf) {
                    Ok(()) => {
                        if s.write_all(&buf).is_err() {
                            break;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        }));
        conns.retain(|t| !t.is_finished());
    }
    for t in conns {
        let _ = t.join();
    }
}

/// Wait until something listens on TCP `port` in `ns` (read from the
/// namespace's /proc/net/tcp, so nothing connects to it).
pub fn wait_listening(ns: &Netns, port: u16, within: Duration) -> Result<()> {
    let needle = format!(":{port:04X} ");
    let deadline = Instant::now() + within;
    loop {
        let needle = needle.clone();
        let up = ns.run(move || {
            let mut up = false;
            // iperf3 listens on a dual-stack IPv6 socket.
            for table in ["tcp", "tcp6"] {
                let path = format!("/proc/thread-self/net/{table}");
                let text =
                    std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
                up |= text.lines().skip(1).any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && format!("{} ", f[1]).ends_with(&needle) && f[3] == "0A"
                });
            }
            Ok(up)
        })?;
        if up {
            return Ok(());
        }
        if Instant::now() > deadline || interrupted() {
            bail!("nothing listens on TCP port {port} in {}", ns.label());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A connected socket from source port `port` (bound explicitly), with a
/// bounded connect.
fn connect_from(port: u16, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let family = if dst.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let any: IpAddr = if dst.is_ipv6() {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let fd: OwnedFd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    // A blocking connect gives up after SO_SNDTIMEO.
    setsockopt(
        &fd,
        sockopt::SendTimeout,
        &timeout_opt(Duration::from_secs(1)),
    )?;
    socket::bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(any, port)),
    )?;
    socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(dst))?;
    Ok(TcpStream::from(fd))
}

/// Source ports the wan side's clients take in turn (explicitly bound, see
/// [`crr`]).
pub const CLIENT_PORTS: std::ops::Range<u32> = 20_000..61_000;

fn one_connection(dst: SocketAddr, ports: Option<&AtomicU64>) -> std::io::Result<()> {
    let mut s = match ports {
        None => TcpStream::connect_timeout(&dst, Duration::from_secs(1))?,
        Some(cursor) => {
            let mut tries = 0;
            loop {
                let n = cursor.fetch_add(1, Ordering::Relaxed);
                let port = CLIENT_PORTS.start as u64 + n % u64::from(CLIENT_PORTS.len() as u32);
                match connect_from(port as u16, dst) {
                    Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) && tries < 100 => {
                        tries += 1
                    }
                    other => break other?,
                }
            }
        }
    };
    set_linger_zero(&s).map_err(std::io::Error::other)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    let msg = [0x5au8; MESSAGE];
    s.write_all(&msg)?;
    let mut buf = [0u8; MESSAGE];
    s.read_exact(&mut buf)?;
    Ok(())
}

/// One connection from `ns` to `dst`, retried for a while: the path works.
pub fn probe(ns: &Netns, dst: SocketAddr, ports: Option<&Arc<AtomicU64>>) -> Result<()> {
    let ports = ports.cloned();
    ns.run(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match one_connection(dst, ports.as_deref()) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline || interrupted() => {
                    return Err(e).with_context(|| format!("connecting to {dst}"))
                }
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    })
    .with_context(|| format!("probing {dst} from {}", ns.label()))
}

/// Sleep `d` in slices, giving up early on Ctrl-C.
fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        super::check_interrupted()?;
        thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    Ok(())
}

fn thread_cpu() -> (Duration, Duration) {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

#[derive(Clone, Debug, Serialize)]
pub struct UdpResult {
    /// Datagrams/s the sink received in the window.
    pub delivered_pps: f64,
    /// Datagrams/s the generator handed to the kernel in the window.
    pub offered_pps: f64,
    /// Share of the generator threads' CPU time spent in user space (the
    /// generator's own work; the rest is the kernel carrying the packets).
    pub generator_user_share: f64,
    pub send_errors: u64,
    pub flows: usize,
    pub window_s: f64,
}

/// The UDP flood from `node` to `dst`, counted by `sink`.
pub fn udp_flood(node: &Netns, dst: SocketAddr, sink: &Servers, p: &Profile) -> Result<UdpResult> {
    let flows = p.udp_flows;
    let socks: Vec<UdpSocket> = node
        .run(move || {
            (0..flows)
                .map(|_| {
                    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("binding")?;
                    // (IPv4: the sink listens on an IPv4 socket.)
                    s.connect(dst).context("connecting")?;
                    Ok(s)
                })
                .collect()
        })
        .with_context(|| format!("opening {flows} UDP flows in {}", node.label()))?;
    let threads = p.udp_threads.max(1);
    let mut per_thread: Vec<Vec<UdpSocket>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, s) in socks.into_iter().enumerate() {
        per_thread[i % threads].push(s);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // Bounds: time (warm-up, window and a margin) and count.
    let hard_deadline = Instant::now() + p.udp_warmup + p.udp_window + Duration::from_secs(2);
    let cap: u64 = 200_000_000;
    let payload = vec![0xa5u8; p.udp_payload];
    let mut handles = Vec::new();
    for socks in per_thread {
        let (stop, sent, errors, payload) =
            (stop.clone(), sent.clone(), errors.clone(), payload.clone());
        handles.push(
            thread::Builder::new()
                .name("bench-udp-gen".into())
                .spawn(move || {
                    let cpu0 = thread_cpu();
                    let mut iov = libc::iovec {
                        iov_base: payload.as_ptr() as *mut _,
                        iov_len: payload.len(),
                    };
                    // SAFETY: mmsghdr is plain data; zero is a valid empty header.
                    let mut msgs: Vec<libc::mmsghdr> = (0..UDP_BATCH)
                        .map(|_| unsafe { std::mem::zeroed() })
                        .collect();
                    for m in &mut msgs {
                        m.msg_hdr.msg_iov = &mut iov;
                        m.msg_hdr.msg_iovlen = 1;
                    }
                    'outer: loop {
                        for s in &socks {
                            if stop.load(Ordering::Relaxed)
                                || interrupted()
                                || Instant::now() > hard_deadline
                                || sent.load(Ordering::Relaxed) > cap
                            {
                                break 'outer;
                            }
                            // SAFETY: msgs, iov and payload outlive the call.
                            let n = unsafe {
                                libc::sendmmsg(
                                    s.as_raw_fd(),
                                    msgs.as_mut_ptr(),
                                    UDP_BATCH as u32,
                                    0,
                                )
                            };
                            if n > 0 {
                                sent.fetch_add(n as u64, Ordering::Relaxed);
                            } else {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    let cpu1 = thread_cpu();
                    (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1)
                })
                .context("starting a generator thread")?,
        );
    }
    let measured = (|| -> Result<_> {
        sleep(p.udp_warmup)?;
        let (s0, r0, t0) = (
            sent.load(Ordering::SeqCst),
            sink.udp_received.load(Ordering::SeqCst),
            Instant::now(),
        );
        sleep(p.udp_window)?;
        let (s1, r1, t1) = (
            sent.load(Ordering::SeqCst),
            sink.udp_received.load(Ordering::SeqCst),
            Instant::now(),
        );
        Ok((s1 - s0, r1 - r0, (t1 - t0).as_secs_f64()))
    })();
    stop.store(true, Ordering::SeqCst);
    let (mut user, mut system) = (Duration::ZERO, Duration::ZERO);
    for h in handles {
        let (u, s) = h
            .join()
            .map_err(|_| anyhow!("a UDP generator thread panicked"))?;
        user += u;
        system += s;
    }
    let (offered, delivered, secs) = measured?;
    let total = (user + system).as_secs_f64();
    Ok(UdpResult {
        delivered_pps: delivered as f64 / secs,
        offered_pps: offered as f64 / secs,
        generator_user_share: if total > 0.0 {
            user.as_secs_f64() / total
        } else {
            0.0
        },
        send_errors: errors.load(Ordering::SeqCst),
        flows,
        window_s: secs,
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct CrrResult {
    pub per_second: f64,
    pub connections: u64,
    pub errors: u64,
    pub seconds: f64,
    pub threads: usize,
}

/// Connect, request, response, close, from `ns` to `dst`, by `threads`
/// clients for at most `window` and at most `max` connections, after a few
/// uncounted ones per thread.
///
/// With `ports`, every connection binds the next source port of
/// [`CLIENT_PORTS`] in turn instead of letting the kernel choose: the DNAT
/// measurements of one mode follow each other within seconds, to different
/// forwarded ports of the same node port, and the kernel's choice would
/// reuse a source port, i.e. the node-side 5-tuple of a connection reset a
/// moment earlier, which a NAT still holds for its reset timeout.
pub fn crr(
    ns: &Netns,
    dst: SocketAddr,
    threads: usize,
    window: Duration,
    max: u64,
    ports: Option<Arc<AtomicU64>>,
) -> Result<CrrResult> {
    const WARMUP: usize = 20;
    let claimed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(threads + 1));
    // When the last connection succeeded, in ns from the start.
    let last = Arc::new(AtomicU64::new(0));
    let start: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let mut handles = Vec::new();
    for _ in 0..threads {
        let fd = ns_fd(ns)?;
        let label = ns.label();
        let (claimed, done, errors, barrier, ports, last, start) = (
            claimed.clone(),
            done.clone(),
            errors.clone(),
            barrier.clone(),
            ports.clone(),
            last.clone(),
            start.clone(),
        );
        handles.push(
            thread::Builder::new()
                .name("bench-crr".into())
                .spawn(move || -> Result<()> {
                    let entered = enter(&fd, &label);
                    if entered.is_ok() {
                        for _ in 0..WARMUP {
                            let _ = one_connection(dst, ports.as_deref());
                        }
                    }
                    barrier.wait();
                    entered?;
                    let t0 = *start.get_or_init(Instant::now);
                    let deadline = t0 + window;
                    while Instant::now() < deadline && !interrupted() {
                        if claimed.fetch_add(1, Ordering::Relaxed) >= max {
                            break;
                        }
                        match one_connection(dst, ports.as_deref()) {
                            Ok(()) => {
                                done.fetch_add(1, Ordering::Relaxed);
                                let at = t0.elapsed().as_nanos() as u64;
                                last.fetch_max(at, Ordering::Relaxed);
                            }
                            Err(_) => {
                                let e = errors.fetch_add(1, Ordering::Relaxed) + 1;
                                // A path that does not work: stop early.
                                if e >= 200 && e > done.load(Ordering::Relaxed) {
                                    break;
                                }
                            }
                        }
                    }
                    Ok(())
                })
                .context("starting a client thread")?,
        );
    }
    barrier.wait();
    for h in handles {
        h.join()
            .map_err(|_| anyhow!("a client thread panicked"))??;
    }
    super::check_interrupted()?;
    let connections = done.load(Ordering::SeqCst);
    let errors = errors.load(Ordering::SeqCst);
    // Up to the last success: a thread stuck in a connect that times out
    // after the others finished does not stretch the time (its failure is
    // counted in `errors`).
    let secs = last.load(Ordering::SeqCst) as f64 / 1e9;
    if connections == 0 || secs <= 0.0 {
        bail!(
            "no connection to {dst} from {} succeeded ({errors} failed)",
            ns.label()
        );
    }
    Ok(CrrResult {
        per_second: connections as f64 / secs,
        connections,
        errors,
        seconds: secs,
        threads,
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencyResult {
    pub p50_us: f64,
    pub p99_us: f64,
    pub round_trips: usize,
}

/// Ping-pong on one connection from `ns` to the echo server at `dst`.
pub fn latency(
    ns: &Netns,
    dst: SocketAddr,
    round_trips: usize,
    window: Duration,
) -> Result<LatencyResult> {
    let mut s = ns
        .run(move || {
            let s = TcpStream::connect_timeout(&dst, Duration::from_secs(2))
                .with_context(|| format!("connecting to {dst}"))?;
            Ok(s)
        })
        .with_context(|| format!("the latency connection from {}", ns.label()))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    let msg = [0x3cu8; MESSAGE];
    let mut buf = [0u8; MESSAGE];
    let mut ping = |s: &mut TcpStream| -> Result<Duration> {
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut buf)?;
        Ok(t.elapsed())
    };
    for _ in 0..200 {
        ping(&mut s).context("warming up")?;
    }
    let mut samples = Vec::with_capacity(round_trips);
    let deadline = Instant::now() + window;
    while samples.len() < round_trips && Instant::now() < deadline && !interrupted() {
        samples.push(ping(&mut s).context("a round trip")?);
    }
    super::check_interrupted()?;
    samples.sort_unstable();
    let pct = |q: f64| {
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    Ok(LatencyResult {
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        round_trips: samples.len(),
    })
}

/// TCP throughput from the node to the wan with iperf3; bits per second
/// as the receiver counted them.
pub fn iperf3(node_ns: &str, dst: IpAddr, seconds: u32, omit: u32, streams: u32) -> Result<f64> {
    let (dst_s, port, secs, omit_s, par) = (
        dst.to_string(),
        IPERF_PORT.to_string(),
        seconds.to_string(),
        omit.to_string(),
        streams.to_string(),
    );
    let out = modes::tool_output(
        "ip",
        &[
            "netns",
            "exec",
            node_ns,
            "iperf3",
            "-c",
            &dst_s,
            "-p",
            &port,
            "-t",
            &secs,
            "-O",
            &omit_s,
            "-P",
            &par,
            "-J",
            "--connect-timeout",
            "3000",
        ],
        None,
        Duration::from_secs(u64::from(seconds + omit) + 20),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "iperf3 in {node_ns} printed no JSON ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3 in {node_ns}: {e}");
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 in {node_ns} reported no received rate"))
}
