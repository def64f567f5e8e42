//! The chart of the ratios, as plain SVG: one panel per baseline (iptables,
//! veth), one group of bars per metric, one bar per mode. Bars show how much
//! better a mode does than the baseline (latency inverted, so taller is
//! always better); a dashed line marks 1.

use std::fmt::Write as _;

use super::{
    report::{Metric, Results},
    Mode,
};

/// Room per group of bars: its label under it must fit.
const GROUP_W: f64 = 100.0;

/// The chart's width: at least 1100, wider with more metrics.
fn width(r: &Results) -> f64 {
    (LEFT + RIGHT + GROUP_W * r.metrics.len() as f64).max(1100.0)
}
const PANEL_H: f64 = 300.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 70.0;
const GAP: f64 = 90.0;

fn color(mode: Mode) -> &'static str {
    match mode {
        Mode::Veth => "#9e9e9e",
        Mode::Route => "#5b8ff9",
        Mode::Iptables => "#e8684a",
        Mode::Netlab => "#2e9e5b",
        Mode::NetlabSlow => "#a3d977",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A round top for the axis: 1, 1.5, 2, 3, 5 times a power of ten.
fn nice_max(x: f64) -> f64 {
    let x = x.max(1.2);
    let p = 10f64.powf(x.log10().floor());
    for m in [1.0, 1.5, 2.0, 3.0, 5.0, 10.0] {
        if m * p >= x {
            return m * p;
        }
    }
    10.0 * p
}

fn panel(svg: &mut String, r: &Results, base: Mode, title: &str, y0: f64) {
    let metrics: &[Metric] = &r.metrics;
    let modes: &[Mode] = &r.modes;
    let width = width(r);
    let plot_w = width - LEFT - RIGHT;
    let values: Vec<Vec<Option<f64>>> = metrics
        .iter()
        .map(|&m| modes.iter().map(|&mode| r.gain(m, mode, base)).collect())
        .collect();
    let top = nice_max(
        values
            .iter()
            .flatten()
            .flatten()
            .copied()
            .fold(0.0, f64::max)
            * 1.1,
    );
    let y = |v: f64| y0 + PANEL_H - v / top * PANEL_H;
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{:.1}" font-size="15" font-weight="bold">{}</text>"#,
        y0 - 12.0,
        esc(title)
    );
    // Grid and axis labels.
    for i in 0..=5 {
        let v = top * f64::from(i) / 5.0;
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{:.2}</text>"##,
            width - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            v
        );
    }
    let one = y(1.0);
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{one:.1}" x2="{:.1}" y2="{one:.1}" stroke="#333" stroke-dasharray="5,4"/>"##,
        width - RIGHT
    );
    let group_w = plot_w / metrics.len().max(1) as f64;
    let bar_w = (group_w * 0.8) / modes.len().max(1) as f64;
    for (gi, &metric) in metrics.iter().enumerate() {
        let gx = LEFT + group_w * gi as f64 + group_w * 0.1;
        for (mi, &mode) in modes.iter().enumerate() {
            let x = gx + bar_w * mi as f64;
            match values[gi][mi] {
                Some(v) => {
                    let yy = y(v.min(top));
                    let _ = writeln!(
                        svg,
                        r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {v:.3}</title></rect>"#,
                        bar_w * 0.92,
                        (y0 + PANEL_H - yy).max(0.0),
                        color(mode),
                        esc(&metric.label()),
                        mode.name()
                    );
                    let _ = writeln!(
                        svg,
                        r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{v:.2}</text>"#,
                        x + bar_w * 0.46,
                        yy - 3.0
                    );
                }
                None => {
                    let _ = writeln!(
                        svg,
                        r##"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle" fill="#999">–</text>"##,
                        x + bar_w * 0.46,
                        y0 + PANEL_H - 3.0
                    );
                }
            }
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
            LEFT + group_w * (gi as f64 + 0.5),
            y0 + PANEL_H + 18.0,
            esc(&metric.short())
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        y0 + PANEL_H,
        width - RIGHT,
        y0 + PANEL_H
    );
}

/// The whole chart.
pub fn chart(r: &Results) -> String {
    let mut bases = Vec::new();
    let first = [Mode::Iptables, Mode::Route]
        .into_iter()
        .find(|m| r.modes.contains(m));
    if let Some(b) = first {
        bases.push(b);
    }
    if r.modes.contains(&Mode::Veth) {
        bases.push(Mode::Veth);
    }
    if bases.is_empty() {
        bases.extend(r.modes.first().copied());
    }
    let height = TOP + (PANEL_H + GAP) * bases.len() as f64 + 10.0;
    let width = width(r);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="24" font-size="18" font-weight="bold">netlab bench: eBPF NAT vs iptables ({}, medians)</text>"#,
        super::report::plural(r.profile.rounds, "round")
    );
    // Legend.
    let mut lx = LEFT;
    for &mode in &r.modes {
        let _ = writeln!(
            svg,
            r#"<rect x="{lx:.1}" y="36" width="12" height="12" fill="{}"/><text x="{:.1}" y="46" font-size="12">{}</text>"#,
            color(mode),
            lx + 16.0,
            mode.name()
        );
        lx += 24.0 + 8.0 * mode.name().len() as f64;
    }
    for (i, &base) in bases.iter().enumerate() {
        let title = if base == Mode::Veth {
            "fraction of veth (the machine's limit); latency inverted, higher is better".to_string()
        } else {
            format!(
                "relative to {} (median ratio; latency inverted, higher is better)",
                base.name()
            )
        };
        panel(
            &mut svg,
            r,
            base,
            &title,
            TOP + 20.0 + (PANEL_H + GAP) * i as f64,
        );
    }
    svg.push_str("</svg>\n");
    svg
}
