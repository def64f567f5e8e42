//! Counts in messages: "1 forwarded port", "2 forwarded ports".

/// `n` and `one` or `many`, as English wants.
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// [`count`] for words whose plural adds an `s`.
pub fn plural(n: usize, what: &str) -> String {
    count(n as u64, what, &format!("{what}s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_forwarded_port_is_singular() {
        assert_eq!(plural(1, "forwarded port"), "1 forwarded port");
        assert_eq!(plural(0, "forwarded port"), "0 forwarded ports");
        assert_eq!(count(2, "flow entry", "flow entries"), "2 flow entries");
        assert_eq!(count(1, "flow entry", "flow entries"), "1 flow entry");
    }
}
