//! `examples/cluster.yaml` rendered for each Node: the decisions the example is meant to show,
//! through the library and through the `ovs-egress render` command line.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;

use ovs_egress_core::plan::{Condition, IpLocality};
use ovs_egress_core::render::{DOWN_ANNOTATION, Rendered, node_names, parse_cluster, render};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cluster.yaml");

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn render_all(annotate_down: Option<&str>) -> BTreeMap<String, Rendered> {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let parsed = parse_cluster(&text).unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let mut view = parsed.view;
    for node in &mut view.nodes {
        if Some(node.name.as_str()) == annotate_down {
            node.annotations
                .insert(DOWN_ANNOTATION.into(), "true".into());
        }
    }
    node_names(&view)
        .into_iter()
        .map(|n| (n.clone(), render(view.clone(), &n).unwrap()))
        .collect()
}

/// The Node holding `address`, checking that exactly one does.
fn holder(all: &BTreeMap<String, Rendered>, address: &str) -> String {
    let holders: Vec<&String> = all
        .iter()
        .filter(|(_, r)| r.plan.hold_ips.contains(&ip(address)))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(holders.len(), 1, "{address} held by {holders:?}");
    holders[0].clone()
}

#[test]
fn the_example_has_the_user_guide_nodes() {
    let all = render_all(None);
    assert_eq!(
        all.keys().map(String::as_str).collect::<Vec<_>>(),
        ["node-4", "node-5", "node-6"]
    );
    assert_eq!(all["node-5"].transport_ip, Some(ip("10.10.0.105")));
    assert_eq!(
        all["node-6"].pod_cidr,
        Some("10.244.6.0/24".parse().unwrap())
    );
}

#[test]
fn pool_ips_are_allocated_in_creation_order_and_held_by_one_node_each() {
    let all = render_all(None);
    for rendered in all.values() {
        let ips: Vec<Option<IpAddr>> = rendered.allocations.values().map(|a| a.ip).collect();
        assert_eq!(ips, [Some(ip("10.10.0.11")), Some(ip("10.10.0.12"))]);
    }
    for (egress, address) in [
        ("egress-prod-web", "10.10.0.11"),
        ("egress-staging-web", "10.10.0.12"),
    ] {
        let owner = holder(&all, address);
        for (node, rendered) in &all {
            let status = &rendered.plan.statuses[egress];
            assert_eq!(status.egress_node, owner, "{node} sees {egress}");
            assert_eq!(status.egress_ip, address);
            assert_eq!(status.ip_assigned, Some(Condition::assigned()));
            assert_eq!(status.writer, *node == owner);
            let snat = rendered.plan.mark_of(ip(address));
            assert_eq!(snat.is_some(), *node == owner, "{node} SNAT for {address}");
        }
    }
}

#[test]
fn the_older_ha_egress_wins_web_pods_and_static_egresses_serve_the_rest() {
    let all = render_all(None);
    let owner = holder(&all, "10.10.0.11");
    let web = &all["node-4"].plan.pods["prod/web-0"];
    assert_eq!(web.egress, "egress-prod-web");
    assert_eq!(web.losers, ["egress-prod"]);
    assert_eq!(web.egress_ip, Some(ip("10.10.0.11")));
    let expected = if owner == "node-4" {
        IpLocality::Local {
            mark: all["node-4"].plan.mark_of(ip("10.10.0.11")).unwrap(),
        }
    } else {
        IpLocality::Remote {
            holder: Some(owner.to_string()),
        }
    };
    assert_eq!(all["node-4"].plan.egress_ips[&ip("10.10.0.11")], expected);

    // prod/db-0 on node-6 only matches the static egress-prod: tunnelled to node-4's IP.
    let db = &all["node-6"].plan.pods["prod/db-0"];
    assert_eq!(
        (db.egress.as_str(), db.egress_ip),
        ("egress-prod", Some(ip("10.10.0.104")))
    );
    assert!(db.losers.is_empty());
    assert_eq!(
        all["node-6"].plan.egress_ips[&ip("10.10.0.104")],
        IpLocality::Remote { holder: None }
    );
    // staging/db-0 on node-5 uses node-5's own IP: local, with a SNAT rule.
    let staging_db = &all["node-5"].plan.pods["staging/db-0"];
    assert_eq!(staging_db.egress_ip, Some(ip("10.10.0.105")));
    assert!(matches!(
        all["node-5"].plan.egress_ips[&ip("10.10.0.105")],
        IpLocality::Local { .. }
    ));
}

#[test]
fn static_ips_get_snat_and_status_only_on_the_node_that_has_them() {
    let all = render_all(None);
    for (egress, address, owner) in [
        ("egress-prod", "10.10.0.104", "node-4"),
        ("egress-staging", "10.10.0.105", "node-5"),
    ] {
        for (node, rendered) in &all {
            let mine = node == owner;
            assert_eq!(rendered.plan.mark_of(ip(address)).is_some(), mine);
            assert!(!rendered.plan.hold_ips.contains(&ip(address)));
            let status = &rendered.plan.statuses[egress];
            assert_eq!(status.writer, mine, "{node} writes {egress}");
            assert_eq!(status.egress_node, if mine { owner } else { "" });
        }
    }
}

#[test]
fn non_members_and_unselected_pods_get_no_egress() {
    let all = render_all(None);
    let bound: Vec<String> = all
        .values()
        .flat_map(|r| r.plan.pods.keys().cloned())
        .collect();
    for pod in [
        "default/web-0",
        "prod/node-agent",
        "prod/migrate",
        "staging/web-pending",
    ] {
        assert!(!bound.contains(&pod.to_string()), "{pod} is bound");
    }
    assert_eq!(bound.len(), 7, "{bound:?}");
}

#[test]
fn a_down_node_loses_its_pool_ip_and_the_other_ip_stays() {
    let before = render_all(None);
    let owner = holder(&before, "10.10.0.11");
    let other_ip_owner = holder(&before, "10.10.0.12");
    let after = render_all(Some(&owner));
    let new_owner = holder(&after, "10.10.0.11");
    assert_ne!(new_owner, owner);
    assert_eq!(after[&owner].down_nodes, std::slice::from_ref(&owner));
    if other_ip_owner != owner {
        assert_eq!(holder(&after, "10.10.0.12"), other_ip_owner);
    }
}

#[test]
fn the_command_line_lists_nodes_and_prints_text_and_json() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_ovs-egress"))
            .arg("render")
            .args(args)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let (ok, nodes, _) = run(&["--list-nodes", "-f", EXAMPLE]);
    assert!(ok);
    assert_eq!(nodes, "node-4\nnode-5\nnode-6\n");

    let (ok, text, _) = run(&["--node", "node-6", "-f", EXAMPLE]);
    assert!(ok);
    assert!(
        text.contains("prod/db-0 [10.244.6.11]: egress-prod -> 10.10.0.104 (remote"),
        "{text}"
    );

    let (ok, json, _) = run(&["--node", "node-4", "-f", EXAMPLE, "--json"]);
    assert!(ok);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        value["plan"]["pods"]["prod/web-0"]["egress"],
        "egress-prod-web"
    );
    assert_eq!(
        value["plan"]["statuses"]["egress-prod"]["egress_node"],
        "node-4"
    );

    let (ok, _, error) = run(&["--node", "node-9", "-f", EXAMPLE]);
    assert!(!ok);
    assert!(
        error.contains("Node node-9 is not in the cluster file"),
        "{error}"
    );
}
