//! Lab files for the model's unit tests, defined once.

use super::{hosts::share, types::Lab, validate::parse};

/// A lab with bridge `v-net-0` (192.168.15.0/24, the lab host at .5).
pub const BASE: &str = r#"
name = "t"
[[bridges]]
name = "v-net-0"
subnet = "192.168.15.0/24"
gateway = "192.168.15.5"
"#;

/// [`BASE`] with an IPv6 subnet on v-net-0 (the lab host at ::5).
pub const BASE6: &str = r#"
name = "t"
[[bridges]]
name = "v-net-0"
subnet = "192.168.15.0/24"
gateway = "192.168.15.5"
subnet6 = "fd00:15::/64"
gateway6 = "fd00:15::5"
"#;

/// [`BASE6`] followed by `extra`.
pub fn with_base6(extra: &str) -> String {
    format!("{BASE6}{extra}")
}

/// The errors of `text` as `netlab check` prints them.
pub fn err(text: &str) -> String {
    parse("lab.toml", text).unwrap_err().to_string()
}

/// [`BASE`] followed by `extra`.
pub fn with_base(extra: &str) -> String {
    format!("{BASE}{extra}")
}

/// Lab `m` over lab hosts a (192.0.2.1) and b (192.0.2.2): how the tests
/// of a lab over several hosts begin.
pub const HOSTS_AB: &str = r#"
name = "m"
[[hosts]]
name = "a"
underlay = "192.0.2.1"
[[hosts]]
name = "b"
underlay = "192.0.2.2"
"#;

/// [`HOSTS_AB`] with bridge br0 (VNI 42) and node n2 on it on host b,
/// followed by `extra`: br0 is stretched to a when `extra` puts a node on
/// it there or has a take a forward to n2.
pub fn stretched(extra: &str) -> String {
    format!(
        r#"{HOSTS_AB}[[bridges]]
name = "br0"
subnet = "192.168.15.0/24"
gateway = "192.168.15.254"
vni = 42
[[nodes]]
name = "n2"
host = "b"
bridge = "br0"
address = "192.168.15.2"
{extra}"#
    )
}

/// Host `host`'s share of lab file `text`.
pub fn share_of(text: &str, host: &str) -> Lab {
    share(&parse("lab.toml", text).unwrap(), Some(host)).unwrap()
}
