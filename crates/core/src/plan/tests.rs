//! Unit tests of `plan::compute`: tie-break, locality, marks, statuses and writers.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::*;
use crate::api::{AppliedTo, IpRange, LabelSelector};
use crate::model::{ExternalIpPool, FailurePolicy, Labels, Namespace, Node, Pod, PodPhase};
use crate::placement;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pods_labelled(key: &str, value: &str) -> AppliedTo {
    AppliedTo {
        pod_selector: Some(LabelSelector {
            match_labels: labels(&[(key, value)]),
            ..LabelSelector::default()
        }),
        namespace_selector: None,
    }
}

fn node(name: &str, transport_ip: &str) -> Node {
    Node {
        name: name.into(),
        transport_ip: Some(ip(transport_ip)),
        ..Node::default()
    }
}

fn pod(name: &str, node: &str, app: &str) -> Pod {
    Pod {
        namespace: "prod".into(),
        name: name.into(),
        labels: labels(&[("app", app)]),
        node_name: Some(node.into()),
        ips: vec![ip("10.244.0.9")],
        phase: PodPhase::Running,
        host_network: false,
    }
}

fn static_egress(name: &str, created: i64, egress_ip: &str, app: &str) -> Egress {
    Egress {
        name: name.into(),
        created,
        applied_to: pods_labelled("app", app),
        egress_ip: Some(egress_ip.into()),
        external_ip_pool: None,
        failure_policy: Default::default(),
    }
}

fn pool_egress(name: &str, created: i64, egress_ip: Option<&str>, app: &str) -> Egress {
    Egress {
        egress_ip: egress_ip.map(str::to_string),
        external_ip_pool: Some("pool".into()),
        ..static_egress(name, created, "", app)
    }
}

fn pool(node_selector: LabelSelector) -> ExternalIpPool {
    ExternalIpPool {
        name: "pool".into(),
        created: 0,
        ip_ranges: vec![IpRange {
            cidr: Some("10.10.1.0/24".into()),
            ..IpRange::default()
        }],
        node_selector,
    }
}

/// Three Nodes, a pool over all of them, local IPs of node-a configured.
fn cluster(egresses: Vec<Egress>, pods: Vec<Pod>) -> ClusterView {
    ClusterView {
        egresses,
        pools: vec![pool(LabelSelector::default())],
        nodes: vec![
            node("node-a", "10.0.0.1"),
            node("node-b", "10.0.0.2"),
            node("node-c", "10.0.0.3"),
        ],
        namespaces: vec![Namespace {
            name: "prod".into(),
            labels: Labels::new(),
        }],
        pods,
        local_ips: BTreeSet::from([ip("10.0.0.1")]),
        ..ClusterView::default()
    }
}

fn node_names(view: &ClusterView) -> Vec<&str> {
    view.nodes.iter().map(|n| n.name.as_str()).collect()
}

/// The Node placement puts `egress` on.
fn holder(view: &ClusterView, egress: &str) -> String {
    placement::place(view)[egress].clone().unwrap().1
}

/// Exactly one Node of the view writes the status of `egress`; returns it.
fn single_writer(view: &ClusterView, egress: &str) -> String {
    let writers: Vec<&str> = node_names(view)
        .into_iter()
        .filter(|n| compute(view, n, None).statuses[egress].writer)
        .collect();
    assert_eq!(writers.len(), 1, "writers of {egress}: {writers:?}");
    writers[0].to_string()
}

#[test]
fn oldest_matching_egress_wins_and_the_others_are_listed_as_losers() {
    let view = cluster(
        vec![
            static_egress("zeta", 5, "10.0.0.1", "web"),
            static_egress("beta", 9, "10.0.0.1", "web"),
            static_egress("alpha", 5, "10.0.0.1", "web"),
        ],
        vec![pod("web-0", "node-a", "web")],
    );
    let binding = &compute(&view, "node-a", None).pods["prod/web-0"];
    assert_eq!(binding.egress, "alpha", "same timestamp: the name decides");
    assert_eq!(binding.losers, ["zeta", "beta"]);
}

#[test]
fn static_egress_is_local_on_the_node_that_has_the_ip() {
    let view = cluster(
        vec![static_egress("e", 0, "10.0.0.1", "web")],
        vec![pod("web-0", "node-a", "web")],
    );
    let plan = compute(&view, "node-a", None);
    assert_eq!(
        plan.snat_rules,
        [SnatRule {
            ip: ip("10.0.0.1"),
            mark: 1
        }]
    );
    assert_eq!(
        plan.egress_ips[&ip("10.0.0.1")],
        IpLocality::Local { mark: 1 }
    );
    assert_eq!(plan.pods["prod/web-0"].egress_ip, Some(ip("10.0.0.1")));
    assert!(plan.hold_ips.is_empty(), "static IPs are never managed");
    let status = &plan.statuses["e"];
    assert_eq!(
        (status.egress_node.as_str(), status.egress_ip.as_str()),
        ("node-a", "10.0.0.1")
    );
    assert_eq!(status.ip_assigned, Some(Condition::assigned()));
    assert!(status.writer);
}

#[test]
fn static_egress_is_remote_elsewhere_and_that_node_does_not_write() {
    let view = ClusterView {
        local_ips: BTreeSet::from([ip("10.0.0.2")]),
        ..cluster(
            vec![static_egress("e", 0, "10.0.0.1", "web")],
            vec![pod("web-0", "node-b", "web")],
        )
    };
    let plan = compute(&view, "node-b", None);
    assert!(plan.snat_rules.is_empty());
    assert_eq!(
        plan.egress_ips[&ip("10.0.0.1")],
        IpLocality::Remote { holder: None }
    );
    assert_eq!(plan.pods["prod/web-0"].egress_ip, Some(ip("10.0.0.1")));
    let status = &plan.statuses["e"];
    assert!(!status.writer);
    assert_eq!(status.ip_assigned, None);
    assert_eq!(status.egress_node, "");
}

#[test]
fn local_ip_used_only_by_pods_on_other_nodes_still_gets_snat() {
    let view = cluster(
        vec![static_egress("e", 0, "10.0.0.1", "web")],
        vec![pod("web-0", "node-b", "web")],
    );
    let plan = compute(&view, "node-a", None);
    assert!(plan.pods.is_empty());
    assert!(plan.egress_ips.is_empty());
    assert_eq!(plan.mark_of(ip("10.0.0.1")), Some(1));
}

#[test]
fn pool_ip_is_held_with_snat_by_its_node_and_tunnelled_to_by_the_others() {
    let pods = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| pod(&format!("web-{n}"), n, "web"))
        .collect();
    let view = cluster(vec![pool_egress("e", 0, Some("10.10.1.5"), "web")], pods);
    let owner = holder(&view, "e");
    for name in node_names(&view) {
        let plan = compute(&view, name, None);
        let status = &plan.statuses["e"];
        assert_eq!(status.egress_node, owner);
        assert_eq!(status.egress_ip, "10.10.1.5");
        assert_eq!(status.ip_assigned, Some(Condition::assigned()));
        assert_eq!(status.writer, name == owner);
        assert_eq!(plan.hold_ips.contains(&ip("10.10.1.5")), name == owner);
        let expected = if name == owner {
            IpLocality::Local { mark: 1 }
        } else {
            IpLocality::Remote {
                holder: Some(owner.to_string()),
            }
        };
        assert_eq!(plan.egress_ips[&ip("10.10.1.5")], expected);
        assert_eq!(plan.snat_rules.len(), usize::from(name == owner));
    }
}

#[test]
fn a_kept_pool_ip_stays_held_with_its_mark_while_its_status_names_the_next_holder() {
    let pods = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| pod(&format!("web-{n}"), n, "web"))
        .collect();
    let view = cluster(
        vec![
            pool_egress("e", 0, Some("10.10.1.5"), "web"),
            static_egress("s", 1, "10.0.0.1", "none"),
        ],
        pods,
    );
    let owner = holder(&view, "e");
    let other = node_names(&view)
        .into_iter()
        .find(|n| *n != owner)
        .unwrap()
        .to_string();
    let was = compute(&view, &owner, None);
    let keep = BTreeSet::from([ip("10.10.1.5"), ip("10.0.0.1"), ip("10.10.1.99")]);
    let plan = compute_keeping(&view, &other, Some(&was), &keep);
    assert!(plan.hold_ips.contains(&ip("10.10.1.5")));
    let mark = plan
        .mark_of(ip("10.10.1.5"))
        .expect("a SNAT rule for the kept IP");
    let pod = &plan.pods[&format!("prod/web-{other}")];
    assert_eq!(pod.egress_ip, Some(ip("10.10.1.5")));
    assert_eq!(
        plan.egress_ips[&ip("10.10.1.5")],
        IpLocality::Local { mark },
        "its Pods leave through it here"
    );
    let status = &plan.statuses["e"];
    assert_eq!(
        (status.egress_node.as_str(), status.writer),
        (owner.as_str(), false)
    );
    // Only pool IPs placed elsewhere are kept: not a static IP, not an IP no Egress uses.
    assert_eq!(plan.hold_ips.len(), 1);
    // Without keep it is the plain plan; on the holder keep changes nothing.
    assert_eq!(
        compute_keeping(&view, &other, None, &BTreeSet::new()),
        compute(&view, &other, None)
    );
    assert_eq!(compute_keeping(&view, &owner, None, &keep), was);
}

#[test]
fn unallocated_pool_egress_gives_no_treatment_and_says_so_once() {
    let view = cluster(
        vec![pool_egress("e", 0, None, "web")],
        vec![pod("web-0", "node-a", "web")],
    );
    let plan = compute(&view, "node-a", None);
    assert_eq!(plan.pods["prod/web-0"].egress, "e");
    assert_eq!(plan.pods["prod/web-0"].egress_ip, None);
    assert!(plan.egress_ips.is_empty() && plan.snat_rules.is_empty());
    let status = &plan.statuses["e"];
    assert_eq!(
        (status.egress_node.as_str(), status.egress_ip.as_str()),
        ("", "")
    );
    assert_eq!(
        status.ip_assigned,
        Some(Condition::assignment_error(
            "EgressIP is not allocated yet from ExternalIPPool pool"
        ))
    );
    let writer = single_writer(&view, "e");
    assert_eq!(writer, placement::rank(b"e", node_names(&view))[0]);
}

#[test]
fn pool_without_eligible_node_reports_no_node_available() {
    let nobody = LabelSelector {
        match_labels: labels(&[("egress", "yes")]),
        ..LabelSelector::default()
    };
    let view = ClusterView {
        pools: vec![pool(nobody)],
        ..cluster(
            vec![pool_egress("e", 0, Some("10.10.1.5"), "web")],
            vec![pod("web-0", "node-a", "web")],
        )
    };
    let plan = compute(&view, "node-a", None);
    assert_eq!(plan.pods["prod/web-0"].egress_ip, None);
    let condition = plan.statuses["e"].ip_assigned.clone().unwrap();
    assert_eq!(condition.status, ConditionStatus::False);
    assert_eq!(condition.reason, Reason::AssignmentError);
    assert_eq!(
        condition.message,
        "Failed to assign the IP to EgressNode: no Node available"
    );
    single_writer(&view, "e");
}

#[test]
fn failure_policy_drop_drops_the_pods_of_an_egress_without_a_holder_and_says_so() {
    let nobody = LabelSelector {
        match_labels: labels(&[("egress", "yes")]),
        ..LabelSelector::default()
    };
    let dropping = |egress: Egress| Egress {
        failure_policy: FailurePolicy::Drop,
        ..egress
    };
    let view = ClusterView {
        pools: vec![pool(nobody)],
        ..cluster(
            vec![
                dropping(pool_egress("no-node", 0, Some("10.10.1.5"), "web")),
                dropping(pool_egress("unallocated", 0, None, "db")),
                dropping(static_egress("held", 0, "10.10.9.9", "api")),
                pool_egress("default-policy", 0, None, "cache"),
            ],
            vec![
                pod("web-0", "node-a", "web"),
                pod("db-0", "node-a", "db"),
                pod("api-0", "node-a", "api"),
                pod("cache-0", "node-a", "cache"),
            ],
        )
    };
    let plan = compute(&view, "node-a", None);
    let dropped = |pod: &str| plan.pods[pod].drop_external;
    assert!(dropped("prod/web-0") && dropped("prod/db-0"));
    assert!(!dropped("prod/api-0"), "an Egress with an IP never drops");
    assert!(
        !dropped("prod/cache-0"),
        "the default policy keeps the Node's IP"
    );
    let message = |egress: &str| plan.statuses[egress].ip_assigned.clone().unwrap().message;
    assert_eq!(
        message("no-node"),
        format!("Failed to assign the IP to EgressNode: no Node available; {DROPPING}")
    );
    assert!(message("unallocated").ends_with(DROPPING));
    assert!(!message("default-policy").contains("dropped"));
}

#[test]
fn missing_pool_is_named_in_the_status() {
    let view = ClusterView {
        pools: Vec::new(),
        ..cluster(vec![pool_egress("e", 0, Some("10.10.1.5"), "web")], vec![])
    };
    let message = compute(&view, "node-a", None).statuses["e"]
        .ip_assigned
        .clone()
        .unwrap()
        .message;
    assert!(
        message.contains("ExternalIPPool pool does not exist"),
        "{message}"
    );
    single_writer(&view, "e");
}

#[test]
fn invalid_egress_ip_is_named_and_other_egresses_are_unaffected() {
    let view = cluster(
        vec![
            static_egress("bad", 0, "10.0.0.300", "web"),
            static_egress("good", 1, "10.0.0.1", "db"),
        ],
        vec![pod("web-0", "node-a", "web"), pod("db-0", "node-a", "db")],
    );
    let plan = compute(&view, "node-a", None);
    assert_eq!(
        plan.statuses["bad"].ip_assigned,
        Some(Condition::assignment_error(
            "spec.egressIP \"10.0.0.300\" is not a valid IP address"
        ))
    );
    assert_eq!(plan.pods["prod/web-0"].egress_ip, None);
    assert_eq!(plan.pods["prod/db-0"].egress_ip, Some(ip("10.0.0.1")));
    assert_eq!(
        plan.statuses["good"].ip_assigned,
        Some(Condition::assigned())
    );
    single_writer(&view, "bad");
}

#[test]
fn egress_without_ip_or_pool_is_an_error() {
    let mut egress = static_egress("e", 0, "", "web");
    egress.egress_ip = None;
    let view = cluster(vec![egress], vec![]);
    assert_eq!(
        compute(&view, "node-a", None).statuses["e"].ip_assigned,
        Some(Condition::assignment_error(
            "neither spec.egressIP nor spec.externalIPPool is set"
        ))
    );
}

#[test]
fn status_writer_of_an_unassigned_egress_is_an_alive_node() {
    let mut view = cluster(vec![pool_egress("e", 0, None, "web")], vec![]);
    let first = placement::rank(b"e", node_names(&view))[0].to_string();
    view.alive = Some(
        node_names(&view)
            .into_iter()
            .filter(|n| *n != first)
            .map(str::to_string)
            .collect(),
    );
    let writer = single_writer(&view, "e");
    assert_ne!(writer, first);
}

#[test]
fn marks_stay_with_ips_that_stay_local_and_freed_marks_are_reused() {
    let mut view = cluster(
        vec![
            static_egress("one", 1, "10.0.0.1", "web"),
            static_egress("two", 2, "10.0.0.11", "web"),
            static_egress("three", 3, "10.0.0.12", "web"),
        ],
        vec![],
    );
    view.local_ips = ["10.0.0.1", "10.0.0.11", "10.0.0.12"]
        .into_iter()
        .map(ip)
        .collect();
    let first = compute(&view, "node-a", None);
    assert_eq!(first.mark_of(ip("10.0.0.12")), Some(3));

    // 10.0.0.11 is removed from the Node; an older Egress with a new local IP appears.
    view.local_ips.remove(&ip("10.0.0.11"));
    view.local_ips.insert(ip("10.0.0.13"));
    view.egresses
        .push(static_egress("zero", 0, "10.0.0.13", "web"));
    let second = compute(&view, "node-a", Some(&first));
    assert_eq!(second.mark_of(ip("10.0.0.1")), Some(1));
    assert_eq!(second.mark_of(ip("10.0.0.11")), None);
    assert_eq!(second.mark_of(ip("10.0.0.12")), Some(3));
    assert_eq!(
        second.mark_of(ip("10.0.0.13")),
        Some(2),
        "the lowest free mark"
    );
    // Without the previous plan the oldest Egress's IP would take mark 1 and shift the others.
    let fresh = compute(&view, "node-a", None);
    assert_eq!(fresh.mark_of(ip("10.0.0.13")), Some(1));
    assert_eq!(fresh.mark_of(ip("10.0.0.1")), Some(2));
}

#[test]
fn egresses_sharing_an_ip_share_one_mark() {
    let view = cluster(
        vec![
            static_egress("web", 0, "10.0.0.1", "web"),
            static_egress("db", 1, "10.0.0.1", "db"),
        ],
        vec![pod("web-0", "node-a", "web"), pod("db-0", "node-a", "db")],
    );
    let plan = compute(&view, "node-a", None);
    assert_eq!(plan.snat_rules.len(), 1);
    assert_eq!(plan.pods["prod/db-0"].egress_ip, Some(ip("10.0.0.1")));
}

#[test]
fn the_egress_beyond_255_local_ips_gets_an_error_and_the_others_keep_working() {
    let mut egresses = Vec::new();
    let mut local_ips = BTreeSet::new();
    for i in 0..256u32 {
        let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a63_0000 + i));
        local_ips.insert(address);
        egresses.push(static_egress(
            &format!("e{i:03}"),
            0,
            &address.to_string(),
            "web",
        ));
    }
    let view = ClusterView {
        local_ips,
        ..cluster(egresses, vec![pod("web-0", "node-a", "web")])
    };
    let plan = compute(&view, "node-a", None);
    assert_eq!(plan.snat_rules.len(), 255);
    let marks: BTreeSet<u8> = plan.snat_rules.iter().map(|r| r.mark).collect();
    assert_eq!(marks.len(), 255, "marks are unique");
    let last = plan.statuses["e255"].ip_assigned.clone().unwrap();
    assert_eq!(last.reason, Reason::AssignmentError);
    assert!(
        last.message.contains("no SNAT mark available"),
        "{}",
        last.message
    );
    let ok = plan
        .statuses
        .values()
        .filter(|s| s.ip_assigned == Some(Condition::assigned()))
        .count();
    assert_eq!(ok, 255);
}

#[test]
fn only_eligible_local_pods_are_bound() {
    let mut host = pod("host", "node-a", "web");
    host.host_network = true;
    let mut done = pod("done", "node-a", "web");
    done.phase = PodPhase::Succeeded;
    let mut pending = pod("pending", "node-a", "web");
    pending.node_name = None;
    let view = cluster(
        vec![static_egress("e", 0, "10.0.0.1", "web")],
        vec![
            host,
            done,
            pending,
            pod("remote", "node-b", "web"),
            pod("other-app", "node-a", "db"),
            pod("local", "node-a", "web"),
        ],
    );
    let bound: Vec<String> = compute(&view, "node-a", None).pods.into_keys().collect();
    assert_eq!(bound, ["prod/local"]);
}

#[test]
fn the_ipv6_ip_of_a_pool_is_placed_like_ipv4() {
    let mut view = cluster(
        vec![pool_egress("e", 0, Some("2001:db8::5"), "web")],
        vec![],
    );
    view.pools[0].ip_ranges = vec![IpRange {
        cidr: Some("2001:db8::/120".into()),
        ..IpRange::default()
    }];
    let owner = holder(&view, "e");
    let plan = compute(&view, &owner, None);
    assert_eq!(plan.hold_ips, BTreeSet::from([ip("2001:db8::5")]));
    assert_eq!(plan.mark_of(ip("2001:db8::5")), Some(1));
}
