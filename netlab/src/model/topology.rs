//! The lab's public face as callers have known it (`model::topology::…`):
//! its types, parsing and validation, re-exported from the units that hold
//! them.

pub use super::{
    forwards::parse_port_range,
    source::{ConfigError, Problem, SourceMap, MAX_FILE_BYTES},
    types::*,
    validate::{
        check_domain, check_ifname, default_lab, parse, parse_file, parse_with_sources, DEFAULT_LAB,
    },
};
