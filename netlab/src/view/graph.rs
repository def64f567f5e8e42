//! The lab as a graph (pure): vertices for the outside, the lab host, the
//! bridges and the nodes; edges for the uplink, the bridges' gateways, the
//! nodes' ports and cables; the forwards as labels. One model, four texts:
//! Graphviz dot, Mermaid, JSON and an SVG drawn by netlab's own layout.

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr};

use serde::Serialize;

use crate::model::topology::{Attachment, Lab};

/// What `up` made of the lab, when it is up: the uplink it took and the
/// state of each node's interface (`(node, interface)` -> up).
#[derive(Clone, Debug, Default)]
pub struct Live {
    pub uplink: Option<(String, Ipv4Addr)>,
    pub links: BTreeMap<(String, String), bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VertexKind {
    Outside,
    LabHost,
    Bridge,
    Node,
}

#[derive(Clone, Debug, Serialize)]
pub struct Vertex {
    pub id: String,
    pub kind: VertexKind,
    pub name: String,
    /// Lines under the name: a bridge's subnets (IPv4, then IPv6) and
    /// flags, or a node's interfaces (each with its IPv4, then its IPv6
    /// address).
    pub details: Vec<String>,
    /// A node's interfaces, in the order of `details`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InterfaceView {
    pub name: String,
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address6: Option<String>,
    /// When the lab is up: whether the interface is.
    pub up: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EdgeKind {
    Uplink,
    Gateway,
    Port,
    Cable,
    Forward,
}

#[derive(Clone, Debug, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
    pub label: String,
    /// Its IPv6 side, when it has one: the lab host's IPv6 address on a
    /// bridge, a port's or a cable's IPv6 addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label6: Option<String>,
    /// For a node's interface when the lab is up: `Some(true)` up.
    pub up: Option<bool>,
    /// The node's interface the edge leaves from (ports and cables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Graph {
    pub lab: String,
    pub vertices: Vec<Vertex>,
    pub edges: Vec<Edge>,
}

pub const OUTSIDE: &str = "outside";
pub const LAB_HOST: &str = "lab-host";

pub fn bridge_id(name: &str) -> String {
    format!("bridge:{name}")
}

pub fn node_id(name: &str) -> String {
    format!("node:{name}")
}

impl Graph {
    pub fn of(lab: &Lab, live: Option<&Live>) -> Graph {
        let mut g = Graph {
            lab: lab.name.clone(),
            vertices: Vec::new(),
            edges: Vec::new(),
        };
        g.add_outside_and_host(lab, live);
        for b in &lab.bridges {
            let mut details = vec![b.subnet.to_string()];
            details.extend(b.subnet6.map(|s| s.to_string()));
            if b.masquerade {
                details.push("masquerade".into());
            }
            if b.routed {
                details.push("routed".into());
            }
            g.vertex(bridge_id(&b.name), VertexKind::Bridge, &b.name, details);
            let gw6 = b.gateway6_net().map(|g| g.to_string());
            if let Some(gw) = b.gateway_net() {
                g.edge(
                    &bridge_id(&b.name),
                    LAB_HOST,
                    EdgeKind::Gateway,
                    gw.to_string(),
                );
                if let Some(e) = g.edges.last_mut() {
                    e.label6 = gw6;
                }
            }
        }
        for n in &lab.nodes {
            let details = n
                .interfaces
                .iter()
                .flat_map(|i| {
                    let v6 = i.address6.map(|a| format!("{} {a}", i.name));
                    std::iter::once(format!("{} {}", i.name, i.address)).chain(v6)
                })
                .collect();
            g.vertex(node_id(&n.name), VertexKind::Node, &n.name, details);
            let state = |iface: &str| {
                live.and_then(|l| l.links.get(&(n.name.clone(), iface.to_string())).copied())
            };
            if let Some(v) = g.vertices.last_mut() {
                v.interfaces = n
                    .interfaces
                    .iter()
                    .map(|i| InterfaceView {
                        name: i.name.clone(),
                        address: i.address.to_string(),
                        address6: i.address6.map(|a| a.to_string()),
                        up: state(&i.name),
                    })
                    .collect();
            }
            for i in &n.interfaces {
                if let Attachment::Bridge { bridge, .. } = &i.attachment {
                    let up = live.and_then(|l| l.links.get(&(n.name.clone(), i.name.clone())));
                    g.edges.push(Edge {
                        from: node_id(&n.name),
                        to: bridge_id(bridge),
                        kind: EdgeKind::Port,
                        label: format!("{} {}", i.name, i.address),
                        label6: i.address6.map(|a| a.to_string()),
                        up: up.copied(),
                        interface: Some(i.name.clone()),
                    });
                }
            }
        }
        for c in &lab.cables {
            let up = live.map(|l| {
                [&c.a, &c.b]
                    .iter()
                    .all(|e| l.links.get(&(e.node.clone(), e.interface.clone())) == Some(&true))
            });
            g.edges.push(Edge {
                from: node_id(&c.a.node),
                to: node_id(&c.b.node),
                kind: EdgeKind::Cable,
                label: format!(
                    "{} {} — {} {}",
                    c.a.interface, c.a.address, c.b.interface, c.b.address
                ),
                label6: c
                    .a
                    .address6
                    .zip(c.b.address6)
                    .map(|(a, b)| format!("{a} — {b}")),
                up,
                interface: Some(c.a.interface.clone()),
            });
        }
        for f in &lab.forwards {
            let label = format!("{}/{} → {}", f.proto, f.ports_text(), f.target_text());
            g.edge(OUTSIDE, &node_id(&f.node), EdgeKind::Forward, label);
        }
        g
    }

    fn add_outside_and_host(&mut self, lab: &Lab, live: Option<&Live>) {
        let uplink = match live.and_then(|l| l.uplink.as_ref()) {
            Some((name, addr)) => format!("{name} {addr}"),
            None => {
                let name = lab
                    .uplink
                    .interface
                    .clone()
                    .unwrap_or_else(|| "default route's interface".into());
                match lab.uplink.address {
                    Some(a) => format!("{name} {a}"),
                    None => name,
                }
            }
        };
        self.vertex(OUTSIDE.into(), VertexKind::Outside, "outside", vec![]);
        let host_details = vec!["gateway, NAT in eBPF".to_string()];
        self.vertex(
            LAB_HOST.into(),
            VertexKind::LabHost,
            "lab host",
            host_details,
        );
        self.edge(
            LAB_HOST,
            OUTSIDE,
            EdgeKind::Uplink,
            format!("uplink {uplink}"),
        );
    }

    fn vertex(&mut self, id: String, kind: VertexKind, name: &str, details: Vec<String>) {
        self.vertices.push(Vertex {
            id,
            kind,
            name: name.to_string(),
            details,
            interfaces: Vec::new(),
        });
    }

    fn edge(&mut self, from: &str, to: &str, kind: EdgeKind, label: String) {
        self.edges.push(Edge {
            from: from.into(),
            to: to.into(),
            kind,
            label,
            label6: None,
            up: None,
            interface: None,
        });
    }

    fn vertex_by_id(&self, id: &str) -> Option<&Vertex> {
        self.vertices.iter().find(|v| v.id == id)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a graph is plain data")
    }

    /// Graphviz dot (undirected; forwards drawn as dashed arrows).
    pub fn to_dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "graph {} {{", dot_quote(&self.lab));
        out.push_str("  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=10];\n");
        out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
        for v in &self.vertices {
            let shape = match v.kind {
                VertexKind::Outside => "ellipse, style=dashed",
                VertexKind::LabHost => "box3d",
                VertexKind::Bridge => "box, style=\"rounded,filled\", fillcolor=\"#dde8f5\"",
                VertexKind::Node => "box, style=rounded",
            };
            let mut label = v.name.clone();
            for d in &v.details {
                label.push('\n');
                label.push_str(d);
            }
            let _ = writeln!(
                out,
                "  {} [label={}, shape={shape}];",
                dot_quote(&v.id),
                dot_quote(&label)
            );
        }
        for e in &self.edges {
            let style = match (e.kind, e.up) {
                (EdgeKind::Forward, _) => ", style=dashed, dir=forward, color=\"#b35900\"",
                (_, Some(false)) => ", color=red",
                _ => "",
            };
            let _ = writeln!(
                out,
                "  {} -- {} [label={}{style}];",
                dot_quote(&e.from),
                dot_quote(&e.to),
                dot_quote(&e.lines().collect::<Vec<_>>().join("\n"))
            );
        }
        out.push_str("}\n");
        out
    }

    /// A Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let ids: BTreeMap<&str, String> = self
            .vertices
            .iter()
            .enumerate()
            .map(|(i, v)| (v.id.as_str(), format!("v{i}")))
            .collect();
        let mut out = String::from("flowchart LR\n");
        for v in &self.vertices {
            let mut label = mermaid_text(&v.name);
            for d in &v.details {
                label.push_str("<br/>");
                label.push_str(&mermaid_text(d));
            }
            let (open, close) = match v.kind {
                VertexKind::Outside => ("((", "))"),
                VertexKind::LabHost => ("[[", "]]"),
                VertexKind::Bridge => ("[/", "/]"),
                VertexKind::Node => ("(", ")"),
            };
            let _ = writeln!(out, "  {}{open}\"{label}\"{close}", ids[v.id.as_str()]);
        }
        for e in &self.edges {
            let (Some(a), Some(b)) = (ids.get(e.from.as_str()), ids.get(e.to.as_str())) else {
                continue;
            };
            let link = if e.kind == EdgeKind::Forward {
                "-.->"
            } else {
                "---"
            };
            let label: Vec<String> = e.lines().map(mermaid_text).collect();
            let _ = writeln!(out, "  {a} {link}|\"{}\"| {b}", label.join("<br/>"));
        }
        out
    }
}

/// A dot ID in double quotes (backslash and quote escaped; newlines as `\n`).
fn dot_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text inside a quoted Mermaid label: quotes and markup as entities.
fn mermaid_text(s: &str) -> String {
    s.replace('&', "#amp;")
        .replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

impl Edge {
    /// Its label's lines: the IPv4 side, then the IPv6 one if any.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.label.as_str()).chain(self.label6.as_deref())
    }
}

impl Graph {
    /// The vertices of `kind`, in the lab's order.
    pub fn of_kind(&self, kind: VertexKind) -> impl Iterator<Item = &Vertex> {
        self.vertices.iter().filter(move |v| v.kind == kind)
    }

    /// The edges that leave node `id` for a bridge.
    pub fn ports_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Edge> {
        self.edges
            .iter()
            .filter(move |e| e.kind == EdgeKind::Port && e.from == id)
    }

    pub fn label_of<'a>(&'a self, id: &'a str) -> &'a str {
        self.vertex_by_id(id).map(|v| v.name.as_str()).unwrap_or(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::test_labs::{default_lab, star_lab};

    #[test]
    fn the_default_lab_has_its_tutorial_parts() {
        let g = Graph::of(&default_lab(), None);
        let names: Vec<&str> = g.vertices.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["outside", "lab host", "v-net-0", "red", "blue"]);
        let port = g.ports_of("node:red").next().expect("red's port");
        assert_eq!(port.to, "bridge:v-net-0");
        assert_eq!(port.label, "veth-red 192.168.15.1/24");
        let gw = g
            .edges
            .iter()
            .find(|e| e.kind == EdgeKind::Gateway)
            .unwrap();
        assert_eq!(gw.label, "192.168.15.5/24");
        let fwd = g
            .edges
            .iter()
            .find(|e| e.kind == EdgeKind::Forward)
            .unwrap();
        assert_eq!((fwd.from.as_str(), fwd.to.as_str()), (OUTSIDE, "node:blue"));
        assert_eq!(fwd.label, "tcp/80 → blue:80");
    }

    #[test]
    fn ipv6_addresses_stand_next_to_the_ipv4_ones() {
        let g = Graph::of(&default_lab(), None);
        let bridge = g.vertex_by_id("bridge:v-net-0").unwrap();
        assert_eq!(
            bridge.details,
            ["192.168.15.0/24", "fdec:60cc:b1bd:15::/64", "masquerade"]
        );
        let red = g.vertex_by_id("node:red").unwrap();
        assert_eq!(
            red.details,
            [
                "veth-red 192.168.15.1/24",
                "veth-red fdec:60cc:b1bd:15::1/64"
            ]
        );
        assert_eq!(
            red.interfaces[0].address6.as_deref(),
            Some("fdec:60cc:b1bd:15::1/64")
        );
        let gw = g
            .edges
            .iter()
            .find(|e| e.kind == EdgeKind::Gateway)
            .unwrap();
        assert_eq!(gw.label6.as_deref(), Some("fdec:60cc:b1bd:15::5/64"));
        let port = g.ports_of("node:red").next().unwrap();
        assert_eq!(port.label6.as_deref(), Some("fdec:60cc:b1bd:15::1/64"));
        let dot = g.to_dot();
        assert!(
            dot.contains("[label=\"192.168.15.5/24\\nfdec:60cc:b1bd:15::5/64\"]"),
            "{dot}"
        );
        assert!(
            dot.contains("\\nveth-blue fdec:60cc:b1bd:15::2/64\""),
            "{dot}"
        );
        let mermaid = g.to_mermaid();
        assert!(
            mermaid.contains("|\"veth-red 192.168.15.1/24<br/>fdec:60cc:b1bd:15::1/64\"|"),
            "{mermaid}"
        );
        assert!(
            mermaid.contains("192.168.15.0/24<br/>fdec:60cc:b1bd:15::/64<br/>"),
            "{mermaid}"
        );
        let json: serde_json::Value = serde_json::from_str(&g.to_json()).unwrap();
        assert_eq!(json["edges"][1]["label6"], "fdec:60cc:b1bd:15::5/64");
        assert_eq!(
            json["vertices"][3]["interfaces"][0]["address6"],
            "fdec:60cc:b1bd:15::1/64"
        );
    }

    #[test]
    fn a_cables_ipv6_addresses_and_an_ipv4_lab_without_any() {
        let text = "name = \"c\"\n[[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"b\"\n[[cables]]\n\
                    a = { node = \"a\", address = \"10.0.1.1/30\", address6 = \"fd00:1::1/64\" }\n\
                    b = { node = \"b\", address = \"10.0.1.2/30\", address6 = \"fd00:1::2/64\" }\n";
        let g = Graph::of(&crate::model::parse("c.toml", text).unwrap(), None);
        let cable = g.edges.iter().find(|e| e.kind == EdgeKind::Cable).unwrap();
        assert_eq!(cable.label6.as_deref(), Some("fd00:1::1/64 — fd00:1::2/64"));
        // Without IPv6 nothing of it shows, in JSON not even a key.
        let g = Graph::of(&star_lab(2), None);
        assert!(g.edges.iter().all(|e| e.label6.is_none()));
        assert!(g
            .vertices
            .iter()
            .all(|v| v.details.iter().all(|d| !d.contains(':'))));
        let json = g.to_json();
        assert!(
            !json.contains("label6") && !json.contains("address6"),
            "{json}"
        );
    }

    #[test]
    fn live_state_marks_links_and_the_uplink() {
        let mut live = Live {
            uplink: Some(("wan0".into(), Ipv4Addr::new(198, 51, 100, 2))),
            ..Live::default()
        };
        live.links.insert(("red".into(), "veth-red".into()), true);
        live.links
            .insert(("blue".into(), "veth-blue".into()), false);
        let g = Graph::of(&default_lab(), Some(&live));
        let up: Vec<Option<bool>> = g
            .edges
            .iter()
            .filter(|e| e.kind == EdgeKind::Port)
            .map(|e| e.up)
            .collect();
        assert_eq!(up, [Some(true), Some(false)]);
        let uplink = g.edges.iter().find(|e| e.kind == EdgeKind::Uplink).unwrap();
        assert_eq!(uplink.label, "uplink wan0 198.51.100.2");
        assert!(
            g.to_dot().contains("color=red"),
            "a down link is red in dot"
        );
    }

    #[test]
    fn dot_and_mermaid_name_every_vertex_and_edge() {
        let g = Graph::of(&star_lab(30), None);
        let dot = g.to_dot();
        let mermaid = g.to_mermaid();
        assert!(dot.starts_with("graph \"star\" {") && dot.trim_end().ends_with('}'));
        assert_eq!(dot.matches(" -- ").count(), g.edges.len());
        assert!(mermaid.starts_with("flowchart LR\n"));
        assert_eq!(
            mermaid.matches("---|").count() + mermaid.matches("-.->|").count(),
            g.edges.len()
        );
        for i in 1..=30 {
            assert!(dot.contains(&format!("\"node:n{i}\"")), "n{i} in dot");
            assert!(mermaid.contains(&format!("\"n{i}<br/>")), "n{i} in mermaid");
        }
    }

    #[test]
    fn quoting_keeps_labels_inside_their_quotes() {
        assert_eq!(dot_quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
        assert_eq!(mermaid_text("a\"<b>&"), "a#quot;#lt;b#gt;#amp;");
    }

    #[test]
    fn json_is_the_model() {
        let g = Graph::of(&default_lab(), None);
        let v: serde_json::Value = serde_json::from_str(&g.to_json()).unwrap();
        assert_eq!(v["lab"], "netlab");
        assert_eq!(v["vertices"].as_array().unwrap().len(), 5);
        assert_eq!(v["edges"][0]["kind"], "uplink");
    }
}
