//! The `[uplink]` section: which interface of the lab host leads outside,
//! and which of its addresses the NAT translates to.

use super::context::Checker;
use crate::model::{net::unusable_range, raw::RawUplink, types::Uplink};

pub fn validate(c: &mut Checker<'_>, raw: Option<&RawUplink>) -> Uplink {
    let Some(u) = raw else {
        return Uplink {
            interface: None,
            address: None,
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
    }
}
