//! The `[uplink]` section: which interface of the lab host leads outside,
//! and which of its addresses the NAT translates to.

use super::context::Checker;
use std::net::Ipv6Addr;

use toml::Spanned;

use crate::model::{
    net::{unusable_range, unusable_range6},
    raw::RawUplink,
    types::Uplink,
};

pub fn validate(c: &mut Checker<'_>, raw: Option<&RawUplink>) -> Uplink {
    let Some(u) = raw else {
        return Uplink {
            interface: None,
            address: None,
            address6: None,
        };
    };
    Uplink {
        interface: match &u.interface {
            Some(i) if i.get_ref() == "auto" => None,
            Some(i) => Some(c.ifname(i, "uplink.interface").to_string()),
            None => None,
        },
        address: u.address.as_ref().and_then(|a| {
            let addr = c.ipv4(a, "uplink.address")?;
            if let Some((range, why)) = unusable_range(addr) {
                c.at(
                    a,
                    "uplink.address",
                    format!("{addr} is in {range} ({why}): not an address to translate to"),
                );
            }
            Some(addr)
        }),
        address6: u.address6.as_ref().and_then(|a| address6(c, a)),
    }
}

/// `[uplink] address6`: an address the outside can reach the lab host at
/// (the NAT66 translates to it), so not link-local, multicast, loopback...
fn address6(c: &mut Checker<'_>, a: &Spanned<String>) -> Option<Ipv6Addr> {
    let addr = c.ipv6(a, "uplink.address6")?;
    if let Some((range, why)) = unusable_range6(addr) {
        c.at(
            a,
            "uplink.address6",
            format!("{addr} is in {range} ({why}): not an address to translate to"),
        );
    }
    Some(addr)
}

#[cfg(test)]
mod tests {
    use crate::model::{
        test_support::{err, with_base},
        validate::parse,
    };

    #[test]
    fn uplink_address6_is_an_address_to_translate_to() {
        let lab = parse(
            "lab.toml",
            &with_base("[uplink]\naddress6 = \"2001:db8:100::2\"\n"),
        )
        .unwrap();
        assert_eq!(
            lab.uplink.address6,
            Some("2001:db8:100::2".parse().unwrap())
        );
        assert_eq!(
            parse("lab.toml", &with_base("")).unwrap().uplink.address6,
            None
        );
        assert_eq!(
            err(&with_base("[uplink]\naddress6 = \"fe80::1\"\n")),
            "lab.toml:8: uplink.address6: fe80::1 is in fe80::/10 (link-local, which the kernel \
             gives every interface itself): not an address to translate to"
        );
        assert!(err(&with_base("[uplink]\naddress6 = \"198.51.100.2\"\n"))
            .contains("uplink.address6: `198.51.100.2` is not an IPv6 address"));
    }
}
