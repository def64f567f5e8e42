//! The pure model: topology, validation and planning. Nothing here touches
//! the system, so all of it is unit-tested without root.

pub mod net;
pub mod plan;
pub mod topology;

pub use net::Ipv4Net;
pub use topology::{Lab, Proto};
