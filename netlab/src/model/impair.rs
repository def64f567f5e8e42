//! Link impairments: what `impair = { delay, jitter, loss, rate, corrupt,
//! duplicate, reorder }` asks of one direction of a link, the values in the
//! units tc writes them (`40ms`, `0.1%`, `20mbit`), the queueing discipline
//! that gives them (netem, or TBF for a rate alone), and where each one sits.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::types::{Lab, IFNAME_MAX};

/// Probabilities are kept in parts per billion (100% = 1e9): exact for
/// every value a file writes with up to seven decimals, and comparable.
pub const PPB_PER_PERCENT: u64 = 10_000_000;

/// What one direction of a link does to its packets. Zero is "none".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Impair {
    #[serde(default)]
    pub delay_ns: u64,
    #[serde(default)]
    pub jitter_ns: u64,
    /// Bits per second.
    #[serde(default)]
    pub rate_bps: u64,
    #[serde(default)]
    pub loss_ppb: u32,
    #[serde(default)]
    pub corrupt_ppb: u32,
    #[serde(default)]
    pub duplicate_ppb: u32,
    #[serde(default)]
    pub reorder_ppb: u32,
}

/// The queueing discipline an impairment needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Qdisc {
    /// Delay, jitter, loss, corruption, duplication, reordering (and a rate
    /// with them): `sch_netem`, a module on Debian's kernels.
    Netem,
    /// A rate alone: a token bucket, in every kernel netlab runs on.
    Tbf,
}

impl Qdisc {
    pub fn kind(self) -> &'static str {
        match self {
            Qdisc::Netem => "netem",
            Qdisc::Tbf => "tbf",
        }
    }
}

impl Impair {
    pub fn is_none(&self) -> bool {
        *self == Impair::default()
    }

    /// The qdisc that gives this impairment (`None`: nothing to do).
    pub fn qdisc(&self) -> Option<Qdisc> {
        if self.is_none() {
            None
        } else if (Impair {
            rate_bps: 0,
            ..*self
        })
        .is_none()
        {
            Some(Qdisc::Tbf)
        } else {
            Some(Qdisc::Netem)
        }
    }

    /// `self` with every field `over` sets taken from `over`.
    pub fn overlaid(self, over: &Impair) -> Impair {
        let pick = |a: u64, b: u64| if b != 0 { b } else { a };
        let pick32 = |a: u32, b: u32| if b != 0 { b } else { a };
        Impair {
            delay_ns: pick(self.delay_ns, over.delay_ns),
            jitter_ns: pick(self.jitter_ns, over.jitter_ns),
            rate_bps: pick(self.rate_bps, over.rate_bps),
            loss_ppb: pick32(self.loss_ppb, over.loss_ppb),
            corrupt_ppb: pick32(self.corrupt_ppb, over.corrupt_ppb),
            duplicate_ppb: pick32(self.duplicate_ppb, over.duplicate_ppb),
            reorder_ppb: pick32(self.reorder_ppb, over.reorder_ppb),
        }
    }

    /// Sets `field` (a key of `impair = {...}`) from its text; the message
    /// says what is wrong.
    pub fn set(&mut self, field: &str, text: &str) -> Result<(), String> {
        match field {
            "delay" => self.delay_ns = parse_time(text)?,
            "jitter" => self.jitter_ns = parse_time(text)?,
            "rate" => self.rate_bps = parse_rate(text)?,
            "loss" => self.loss_ppb = parse_percent(text)?,
            "corrupt" => self.corrupt_ppb = parse_percent(text)?,
            "duplicate" => self.duplicate_ppb = parse_percent(text)?,
            "reorder" => self.reorder_ppb = parse_percent(text)?,
            _ => return Err(format!("unknown impairment `{field}`")),
        }
        Ok(())
    }

    /// What is wrong with the combination (each value alone is good).
    pub fn problem(&self) -> Option<&'static str> {
        if self.jitter_ns != 0 && self.delay_ns == 0 {
            Some("`jitter` needs a `delay` to vary")
        } else if self.reorder_ppb != 0 && self.delay_ns == 0 {
            // netem sends the reordered packets at once, the rest delayed.
            Some("`reorder` needs a `delay` (the packets not reordered wait that long)")
        } else if self.jitter_ns > self.delay_ns {
            Some("`jitter` larger than `delay` would need negative delays")
        } else {
            None
        }
    }
}

impl fmt::Display for Impair {
    /// As tc writes it: `delay 40ms jitter 5ms loss 1% rate 20mbit`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.delay_ns != 0 {
            parts.push(format!("delay {}", time_text(self.delay_ns)));
        }
        if self.jitter_ns != 0 {
            parts.push(format!("jitter {}", time_text(self.jitter_ns)));
        }
        for (name, ppb) in [
            ("loss", self.loss_ppb),
            ("corrupt", self.corrupt_ppb),
            ("duplicate", self.duplicate_ppb),
            ("reorder", self.reorder_ppb),
        ] {
            if ppb != 0 {
                parts.push(format!("{name} {}", percent_text(ppb)));
            }
        }
        if self.rate_bps != 0 {
            parts.push(format!("rate {}", rate_text(self.rate_bps)));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// Both directions of a link end, as the node sees them: `out` leaves the
/// node through the interface, `inbound` arrives at it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkImpair {
    #[serde(default, skip_serializing_if = "Impair::is_none")]
    pub out: Impair,
    #[serde(default, rename = "in", skip_serializing_if = "Impair::is_none")]
    pub inbound: Impair,
}

impl LinkImpair {
    pub fn is_none(&self) -> bool {
        self.out.is_none() && self.inbound.is_none()
    }
}

/// A direction of a link end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Leaving the node: the root qdisc of its interface's egress.
    Out,
    /// Arriving at the node: redirected at its interface's ingress to an
    /// IFB device beside it, whose root qdisc holds the impairment.
    In,
}

/// One impaired direction of one node interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Impaired {
    pub node: String,
    pub ifname: String,
    pub direction: Direction,
    pub impair: Impair,
}

impl fmt::Display for Impaired {
    /// `red:veth-red out`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = match self.direction {
            Direction::Out => "out",
            Direction::In => "in",
        };
        write!(f, "{}:{} {d}", self.node, self.ifname)
    }
}

/// Every impaired direction of `lab`, each at the node it is written for:
/// both queues of a link end sit in its node's namespace, where every
/// packet it sends or gets passes (the NAT's fast path hands packets to
/// the node's side of the veth, past the lab host's end and its queue).
/// On a cable each end's impairments are its own: a packet from a to b
/// passes a's `out` and then b's `in`.
pub fn impaired(lab: &Lab) -> Vec<Impaired> {
    let mut out = Vec::new();
    for node in &lab.nodes {
        for iface in &node.interfaces {
            for (direction, impair) in [
                (Direction::Out, iface.impair.out),
                (Direction::In, iface.impair.inbound),
            ] {
                if !impair.is_none() {
                    out.push(Impaired {
                        node: node.name.clone(),
                        ifname: iface.name.clone(),
                        direction,
                        impair,
                    });
                }
            }
        }
    }
    out
}

/// The IFB device that holds the queue of traffic into `ifname`.
pub fn ifb_name(ifname: &str) -> String {
    let name = format!("ifb-{ifname}");
    if name.len() <= IFNAME_MAX {
        return name;
    }
    // Long names: a prefix and a hash of the whole (FNV-1a), still unique.
    let hash = ifname.bytes().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("ifb-{}{:04x}", &ifname[..7], hash & 0xffff)
}

/// `40ms`, `1.5s`, `250us`, `100ns` (tc's units; a bare number is
/// microseconds, as in tc) to nanoseconds.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let (num, unit) = split_number(text)?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" => 1e9,
        "ms" | "msec" | "msecs" => 1e6,
        "" | "us" | "usec" | "usecs" => 1e3,
        "ns" | "nsec" | "nsecs" => 1.0,
        _ => {
            return Err(format!(
                "`{text}`: a time is written like 40ms, 250us or 1s"
            ))
        }
    };
    let ns = num * scale;
    // netem keeps delays in signed 64-bit nanoseconds; an hour is plenty.
    if ns > 3600e9 {
        return Err(format!("`{text}`: more than an hour"));
    }
    Ok(ns.round() as u64)
}

/// `1%`, `0.1%` to parts per billion.
pub fn parse_percent(text: &str) -> Result<u32, String> {
    let (num, unit) = split_number(text)?;
    if unit != "%" {
        return Err(format!(
            "`{text}`: a probability is written like 1% or 0.1%"
        ));
    }
    if num > 100.0 {
        return Err(format!("`{text}`: more than 100%"));
    }
    Ok((num * PPB_PER_PERCENT as f64).round() as u32)
}

/// `20mbit`, `500kbit`, `1gbit`, `10mibit`, `1mbps` (bytes), `100bit` to bits
/// per second, as tc reads them (k = 1000, ki = 1024; `bps` is bytes).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let (num, unit) = split_number(text)?;
    let lower = unit.to_ascii_lowercase();
    let (prefix, per_unit) = if let Some(p) = lower.strip_suffix("bit") {
        (p, 1.0)
    } else if let Some(p) = lower.strip_suffix("bps") {
        (p, 8.0)
    } else {
        return Err(format!(
            "`{text}`: a rate is written like 20mbit, 500kbit or 1mbps"
        ));
    };
    let scale = match prefix {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        "ti" => 1024f64.powi(4),
        _ => {
            return Err(format!(
                "`{text}`: unknown prefix `{prefix}` (k, m, g, t, ki, mi, gi, ti)"
            ))
        }
    };
    let bps = (num * scale * per_unit).round();
    if bps < 8.0 {
        return Err(format!("`{text}`: less than one byte per second"));
    }
    Ok(bps as u64)
}

/// A non-negative decimal number and the unit right after it.
fn split_number(text: &str) -> Result<(f64, &str), String> {
    let t = text.trim();
    let end = t
        .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    match num.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok((n, unit.trim())),
        _ => Err(format!("`{text}`: not a number with a unit")),
    }
}

pub fn time_text(ns: u64) -> String {
    if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else if ns.is_multiple_of(1_000) {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

pub fn percent_text(ppb: u32) -> String {
    let whole = u64::from(ppb) / PPB_PER_PERCENT;
    let frac = u64::from(ppb) % PPB_PER_PERCENT;
    if frac == 0 {
        format!("{whole}%")
    } else {
        let digits = format!("{frac:07}");
        format!("{whole}.{}%", digits.trim_end_matches('0'))
    }
}

pub fn rate_text(bps: u64) -> String {
    for (div, unit) in [
        (1_000_000_000, "gbit"),
        (1_000_000, "mbit"),
        (1_000, "kbit"),
    ] {
        if bps.is_multiple_of(div) {
            return format!("{}{unit}", bps / div);
        }
    }
    format!("{bps}bit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifb_names_fit_and_stay_apart() {
        assert_eq!(ifb_name("veth-red"), "ifb-veth-red");
        let a = ifb_name("veth-verylong1");
        let b = ifb_name("veth-verylong2");
        assert!(a.len() <= IFNAME_MAX && b.len() <= IFNAME_MAX);
        assert_ne!(a, b);
    }

    #[test]
    fn units_as_tc_writes_them() {
        assert_eq!(parse_time("40ms"), Ok(40_000_000));
        assert_eq!(parse_time("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_time("250us"), Ok(250_000));
        assert_eq!(parse_time("250"), Ok(250_000));
        assert_eq!(parse_percent("1%"), Ok(10_000_000));
        assert_eq!(parse_percent("0.1%"), Ok(1_000_000));
        assert_eq!(parse_percent("100%"), Ok(1_000_000_000));
        assert_eq!(parse_rate("20mbit"), Ok(20_000_000));
        assert_eq!(parse_rate("500kbit"), Ok(500_000));
        assert_eq!(parse_rate("1mbps"), Ok(8_000_000));
        assert_eq!(parse_rate("1mibit"), Ok(1_048_576));
        assert_eq!(parse_rate("1Gbit"), Ok(1_000_000_000));
    }

    #[test]
    fn bad_values_say_how_to_write_them() {
        assert!(parse_time("40 parsecs").unwrap_err().contains("40ms"));
        assert!(parse_time("-5ms").is_err());
        assert!(parse_time("2h").is_err());
        assert!(parse_percent("1").unwrap_err().contains("1%"));
        assert!(parse_percent("101%").unwrap_err().contains("100%"));
        assert!(parse_rate("20").unwrap_err().contains("20mbit"));
        assert!(parse_rate("20xbit").unwrap_err().contains("prefix"));
        assert!(parse_rate("0mbit").is_err());
    }

    #[test]
    fn text_round_trips() {
        let mut i = Impair::default();
        for (k, v) in [
            ("delay", "40ms"),
            ("jitter", "5ms"),
            ("loss", "0.25%"),
            ("rate", "20mbit"),
            ("reorder", "1%"),
        ] {
            i.set(k, v).unwrap();
        }
        assert_eq!(
            i.to_string(),
            "delay 40ms jitter 5ms loss 0.25% reorder 1% rate 20mbit"
        );
        assert_eq!(Impair::default().to_string(), "none");
    }

    #[test]
    fn a_rate_alone_is_a_token_bucket_anything_else_netem() {
        let rate = Impair {
            rate_bps: 1_000_000,
            ..Impair::default()
        };
        assert_eq!(rate.qdisc(), Some(Qdisc::Tbf));
        let both = Impair {
            delay_ns: 1,
            ..rate
        };
        assert_eq!(both.qdisc(), Some(Qdisc::Netem));
        assert_eq!(Impair::default().qdisc(), None);
    }

    #[test]
    fn combinations_netem_cannot_do_are_refused() {
        let jitter_only = Impair {
            jitter_ns: 1_000_000,
            ..Impair::default()
        };
        assert!(jitter_only.problem().unwrap().contains("delay"));
        let reorder_only = Impair {
            reorder_ppb: 1,
            ..Impair::default()
        };
        assert!(reorder_only.problem().unwrap().contains("delay"));
        let fine = Impair {
            delay_ns: 2,
            jitter_ns: 1,
            ..Impair::default()
        };
        assert_eq!(fine.problem(), None);
    }
}
