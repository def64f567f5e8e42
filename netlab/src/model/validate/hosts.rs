//! `[[hosts]]`, `[vxlan]`, `host =` on nodes and `vni =` on bridges: a lab
//! over several lab hosts. Without `[[hosts]]` none of the others may be
//! written and the lab is what it always was.

use std::collections::BTreeMap;

use toml::Spanned;

use super::{context::Checker, names::check_name};
use crate::model::{
    hosts::derived_vni,
    raw::{RawBridge, RawHost, RawNode, RawVxlan},
    types::{Bridge, Cable, Host, Node, VxlanSettings, VXLAN_OVERHEAD},
};

/// The largest VNI (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;
/// The smallest MTU IPv4 hosts must accept (RFC 791).
const MTU_MIN: i64 = 576;

pub fn validate(c: &mut Checker<'_>, raw: &[Spanned<RawHost>]) -> Vec<Host> {
    let mut hosts: Vec<Host> = Vec::new();
    for (i, rh) in raw.iter().enumerate() {
        let rh = rh.get_ref();
        let f = |k: &str| format!("hosts[{i}].{k}");
        let name = rh.name.get_ref().clone();
        if let Err(e) = check_name(&name, "host name") {
            c.at(&rh.name, f("name"), e);
        }
        if hosts.iter().any(|h| h.name == name) {
            c.at(&rh.name, f("name"), format!("duplicate host name `{name}`"));
        }
        let Some(underlay) = c.ipv4(&rh.underlay, &f("underlay")) else {
            continue;
        };
        if underlay.is_unspecified() || underlay.is_multicast() || underlay.is_broadcast() {
            c.at(
                &rh.underlay,
                f("underlay"),
                format!("{underlay} is not an address a host can be reached at"),
            );
        }
        if let Some(other) = hosts.iter().find(|h| h.underlay == underlay) {
            c.at(
                &rh.underlay,
                f("underlay"),
                format!(
                    "{underlay} is already host {}'s underlay address",
                    other.name
                ),
            );
        }
        let interface = rh
            .interface
            .as_ref()
            .map(|n| c.ifname(n, &f("interface")).to_string());
        hosts.push(Host {
            name,
            underlay,
            interface,
        });
    }
    hosts
}

pub fn vxlan(c: &mut Checker<'_>, raw: Option<&RawVxlan>, hosts: &[Host]) -> VxlanSettings {
    let mut v = VxlanSettings::default();
    let Some(raw) = raw else { return v };
    if let Some(p) = &raw.port {
        match u16::try_from(*p.get_ref()) {
            Ok(port) if port > 0 => v.port = port,
            _ => c.at(
                p,
                "vxlan.port",
                format!("{} is not a UDP port", p.get_ref()),
            ),
        }
    }
    if let Some(m) = &raw.mtu {
        let max = i64::from(u16::MAX) - i64::from(VXLAN_OVERHEAD);
        if (MTU_MIN..=max).contains(m.get_ref()) {
            v.mtu = *m.get_ref() as u32;
        } else {
            c.at(
                m,
                "vxlan.mtu",
                format!("{} is not an MTU from {MTU_MIN} to {max}", m.get_ref()),
            );
        }
    }
    if hosts.is_empty() {
        c.unlocated("vxlan", "needs [[hosts]]: tunnels join the lab's hosts");
    }
    v
}

/// Each node's host: the one it names, or the first.
pub fn assign_nodes(
    c: &mut Checker<'_>,
    raw: &[Spanned<RawNode>],
    nodes: &mut [Node],
    hosts: &[Host],
) {
    for (i, rn) in raw.iter().enumerate() {
        let rn = rn.get_ref();
        let Some(node) = nodes.iter_mut().find(|n| &n.name == rn.name.get_ref()) else {
            continue;
        };
        node.host = match (&rn.host, hosts.first()) {
            (None, first) => first.map(|h| h.name.clone()),
            (Some(h), None) => {
                c.at(
                    h,
                    format!("nodes[{i}].host"),
                    "the lab has no [[hosts]] to run it on",
                );
                None
            }
            (Some(h), Some(_)) => {
                if !hosts.iter().any(|k| &k.name == h.get_ref()) {
                    let known: Vec<&str> = hosts.iter().map(|k| k.name.as_str()).collect();
                    c.at(
                        h,
                        format!("nodes[{i}].host"),
                        format!(
                            "unknown host `{}` (hosts: {})",
                            h.get_ref(),
                            known.join(", ")
                        ),
                    );
                }
                Some(h.get_ref().clone())
            }
        };
    }
}

/// A cable is a veth: both its nodes must be on one host.
pub fn check_cables(c: &mut Checker<'_>, cables: &[Cable], nodes: &[Node]) {
    let host_of = |name: &str| {
        nodes
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| n.host.clone())
    };
    for (i, cable) in cables.iter().enumerate() {
        let (a, b) = (host_of(&cable.a.node), host_of(&cable.b.node));
        if a != b {
            c.unlocated(
                format!("cables[{i}]"),
                format!(
                    "nodes {} and {} are on different hosts ({} and {}): a cable cannot cross \
                     hosts; put both on one bridge instead",
                    cable.a.node,
                    cable.b.node,
                    a.unwrap_or_default(),
                    b.unwrap_or_default()
                ),
            );
        }
    }
}

/// Each bridge's VNI in a lab over several hosts: written, or derived from
/// the lab's and the bridge's names; no two bridges share one.
pub fn bridge_vnis(
    c: &mut Checker<'_>,
    lab: &str,
    raw: &[Spanned<RawBridge>],
    bridges: &mut [Bridge],
    hosts: &[Host],
) {
    let mut taken: BTreeMap<u32, String> = BTreeMap::new();
    for (i, rb) in raw.iter().enumerate() {
        let rb = rb.get_ref();
        let field = format!("bridges[{i}].vni");
        let vni = match &rb.vni {
            Some(v) if hosts.is_empty() => {
                c.at(
                    v,
                    field,
                    "needs [[hosts]]: a VNI names a bridge stretched between hosts",
                );
                continue;
            }
            Some(v) => match u32::try_from(*v.get_ref()) {
                Ok(n) if (1..=VNI_MAX).contains(&n) => n,
                _ => {
                    c.at(
                        v,
                        field,
                        format!("{} is not a VNI (1 to {VNI_MAX})", v.get_ref()),
                    );
                    continue;
                }
            },
            None if hosts.is_empty() => continue,
            None => derived_vni(lab, rb.name.get_ref()),
        };
        let name = rb.name.get_ref();
        if let Some(other) = taken.get(&vni) {
            let span = rb.vni.as_ref().map_or(rb.name.span(), |v| v.span());
            c.at_span(
                span,
                field,
                format!("VNI {vni} is already bridge {other}'s; set `vni =` on one of them"),
            );
        }
        taken.insert(vni, name.clone());
        if let Some(b) = bridges.iter_mut().find(|b| &b.name == name) {
            b.vni = Some(vni);
        }
    }
}
