//! The `[nat]` section: the outside port range, the flow table, the fast
//! path and the idle timeouts.

use super::context::Checker;
use crate::model::{
    forwards::parse_port_range,
    raw::RawNat,
    types::{NatSettings, Timeouts, DEFAULT_MAX_FLOWS, DEFAULT_PORT_MAX, DEFAULT_PORT_MIN},
};

pub fn validate(c: &mut Checker<'_>, raw: Option<&RawNat>) -> NatSettings {
    let mut nat = NatSettings {
        port_min: DEFAULT_PORT_MIN,
        port_max: DEFAULT_PORT_MAX,
        timeouts: Timeouts::default(),
        max_flows: DEFAULT_MAX_FLOWS,
        fast_path: true,
    };
    let Some(raw) = raw else { return nat };
    if let Some(f) = &raw.fast_path {
        nat.fast_path = *f.get_ref();
    }
    if let Some(r) = &raw.port_range {
        match parse_port_range(r.get_ref()) {
            Ok((a, b)) if a >= 1024 && b > a => (nat.port_min, nat.port_max) = (a, b),
            Ok(_) => c.at(
                r,
                "nat.port_range",
                "must be a range of at least two ports from 1024 up",
            ),
            Err(e) => c.at(r, "nat.port_range", e),
        }
    }
    if let Some(m) = &raw.max_flows {
        match u32::try_from(*m.get_ref()) {
            Ok(n) if (2..=16_777_216).contains(&n) => nat.max_flows = n,
            _ => c.at(m, "nat.max_flows", "must be between 2 and 16777216"),
        }
    }
    if let Some(t) = &raw.timeouts {
        let d = Timeouts::default();
        nat.timeouts = Timeouts {
            tcp_syn: c.seconds(&t.tcp_syn, "nat.timeouts.tcp_syn", d.tcp_syn),
            tcp_established: c.seconds(
                &t.tcp_established,
                "nat.timeouts.tcp_established",
                d.tcp_established,
            ),
            tcp_closing: c.seconds(&t.tcp_closing, "nat.timeouts.tcp_closing", d.tcp_closing),
            tcp_rst: c.seconds(&t.tcp_rst, "nat.timeouts.tcp_rst", d.tcp_rst),
            udp: c.seconds(&t.udp, "nat.timeouts.udp", d.udp),
            icmp: c.seconds(&t.icmp, "nat.timeouts.icmp", d.icmp),
        };
    }
    nat
}

#[cfg(test)]
mod tests {
    use crate::model::{
        test_support::err,
        validate::{default_lab, parse},
    };

    #[test]
    fn nat_settings() {
        let lab = parse(
            "lab.toml",
            "[nat]\nport_range = \"40000-40999\"\nmax_flows = 1000\nfast_path = false\n[nat.timeouts]\nudp = 120\n",
        )
        .unwrap();
        assert_eq!(
            (lab.nat.port_min, lab.nat.port_max, lab.nat.max_flows),
            (40000, 40999, 1000)
        );
        assert_eq!(lab.nat.timeouts.udp, 120);
        assert!(!lab.nat.fast_path);
        assert!(default_lab().nat.fast_path);
        assert_eq!(lab.nat.timeouts.tcp_established, 7440);
        assert!(err("[nat]\nport_range = \"80-90\"\n").contains("nat.port_range"));
        assert!(err("[nat.timeouts]\nudp = 0\n").contains("nat.timeouts.udp"));
    }
}
