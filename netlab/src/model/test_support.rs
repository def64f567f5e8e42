//! Lab files for the model's unit tests, defined once.

use super::validate::parse;

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
