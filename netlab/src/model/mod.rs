//! The pure model: the lab's types, the file they come from, validation and
//! planning. Nothing here touches the system, so all of it is unit-tested
//! without root.
//!
//! - [`types`]: the validated lab ([`Lab`] and its parts).
//! - `raw`: the file as written (serde); [`validate`]: raw → [`Lab`], one
//!   unit per section; [`source`]: problems located by line and field.
//! - [`forwards`]: forward targets and ranges (the file and `fwd add`).
//! - [`impair`]: link impairments, their units and where their qdiscs sit.
//! - [`hosts`]: a lab over several lab hosts, and each host's share.
//! - [`host_conflicts`]: what stands in a lab's way on a given lab host.
//! - [`plan`]: desired state, observed state, and the actions between them.
//! - [`topology`]: the paths callers have used, re-exported.

pub mod forwards;
pub mod host_conflicts;
pub mod hosts;
pub mod impair;
pub mod net;
pub mod plan;
mod raw;
pub mod source;
#[cfg(test)]
pub(crate) mod test_support;
pub mod topology;
pub mod types;
pub mod validate;

pub use net::{IpNet, Ipv4Net, Ipv6Net};
pub use source::{ConfigError, Problem, SourceMap};
pub use types::{Lab, Proto};
pub use validate::{default_lab, parse, parse_file, parse_with_sources};
