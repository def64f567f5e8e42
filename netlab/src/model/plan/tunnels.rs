//! The VXLAN devices stretching bridges to other lab hosts: each one as the
//! share's tunnel says (VNI, port, local address, MTU, one flooding entry
//! per remote host), on its bridge and up; one that differs in any of
//! these is made afresh (a tunnel holds no state worth keeping).

use super::{
    action::{Action, Op, Steps},
    actual::{Actual, LinkKind, TunnelState},
    desired::Desired,
};

pub fn plan(desired: &Desired, actual: &Actual, steps: &mut Steps) {
    for (name, want) in &desired.tunnels {
        let link = actual.host_links.get(name);
        let right = link.is_some_and(|l| {
            l.kind == LinkKind::Vxlan && l.up && l.controller.as_deref() == Some(&want.bridge)
        }) && actual.tunnels.get(name) == Some(&TunnelState::of(want));
        if right {
            continue;
        }
        if link.is_some() {
            steps
                .del
                .push(Action::on_host(Op::DeleteLink { name: name.clone() }));
        }
        steps.add.push(Action::on_host(Op::CreateVxlan {
            tunnel: want.clone(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{
        plan::{converged, plan, teardown, Actual, Desired},
        test_support::{share_of, stretched},
    };

    /// br0 stretched between n1 on a and n2 on b.
    fn two() -> String {
        stretched("[[nodes]]\nname = \"n1\"\nbridge = \"br0\"\naddress = \"192.168.15.1\"\n")
    }

    fn desired(text: &str, host: &str) -> Desired {
        Desired::from_lab(&share_of(text, host), &[])
    }

    #[test]
    fn a_stretched_bridge_gets_its_tunnel_after_the_bridge() {
        let d = desired(&two(), "a");
        let text: Vec<String> = plan(&d, &Actual::default())
            .iter()
            .map(|a| a.to_string())
            .collect();
        let bridge = text.iter().position(|t| t == "create bridge br0").unwrap();
        let vx = text
            .iter()
            .position(|t| {
                t == "create vxlan vx-42 (VNI 42, port 4789, from 192.0.2.1 to 192.0.2.2) on bridge br0"
            })
            .unwrap_or_else(|| panic!("{text:#?}"));
        assert!(bridge < vx);
        assert_eq!(d.bridge_macs["br0"], [0x02, 0x4e, 0x4c, 0, 0, 42]);
        assert!(d.host_veths.values().all(|v| v.mtu == Some(1450)));
        assert_eq!(plan(&d, &converged(&d)), vec![]);
        assert!(teardown("m@a", &converged(&d))
            .iter()
            .any(|a| a.to_string() == "delete link vx-42 on the lab host"));
    }

    #[test]
    fn a_tunnel_that_differs_is_made_afresh() {
        let d = desired(&two(), "a");
        let mut actual = converged(&d);
        actual.tunnels.get_mut("vx-42").unwrap().remotes.clear();
        let text: Vec<String> = plan(&d, &actual).iter().map(|a| a.to_string()).collect();
        assert_eq!(text[0], "delete link vx-42 on the lab host");
        assert!(text[1].starts_with("create vxlan vx-42"), "{text:?}");
        assert_eq!(text.len(), 2);
        // Moving n2 to host a: the tunnel goes.
        let one = desired(&two().replace("host = \"b\"\n", ""), "a");
        let text: Vec<String> = plan(&one, &converged(&d))
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert!(
            text.contains(&"delete link vx-42 on the lab host".to_string()),
            "{text:?}"
        );
        assert!(!text.iter().any(|t| t.starts_with("create vxlan")));
    }
}
