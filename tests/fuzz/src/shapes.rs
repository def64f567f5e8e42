//! Lab shapes for the structured topology target: small pools of names,
//! subnets and addresses that refer to each other, rendered to TOML, so the
//! fuzzer spends its time in validation rather than in TOML syntax.

use std::{fmt::Write as _, net::Ipv4Addr};

use arbitrary::Arbitrary;

const BRIDGES: [&str; 6] = [
    "v-net-0",
    "br-a",
    "br-b",
    "br0",
    "a-very-long-bridge",
    "veth-red-br",
];
const NODES: [&str; 8] = [
    "red",
    "blue",
    "r",
    "a",
    "b",
    "longnodename",
    "n-1.x",
    "bad name",
];
const IFNAMES: [&str; 8] = [
    "eth0",
    "eth1",
    "veth-red",
    "lan",
    "wan",
    "veth-red-br",
    "lo",
    "sixteen-bytes-xx",
];
const SUBNETS: [&str; 10] = [
    "192.168.15.0/24",
    "10.0.1.0/24",
    "10.0.2.0/24",
    "10.0.0.0/8",
    "10.0.1.0/30",
    "10.0.1.0/31",
    "10.0.1.4/32",
    "192.168.15.1/24",
    "0.0.0.0/0",
    "172.16.0.0/12",
];

#[derive(Arbitrary, Debug)]
pub struct Shape {
    name: Option<u8>,
    prefix: Option<u8>,
    uplink: Option<(Option<u8>, Option<Addr>)>,
    nat: Option<Nat>,
    dns: Option<Dns>,
    bridges: Vec<Bridge>,
    nodes: Vec<Node>,
    cables: Vec<Cable>,
    forwards: Vec<Fwd>,
    routes: Vec<Route>,
}

#[derive(Arbitrary, Debug)]
struct Nat {
    range: Option<(u16, u16)>,
    max_flows: Option<i64>,
    fast_path: Option<bool>,
    timeouts: Vec<(u8, i64)>,
}

#[derive(Arbitrary, Debug)]
struct Dns {
    nameservers: Option<Vec<Addr>>,
    search: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Subnet {
    Pool(u8),
    Made([u8; 4], u8),
}

#[derive(Arbitrary, Debug)]
enum Addr {
    /// Host `n` of bridge `b`'s subnet.
    OnBridge(u8, u16),
    /// Host `n` of the subnet in the pool.
    InPool(u8, u16),
    Literal([u8; 4]),
    /// With a prefix length (`a.b.c.d/len`).
    Cidr(Box<Addr>, u8),
    Text(u8),
}

#[derive(Arbitrary, Debug)]
struct Bridge {
    name: u8,
    subnet: Subnet,
    gateway: Option<Addr>,
    masquerade: Option<bool>,
    filtering: Option<u8>,
    routed: Option<bool>,
}

#[derive(Arbitrary, Debug)]
enum Attach {
    None,
    Short {
        bridge: u8,
        address: Addr,
        interface: Option<u8>,
        host_interface: Option<u8>,
    },
    List(Vec<Iface>),
}

#[derive(Arbitrary, Debug)]
struct Iface {
    bridge: u8,
    address: Addr,
    name: Option<u8>,
    host_name: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct Node {
    name: u8,
    attach: Attach,
    gateway: Option<Gw>,
    routes: Vec<Route>,
    forwarding: Option<bool>,
}

#[derive(Arbitrary, Debug)]
enum Gw {
    None,
    Addr(Addr),
}

#[derive(Arbitrary, Debug)]
struct Route {
    to: RouteTo,
    via: Addr,
}

#[derive(Arbitrary, Debug)]
enum RouteTo {
    Default,
    Net(Subnet),
}

#[derive(Arbitrary, Debug)]
struct End {
    node: u8,
    interface: Option<u8>,
    address: Addr,
}

#[derive(Arbitrary, Debug)]
struct Cable {
    a: End,
    b: End,
}

#[derive(Arbitrary, Debug)]
enum Port {
    Int(i64),
    Small(u16),
    Range(u16, u16),
    /// `first` and `first + len`.
    Span(u16, u8),
    Text(u8),
}

#[derive(Arbitrary, Debug)]
enum Target {
    Node(u8),
    NodePort(u8, u16),
    /// `node:65535 - n`.
    NodeHighPort(u8, u8),
    NodeRange(u8, u16, u16),
    Address(Addr, Option<u16>),
    AddressRange(Addr, u16, u16),
}

#[derive(Arbitrary, Debug)]
struct Fwd {
    udp: u8,
    port: Port,
    to: Target,
}

fn pick<'a>(pool: &[&'a str], i: u8) -> &'a str {
    pool[usize::from(i) % pool.len()]
}

fn q(s: &str) -> String {
    format!("{s:?}")
}

fn subnet_of(s: &Subnet) -> (u32, u8) {
    match s {
        Subnet::Pool(i) => {
            let (a, l) = pick(&SUBNETS, *i).split_once('/').unwrap();
            (
                u32::from(a.parse::<Ipv4Addr>().unwrap()),
                l.parse().unwrap(),
            )
        }
        Subnet::Made(a, l) => (u32::from_be_bytes(*a), *l % 33),
    }
}

fn subnet_text(s: &Subnet) -> String {
    match s {
        Subnet::Pool(i) => pick(&SUBNETS, *i).to_string(),
        Subnet::Made(a, l) => {
            // Mostly proper networks, sometimes with host bits.
            let len = *l % 34;
            let addr = u32::from_be_bytes(*a);
            let addr = if len < 33 && l & 0x80 == 0 && len > 0 {
                addr & (u32::MAX << (32 - u32::from(len)))
            } else if len == 0 && l & 0x80 == 0 {
                0
            } else {
                addr
            };
            format!("{}/{len}", Ipv4Addr::from(addr))
        }
    }
}

impl Shape {
    fn bridge_net(&self, b: u8) -> (u32, u8) {
        if self.bridges.is_empty() {
            return subnet_of(&Subnet::Pool(b));
        }
        subnet_of(&self.bridges[usize::from(b) % self.bridges.len()].subnet)
    }

    fn addr(&self, a: &Addr) -> String {
        let host = |(net, len): (u32, u8), n: u16| {
            let len = len.min(32);
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            Ipv4Addr::from((net & mask) | (u32::from(n) & !mask)).to_string()
        };
        match a {
            // Mostly the first few hosts, so addresses meet.
            Addr::OnBridge(b, n) => host(
                self.bridge_net(*b),
                if n & 0x8000 == 0 { n % 8 } else { *n },
            ),
            Addr::InPool(i, n) => host(subnet_of(&Subnet::Pool(*i)), *n),
            Addr::Literal(o) => Ipv4Addr::from(*o).to_string(),
            Addr::Cidr(inner, len) => format!("{}/{}", self.addr(inner), len % 34),
            Addr::Text(i) => pick(&["", "none", "default", "1.2.3", "::1", "256.1.1.1"], *i).into(),
        }
    }

    /// The shape as a topology file.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(n) = self.name {
            let _ = writeln!(
                s,
                "name = {}",
                q(pick(&["lab", "t", "x-1", "", "-bad", "a.b"], n))
            );
        }
        if let Some(p) = self.prefix {
            let _ = writeln!(
                s,
                "netns_prefix = {}",
                q(pick(
                    &[
                        "",
                        "t-",
                        "lab.",
                        "bad/",
                        "a-prefix-that-is-longer-than-32-bytes"
                    ],
                    p
                ))
            );
        }
        if let Some((iface, addr)) = &self.uplink {
            let _ = writeln!(s, "[uplink]");
            if let Some(i) = iface {
                let _ = writeln!(
                    s,
                    "interface = {}",
                    q(pick(&["auto", "eth0", "uplink", "bad name", "x:1"], *i))
                );
            }
            if let Some(a) = addr {
                let _ = writeln!(s, "address = {}", q(&self.addr(a)));
            }
        }
        if let Some(n) = &self.nat {
            let _ = writeln!(s, "[nat]");
            if let Some((a, b)) = n.range {
                let _ = writeln!(s, "port_range = {}", q(&format!("{a}-{b}")));
            }
            if let Some(m) = n.max_flows {
                let _ = writeln!(s, "max_flows = {m}");
            }
            if let Some(f) = n.fast_path {
                let _ = writeln!(s, "fast_path = {f}");
            }
            if !n.timeouts.is_empty() {
                let _ = writeln!(s, "[nat.timeouts]");
                let mut seen = [false; 6];
                for (k, v) in &n.timeouts {
                    let k = usize::from(*k) % 6;
                    if std::mem::replace(&mut seen[k], true) {
                        continue;
                    }
                    let key = [
                        "tcp_syn",
                        "tcp_established",
                        "tcp_closing",
                        "tcp_rst",
                        "udp",
                        "icmp",
                    ][k];
                    let _ = writeln!(s, "{key} = {v}");
                }
            }
        }
        if let Some(d) = &self.dns {
            let _ = writeln!(s, "[dns]");
            if let Some(ns) = &d.nameservers {
                let l: Vec<String> = ns.iter().map(|a| q(&self.addr(a))).collect();
                let _ = writeln!(s, "nameservers = [{}]", l.join(", "));
            }
            let l: Vec<String> = d
                .search
                .iter()
                .map(|i| {
                    q(pick(
                        &[
                            "lab",
                            "example.org",
                            "",
                            "two words",
                            "x\nnameserver 1.1.1.1",
                        ],
                        *i,
                    ))
                })
                .collect();
            let _ = writeln!(s, "search = [{}]", l.join(", "));
        }
        for b in &self.bridges {
            let _ = writeln!(s, "[[bridges]]");
            let _ = writeln!(s, "name = {}", q(pick(&BRIDGES, b.name)));
            let _ = writeln!(s, "subnet = {}", q(&subnet_text(&b.subnet)));
            if let Some(g) = &b.gateway {
                let _ = writeln!(s, "gateway = {}", q(&self.addr(g)));
            }
            if let Some(m) = b.masquerade {
                let _ = writeln!(s, "masquerade = {m}");
            }
            if let Some(f) = b.filtering {
                let _ = writeln!(
                    s,
                    "filtering = {}",
                    q(pick(
                        &[
                            "address-and-port-dependent",
                            "endpoint-independent",
                            "full-cone"
                        ],
                        f
                    ))
                );
            }
            if let Some(r) = b.routed {
                let _ = writeln!(s, "routed = {r}");
            }
        }
        for n in &self.nodes {
            let _ = writeln!(s, "[[nodes]]");
            let _ = writeln!(s, "name = {}", q(pick(&NODES, n.name)));
            match &n.attach {
                Attach::None => {}
                Attach::Short {
                    bridge,
                    address,
                    interface,
                    host_interface,
                } => {
                    let _ = writeln!(s, "bridge = {}", q(pick(&BRIDGES, *bridge)));
                    let _ = writeln!(s, "address = {}", q(&self.addr(address)));
                    if let Some(i) = interface {
                        let _ = writeln!(s, "interface = {}", q(pick(&IFNAMES, *i)));
                    }
                    if let Some(i) = host_interface {
                        let _ = writeln!(s, "host_interface = {}", q(pick(&IFNAMES, *i)));
                    }
                }
                Attach::List(list) => {
                    let items: Vec<String> = list
                        .iter()
                        .map(|i| {
                            let mut t = format!(
                                "{{ bridge = {}, address = {}",
                                q(pick(&BRIDGES, i.bridge)),
                                q(&self.addr(&i.address))
                            );
                            if let Some(n) = i.name {
                                let _ = write!(t, ", name = {}", q(pick(&IFNAMES, n)));
                            }
                            if let Some(n) = i.host_name {
                                let _ = write!(t, ", host_name = {}", q(pick(&IFNAMES, n)));
                            }
                            t.push_str(" }");
                            t
                        })
                        .collect();
                    let _ = writeln!(s, "interfaces = [{}]", items.join(", "));
                }
            }
            match &n.gateway {
                None => {}
                Some(Gw::None) => {
                    let _ = writeln!(s, "gateway = \"none\"");
                }
                Some(Gw::Addr(a)) => {
                    let _ = writeln!(s, "gateway = {}", q(&self.addr(a)));
                }
            }
            if !n.routes.is_empty() {
                let r: Vec<String> = n.routes.iter().map(|r| self.route(r)).collect();
                let _ = writeln!(s, "routes = [{}]", r.join(", "));
            }
            if let Some(f) = n.forwarding {
                let _ = writeln!(s, "forwarding = {f}");
            }
        }
        for c in &self.cables {
            let _ = writeln!(s, "[[cables]]");
            for (side, e) in [("a", &c.a), ("b", &c.b)] {
                let mut t = format!("{side} = {{ node = {}", q(pick(&NODES, e.node)));
                if let Some(i) = e.interface {
                    let _ = write!(t, ", interface = {}", q(pick(&IFNAMES, i)));
                }
                let _ = write!(t, ", address = {} }}", q(&self.addr(&e.address)));
                let _ = writeln!(s, "{t}");
            }
        }
        for f in &self.forwards {
            let _ = writeln!(s, "[[forwards]]");
            let _ = writeln!(
                s,
                "protocol = {}",
                q(pick(&["tcp", "udp", "TCP", "sctp"], f.udp))
            );
            let port = match &f.port {
                Port::Int(n) => n.to_string(),
                Port::Small(n) => n.to_string(),
                Port::Range(a, b) => q(&format!("{a}-{b}")),
                Port::Span(a, n) => q(&format!("{a}-{}", a.saturating_add(u16::from(*n)))),
                Port::Text(i) => q(pick(
                    &["80", " 80 ", "80-", "-1", "1-65535", "65535-65535", "x"],
                    *i,
                )),
            };
            let _ = writeln!(s, "port = {port}");
            let to = match &f.to {
                Target::Node(n) => pick(&NODES, *n).to_string(),
                Target::NodePort(n, p) => format!("{}:{p}", pick(&NODES, *n)),
                Target::NodeHighPort(n, p) => {
                    format!("{}:{}", pick(&NODES, *n), 65535 - u16::from(*p))
                }
                Target::NodeRange(n, a, b) => format!("{}:{a}-{b}", pick(&NODES, *n)),
                Target::Address(a, None) => self.addr(a),
                Target::Address(a, Some(p)) => format!("{}:{p}", self.addr(a)),
                Target::AddressRange(a, x, y) => format!("{}:{x}-{y}", self.addr(a)),
            };
            let _ = writeln!(s, "to = {}", q(&to));
        }
        for r in &self.routes {
            let _ = writeln!(s, "[[routes]]");
            let (to, via) = self.route_parts(r);
            let _ = writeln!(s, "to = {to}\nvia = {via}");
        }
        s
    }

    fn route_parts(&self, r: &Route) -> (String, String) {
        let to = match &r.to {
            RouteTo::Default => q("default"),
            RouteTo::Net(n) => q(&subnet_text(n)),
        };
        (to, q(&self.addr(&r.via)))
    }

    fn route(&self, r: &Route) -> String {
        let (to, via) = self.route_parts(r);
        format!("{{ to = {to}, via = {via} }}")
    }
}
