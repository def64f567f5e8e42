//! The lab's own keys: its `name` and the `netns_prefix` of its nodes'
//! namespaces.

use toml::Spanned;

use super::{context::Checker, names::check_name};

/// The name a lab gets when its file names none.
pub const DEFAULT_NAME: &str = "netlab";

pub fn name(c: &mut Checker<'_>, raw: Option<&Spanned<String>>) -> String {
    match raw {
        Some(n) => {
            if let Err(e) = check_name(n.get_ref(), "lab name") {
                c.at(n, "name", e);
            }
            n.get_ref().clone()
        }
        None => DEFAULT_NAME.to_string(),
    }
}

pub fn netns_prefix(c: &mut Checker<'_>, raw: Option<&Spanned<String>>) -> String {
    let Some(p) = raw else {
        return String::new();
    };
    let ok = p
        .get_ref()
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'));
    if !ok || p.get_ref().len() > 32 {
        c.at(
            p,
            "netns_prefix",
            "must be at most 32 letters, digits, `-`, `_` or `.`",
        );
    }
    p.get_ref().clone()
}
