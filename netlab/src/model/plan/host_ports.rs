//! The lab host's ports on stretched bridges (see [`HostPort`]): each one
//! as the share says (its peer on the bridge, its own end with its
//! address, both up); one that differs is made afresh (it holds no state:
//! the flows through it live in the dataplane's maps).

use std::collections::BTreeSet;

use super::{
    action::{Action, Op, Steps},
    actual::{Actual, LinkKind, LinkState},
    desired::Desired,
};
use crate::model::{
    net::{IpNet, Ipv4Net},
    types::HostPort,
};

/// The lab-host end as a converged lab has it.
pub fn end_state(p: &HostPort) -> LinkState {
    LinkState {
        kind: LinkKind::Veth,
        up: true,
        controller: None,
        addresses: Ipv4Net::new(p.address, 32)
            .into_iter()
            .map(IpNet::from)
            .collect(),
    }
}

/// The bridge end as a converged lab has it.
pub fn peer_state(p: &HostPort) -> LinkState {
    LinkState {
        kind: LinkKind::Veth,
        up: true,
        controller: Some(p.bridge.clone()),
        addresses: BTreeSet::new(),
    }
}

pub fn plan(desired: &Desired, actual: &Actual, steps: &mut Steps) {
    for (name, want) in &desired.host_ports {
        let end = actual.host_links.get(name);
        let peer = actual.host_links.get(&want.peer);
        if end == Some(&end_state(want)) && peer == Some(&peer_state(want)) {
            continue;
        }
        for present in [end.map(|_| name), peer.map(|_| &want.peer)]
            .into_iter()
            .flatten()
        {
            steps.del.push(Action::on_host(Op::DeleteLink {
                name: present.clone(),
            }));
        }
        steps
            .add
            .push(Action::on_host(Op::CreateHostPort { port: want.clone() }));
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{
        plan::{converged, plan, teardown, Desired},
        test_support::{share_of, stretched},
    };

    #[test]
    fn a_host_port_is_made_after_its_bridge_kept_and_taken_down() {
        // Host a takes a forward to n2, on b: its port on br0.
        let text = stretched(
            "[[forwards]]\nprotocol = \"tcp\"\nport = 8080\nto = \"n2:80\"\nhost = \"a\"\n",
        );
        let d = Desired::from_lab(&share_of(&text, "a"), &[]);
        let text: Vec<String> = plan(&d, &Default::default())
            .iter()
            .map(|a| a.to_string())
            .collect();
        let bridge = text.iter().position(|t| t == "create bridge br0").unwrap();
        let port = text
            .iter()
            .position(|t| {
                t == "create host port hp-42 (192.168.15.253/32, peer hpb-42 on bridge br0)"
            })
            .unwrap_or_else(|| panic!("{text:#?}"));
        assert!(bridge < port);
        assert_eq!(plan(&d, &converged(&d)), vec![]);
        // An end off its bridge: both go, and the port is made afresh.
        let mut off = converged(&d);
        off.host_links.get_mut("hpb-42").unwrap().controller = None;
        let text: Vec<String> = plan(&d, &off).iter().map(|a| a.to_string()).collect();
        assert_eq!(
            text[..2],
            [
                "delete link hp-42 on the lab host",
                "delete link hpb-42 on the lab host"
            ]
        );
        assert!(text[2].starts_with("create host port hp-42"), "{text:?}");
        let down: Vec<String> = teardown("m@a", &converged(&d))
            .iter()
            .map(|a| a.to_string())
            .collect();
        for end in ["hp-42", "hpb-42"] {
            assert!(
                down.contains(&format!("delete link {end} on the lab host")),
                "{down:?}"
            );
        }
    }
}
