//! netlab: network-namespace labs with an eBPF NAT dataplane.

pub mod model;
