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

/// The errors of `text` as `netlab check` prints them.
pub fn err(text: &str) -> String {
    parse("lab.toml", text).unwrap_err().to_string()
}

/// [`BASE`] followed by `extra`.
pub fn with_base(extra: &str) -> String {
    format!("{BASE}{extra}")
}
