//! The lab host itself: its routes to subnets behind router nodes, and IPv4
//! forwarding, which any lab with a bridge port needs.

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
    for route in &desired.host_routes {
        if !actual.host_routes.contains(route) {
            steps
                .add
                .push(Action::on_host(Op::AddRoute { route: *route }));
        }
    }
}
