//! `[[cables]]`: veths straight between two nodes. Validated in two steps:
//! the ends first (so that each node knows its cable interfaces), then,
//! once every node is named, the cables themselves with each end's peer.

use std::ops::Range;

use toml::Spanned;

use super::{bridges::unusable_subnet, context::Checker};
use crate::model::{
    impair::LinkImpair,
    net::{Ipv4Net, Ipv6Net},
    raw::{RawCable, RawCableEnd},
    types::{Attachment, Cable, CableEnd, Interface, Node},
};

/// One end of a cable as written, checked on its own.
pub struct DraftEnd {
    pub node: String,
    pub interface: Option<String>,
    pub address: Option<Ipv4Net>,
    pub address6: Option<Ipv6Net>,
    pub impair: LinkImpair,
    /// Where the end's `node` is written.
    pub span: Range<usize>,
    /// `cables[i].a` or `cables[i].b`.
    pub field: String,
}

/// Both ends of every cable; the subnets of cables whose ends agree go into
/// the checker's `seen`.
pub fn ends(c: &mut Checker<'_>, raw: &[Spanned<RawCable>]) -> Vec<(DraftEnd, DraftEnd)> {
    let mut out = Vec::new();
    for (i, rc) in raw.iter().enumerate() {
        let a = end(c, &rc.get_ref().a, format!("cables[{i}].a"));
        let b = end(c, &rc.get_ref().b, format!("cables[{i}].b"));
        if let (Some(aa), Some(ba)) = (a.address, b.address) {
            if one_subnet(c, rc, i, (&a, aa), (&b, ba)) {
                if let Some(problem) = unusable_subnet(aa.network().into()) {
                    c.at(rc, format!("cables[{i}]"), problem);
                }
                c.seen
                    .subnets
                    .push((aa.network().into(), format!("cables[{i}]"), rc.span()));
            }
        }
        ipv6_subnet(c, rc, i, &a, &b);
        if a.node == b.node {
            c.at(
                rc,
                format!("cables[{i}]"),
                format!("both ends are on node `{}`", a.node),
            );
        }
        out.push((a, b));
    }
    out
}

fn end(c: &mut Checker<'_>, e: &Spanned<RawCableEnd>, field: String) -> DraftEnd {
    let er = e.get_ref();
    DraftEnd {
        node: er.node.get_ref().clone(),
        interface: er
            .interface
            .as_ref()
            .map(|n| c.new_ifname(n, &format!("{field}.interface")).to_string()),
        address: c.cidr(&er.address, &format!("{field}.address")),
        address6: er
            .address6
            .as_ref()
            .and_then(|a| c.cidr6(a, &format!("{field}.address6"))),
        impair: super::impair::link(c, &field, &er.impairs()),
        span: er.node.span(),
        field,
    }
}

/// Shortest and longest prefix of a cable's IPv6 subnet: as a bridge's,
/// and /127 too, the point-to-point link of RFC 6164.
const CABLE_PREFIX6: std::ops::RangeInclusive<u8> = 64..=127;

/// The cable's IPv6 subnet, when its ends have `address6`: both ends or
/// neither, two addresses of one subnet of a link's size.
fn ipv6_subnet(c: &mut Checker<'_>, rc: &Spanned<RawCable>, i: usize, a: &DraftEnd, b: &DraftEnd) {
    let field = format!("cables[{i}]");
    let (aa, ba) = match (a.address6, b.address6) {
        (Some(aa), Some(ba)) => (aa, ba),
        (None, None) => return,
        _ if rc.get_ref().a.get_ref().address6.is_some()
            != rc.get_ref().b.get_ref().address6.is_some() =>
        {
            return c.at(
                rc,
                field,
                "`address6` on one end only: give both ends one, or neither",
            );
        }
        _ => return,
    };
    let problem = if aa.network() != ba.network() {
        format!("ends {aa} and {ba} are not on one subnet")
    } else if aa.addr == ba.addr {
        format!("both ends have address {}", aa.addr)
    } else if !CABLE_PREFIX6.contains(&aa.prefix_len) {
        format!(
            "/{} is not a link's prefix: a cable's IPv6 subnet is /{} to /{}",
            aa.prefix_len,
            CABLE_PREFIX6.start(),
            CABLE_PREFIX6.end()
        )
    } else if let Some(p) = unusable_subnet(aa.network().into()) {
        p
    } else if let Some(e) = [a, b].into_iter().find(|e| {
        e.address6
            .is_some_and(|n| !n.network().is_usable_host(n.addr))
    }) {
        format!(
            "{} of {} is the subnet-router anycast address",
            e.address6.map(|n| n.to_string()).unwrap_or_default(),
            e.field
        )
    } else {
        c.seen.subnets.push((aa.network().into(), field, rc.span()));
        return;
    };
    c.at(rc, field, problem);
}

/// Whether the two ends' addresses are two usable addresses of one subnet
/// (each problem reported).
fn one_subnet(
    c: &mut Checker<'_>,
    rc: &Spanned<RawCable>,
    i: usize,
    (a, aa): (&DraftEnd, Ipv4Net),
    (b, ba): (&DraftEnd, Ipv4Net),
) -> bool {
    if aa.network() != ba.network() {
        c.at(
            rc,
            format!("cables[{i}]"),
            format!("ends {aa} and {ba} are not on one subnet"),
        );
        return false;
    }
    if aa.addr == ba.addr {
        c.at(
            rc,
            format!("cables[{i}]"),
            format!("both ends have address {}", aa.addr),
        );
        return false;
    }
    for (e, addr) in [(a, aa), (b, ba)] {
        if !addr.is_usable_host(addr.addr) {
            c.at_span(
                e.span.clone(),
                format!("{}.address", e.field),
                format!("{addr} is the network or broadcast address"),
            );
        }
    }
    true
}

/// The cables between nodes that validated, and each cable interface of
/// `nodes` told its peer's name. Ends must name nodes.
pub fn join(c: &mut Checker<'_>, ends: &[(DraftEnd, DraftEnd)], nodes: &mut [Node]) -> Vec<Cable> {
    let mut cables = Vec::new();
    for (a, b) in ends {
        for e in [a, b] {
            if !nodes.iter().any(|n| n.name == e.node) {
                c.at_span(
                    e.span.clone(),
                    format!("{}.node", e.field),
                    format!("unknown node `{}`", e.node),
                );
            }
        }
        if let (Some(ia), Some(ib)) = (interface_of(nodes, a), interface_of(nodes, b)) {
            let end = |e: &DraftEnd, i: &Interface| CableEnd {
                node: e.node.clone(),
                interface: i.name.clone(),
                address: i.address,
                address6: i.address6,
            };
            cables.push(Cable {
                a: end(a, ia),
                b: end(b, ib),
            });
        }
    }
    for cable in &cables {
        for (me, peer) in [(&cable.a, &cable.b), (&cable.b, &cable.a)] {
            if let Some(node) = nodes.iter_mut().find(|n| n.name == me.node) {
                if let Some(iface) = node.interfaces.iter_mut().find(|i| i.name == me.interface) {
                    iface.attachment = Attachment::Cable {
                        peer_node: peer.node.clone(),
                        peer_interface: peer.interface.clone(),
                    };
                }
            }
        }
    }
    cables
}

/// The cable interface node validation made for `end`.
fn interface_of<'n>(nodes: &'n [Node], end: &DraftEnd) -> Option<&'n Interface> {
    let node = nodes.iter().find(|n| n.name == end.node)?;
    let addr = end.address?;
    node.interfaces
        .iter()
        .find(|i| i.address == addr && matches!(i.attachment, Attachment::Cable { .. }))
}

#[cfg(test)]
mod tests {
    use crate::model::{test_support::err, types::*, validate::parse};

    #[test]
    fn seeds_first_example_is_a_cable() {
        let lab = parse(
            "cable.toml",
            r#"
            [[nodes]]
            name = "red"
            [[nodes]]
            name = "blue"
            [[cables]]
            a = { node = "red", interface = "veth-red", address = "192.168.15.1/24" }
            b = { node = "blue", interface = "veth-blue", address = "192.168.15.2/24" }
            "#,
        )
        .unwrap();
        assert_eq!(lab.cables.len(), 1);
        assert_eq!(lab.node("red").unwrap().gateway, None);
        assert_eq!(
            lab.node("red").unwrap().interfaces[0].attachment,
            Attachment::Cable {
                peer_node: "blue".into(),
                peer_interface: "veth-blue".into()
            }
        );
        let e = err("[[nodes]]\nname = \"red\"\n[[cables]]\na = { node = \"red\", address = \"10.0.0.1/24\" }\nb = { node = \"ghost\", address = \"10.0.0.2/24\" }\n");
        assert_eq!(
            e,
            "cable.toml:5: cables[0].b.node: unknown node `ghost`"
                .replace("cable.toml", "lab.toml")
        );
    }

    #[test]
    fn ipv6_cable_ends() {
        let cable = |a6: &str, b6: &str| {
            format!(
                "[[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"b\"\n[[cables]]\n\
                 a = {{ node = \"a\", address = \"10.0.0.1/24\"{a6} }}\n\
                 b = {{ node = \"b\", address = \"10.0.0.2/24\"{b6} }}\n"
            )
        };
        let a6 = |a: &str| format!(", address6 = \"{a}\"");
        let lab = parse(
            "lab.toml",
            &cable(&a6("fd00:1::/127"), &a6("fd00:1::1/127")),
        )
        .unwrap();
        assert_eq!(
            lab.cables[0].a.address6.unwrap().to_string(),
            "fd00:1::/127"
        );
        assert_eq!(
            lab.node("b").unwrap().interfaces[0]
                .address6
                .unwrap()
                .to_string(),
            "fd00:1::1/127"
        );
        assert_eq!(
            err(&cable(&a6("fd00:1::1/64"), "")),
            "lab.toml:5: cables[0]: `address6` on one end only: give both ends one, or neither"
        );
        assert_eq!(
            err(&cable(&a6("fd00:1::1/64"), &a6("fd00:2::2/64"))),
            "lab.toml:5: cables[0]: ends fd00:1::1/64 and fd00:2::2/64 are not on one subnet"
        );
        assert!(err(&cable(&a6("fd00:1::1/64"), &a6("fd00:1::1/64")))
            .starts_with("lab.toml:5: cables[0]: both ends have address fd00:1::1\n"));
        assert!(err(&cable(&a6("fd00:1::1/48"), &a6("fd00:1::2/48")))
            .contains("/48 is not a link's prefix: a cable's IPv6 subnet is /64 to /127"));
        assert!(err(&cable(&a6("fd00:1::/64"), &a6("fd00:1::2/64")))
            .contains("fd00:1::/64 of cables[0].a is the subnet-router anycast address"));
        assert!(err(&cable(&a6("fe80::1/64"), &a6("fe80::2/64"))).contains("overlaps fe80::/10"));
        // A cable's subnet6 overlaps a bridge's like any other.
        let e = err(&format!(
            "{}[[bridges]]\nname = \"br\"\nsubnet = \"10.9.0.0/24\"\nsubnet6 = \"fd00:1::/64\"\n",
            cable(&a6("fd00:1::1/64"), &a6("fd00:1::2/64"))
        ));
        assert!(e.contains("overlaps fd00:1::/64 of bridge br"), "{e}");
    }
}
