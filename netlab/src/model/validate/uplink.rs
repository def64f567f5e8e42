//! The `[uplink]` section: which interface of the lab host leads outside,
//! and which of its addresses the NAT translates to.

use super::context::Checker;
use crate::model::{raw::RawUplink, types::Uplink};

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
        address: u.address.as_ref().and_then(|a| c.ipv4(a, "uplink.address")),
    }
}
