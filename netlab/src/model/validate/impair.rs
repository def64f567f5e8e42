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
        impair::{egresses, Impair},
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
        // Out at the node's veth, in at the lab host's end of it.
        let e = egresses(&lab);
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].node.as_deref(), e[0].ifname.as_str()),
            (Some("red"), "veth-red")
        );
        assert_eq!(
            (e[1].node.as_deref(), e[1].ifname.as_str()),
            (None, "veth-red-br")
        );
        let plain = parse("lab.toml", &with_base(RED)).unwrap();
        assert!(plain.nodes[0].interfaces[0].impair.is_none());
        assert!(egresses(&plain).is_empty());
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
        let e = egresses(&lab);
        let at = |node: &str, i: &str| {
            e.iter()
                .find(|x| x.node.as_deref() == Some(node) && x.ifname == i)
                .map(|x| x.impair.to_string())
        };
        assert_eq!(at("r", "eth0").as_deref(), Some("rate 1mbit"), "{e:?}");
        assert_eq!(at("r", "eth1").as_deref(), Some("delay 5ms"));
        // s's queue out is r's queue in: both ends' values in one.
        assert_eq!(
            at("s", "veth-s").as_deref(),
            Some("delay 5ms loss 2%"),
            "{e:?}"
        );
        assert_eq!(e.len(), 3, "{e:?}");
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
