//! The lab host's bridges: each there as a bridge (a link of another kind
//! under its name is replaced), up, with exactly its gateway addresses.

use super::{
    action::{Action, Op, Steps},
    actual::{Actual, LinkKind},
    desired::Desired,
};

fn create(desired: &Desired, name: &str) -> Action {
    Action::on_host(Op::CreateBridge {
        name: name.to_string(),
        mac: desired.bridge_macs.get(name).copied(),
    })
}

pub fn plan(desired: &Desired, actual: &Actual, steps: &mut Steps) {
    for (name, gateway) in &desired.bridges {
        let have = actual.host_links.get(name);
        match have {
            Some(l) if l.kind == LinkKind::Bridge => {}
            Some(_) => {
                steps
                    .del
                    .push(Action::on_host(Op::DeleteLink { name: name.clone() }));
                steps.add.push(create(desired, name));
            }
            None => steps.add.push(create(desired, name)),
        }
        let have_addrs = have
            .filter(|l| l.kind == LinkKind::Bridge)
            .map(|l| l.addresses.clone())
            .unwrap_or_default();
        for a in have_addrs.difference(gateway) {
            steps.add.push(Action::on_host(Op::DeleteAddress {
                link: name.clone(),
                address: *a,
            }));
        }
        for gw in gateway.difference(&have_addrs) {
            steps.add.push(Action::on_host(Op::AddAddress {
                link: name.clone(),
                address: *gw,
            }));
        }
        if !have.is_some_and(|l| l.kind == LinkKind::Bridge && l.up) {
            steps
                .add
                .push(Action::on_host(Op::SetLinkUp { link: name.clone() }));
        }
    }
}
