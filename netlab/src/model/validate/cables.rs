//! `[[cables]]`: veths straight between two nodes. Validated in two steps:
//! the ends first (so that each node knows its cable interfaces), then,
//! once every node is named, the cables themselves with each end's peer.

use std::ops::Range;

use toml::Spanned;

use super::{bridges::unusable_subnet, context::Checker};
use crate::model::{
    impair::LinkImpair,
    net::Ipv4Net,
    raw::{RawCable, RawCableEnd},
    types::{Attachment, Cable, CableEnd, Interface, Node},
};

/// One end of a cable as written, checked on its own.
pub struct DraftEnd {
    pub node: String,
    pub interface: Option<String>,
    pub address: Option<Ipv4Net>,
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
                if let Some(problem) = unusable_subnet(aa.network()) {
                    c.at(rc, format!("cables[{i}]"), problem);
                }
                c.seen
                    .subnets
                    .push((aa.network(), format!("cables[{i}]"), rc.span()));
            }
        }
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
        impair: super::impair::link(c, &field, &er.impairs()),
        span: er.node.span(),
        field,
    }
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
            cables.push(Cable {
                a: CableEnd {
                    node: a.node.clone(),
                    interface: ia.name.clone(),
                    address: ia.address,
                },
                b: CableEnd {
                    node: b.node.clone(),
                    interface: ib.name.clone(),
                    address: ib.address,
                },
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
}
