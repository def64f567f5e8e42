//! The lab host itself: its routes to subnets behind router nodes, IPv4
//! forwarding, which any lab with a bridge port needs, and IPv6 forwarding,
//! which a lab with an IPv6 gateway needs. Neither is turned off here:
//! `down` restores them (other labs may share the lab host).

use super::{
    action::{Action, Op, Steps},
    actual::Actual,
    desired::Desired,
};

pub fn delete_unwanted_routes(desired: &Desired, actual: &Actual, steps: &mut Steps) {
    for route in &actual.host_routes {
        if !desired.host_routes.contains(route) {
            steps
                .del
                .push(Action::on_host(Op::DeleteRoute { route: *route }));
        }
    }
}

pub fn forwarding_and_routes(desired: &Desired, actual: &Actual, steps: &mut Steps) {
    if !actual.host_forwarding && !desired.host_veths.is_empty() {
        steps
            .add
            .push(Action::on_host(Op::SetForwarding { on: true }));
    }
    if !actual.host_forwarding6 && desired.host_forwarding6 {
        steps
            .add
            .push(Action::on_host(Op::SetIpv6Forwarding { on: true }));
    }
    for route in &desired.host_routes {
        if !actual.host_routes.contains(route) {
            steps
                .add
                .push(Action::on_host(Op::AddRoute { route: *route }));
        }
    }
}
