//! The lab's public face as callers have known it (`model::topology::…`):
//! its types, parsing and validation, re-exported from the units that hold
//! them.

pub use super::{
    forwards::parse_port_range,
    source::{ConfigError, Problem},
    types::*,
    validate::{check_domain, check_ifname, default_lab, parse, DEFAULT_LAB},
};
