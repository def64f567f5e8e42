//! netlab: network-namespace labs with an eBPF NAT dataplane.
//!
//! [`model`] is pure (topology, validation, planning); everything else is
//! effects: netlink ([`netlink`], [`system`]), namespaces ([`netns`]),
//! processes ([`procs`]) and the services in nodes ([`services`]), the lab host's facts for the model's host
//! checks ([`host_facts`]), the eBPF dataplane ([`dataplane`]), a lab's
//! state directory ([`state`]) and the run locks ([`lock`]); [`view`] draws
//! the lab and serves its figures.

pub mod bench;
pub mod caps;
pub mod capture;
pub mod cli;
pub mod dataplane;
pub mod exec;
pub mod host_facts;
pub mod httpd;
pub mod lab;
pub mod links;
pub mod lock;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod procs;
pub mod sandbox;
pub mod services;
pub mod state;
pub mod system;
pub mod view;
pub mod vxlan;
pub mod words;
