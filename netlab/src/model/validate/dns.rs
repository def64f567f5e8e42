//! The `[dns]` section: the nodes' resolv.conf.

use toml::Spanned;

use super::context::Checker;
use crate::model::types::DnsSettings;

pub fn validate(c: &mut Checker<'_>, raw: Option<&crate::model::raw::RawDns>) -> DnsSettings {
    DnsSettings {
        nameservers: raw.and_then(|d| d.nameservers.as_ref()).map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(i, s)| c.ipv4(s, &format!("dns.nameservers[{i}]")))
                .collect()
        }),
        search: raw
            .map(|d| {
                d.search
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| search_domain(c, i, s))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn search_domain(c: &mut Checker<'_>, i: usize, s: &Spanned<String>) -> Option<String> {
    match check_domain(s.get_ref()) {
        Ok(()) => Some(s.get_ref().clone()),
        Err(e) => {
            c.at(s, format!("dns.search[{i}]"), e);
            None
        }
    }
}

/// A DNS name (a `[dns] search` domain, written into every node's
/// resolv.conf as it is): labels of 1-63 letters, digits, `-` or `_`,
/// separated by dots, at most 253 bytes, optionally ending with a dot.
pub fn check_domain(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err(format!("`{}` is not a domain name", name.escape_debug()));
    }
    if bare.len() > 253 {
        return Err(format!(
            "domain name is {} bytes; DNS allows at most 253",
            bare.len()
        ));
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "`{}` is not a domain name: each dot-separated label must be 1-63 bytes",
                name.escape_debug()
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "`{}` is not a domain name: labels are letters, digits, `-` and `_`",
                name.escape_debug()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use crate::model::{test_support::err, validate::parse};

    #[test]
    fn dns_settings() {
        let lab = parse(
            "lab.toml",
            "[dns]\nnameservers = [\"10.0.0.53\"]\nsearch = [\"lab.example\", \"corp_x.example.\", \"x-1\"]\n",
        )
        .unwrap();
        assert_eq!(lab.dns.nameservers, Some(vec![Ipv4Addr::new(10, 0, 0, 53)]));
        assert_eq!(lab.dns.search, ["lab.example", "corp_x.example.", "x-1"]);
        let search = |d: &str| err(&format!("[dns]\nsearch = [\"ok\",\n  {d}]\n"));
        assert_eq!(
            search("\"x\\nnameserver 1.1.1.1\""),
            "lab.toml:3: dns.search[1]: `x\\nnameserver 1.1.1.1` is not a domain name: labels are \
             letters, digits, `-` and `_`"
        );
        assert!(search("\"two words\"").contains("dns.search[1]: `two words` is not"));
        assert_eq!(
            search("\"\""),
            "lab.toml:3: dns.search[1]: `` is not a domain name"
        );
        for bad in [".", "a..b", ".a", "a.b..", "x/y", "é.example"] {
            assert!(
                search(&format!("\"{bad}\"")).contains("dns.search[1]"),
                "{bad:?} accepted"
            );
        }
        let long = format!("\"{}.example\"", "a".repeat(64));
        assert!(search(&long).contains("1-63 bytes"));
        let label = "a".repeat(63);
        let just = format!("{label}.{label}.{label}.{}", "a".repeat(61));
        assert_eq!(just.len(), 253);
        parse("lab.toml", &format!("[dns]\nsearch = [\"{just}.\"]\n")).unwrap();
        assert!(search(&format!("\"{just}a\"")).contains("at most 253"));
        // Nameservers are IPv4 addresses, nothing else.
        let e = err("[dns]\nnameservers = [\"1.1.1.1\\nsearch evil\"]\n");
        assert!(e.starts_with("lab.toml:2: dns.nameservers[0]: "), "{e}");
    }
}
