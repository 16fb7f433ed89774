//! Property: `plan::compute` depends on the cluster, not on the order the view lists it in.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ovs_egress_core::api::{AppliedTo, IpRange, LabelSelector};
use ovs_egress_core::model::{
    ClusterView, Egress, ExternalIpPool, FailurePolicy, Namespace, Node, Pod, PodPhase,
};
use ovs_egress_core::plan::compute;
use proptest::prelude::*;

const STATIC_IPS: [&str; 4] = ["10.0.0.1", "10.0.0.2", "10.9.9.9", "bogus"];
const POOL_IPS: [&str; 6] = [
    "10.10.0.1",
    "10.10.0.2",
    "10.10.0.3",
    "10.20.0.1",
    "10.20.0.2",
    "",
];
const POOLS: [&str; 3] = ["p0", "p1", "missing"];

fn selector(key: &str, value: Option<&str>) -> Option<LabelSelector> {
    value.map(|v| LabelSelector {
        match_labels: BTreeMap::from([(key.to_string(), v.to_string())]),
        ..LabelSelector::default()
    })
}

fn label_value() -> impl Strategy<Value = Option<&'static str>> {
    prop::option::of(prop::sample::select(vec!["web", "db", "prod", "staging"]))
}

fn egress(index: usize) -> impl Strategy<Value = Egress> {
    (
        0i64..3,
        label_value(),
        label_value(),
        prop::option::of(0..STATIC_IPS.len()),
        prop::option::of((0..POOL_IPS.len(), 0..POOLS.len())),
    )
        .prop_map(move |(created, app, env, static_ip, pooled)| {
            let (egress_ip, pool) = match (pooled, static_ip) {
                (Some((ip, pool)), _) => (
                    Some(POOL_IPS[ip].to_string()).filter(|s| !s.is_empty()),
                    Some(POOLS[pool].to_string()),
                ),
                (None, ip) => (ip.map(|i| STATIC_IPS[i].to_string()), None),
            };
            Egress {
                name: format!("e{index}"),
                created,
                applied_to: AppliedTo {
                    pod_selector: selector("app", app),
                    namespace_selector: selector("env", env),
                },
                egress_ip,
                external_ip_pool: pool,
                // Every third Egress drops its Pods' traffic while it has no IP.
                failure_policy: if index.is_multiple_of(3) {
                    FailurePolicy::Drop
                } else {
                    FailurePolicy::NodeIp
                },
            }
        })
}

fn pod(index: usize, nodes: usize) -> impl Strategy<Value = Pod> {
    (
        0..3usize,
        label_value(),
        prop::option::of(0..nodes),
        0..5usize,
        any::<bool>(),
    )
        .prop_map(move |(ns, app, node, phase, host_network)| Pod {
            namespace: format!("ns{ns}"),
            name: format!("pod{index}"),
            labels: app
                .map(|a| BTreeMap::from([("app".to_string(), a.to_string())]))
                .unwrap_or_default(),
            node_name: node.map(|n| format!("n{n}")),
            ips: vec![IpAddr::from([10, 244, 0, index as u8])],
            phase: [
                PodPhase::Pending,
                PodPhase::Running,
                PodPhase::Succeeded,
                PodPhase::Failed,
                PodPhase::Unknown,
            ][phase],
            host_network,
        })
}

fn pools() -> Vec<ExternalIpPool> {
    let range = |cidr: Option<&str>, start: Option<&str>, end: Option<&str>| IpRange {
        cidr: cidr.map(str::to_string),
        start: start.map(str::to_string),
        end: end.map(str::to_string),
    };
    vec![
        ExternalIpPool {
            name: "p0".into(),
            created: 0,
            ip_ranges: vec![range(Some("10.10.0.0/28"), None, None)],
            node_selector: LabelSelector::default(),
        },
        ExternalIpPool {
            name: "p1".into(),
            created: 1,
            ip_ranges: vec![range(None, Some("10.20.0.1"), Some("10.20.0.5"))],
            node_selector: selector("egress", Some("yes")).unwrap_or_default(),
        },
    ]
}

fn view() -> impl Strategy<Value = ClusterView> {
    (1..6usize).prop_flat_map(|nodes| {
        let node_list = prop::collection::vec((any::<bool>(), 0..4u8), nodes).prop_map(|flags| {
            flags
                .into_iter()
                .enumerate()
                .map(|(i, (gateway, max))| Node {
                    name: format!("n{i}"),
                    labels: if gateway {
                        BTreeMap::from([("egress".to_string(), "yes".to_string())])
                    } else {
                        BTreeMap::new()
                    },
                    annotations: BTreeMap::from([(
                        "node.antrea.io/max-egress-ips".to_string(),
                        max.to_string(),
                    )]),
                    transport_ip: Some(IpAddr::from([10, 0, 0, i as u8 + 1])),
                    pod_cidr: Some(format!("10.244.{i}.0/24").parse().unwrap()),
                })
                .collect::<Vec<_>>()
        });
        let egresses = (0..8usize).prop_flat_map(|n| (0..n).map(egress).collect::<Vec<_>>());
        let pods =
            (0..20usize).prop_flat_map(move |n| (0..n).map(|i| pod(i, nodes)).collect::<Vec<_>>());
        let namespaces = prop::collection::vec(label_value(), 3).prop_map(|envs| {
            envs.into_iter()
                .enumerate()
                .map(|(i, env)| Namespace {
                    name: format!("ns{i}"),
                    labels: env
                        .map(|e| BTreeMap::from([("env".to_string(), e.to_string())]))
                        .unwrap_or_default(),
                })
                .collect::<Vec<_>>()
        });
        let local_ips = prop::sample::subsequence(STATIC_IPS[..3].to_vec(), 0..=3);
        let alive = prop::option::of(prop::sample::subsequence(
            (0..nodes).collect::<Vec<_>>(),
            0..=nodes,
        ));
        (node_list, egresses, pods, namespaces, local_ips, alive).prop_map(
            |(nodes, egresses, pods, namespaces, local_ips, alive)| ClusterView {
                egresses,
                pools: pools(),
                nodes,
                namespaces,
                pods,
                local_ips: local_ips.iter().map(|ip| ip.parse().unwrap()).collect(),
                alive: alive.map(|a| a.iter().map(|i| format!("n{i}")).collect::<BTreeSet<_>>()),
                ..ClusterView::default()
            },
        )
    })
}

/// Fisher–Yates with a xorshift generator seeded by the test case.
fn shuffle<T>(items: &mut [T], seed: &mut u64) {
    for i in (1..items.len()).rev() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        items.swap(i, (*seed % (i as u64 + 1)) as usize);
    }
}

fn shuffled(view: &ClusterView, seed: u64) -> ClusterView {
    let mut seed = seed | 1;
    let mut view = view.clone();
    shuffle(&mut view.egresses, &mut seed);
    shuffle(&mut view.pools, &mut seed);
    shuffle(&mut view.nodes, &mut seed);
    shuffle(&mut view.namespaces, &mut seed);
    shuffle(&mut view.pods, &mut seed);
    view
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn compute_is_independent_of_input_order(view in view(), seed in any::<u64>()) {
        let other = shuffled(&view, seed);
        // A previous plan from a smaller cluster, so mark stability is exercised too.
        let mut earlier = view.clone();
        earlier.egresses.truncate(view.egresses.len() / 2);
        for node in &view.nodes {
            let plan = compute(&view, &node.name, None);
            prop_assert_eq!(&plan, &compute(&other, &node.name, None));
            let previous = compute(&earlier, &node.name, None);
            prop_assert_eq!(
                compute(&view, &node.name, Some(&previous)),
                compute(&other, &node.name, Some(&previous))
            );
        }
    }
}
