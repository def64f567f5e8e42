//! How a lab marks what it makes, so that `down` finds all of it by the
//! lab's name alone, state file or not.

/// Alias set on everything a lab creates: namespaces (on their `lo`) and the
/// lab host's links. `netlab:<lab>`.
pub fn owner_alias(lab: &str) -> String {
    format!("netlab:{lab}")
}

/// Link group set atomically when a lab-host link is created (the alias needs
/// a second request, so a crash in between would otherwise leave an
/// unmarked link). FNV-1a of the owner alias, kept away from the small group
/// numbers people assign by hand.
pub fn owner_group(lab: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in owner_alias(lab).bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h | 0x4000_0000
}

/// First line of every file a lab writes; how `down` finds them.
pub fn file_marker(lab: &str) -> String {
    format!("# written by netlab for lab {lab}; `netlab down` removes it")
}

/// Where `ip netns exec` finds per-namespace configuration files.
pub const NETNS_ETC: &str = "/etc/netns";
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_group_is_stable_and_nonzero() {
        assert_eq!(owner_group("netlab"), owner_group("netlab"));
        assert_ne!(owner_group("netlab"), owner_group("other"));
        assert!(owner_group("x") >= 0x4000_0000);
    }
}
