//! `impair`, `impair_in` and `impair_out` on a link end (a node on a
//! bridge, an `interfaces` entry, a cable end): `impair` sets both
//! directions, `impair_in`/`impair_out` set (or override, key by key) the
//! traffic arriving at the node and leaving it.

use super::context::Checker;
use crate::model::{
    impair::{Impair, LinkImpair},
    raw::{RawImpair, RawImpairs},
};

/// The end's impairments; each bad value reported at its line as
/// `{field}.impair.delay`.
pub fn link(c: &mut Checker<'_>, field: &str, raw: &RawImpairs<'_>) -> LinkImpair {
    let both = table(c, &format!("{field}.impair"), raw.both);
    let inbound = table(c, &format!("{field}.impair_in"), raw.inbound);
    let out = table(c, &format!("{field}.impair_out"), raw.out);
    let link = LinkImpair {
        out: both.overlaid(&out),
        inbound: both.overlaid(&inbound),
    };
    for (direction, key, imp) in [
        ("out", raw.out.or(raw.both), link.out),
        ("in", raw.inbound.or(raw.both), link.inbound),
    ] {
        if let (Some(problem), Some(at)) = (imp.problem(), key) {
            c.at(at, format!("{field}.impair ({direction})"), problem);
        }
    }
    link
}

fn table(c: &mut Checker<'_>, field: &str, raw: Option<&RawImpair>) -> Impair {
    let mut imp = Impair::default();
    for (key, value) in raw.map(|t| t.get_ref().iter()).into_iter().flatten() {
        if let Err(e) = imp.set(key, value.get_ref()) {
            c.at(value, format!("{field}.{key}"), e);
        }
    }
    imp
}

#[cfg(test)]
mod tests {
    use crate::model::{
        impair::{impaired, Impair},
        test_support::{err, with_base},
        validate::parse,
    };

    const RED: &str =
        "[[nodes]]\nname = \"red\"\nbridge = \"v-net-0\"\naddress = \"192.168.15.1\"\n";

    #[test]
    fn impair_sets_both_directions_and_each_direction_its_own() {
        let text = with_base(&format!(
            "{RED}impair = {{ delay = \"40ms\", loss = \"1%\" }}\nimpair_in = {{ rate = \"20mbit\", delay = \"10ms\" }}\n"
        ));
        let lab = parse("lab.toml", &text).unwrap();
        let imp = lab.nodes[0].interfaces[0].impair;
        assert_eq!(imp.out.to_string(), "delay 40ms loss 1%");
        assert_eq!(imp.inbound.to_string(), "delay 10ms loss 1% rate 20mbit");
        let all: Vec<String> = impaired(&lab).iter().map(|i| i.to_string()).collect();
        assert_eq!(all, ["red:veth-red out", "red:veth-red in"]);
        let plain = parse("lab.toml", &with_base(RED)).unwrap();
        assert!(plain.nodes[0].interfaces[0].impair.is_none());
        assert!(impaired(&plain).is_empty());
    }

    #[test]
    fn interfaces_entries_and_cable_ends_take_them_too() {
        let text = with_base(
            "[[nodes]]\nname = \"r\"\ninterfaces = [{ bridge = \"v-net-0\", address = \"192.168.15.1\", impair_out = { rate = \"1mbit\" } }]\n\
             [[nodes]]\nname = \"s\"\n\
             [[cables]]\na = { node = \"r\", address = \"10.9.0.1/30\", impair = { delay = \"5ms\" } }\n\
             b = { node = \"s\", address = \"10.9.0.2/30\", impair_out = { loss = \"2%\" } }\n",
        );
        let lab = parse("lab.toml", &text).unwrap();
        let all: Vec<String> = impaired(&lab)
            .iter()
            .map(|i| format!("{i}: {}", i.impair))
            .collect();
        assert_eq!(
            all,
            [
                "r:eth0 out: rate 1mbit",
                "r:eth1 out: delay 5ms",
                "r:eth1 in: delay 5ms",
                "s:veth-s out: loss 2%",
            ]
        );
    }

    #[test]
    fn bad_values_are_refused_at_their_line() {
        let e = err(&with_base(&format!(
            "{RED}impair = {{ delay = \"40 parsecs\" }}\n"
        )));
        assert!(
            e.starts_with("lab.toml:11: nodes[0].impair.delay: `40 parsecs`"),
            "{e}"
        );
        let e = err(&with_base(&format!(
            "{RED}impair_out = {{\n  loss = \"1%\",\n  lag = \"1ms\" }}\n"
        )));
        assert_eq!(
            e,
            "lab.toml:13: nodes[0].impair_out.lag: unknown impairment `lag`"
        );
        let e = err(&with_base(&format!(
            "{RED}impair = {{ jitter = \"5ms\" }}\n"
        )));
        assert!(
            e.starts_with("lab.toml:11: nodes[0].impair (out): `jitter` needs"),
            "{e}"
        );
        let e = err(&with_base(&format!("{RED}impair = {{ delay = 40 }}\n")));
        assert!(e.starts_with("lab.toml:11:"), "{e}");
        assert_eq!(Impair::default().to_string(), "none");
    }
}
