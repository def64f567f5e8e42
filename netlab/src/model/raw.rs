//! The lab file as written: serde's view of the TOML, every value with its
//! byte span so that validation can name the line. Nothing here is checked;
//! [`super::validate`] turns it into a [`super::types::Lab`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// `impair = { delay = "40ms", ... }`: each key with its value as written.
pub type RawImpair = Spanned<BTreeMap<String, Spanned<String>>>;

/// A link end's impairments: both directions, then each direction's own.
#[derive(Default)]
pub struct RawImpairs<'r> {
    pub both: Option<&'r RawImpair>,
    pub inbound: Option<&'r RawImpair>,
    pub out: Option<&'r RawImpair>,
}

macro_rules! impairs_of {
    ($t:ty) => {
        impl $t {
            pub fn impairs(&self) -> RawImpairs<'_> {
                RawImpairs {
                    both: self.impair.as_ref(),
                    inbound: self.impair_in.as_ref(),
                    out: self.impair_out.as_ref(),
                }
            }
        }
    };
}
impairs_of!(RawNode);
impairs_of!(RawInterface);
impairs_of!(RawCableEnd);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLab {
    pub name: Option<Spanned<String>>,
    pub netns_prefix: Option<Spanned<String>>,
    pub uplink: Option<RawUplink>,
    pub nat: Option<RawNat>,
    pub dns: Option<RawDns>,
    #[serde(default)]
    pub bridges: Vec<Spanned<RawBridge>>,
    #[serde(default)]
    pub nodes: Vec<Spanned<RawNode>>,
    #[serde(default)]
    pub cables: Vec<Spanned<RawCable>>,
    #[serde(default)]
    pub forwards: Vec<Spanned<RawForward>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawHostRoute>>,
    #[serde(default)]
    pub hosts: Vec<Spanned<RawHost>>,
    pub vxlan: Option<RawVxlan>,
}

/// `[[hosts]]`: a lab host the lab spans, by the address the others reach it at.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    pub name: Spanned<String>,
    pub underlay: Spanned<String>,
    pub interface: Option<Spanned<String>>,
}

/// `[vxlan]`: how stretched bridges are carried between hosts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVxlan {
    pub port: Option<Spanned<i64>>,
    pub mtu: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUplink {
    pub interface: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    pub address6: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNat {
    pub port_range: Option<Spanned<String>>,
    pub max_flows: Option<Spanned<i64>>,
    pub fast_path: Option<Spanned<bool>>,
    pub timeouts: Option<RawTimeouts>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub tcp_syn: Option<Spanned<i64>>,
    pub tcp_established: Option<Spanned<i64>>,
    pub tcp_closing: Option<Spanned<i64>>,
    pub tcp_rst: Option<Spanned<i64>>,
    pub udp: Option<Spanned<i64>>,
    pub icmp: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub nameservers: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub search: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBridge {
    pub name: Spanned<String>,
    pub subnet: Spanned<String>,
    pub gateway: Option<Spanned<String>>,
    pub subnet6: Option<Spanned<String>>,
    pub gateway6: Option<Spanned<String>>,
    pub masquerade: Option<Spanned<bool>>,
    pub filtering: Option<Spanned<String>>,
    pub routed: Option<Spanned<bool>>,
    pub vni: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: Spanned<String>,
    pub host: Option<Spanned<String>>,
    pub bridge: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    pub address6: Option<Spanned<String>>,
    pub interface: Option<Spanned<String>>,
    pub host_interface: Option<Spanned<String>>,
    pub interfaces: Option<Vec<Spanned<RawInterface>>>,
    pub gateway: Option<Spanned<String>>,
    pub gateway6: Option<Spanned<String>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    pub forwarding: Option<Spanned<bool>>,
    /// Services: shell commands started inside the node after `up`.
    pub run: Option<Vec<Spanned<String>>>,
    pub impair: Option<RawImpair>,
    pub impair_in: Option<RawImpair>,
    pub impair_out: Option<RawImpair>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInterface {
    pub bridge: Spanned<String>,
    pub address: Spanned<String>,
    pub address6: Option<Spanned<String>>,
    pub name: Option<Spanned<String>>,
    pub host_name: Option<Spanned<String>>,
    pub impair: Option<RawImpair>,
    pub impair_in: Option<RawImpair>,
    pub impair_out: Option<RawImpair>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCable {
    pub a: Spanned<RawCableEnd>,
    pub b: Spanned<RawCableEnd>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCableEnd {
    pub node: Spanned<String>,
    pub interface: Option<Spanned<String>>,
    pub address: Spanned<String>,
    pub address6: Option<Spanned<String>>,
    pub impair: Option<RawImpair>,
    pub impair_in: Option<RawImpair>,
    pub impair_out: Option<RawImpair>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    pub protocol: Spanned<String>,
    pub port: Spanned<toml::Value>,
    pub to: Spanned<String>,
    pub take_host_port: Option<Spanned<bool>>,
    pub host: Option<Spanned<String>>,
    pub ipv6: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub to: Spanned<String>,
    pub via: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHostRoute {
    pub to: Spanned<String>,
    pub via: Spanned<String>,
    pub masquerade: Option<Spanned<bool>>,
    pub routed: Option<Spanned<bool>>,
}
