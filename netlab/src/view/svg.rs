//! The lab's picture as SVG, laid out by netlab (no graphviz at run time).
//!
//! Left to right: the outside, the uplink, the lab host, then each bridge as
//! a header box with a vertical trunk; its nodes hang in rows of
//! [`COLUMNS`] from branches off the trunk, so no line crosses a box however
//! many nodes there are. Nodes with only cables come last; cables are
//! dashed curves. Every node's interface has an empty `text.live` element
//! the web view fills with live figures.

use std::{collections::BTreeMap, fmt::Write as _};

use super::graph::{EdgeKind, Graph, Vertex, VertexKind, LAB_HOST, OUTSIDE};

const COLUMNS: usize = 6;
const MARGIN: i64 = 20;
const TOP: i64 = 56;
const BOX_H: i64 = 50;
const HOST_X: i64 = 330;
const HOST_W: i64 = 170;
const BRIDGE_X: i64 = 560;
const BRIDGE_W: i64 = 300;
const TRUNK_X: i64 = BRIDGE_X + 20;
const NODE_X: i64 = BRIDGE_X + 40;
const NODE_W: i64 = 176;
const NODE_GAP: i64 = 14;
const LINE: i64 = 14;

const STYLE: &str = "text{font-family:Helvetica,Arial,sans-serif;font-size:11px;fill:#222}\
.name{font-weight:bold;font-size:12px}.dim{fill:#666}.up{fill:#1a7f37}.down{fill:#c0392b}\
.fwd{fill:#b35900}.live{fill:#1f4e9c;font-size:10px}\
.box{fill:#fff;stroke:#555;stroke-width:1.2}.bridge{fill:#dde8f5;stroke:#3b6ea5}\
.host{fill:#f3f3f3;stroke:#333;stroke-width:1.5}.outside{fill:#fafafa;stroke:#888;stroke-dasharray:5 3}\
.wire{stroke:#555;stroke-width:1.4;fill:none}.wire.down{stroke:#c0392b}\
.cable{stroke:#7a4da3;stroke-width:1.4;stroke-dasharray:6 3;fill:none}";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Canvas {
    body: String,
    width: i64,
    height: i64,
}

/// About how wide `s` is drawn at 11px (Helvetica's digits are 0.556 em):
/// enough to keep text inside the picture.
fn text_width(s: &str) -> i64 {
    s.chars().count() as i64 * 31 / 5
}

impl Canvas {
    fn text(&mut self, x: i64, y: i64, class: &str, s: &str) {
        let _ = writeln!(
            self.body,
            "<text x=\"{x}\" y=\"{y}\" class=\"{class}\">{}</text>",
            esc(s)
        );
        self.grow(x + text_width(s), y);
    }

    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, class: &str, rx: i64) {
        let _ = writeln!(
            self.body,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" rx=\"{rx}\" class=\"{class}\"/>"
        );
        self.grow(x + w, y + h);
    }

    fn line(&mut self, points: &[(i64, i64)], class: &str) {
        let pts: Vec<String> = points.iter().map(|(x, y)| format!("{x},{y}")).collect();
        let _ = writeln!(
            self.body,
            "<polyline points=\"{}\" class=\"{class}\"/>",
            pts.join(" ")
        );
    }

    fn grow(&mut self, x: i64, y: i64) {
        self.width = self.width.max(x + MARGIN);
        self.height = self.height.max(y + MARGIN);
    }
}

/// Where each node's box went (top-left, height), for the cables.
type Placed = BTreeMap<String, (i64, i64, i64)>;

pub fn to_svg(g: &Graph) -> String {
    let mut c = Canvas {
        body: String::new(),
        width: 0,
        height: 0,
    };
    c.text(MARGIN, 28, "name", &format!("lab {}", g.lab));
    let left_free = draw_outside_and_host(g, &mut c);
    let mut placed = Placed::new();
    let mut cursor = TOP;
    let mut homed: Vec<&str> = Vec::new();
    for b in g.of_kind(VertexKind::Bridge) {
        let members: Vec<&Vertex> = g
            .of_kind(VertexKind::Node)
            .filter(|n| !homed.contains(&n.id.as_str()))
            .filter(|n| g.ports_of(&n.id).any(|e| e.to == b.id))
            .collect();
        homed.extend(members.iter().map(|n| n.id.as_str()));
        cursor = draw_bridge(g, b, &members, cursor, &mut c, &mut placed);
    }
    let loose: Vec<&Vertex> = g
        .of_kind(VertexKind::Node)
        .filter(|n| !homed.contains(&n.id.as_str()))
        .collect();
    if !loose.is_empty() {
        c.text(BRIDGE_X, cursor + 12, "dim", "nodes on cables only");
        draw_rows(g, &loose, None, cursor + 20, &mut c, &mut placed);
    }
    draw_cables(g, &placed, left_free, &mut c);
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         role=\"img\" aria-label=\"lab {lab}\">\n<style>{STYLE}</style>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n{body}</svg>\n",
        w = c.width.max(880),
        h = c.height,
        lab = esc(&g.lab),
        body = c.body
    )
}

/// Returns the y under the forwards' list.
fn draw_outside_and_host(g: &Graph, c: &mut Canvas) -> i64 {
    c.rect(MARGIN, TOP, 150, BOX_H, "outside", 24);
    c.text(MARGIN + 16, TOP + 22, "name", "outside");
    c.text(MARGIN + 16, TOP + 38, "dim", "the internet");
    c.rect(HOST_X, TOP, HOST_W, BOX_H, "host", 4);
    c.text(HOST_X + 12, TOP + 22, "name", g.label_of(LAB_HOST));
    c.text(HOST_X + 12, TOP + 38, "dim", "gateway, NAT in eBPF");
    let mid = TOP + BOX_H / 2;
    c.line(&[(MARGIN + 150, mid), (HOST_X, mid)], "wire");
    if let Some(up) = g.edges.iter().find(|e| e.kind == EdgeKind::Uplink) {
        let text = up.label.trim_start_matches("uplink ");
        c.text(MARGIN + 158, mid - 6, "dim", "uplink");
        c.text(MARGIN + 158, mid + 14, "", text);
    }
    let forwards: Vec<_> = g
        .edges
        .iter()
        .filter(|e| e.kind == EdgeKind::Forward && e.from == OUTSIDE)
        .collect();
    let mut y = TOP + BOX_H + 24;
    if !forwards.is_empty() {
        c.text(MARGIN, y, "name", "forwards (on the uplink address)");
    }
    for f in forwards {
        y += LINE + 2;
        c.text(MARGIN + 8, y, "fwd", &f.label);
        c.grow(MARGIN + 300, y);
    }
    y
}

/// A bridge's header and trunk with its nodes; returns the next free y.
fn draw_bridge(
    g: &Graph,
    b: &Vertex,
    members: &[&Vertex],
    top: i64,
    c: &mut Canvas,
    placed: &mut Placed,
) -> i64 {
    // The IPv6 subnet (the detail with colons) on a line of its own,
    // under the IPv4 one and the flags.
    let (v6, v4): (Vec<&str>, Vec<&str>) = b
        .details
        .iter()
        .map(String::as_str)
        .partition(|d| d.contains(':'));
    let v6 = (!v6.is_empty()).then(|| v6.join(" · "));
    let h = BOX_H + if v6.is_some() { LINE } else { 0 };
    c.rect(BRIDGE_X, top, BRIDGE_W, h, "bridge", 6);
    c.text(
        BRIDGE_X + 12,
        top + 20,
        "name",
        &format!("bridge {}", b.name),
    );
    c.text(BRIDGE_X + 12, top + 36, "", &v4.join(" · "));
    if let Some(v6) = &v6 {
        c.text(BRIDGE_X + 12, top + 36 + LINE, "", v6);
    }
    if let Some(gw) = g
        .edges
        .iter()
        .find(|e| e.kind == EdgeKind::Gateway && e.from == b.id)
    {
        let (hx, hy) = (HOST_X + HOST_W, TOP + BOX_H / 2);
        let by = top + BOX_H / 2;
        c.line(
            &[
                (hx, hy),
                (BRIDGE_X - 24, hy),
                (BRIDGE_X - 24, by),
                (BRIDGE_X, by),
            ],
            "wire",
        );
        c.text(BRIDGE_X + BRIDGE_W + 10, top + 20, "dim", "lab host on it:");
        for (k, line) in gw.lines().enumerate() {
            c.text(
                BRIDGE_X + BRIDGE_W + 10,
                top + 36 + k as i64 * LINE,
                "",
                line,
            );
        }
    }
    if members.is_empty() {
        return top + h + 24;
    }
    draw_rows(g, members, Some(b), top + h, c, placed)
}

/// Nodes in rows under a trunk at [`TRUNK_X`] (none without a bridge).
fn draw_rows(
    g: &Graph,
    nodes: &[&Vertex],
    bridge: Option<&Vertex>,
    top: i64,
    c: &mut Canvas,
    placed: &mut Placed,
) -> i64 {
    let mut y = top;
    let mut last_branch = top;
    for row in nodes.chunks(COLUMNS) {
        let h = row.iter().map(|n| node_height(g, n)).max().unwrap_or(BOX_H);
        let branch = y + 18;
        let node_top = branch + 14;
        for (j, n) in row.iter().enumerate() {
            let x = NODE_X + j as i64 * (NODE_W + NODE_GAP);
            let port = bridge.and_then(|b| g.ports_of(&n.id).find(|e| e.to == b.id));
            if let Some(port) = port {
                let class = if port.up == Some(false) {
                    "wire down"
                } else {
                    "wire"
                };
                c.line(
                    &[(x + NODE_W / 2, branch), (x + NODE_W / 2, node_top)],
                    class,
                );
            }
            draw_node(g, n, x, node_top, h, c);
            placed.insert(n.id.clone(), (x, node_top, h));
        }
        if bridge.is_some() {
            let end = NODE_X + (row.len() as i64 - 1) * (NODE_W + NODE_GAP) + NODE_W / 2;
            c.line(&[(TRUNK_X, branch), (end, branch)], "wire");
        }
        last_branch = branch;
        y = node_top + h + 6;
    }
    if bridge.is_some() {
        c.line(&[(TRUNK_X, top), (TRUNK_X, last_branch)], "wire");
    }
    y + 18
}

fn forwards_to<'a>(g: &'a Graph, id: &'a str) -> impl Iterator<Item = &'a str> {
    g.edges
        .iter()
        .filter(move |e| e.kind == EdgeKind::Forward && e.to == id)
        .map(|e| e.label.split(" → ").next().unwrap_or(""))
}

fn node_height(g: &Graph, n: &Vertex) -> i64 {
    let v6 = n.interfaces.iter().filter(|i| i.address6.is_some()).count() as i64;
    let fwd = i64::from(forwards_to(g, &n.id).count() > 0);
    let lines = 1 + 2 * n.interfaces.len() as i64 + v6 + fwd;
    12 + lines * LINE
}

fn draw_node(g: &Graph, n: &Vertex, x: i64, y: i64, h: i64, c: &mut Canvas) {
    let _ = writeln!(
        c.body,
        "<g class=\"node\" id=\"node-{}\" data-node=\"{}\">",
        esc(&n.name),
        esc(&n.name)
    );
    c.rect(x, y, NODE_W, h, "box", 8);
    c.text(x + 10, y + 18, "name", &n.name);
    let mut ty = y + 18;
    for i in &n.interfaces {
        let class = match i.up {
            Some(true) => "up",
            Some(false) => "down",
            None => "",
        };
        ty += LINE;
        c.text(x + 10, ty, class, &format!("{} {}", i.name, i.address));
        if let Some(a6) = &i.address6 {
            ty += LINE;
            c.text(x + 10, ty, class, a6);
        }
        ty += LINE;
        let _ = writeln!(
            c.body,
            "<text x=\"{}\" y=\"{ty}\" class=\"live\" data-node=\"{}\" data-iface=\"{}\"></text>",
            x + 18,
            esc(&n.name),
            esc(&i.name)
        );
    }
    let fwd: Vec<&str> = forwards_to(g, &n.id).collect();
    if !fwd.is_empty() {
        c.text(x + 10, ty + LINE, "fwd", &format!("⇐ {}", fwd.join(", ")));
    }
    c.body.push_str("</g>\n");
}

/// Cables as dashed curves under the two boxes, listed by the forwards.
fn draw_cables(g: &Graph, placed: &Placed, top: i64, c: &mut Canvas) {
    let cables: Vec<_> = g
        .edges
        .iter()
        .filter(|e| e.kind == EdgeKind::Cable)
        .collect();
    let mut y = top + 28;
    if !cables.is_empty() {
        c.text(MARGIN, y, "name", "cables");
    }
    for e in cables {
        y += LINE + 2;
        c.text(
            MARGIN + 8,
            y,
            "dim",
            &format!(
                "{} — {}: {}",
                g.label_of(&e.from),
                g.label_of(&e.to),
                e.label
            ),
        );
        let (Some(a), Some(b)) = (placed.get(&e.from), placed.get(&e.to)) else {
            continue;
        };
        let (ax, ay) = (a.0 + NODE_W / 2, a.1 + a.2);
        let (bx, by) = (b.0 + NODE_W / 2, b.1 + b.2);
        let (mx, my) = ((ax + bx) / 2, ay.max(by) + 16);
        let _ = writeln!(
            c.body,
            "<path d=\"M{ax},{ay} Q{mx},{my} {bx},{by}\" class=\"cable\"/>"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::test_labs::{default_lab, star_lab};

    fn boxes(svg: &str) -> Vec<(i64, i64, i64, i64)> {
        let num = |s: &str, key: &str| -> i64 {
            let at = s.find(&format!("{key}=\"")).unwrap() + key.len() + 2;
            s[at..].split('"').next().unwrap().parse().unwrap()
        };
        svg.lines()
            .filter(|l| l.starts_with("<rect x="))
            .map(|l| (num(l, "x"), num(l, "y"), num(l, "width"), num(l, "height")))
            .collect()
    }

    #[test]
    fn the_default_lab_shows_its_parts_and_addresses() {
        let svg = to_svg(&Graph::of(&default_lab(), None));
        for s in [
            "outside",
            "lab host",
            "bridge v-net-0",
            "192.168.15.0/24",
            "192.168.15.5/24",
            ">red<",
            ">blue<",
            "veth-red 192.168.15.1/24",
            "veth-blue 192.168.15.2/24",
            "tcp/80 → blue:80",
            "⇐ tcp/80",
        ] {
            assert!(svg.contains(s), "{s} missing from the SVG");
        }
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    }

    #[test]
    fn ipv6_lines_stand_under_the_ipv4_ones() {
        let svg = to_svg(&Graph::of(&default_lab(), None));
        for s in [
            "class=\"\">192.168.15.0/24 · masquerade<",
            "class=\"\">fdec:60cc:b1bd:15::/64<",
            "class=\"\">fdec:60cc:b1bd:15::5/64<",
            "class=\"\">fdec:60cc:b1bd:15::1/64<",
            "class=\"\">fdec:60cc:b1bd:15::2/64<",
        ] {
            assert!(svg.contains(s), "{s} missing from the SVG");
        }
        // The bridge's and the nodes' boxes take a line more each (the
        // layout test below checks they still do not overlap) than in the
        // same lab without IPv6.
        let mut lab4 = default_lab();
        for b in &mut lab4.bridges {
            (b.subnet6, b.gateway6) = (None, None);
        }
        for i in lab4.nodes.iter_mut().flat_map(|n| &mut n.interfaces) {
            i.address6 = None;
        }
        let v4 = to_svg(&Graph::of(&lab4, None));
        assert!(!v4.contains("fdec:"));
        let heights = |svg: &str| boxes(svg).iter().map(|b| b.3).collect::<Vec<_>>();
        let plus = [0, 0, LINE, LINE, LINE];
        let h4: Vec<i64> = heights(&v4).iter().zip(plus).map(|(h, p)| h + p).collect();
        assert_eq!(heights(&svg), h4);
        // The lab host's IPv6 address right of the bridge is inside the picture.
        let head = svg.lines().next().unwrap();
        let gw6 = svg
            .lines()
            .find(|l| l.ends_with(">fdec:60cc:b1bd:15::5/64</text>"))
            .unwrap();
        let x: i64 = gw6.split('"').nth(1).unwrap().parse().unwrap();
        let width: i64 = head
            .split("width=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(x + text_width("fdec:60cc:b1bd:15::5/64") <= width, "{head}");
    }

    #[test]
    fn no_two_boxes_overlap_and_all_fit_even_with_30_nodes() {
        for lab in [default_lab(), star_lab(30)] {
            let svg = to_svg(&Graph::of(&lab, None));
            let head = svg.lines().next().unwrap();
            let dim = |k: &str| -> i64 {
                let at = head.find(&format!(" {k}=\"")).unwrap() + k.len() + 3;
                head[at..].split('"').next().unwrap().parse().unwrap()
            };
            let (w, h) = (dim("width"), dim("height"));
            let b = boxes(&svg);
            assert_eq!(b.len(), 2 + lab.bridges.len() + lab.nodes.len());
            for (i, r) in b.iter().enumerate() {
                assert!(
                    r.0 + r.2 <= w && r.1 + r.3 <= h,
                    "box {r:?} outside {w}x{h}"
                );
                for s in &b[i + 1..] {
                    let apart = r.0 + r.2 <= s.0
                        || s.0 + s.2 <= r.0
                        || r.1 + r.3 <= s.1
                        || s.1 + s.3 <= r.1;
                    assert!(apart, "{r:?} overlaps {s:?}");
                }
            }
            // Readable at a glance: at most COLUMNS wide, not a tower.
            assert!(w <= 1800 && h <= 1000, "{}: {w}x{h}", lab.name);
        }
    }

    #[test]
    fn interfaces_show_their_state_when_the_lab_is_up() {
        let mut live = crate::view::graph::Live::default();
        live.links.insert(("red".into(), "veth-red".into()), true);
        live.links
            .insert(("blue".into(), "veth-blue".into()), false);
        let svg = to_svg(&Graph::of(&default_lab(), Some(&live)));
        assert!(svg.contains("class=\"up\">veth-red 192.168.15.1/24<"));
        assert!(svg.contains("class=\"down\">veth-blue 192.168.15.2/24<"));
        assert!(
            svg.contains("class=\"wire down\""),
            "blue's port drawn down"
        );
        let unknown = to_svg(&Graph::of(&default_lab(), None));
        assert!(unknown.contains("class=\"\">veth-red 192.168.15.1/24<"));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("a<b>&\"c"), "a&lt;b&gt;&amp;&quot;c");
    }
}
