//! Desired state (from a [`Lab`](crate::model::Lab)), actual state (observed
//! by the effects layer), and the plan that turns one into the other.
//!
//! Everything a lab creates carries its ownership marker, so the actual state
//! is "what this lab owns", found by name even without a state file; the plan
//! creates what is missing, fixes what differs and deletes what the lab owns
//! but no longer wants. Each section of the system has a unit: [`nodes`]
//! (namespaces and what is inside them), [`links`] (veths and cables),
//! [`bridges`], [`tunnels`] (VXLAN to other lab hosts), [`host`] (the lab host's routes and forwarding), [`files`].

mod action;
mod actual;
mod bridges;
mod desired;
mod etc_files;
mod files;
mod host;
mod host_ports;
mod links;
mod marks;
mod nodes;
mod tunnels;

pub use action::{Action, Op, Place};
pub use actual::{converged, Actual, LinkKind, LinkState, NodeActual, TunnelState};
pub use desired::{CableVeth, Desired, HostVeth, NodeDesired, RouteSpec};
pub use etc_files::{hosts_file, parse_nameservers, resolv_conf};
pub use marks::{file_marker, owner_alias, owner_group, NETNS_ETC};

use action::Steps;

/// The actions that turn `actual` into `desired`, in an order that works:
/// deletions first, then namespaces, links, addresses, routes and files.
pub fn plan(desired: &Desired, actual: &Actual) -> Vec<Action> {
    let mut steps = Steps::default();
    nodes::delete_unwanted_namespaces(desired, actual, &mut steps);
    let fresh = links::delete_unwanted(desired, actual, &mut steps);
    host::delete_unwanted_routes(desired, actual, &mut steps);
    files::remove_unwanted(desired, actual, &mut steps);
    nodes::create_namespaces(desired, actual, &mut steps);
    bridges::plan(desired, actual, &mut steps);
    tunnels::plan(desired, actual, &mut steps);
    host_ports::plan(desired, actual, &mut steps);
    links::create(desired, actual, &fresh, &mut steps);
    nodes::configure(desired, actual, &fresh.node_links(desired), &mut steps);
    host::forwarding_and_routes(desired, actual, &mut steps);
    files::write(desired, actual, &mut steps);
    steps.into_actions()
}

/// Everything that `down` removes: the plan towards an empty lab.
pub fn teardown(lab: &str, actual: &Actual) -> Vec<Action> {
    let empty = Desired {
        lab: lab.to_string(),
        ..Default::default()
    };
    plan(&empty, actual)
        .into_iter()
        // Routes and addresses go with their links and namespaces.
        .filter(|a| !(a.place == Place::LabHost && matches!(a.op, Op::DeleteRoute { .. })))
        .collect()
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        net::Ipv4Net,
        validate::{default_lab, parse},
    };

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn default_lab_from_nothing() {
        let lab = default_lab();
        let d = Desired::from_lab(&lab, &["10.0.0.53".parse().unwrap()]);
        let p = plan(&d, &Actual::default());
        let text: Vec<String> = p.iter().map(|a| a.to_string()).collect();
        let expect = [
            "create namespace blue",
            "create namespace red",
            "create bridge v-net-0",
            "add address 192.168.15.5/24 to v-net-0",
            "add address fdec:60cc:b1bd:15::5/64 to v-net-0",
            "set v-net-0 up",
            "create veth veth-blue in netns blue (peer veth-blue-br on bridge v-net-0)",
            "create veth veth-red in netns red (peer veth-red-br on bridge v-net-0)",
            "add address 192.168.15.2/24 to veth-blue in netns blue",
            "add address fdec:60cc:b1bd:15::2/64 to veth-blue in netns blue",
            "set veth-blue up in netns blue",
            "set lo up in netns blue",
            "add address 192.168.15.1/24 to veth-red in netns red",
            "add address fdec:60cc:b1bd:15::1/64 to veth-red in netns red",
            "set veth-red up in netns red",
            "set lo up in netns red",
            "add route default via 192.168.15.5 in netns blue",
            "add route default via fdec:60cc:b1bd:15::5 in netns blue",
            "add route default via 192.168.15.5 in netns red",
            "add route default via fdec:60cc:b1bd:15::5 in netns red",
            "turn IPv4 forwarding on on the lab host",
            "turn IPv6 forwarding on on the lab host",
            "write /etc/netns/blue/hosts",
            "write /etc/netns/blue/resolv.conf",
            "write /etc/netns/red/hosts",
            "write /etc/netns/red/resolv.conf",
        ];
        assert_eq!(text, expect);
    }

    #[test]
    fn converged_lab_plans_nothing() {
        let d = Desired::from_lab(&default_lab(), &[]);
        assert_eq!(plan(&d, &converged(&d)), vec![]);
    }

    #[test]
    fn edit_converges_removed_node_and_changed_address() {
        let before = Desired::from_lab(&default_lab(), &[]);
        let actual = converged(&before);
        let edited = parse(
            "lab.toml",
            r#"
            [[bridges]]
            name = "v-net-0"
            subnet = "192.168.15.0/24"
            gateway = "192.168.15.5"
            [[nodes]]
            name = "red"
            bridge = "v-net-0"
            address = "192.168.15.9"
            "#,
        )
        .unwrap();
        let after = Desired::from_lab(&edited, &[]);
        let text: Vec<String> = plan(&after, &actual)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            text,
            [
                "delete namespace blue",
                "delete link veth-blue-br on the lab host",
                "remove /etc/netns/blue/hosts",
                "remove /etc/netns/blue/resolv.conf",
                // The edited file has no subnet6: the IPv6 side goes.
                "delete address fdec:60cc:b1bd:15::5/64 from v-net-0",
                "delete address 192.168.15.1/24 from veth-red in netns red",
                "delete address fdec:60cc:b1bd:15::1/64 from veth-red in netns red",
                "add address 192.168.15.9/24 to veth-red in netns red",
                "delete route default via fdec:60cc:b1bd:15::5 in netns red",
                "add route default via 192.168.15.5 in netns red",
                "write /etc/netns/red/hosts",
            ]
        );
        // And the result of that plan is converged.
        assert_eq!(plan(&after, &converged(&after)), vec![]);
    }

    #[test]
    fn a_node_forwarding_one_family_only_is_set_again() {
        let d = Desired::from_lab(&default_lab(), &[]);
        let mut actual = converged(&d);
        // red as a netlab that knew only IPv4 left it: ip_forward on, IPv6's off.
        actual.nodes.get_mut("red").unwrap().forwarding = None;
        let off = Action::in_node("red", Op::SetForwarding { on: false });
        assert_eq!(plan(&d, &actual), vec![off.clone()]);
        assert_eq!(
            off.to_string(),
            "turn IPv4 and IPv6 forwarding off in netns red"
        );
    }

    #[test]
    fn half_made_veth_is_recreated() {
        let d = Desired::from_lab(&default_lab(), &[]);
        let mut actual = converged(&d);
        actual.nodes.get_mut("red").unwrap().links.clear();
        let text: Vec<String> = plan(&d, &actual).iter().map(|a| a.to_string()).collect();
        assert_eq!(
            text,
            [
                "delete link veth-red-br on the lab host",
                "create veth veth-red in netns red (peer veth-red-br on bridge v-net-0)",
                "add address 192.168.15.1/24 to veth-red in netns red",
                "add address fdec:60cc:b1bd:15::1/64 to veth-red in netns red",
                "set veth-red up in netns red",
                "add route default via 192.168.15.5 in netns red",
                "add route default via fdec:60cc:b1bd:15::5 in netns red",
            ]
        );
    }

    #[test]
    fn teardown_removes_everything_owned() {
        let d = Desired::from_lab(&default_lab(), &[]);
        let text: Vec<String> = teardown("netlab", &converged(&d))
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            text,
            [
                "delete namespace blue",
                "delete namespace red",
                "delete link veth-blue-br on the lab host",
                "delete link veth-red-br on the lab host",
                "delete link v-net-0 on the lab host",
                "remove /etc/netns/blue/hosts",
                "remove /etc/netns/blue/resolv.conf",
                "remove /etc/netns/red/hosts",
                "remove /etc/netns/red/resolv.conf",
            ]
        );
        assert!(teardown("netlab", &Actual::default()).is_empty());
    }

    #[test]
    fn router_and_cables() {
        let lab = parse(
            "router.toml",
            r#"
            [[nodes]]
            name = "a"
            routes = [{ to = "10.0.2.0/24", via = "10.0.1.1" }]
            [[nodes]]
            name = "r"
            forwarding = true
            [[nodes]]
            name = "b"
            gateway = "10.0.2.1"
            [[cables]]
            a = { node = "a", address = "10.0.1.2/24" }
            b = { node = "r", address = "10.0.1.1/24" }
            [[cables]]
            a = { node = "r", address = "10.0.2.1/24" }
            b = { node = "b", address = "10.0.2.2/24" }
            "#,
        )
        .unwrap();
        let d = Desired::from_lab(&lab, &[]);
        assert_eq!(d.cables.len(), 2);
        assert!(d.nodes["r"].forwarding);
        assert_eq!(d.nodes["r"].addresses.len(), 2);
        assert_eq!(
            d.nodes["a"].addresses["veth-a"],
            [net("10.0.1.2/24").into()].into()
        );
        assert_eq!(
            d.nodes["r"].addresses["eth0"],
            [net("10.0.1.1/24").into()].into()
        );
        assert_eq!(
            d.nodes["r"].addresses["eth1"],
            [net("10.0.2.1/24").into()].into()
        );
        let p = plan(&d, &Actual::default());
        assert!(p.contains(&Action::in_node("r", Op::SetForwarding { on: true })));
        assert!(p
            .iter()
            .any(|a| a.to_string() == "add route 10.0.2.0/24 via 10.0.1.1 in netns a"));
        assert!(p
            .iter()
            .any(|a| a.to_string() == "add route default via 10.0.2.1 in netns b"));
        // No bridge, so nothing on the lab host at all.
        assert!(!p.contains(&Action::on_host(Op::SetForwarding { on: true })));
        assert_eq!(plan(&d, &converged(&d)), vec![]);
    }
}
