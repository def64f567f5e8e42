//! Structured packet inputs: which program, Ethernet/IPv4 header fields
//! (options, fragments, lengths), the L4 kind (TCP, UDP, ICMP echo, other
//! ICMP, an ICMP error with its quoted packet, other protocols), ports from
//! pools that matter to the NAT (its range, the forwards, earlier packets'
//! own), flags, payload and truncation. Built with
//! `netlab_tests::packet`, so checksums are right unless the input says
//! otherwise.

use std::net::Ipv4Addr;

use arbitrary::Arbitrary;
use netlab_common::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
use netlab_tests::packet::{checksum, Ip};

use crate::{
    dataplane::{
        Knobs, Prog, BLUE, CONE, FORWARDS, GATEWAY, PORT_MAX, PORT_MIN, RED, REMOTE, REMOTE2,
        ROUTED, UPLINK,
    },
    frames::{self, Tuple},
};

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum ProgChoice {
    UplinkIn,
    UplinkOut,
    BridgeIn,
    NodeIn,
}

impl ProgChoice {
    pub fn prog(self) -> Prog {
        match self {
            ProgChoice::UplinkIn => Prog::UplinkIn,
            ProgChoice::UplinkOut => Prog::UplinkOut,
            ProgChoice::BridgeIn => Prog::BridgeIn,
            ProgChoice::NodeIn => Prog::NodeIn,
        }
    }
}

#[derive(Arbitrary, Debug)]
pub struct Input {
    pub fast_path: bool,
    pub log: bool,
    pub tight: u8,
    pub steps: Vec<Step>,
}

impl Input {
    pub fn knobs(&self) -> Knobs {
        Knobs {
            fast_path: self.fast_path,
            log: self.log,
            tight: self.tight == 0xa5,
        }
    }
}

#[derive(Arbitrary, Debug)]
pub enum Step {
    Craft(Craft),
    /// Arbitrary bytes (an Ethernet header is prepended when `eth`).
    Raw {
        prog: ProgChoice,
        eth: bool,
        bytes: Vec<u8>,
    },
    /// An earlier frame of this input (before or after its program), with
    /// bytes overwritten, through a program.
    Mutate {
        prog: ProgChoice,
        base: u8,
        after: bool,
        edits: Vec<(u16, u8)>,
    },
    /// An earlier frame as it left its program, through another one.
    Replay {
        prog: ProgChoice,
        base: u8,
    },
    /// An IPv6 packet.
    Craft6(crate::craft6::Craft6),
}

#[derive(Arbitrary, Debug)]
pub struct Craft {
    pub prog: ProgChoice,
    pub ends: Ends,
    pub ip: IpFields,
    pub l4: L4,
    pub tail: Tail,
}

/// Where a packet's addresses and ports come from.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Ends {
    Fresh {
        src: Host,
        dst: Host,
        sport: Port,
        dport: Port,
    },
    /// The tuple of an earlier frame of this input, as it entered or left
    /// its program, possibly reversed (the reply).
    Seen {
        index: u8,
        after: bool,
        reverse: bool,
    },
    /// A tuple remembered from earlier inputs (flows built up across
    /// inputs), possibly reversed.
    Remembered { index: u16, reverse: bool },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Host {
    Red,
    Blue,
    Lab(u8),
    Cone,
    Routed,
    Gateway,
    Uplink,
    Remote,
    Remote2,
    Any([u8; 4]),
}

impl Host {
    pub fn addr(self) -> Ipv4Addr {
        match self {
            Host::Red => RED,
            Host::Blue => BLUE,
            Host::Lab(n) => Ipv4Addr::new(192, 168, 15, n),
            Host::Cone => CONE,
            Host::Routed => ROUTED,
            Host::Gateway => GATEWAY,
            Host::Uplink => UPLINK,
            Host::Remote => REMOTE,
            Host::Remote2 => REMOTE2,
            Host::Any(o) => Ipv4Addr::from(o),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Port {
    /// In the NAT range.
    Nat(u8),
    /// A forwarded port (or its target port).
    Forward(u8, bool),
    Client(u8),
    Service(u8),
    Zero,
    Any(u16),
}

impl Port {
    pub fn value(self) -> u16 {
        match self {
            Port::Nat(n) => PORT_MIN + u16::from(n) % (PORT_MAX - PORT_MIN + 1),
            Port::Forward(i, target) => {
                let f = FORWARDS[usize::from(i) % FORWARDS.len()];
                if target {
                    f.3
                } else {
                    f.1
                }
            }
            Port::Client(n) => 40000 + u16::from(n % 8),
            Port::Service(i) => [53, 80, 22, 123, 33434, 443, 3478, 8080][usize::from(i) % 8],
            Port::Zero => 0,
            Port::Any(p) => p,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct IpFields {
    pub ttl: Ttl,
    pub id: u16,
    pub dont_fragment: bool,
    pub frag: Frag,
    pub tos: u8,
    pub options: Options,
    pub bad_checksum: bool,
    pub total_len: LenFix,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Ttl {
    Normal,
    One,
    Zero,
    Two,
    Any(u8),
}

impl Ttl {
    fn value(self) -> u8 {
        match self {
            Ttl::Normal => 64,
            Ttl::One => 1,
            Ttl::Zero => 0,
            Ttl::Two => 2,
            Ttl::Any(t) => t,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Frag {
    None,
    /// First fragment (MF, offset 0): the L4 header is there.
    First,
    /// A later fragment: offset in 8-byte units, more to come or the last.
    Later {
        offset: u16,
        more: bool,
    },
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Options {
    None,
    /// `n` words of NOPs (with an end-of-options byte).
    Nops(u8),
    /// Raw option bytes, padded to a multiple of 4, at most 40.
    Raw(Vec<u8>),
}

impl Options {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Options::None => Vec::new(),
            Options::Nops(n) => {
                let words = usize::from(*n % 10) + 1;
                let mut v = vec![1u8; words * 4];
                let last = v.len() - 1;
                v[last] = 0;
                v
            }
            Options::Raw(r) => {
                let mut v: Vec<u8> = r.iter().copied().take(40).collect();
                while !v.len().is_multiple_of(4) {
                    v.push(0);
                }
                v
            }
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum LenFix {
    Exact,
    /// Total length off by this much (the frame stays as built).
    Delta(i8),
    Raw(u16),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum L4 {
    Tcp {
        flags: u8,
        seq: u32,
        /// Data offset in words, when not 5 + the options.
        doff: Option<u8>,
        options: Vec<u8>,
        payload: Vec<u8>,
    },
    Udp {
        payload: Vec<u8>,
        zero_checksum: bool,
        length: Option<u16>,
    },
    Echo {
        request: bool,
        seq: u16,
        payload: Vec<u8>,
    },
    /// Any other ICMP message (timestamp, redirect, router advert, …).
    Icmp {
        icmp_type: u8,
        code: u8,
        rest: [u8; 4],
        payload: Vec<u8>,
    },
    /// Destination unreachable / time exceeded / parameter problem (or any
    /// type, when `icmp_type` says so), quoting a packet.
    IcmpError {
        icmp_type: ErrType,
        code: u8,
        quoted: Quoted,
    },
    Proto {
        proto: u8,
        payload: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum ErrType {
    Unreachable,
    TimeExceeded,
    ParameterProblem,
    Other(u8),
}

impl ErrType {
    fn value(self) -> u8 {
        match self {
            ErrType::Unreachable => 3,
            ErrType::TimeExceeded => 11,
            ErrType::ParameterProblem => 12,
            ErrType::Other(t) => t,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Quoted {
    pub ends: Ends,
    pub kind: QuotedKind,
    pub options: Options,
    pub cut: Cut,
    /// Break the quoted IPv4 or L4 checksum.
    pub bad_checksum: u8,
    pub frag: Frag,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum QuotedKind {
    Tcp { flags: u8 },
    Udp { zero_checksum: bool },
    Echo { request: bool },
    Icmp { icmp_type: u8 },
    Proto(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Cut {
    /// IPv4 header and 8 bytes (RFC 792).
    Eight,
    /// The whole quoted packet.
    Whole,
    /// This many bytes.
    Bytes(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Tail {
    Exact,
    /// Ethernet padding after the datagram (zeros, or a pattern).
    Pad(u8, u8),
    /// Cut the frame to this many bytes (at least an Ethernet header).
    Cut(u16),
}

/// Frames and tuples seen so far, for `Ends::Seen` / `Ends::Remembered`.
pub struct History<'a> {
    /// (frame in, frame out) of this input's steps.
    pub frames: &'a [(Vec<u8>, Vec<u8>)],
    pub remembered: &'a [Tuple],
}

impl Ends {
    pub fn resolve(self, h: &History<'_>) -> Tuple {
        let fallback = Tuple {
            src: RED,
            dst: REMOTE,
            sport: 40000,
            dport: 80,
            proto: IPPROTO_TCP,
        };
        match self {
            Ends::Fresh {
                src,
                dst,
                sport,
                dport,
            } => Tuple {
                src: src.addr(),
                dst: dst.addr(),
                sport: sport.value(),
                dport: dport.value(),
                proto: 0,
            },
            Ends::Seen {
                index,
                after,
                reverse,
            } => {
                if h.frames.is_empty() {
                    return fallback;
                }
                let (a, b) = &h.frames[usize::from(index) % h.frames.len()];
                let t = frames::tuple(if after { b } else { a }).unwrap_or(fallback);
                if reverse {
                    t.reversed()
                } else {
                    t
                }
            }
            Ends::Remembered { index, reverse } => {
                if h.remembered.is_empty() {
                    return fallback;
                }
                let t = h.remembered[usize::from(index) % h.remembered.len()];
                if reverse {
                    t.reversed()
                } else {
                    t
                }
            }
        }
    }
}

fn cap(v: &[u8], n: usize) -> &[u8] {
    &v[..v.len().min(n)]
}

/// For ICMP echo built from a tuple: the identifier the tuple carries for
/// a request (its sport) or a reply (its dport), whichever is set.
fn echo_id(t: &Tuple, request: bool) -> u16 {
    let (first, second) = if request {
        (t.sport, t.dport)
    } else {
        (t.dport, t.sport)
    };
    if first != 0 {
        first
    } else {
        second
    }
}

fn l4_bytes(t: &Tuple, kind: &QuotedKind) -> (u8, Vec<u8>) {
    use netlab_tests::packet::{icmp_echo, tcp, udp};
    match *kind {
        QuotedKind::Tcp { flags } => (IPPROTO_TCP, tcp(t.sport, t.dport, flags, b"quoted-tcp")),
        QuotedKind::Udp { .. } => (IPPROTO_UDP, udp(t.sport, t.dport, b"quoted-udp")),
        QuotedKind::Echo { request } => (
            IPPROTO_ICMP,
            icmp_echo(request, echo_id(t, request), 7, b"quoted-echo"),
        ),
        QuotedKind::Icmp { icmp_type } => (IPPROTO_ICMP, vec![icmp_type, 0, 0, 0, 1, 2, 3, 4, 5]),
        QuotedKind::Proto(p) => (p, b"quoted-proto".to_vec()),
    }
}

fn frag_bits(f: Frag, df: bool) -> u16 {
    let df = if df { 0x4000 } else { 0 };
    match f {
        Frag::None => df,
        Frag::First => 0x2000,
        Frag::Later { offset, more } => (offset % 0x1fff + 1) | if more { 0x2000 } else { 0 },
    }
}

impl Craft {
    /// The frame this step sends, given what came before.
    pub fn build(&self, h: &History<'_>) -> Vec<u8> {
        use netlab_tests::packet::{icmp_echo, icmp_error, tcp, udp};
        let t = self.ends.resolve(h);
        let (proto, mut l4, keep_checksum) = match &self.l4 {
            L4::Tcp {
                flags,
                seq,
                doff,
                options,
                payload,
            } => {
                let mut opts: Vec<u8> = cap(options, 40).to_vec();
                while !opts.len().is_multiple_of(4) {
                    opts.push(1);
                }
                let mut seg = tcp(t.sport, t.dport, *flags, &[]);
                seg[4..8].copy_from_slice(&seq.to_be_bytes());
                seg.extend_from_slice(&opts);
                let words = doff.unwrap_or((5 + opts.len() / 4) as u8) & 0x0f;
                seg[12] = words << 4;
                seg.extend_from_slice(cap(payload, 256));
                (IPPROTO_TCP, seg, false)
            }
            L4::Udp {
                payload,
                zero_checksum,
                length,
            } => {
                let mut d = udp(t.sport, t.dport, cap(payload, 256));
                if let Some(l) = length {
                    d[4..6].copy_from_slice(&l.to_be_bytes());
                }
                (IPPROTO_UDP, d, *zero_checksum)
            }
            L4::Echo {
                request,
                seq,
                payload,
            } => (
                IPPROTO_ICMP,
                icmp_echo(*request, echo_id(&t, *request), *seq, cap(payload, 256)),
                false,
            ),
            L4::Icmp {
                icmp_type,
                code,
                rest,
                payload,
            } => {
                let mut m = vec![*icmp_type, *code, 0, 0];
                m.extend_from_slice(rest);
                m.extend_from_slice(cap(payload, 256));
                (IPPROTO_ICMP, m, false)
            }
            L4::IcmpError {
                icmp_type,
                code,
                quoted,
            } => {
                let qt = quoted.ends.resolve(h);
                let (qproto, mut ql4) = l4_bytes(&qt, &quoted.kind);
                let mut qip = Ip::new(qt.src, qt.dst, qproto, Vec::new());
                qip.options = quoted.options.bytes();
                qip.frag = frag_bits(quoted.frag, true);
                if matches!(
                    quoted.kind,
                    QuotedKind::Udp {
                        zero_checksum: true
                    }
                ) {
                    ql4[6] = 0;
                    ql4[7] = 0;
                    qip.keep_l4_checksum = true;
                }
                if qproto == IPPROTO_TCP && ql4.len() < 20 || qproto == IPPROTO_UDP && ql4.len() < 8
                {
                    qip.keep_l4_checksum = true;
                }
                qip.l4 = std::mem::take(&mut ql4);
                let mut q = qip.bytes();
                let ihl = 20 + qip.options.len();
                match quoted.bad_checksum % 8 {
                    1 => q[10] ^= 0x55,
                    2 if q.len() > ihl + 17 => q[ihl + 16] ^= 0x55,
                    3 if q.len() > ihl + 7 => q[ihl + 6] ^= 0x55,
                    _ => {}
                }
                let keep = match quoted.cut {
                    Cut::Eight => ihl + 8,
                    Cut::Whole => q.len(),
                    Cut::Bytes(n) => usize::from(n),
                };
                q.truncate(keep);
                (
                    IPPROTO_ICMP,
                    icmp_error(icmp_type.value(), *code, &q),
                    false,
                )
            }
            L4::Proto { proto, payload } => (*proto, cap(payload, 256).to_vec(), false),
        };
        let mut ip = Ip::new(t.src, t.dst, proto, Vec::new());
        ip.ttl = self.ip.ttl.value();
        ip.id = self.ip.id;
        ip.frag = frag_bits(self.ip.frag, self.ip.dont_fragment);
        ip.options = self.ip.options.bytes();
        ip.keep_l4_checksum = keep_checksum;
        // A later fragment's bytes are part of a datagram: no L4 header to
        // checksum (Ip::bytes skips it), payload as is.
        if proto == IPPROTO_TCP && l4.len() < 20 || proto == IPPROTO_UDP && l4.len() < 8 {
            ip.keep_l4_checksum = true;
        }
        if proto == IPPROTO_ICMP && l4.len() < 4 {
            ip.keep_l4_checksum = true;
        }
        ip.l4 = std::mem::take(&mut l4);
        let mut frame = ip.frame();
        frame[ETH_TOS] = self.ip.tos;
        let total = u16::from_be_bytes([frame[16], frame[17]]);
        let new_total = match self.ip.total_len {
            LenFix::Exact => total,
            LenFix::Delta(d) => total.wrapping_add_signed(i16::from(d)),
            LenFix::Raw(v) => v,
        };
        frame[16..18].copy_from_slice(&new_total.to_be_bytes());
        // The header checksum over the final header (TOS, length).
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        frame[24..26].fill(0);
        let c = checksum(&frame[14..14 + ihl], 0);
        frame[24..26].copy_from_slice(&c.to_be_bytes());
        if self.ip.bad_checksum {
            frame[25] ^= 0x01;
        }
        match self.tail {
            Tail::Exact => {}
            Tail::Pad(n, pattern) => {
                frame.extend(std::iter::repeat_n(pattern, usize::from(n % 64)))
            }
            Tail::Cut(n) => frame.truncate(usize::from(n).max(14)),
        }
        frame
    }
}

const ETH_TOS: usize = 15;

/// An Ethernet header for raw bytes.
pub fn with_eth(bytes: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(bytes);
    f
}
