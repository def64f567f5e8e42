//! What every section's validation shares: the problems found so far, each
//! located by the span of the value it is about, and what the sections
//! before have accepted (subnets, addresses, lab-host interface names), for
//! the checks that span sections.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Range,
};

use toml::Spanned;

use super::names::check_ifname;
use crate::model::{
    net::{IpNet, Ipv4Net, Ipv6Net},
    source::Problem,
};

/// Validation's state while it walks the file.
pub struct Checker<'a> {
    text: &'a str,
    pub problems: Vec<Problem>,
    pub seen: Seen,
}

/// What earlier sections accepted.
#[derive(Default)]
pub struct Seen {
    /// Subnets of bridges and cables (of both families), each with what it
    /// is and where it is written: no two may overlap.
    pub subnets: Vec<(IpNet, String, Range<usize>)>,
    /// Addresses taken (gateways, node interfaces, of both families) → by what.
    pub addresses: BTreeMap<IpAddr, String>,
    /// Interface names on the lab host: bridges and the lab-host ends of veths.
    pub host_ifnames: BTreeSet<String>,
}

impl<'a> Checker<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            problems: Vec::new(),
            seen: Seen::default(),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    /// A problem with `field`, on the line of `spanned`.
    pub fn at<T>(
        &mut self,
        spanned: &Spanned<T>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.at_span(spanned.span(), field, message);
    }

    /// A problem with `field`, on the line where `span` starts.
    pub fn at_span(
        &mut self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = self.line_of(span.start);
        self.problems.push(Problem {
            line: Some(line),
            field: field.into(),
            message: message.into(),
        });
    }

    /// A problem no line of the file stands for.
    pub fn unlocated(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            line: None,
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn ifname<'s>(&mut self, spanned: &'s Spanned<String>, field: &str) -> &'s str {
        if let Err(e) = check_ifname(spanned.get_ref()) {
            self.at(spanned, field, e);
        }
        spanned.get_ref()
    }

    /// A name for an interface the lab creates (a bridge, either end of a
    /// veth): the kernel's rules, and not `lo`, which every namespace (the
    /// lab host's too) already has.
    pub fn new_ifname<'s>(&mut self, spanned: &'s Spanned<String>, field: &str) -> &'s str {
        let name = self.ifname(spanned, field);
        if name == "lo" {
            self.at(
                spanned,
                field,
                "`lo` is the loopback interface every namespace already has",
            );
        }
        name
    }

    pub fn ipv4(&mut self, spanned: &Spanned<String>, field: &str) -> Option<Ipv4Addr> {
        match spanned.get_ref().parse::<Ipv4Addr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.at(
                    spanned,
                    field,
                    format!("`{}` is not an IPv4 address", spanned.get_ref()),
                );
                None
            }
        }
    }

    pub fn ipv6(&mut self, spanned: &Spanned<String>, field: &str) -> Option<Ipv6Addr> {
        match spanned.get_ref().parse::<Ipv6Addr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.at(
                    spanned,
                    field,
                    format!("`{}` is not an IPv6 address", spanned.get_ref()),
                );
                None
            }
        }
    }

    pub fn cidr6(&mut self, spanned: &Spanned<String>, field: &str) -> Option<Ipv6Net> {
        match spanned.get_ref().parse::<Ipv6Net>() {
            Ok(n) => Some(n),
            Err(e) => {
                self.at(spanned, field, format!("bad CIDR: {e}"));
                None
            }
        }
    }

    pub fn cidr(&mut self, spanned: &Spanned<String>, field: &str) -> Option<Ipv4Net> {
        match spanned.get_ref().parse::<Ipv4Net>() {
            Ok(n) => Some(n),
            Err(e) => {
                self.at(spanned, field, format!("bad CIDR: {e}"));
                None
            }
        }
    }

    pub fn seconds(&mut self, spanned: &Option<Spanned<i64>>, field: &str, default: u32) -> u32 {
        match spanned {
            None => default,
            Some(s) if (1..=i64::from(u32::MAX / 2)).contains(s.get_ref()) => *s.get_ref() as u32,
            Some(s) => {
                self.at(
                    s,
                    field,
                    format!("{} is not a positive number of seconds", s.get_ref()),
                );
                default
            }
        }
    }

    /// Subnets of bridges and cables may not overlap: each one that
    /// overlaps an earlier one is a problem where it is written.
    pub fn refuse_overlapping_subnets(&mut self) {
        let subnets = std::mem::take(&mut self.seen.subnets);
        for (i, (a, an, _)) in subnets.iter().enumerate() {
            for (b, bn, bs) in &subnets[i + 1..] {
                if a.overlaps(b) {
                    let msg = format!("subnet {b} of {bn} overlaps {a} of {an}");
                    self.at_span(bs.clone(), "", msg);
                }
            }
        }
        self.seen.subnets = subnets;
    }
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
