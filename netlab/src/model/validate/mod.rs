//! From the lab file to a [`Lab`] the planner can trust: serde reads the
//! file as written (`model::raw`), then one unit per section checks
//! it, all over one [`context::Checker`] that collects every problem with
//! its line and field (`lab.toml:12: nodes[1].address: …`).
//!
//! The sections run in an order where each sees what it depends on:
//! bridges, then the cables' ends, then nodes (which need both), then the
//! cables joined (which need the nodes), the lab host's routes, forwards.

mod bridges;
mod cables;
mod context;
mod dns;
mod forwards;
mod host_routes;
mod hosts;
mod identity;
mod impair;
mod names;
mod nat;
mod node_routes;
mod nodes;
mod routing;
mod services;
mod uplink;

pub use dns::check_domain;
pub use identity::DEFAULT_NAME;
pub use names::check_ifname;

use context::{line_of, Checker};

use super::{
    raw::RawLab,
    source::{text_of, ConfigError, Problem, SourceMap},
    types::Lab,
};

/// The seeds' network: bridge `v-net-0` with the lab host as gateway, `red`
/// and `blue` on it, masquerade out of the uplink and port 80 forwarded to blue.
pub const DEFAULT_LAB: &str = include_str!("../default-lab.toml");

/// Parse and validate a topology file. `source_name` names it in errors.
pub fn parse(source_name: &str, text: &str) -> Result<Lab, ConfigError> {
    parse_with_sources(source_name, text).map(|(lab, _)| lab)
}

/// Parse and validate a topology file read as bytes (at most
/// [`MAX_FILE_BYTES`](crate::model::source::MAX_FILE_BYTES) + 1 of them): a file too large, or not text, is
/// refused in one located line.
pub fn parse_file(source_name: &str, bytes: &[u8]) -> Result<(Lab, SourceMap), ConfigError> {
    parse_with_sources(source_name, text_of(source_name, bytes)?)
}

/// Parse and validate a topology file, with where each of its fields is
/// written (for the checks made later against the lab host).
pub fn parse_with_sources(source_name: &str, text: &str) -> Result<(Lab, SourceMap), ConfigError> {
    let sources = SourceMap::new(source_name, text);
    let raw: RawLab = toml::from_str(text).map_err(|e| {
        let span = e.span();
        sources.error(vec![Problem {
            line: span.as_ref().map(|s| line_of(text, s.start)),
            // A value of the wrong type (`address = 5`) names its field.
            field: span
                .and_then(|s| sources.field_at(s.start))
                .unwrap_or_default()
                .to_string(),
            message: e.message().trim().to_string(),
        }])
    })?;
    if sources.is_empty() {
        // Else it would come up as a lab named like the default lab.
        return Err(sources.error(vec![Problem {
            line: None,
            field: String::new(),
            message: "the file is empty (nothing but blank lines and comments); \
                      without -f, netlab uses its default lab"
                .into(),
        }]));
    }
    let mut c = Checker::new(text);
    let lab = validate(&mut c, raw);
    if c.problems.is_empty() {
        Ok((lab, sources))
    } else {
        Err(sources.error(c.problems))
    }
}

/// The embedded default lab.
pub fn default_lab() -> Lab {
    parse("(default lab)", DEFAULT_LAB).expect("the embedded default lab is valid")
}

fn validate(c: &mut Checker<'_>, raw: RawLab) -> Lab {
    let name = identity::name(c, raw.name.as_ref());
    let netns_prefix = identity::netns_prefix(c, raw.netns_prefix.as_ref());
    let uplink = uplink::validate(c, raw.uplink.as_ref());
    let nat = nat::validate(c, raw.nat.as_ref());
    let dns = dns::validate(c, raw.dns.as_ref());
    let hosts = hosts::validate(c, &raw.hosts);
    let vxlan = hosts::vxlan(c, raw.vxlan.as_ref(), &hosts);
    let mut bridges = bridges::validate(c, &raw.bridges);
    hosts::bridge_vnis(c, &name, &raw.bridges, &mut bridges, &hosts);
    let ends = cables::ends(c, &raw.cables);
    c.refuse_overlapping_subnets();
    let mut nodes = nodes::validate(c, &raw.nodes, &bridges, &ends, &netns_prefix);
    let cables = cables::join(c, &ends, &mut nodes);
    hosts::assign_nodes(c, &raw.nodes, &mut nodes, &hosts);
    hosts::check_cables(c, &cables, &nodes);
    nodes::check_namespaces(c, &nodes);
    let (host_routes, host_routes6) = host_routes::validate(c, &raw.routes, &bridges);
    let mut lab = Lab {
        name,
        netns_prefix,
        uplink,
        nat,
        dns,
        bridges,
        nodes,
        cables,
        forwards: Vec::new(),
        host_routes,
        host_routes6,
        hosts,
        vxlan,
        share: None,
    };
    forwards::validate(c, &raw.forwards, &mut lab);
    lab
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::default_lab;
    use crate::model::{
        test_support::{err, with_base},
        types::*,
    };

    #[test]
    fn default_lab_is_the_seeds_network() {
        let lab = default_lab();
        assert_eq!(lab.name, "netlab");
        assert_eq!(lab.bridges.len(), 1);
        let b = &lab.bridges[0];
        assert_eq!(
            (b.name.as_str(), b.subnet.to_string()),
            ("v-net-0", "192.168.15.0/24".to_string())
        );
        assert_eq!(b.gateway, Some(Ipv4Addr::new(192, 168, 15, 5)));
        assert!(b.masquerade);
        let red = lab.node("red").unwrap();
        assert_eq!(red.netns, "red");
        assert_eq!(red.interfaces[0].name, "veth-red");
        assert_eq!(red.interfaces[0].address.to_string(), "192.168.15.1/24");
        assert_eq!(
            red.interfaces[0].attachment,
            Attachment::Bridge {
                bridge: "v-net-0".into(),
                host_name: "veth-red-br".into()
            }
        );
        assert_eq!(red.gateway, Some(Ipv4Addr::new(192, 168, 15, 5)));
        assert_eq!(lab.forwards.len(), 1);
        let f = &lab.forwards[0];
        assert_eq!((f.proto, f.port_first, f.target_port), (Proto::Tcp, 80, 80));
        assert_eq!(f.target_addr, Ipv4Addr::new(192, 168, 15, 2));
        assert_eq!(lab.uplink.interface, None);
        // Dual-stack: a ULA /64 beside it, the same host numbers.
        assert_eq!(
            b.subnet6.map(|s| s.to_string()).as_deref(),
            Some("fdec:60cc:b1bd:15::/64")
        );
        assert_eq!(b.gateway6, Some("fdec:60cc:b1bd:15::5".parse().unwrap()));
        assert_eq!(
            red.interfaces[0].address6.map(|a| a.to_string()).as_deref(),
            Some("fdec:60cc:b1bd:15::1/64")
        );
        assert_eq!(red.gateway6, b.gateway6);
        assert!(b.subnet6.unwrap().addr.segments()[0] & 0xff00 == 0xfd00);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = err(&with_base(
            "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\nadress = \"192.168.15.1\"\n",
        ));
        assert!(e.starts_with("lab.toml:10: "), "{e}");
        assert!(e.contains("unknown field `adress`"), "{e}");
    }

    #[test]
    fn every_problem_is_reported() {
        let e = err(&with_base(
            "[[nodes]]\nname = \"red\"\nbridge = \"nope\"\naddress = \"192.168.15.1\"\n\
             [[nodes]]\nname = \"blue\"\nbridge = \"v-net-0\"\naddress = \"10.1.1.1\"\n",
        ));
        assert_eq!(e.lines().count(), 2, "{e}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = err("name = \"x\"\n[[nodes]\n");
        assert!(e.starts_with("lab.toml:2: "), "{e}");
    }
}
