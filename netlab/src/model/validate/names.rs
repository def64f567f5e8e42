//! The kernel's and netlab's rules for names: interfaces, labs and nodes.

use crate::model::types::IFNAME_MAX;

/// Interface names: 1-15 bytes, no `/`, `:` or whitespace (the kernel's rules).
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > IFNAME_MAX {
        return Err(format!(
            "interface name `{name}` is {} bytes; Linux allows at most {IFNAME_MAX}",
            name.len()
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "interface name `{name}` may not contain `/`, `:` or spaces"
        ));
    }
    Ok(())
}

/// Lab and node names: letters, digits, `-`, `_`, `.`, starting with a letter or digit.
pub fn check_name(name: &str, what: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} `{name}` must be 1-64 letters, digits, `-`, `_` or `.`, starting with a letter or digit"
        ))
    }
}
