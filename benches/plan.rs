//! Benchmark of `plan::compute` for one Node of a large cluster: 5,000 Nodes, 150,000 Pods,
//! 1,000 Egresses, 50 pools (run with `cargo bench --bench plan`). Targets: < 50 ms per compute,
//! < 300 MB peak RSS for the whole process. Prints the median of several runs, a baseline
//! measured in the same run (one linear pass over all Pods) and their ratio, and VmHWM.
//!
//! Two scenarios: every pool selects every Node (placement ranks all 5,000 Nodes for each IP,
//! the worst case), and each pool selects its own 20 gateway Nodes (the usual set-up).

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ovs_egress_core::api::{AppliedTo, IpRange, LabelSelector};
use ovs_egress_core::model::{ClusterView, Egress, ExternalIpPool, Namespace, Node, Pod, PodPhase};
use ovs_egress_core::placement;
use ovs_egress_core::plan::{self, membership};

const NODES: usize = 5_000;
const PODS: usize = 150_000;
const EGRESSES: usize = 1_000;
const POOLS: usize = 50;
const NAMESPACES: usize = 500;
const GATEWAYS_PER_POOL: usize = 20;
const RUNS: usize = 7;

fn selector(pairs: &[(&str, String)]) -> LabelSelector {
    LabelSelector {
        match_labels: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..LabelSelector::default()
    }
}

fn node_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32 + 1))
}

/// The cluster, deterministic; `all_nodes_eligible` picks the pools' nodeSelectors.
fn cluster(all_nodes_eligible: bool) -> ClusterView {
    let nodes = (0..NODES)
        .map(|i| {
            let mut labels = BTreeMap::from([("zone".to_string(), format!("z{}", i % 3))]);
            if i < POOLS * GATEWAYS_PER_POOL {
                labels.insert("egress-gateway".into(), format!("pool-{}", i % POOLS));
            }
            Node {
                name: format!("node-{i:04}"),
                labels,
                annotations: BTreeMap::new(),
                transport_ip: Some(node_ip(i)),
                pod_cidr: Some(
                    format!("10.{}.{}.0/24", 128 + i / 256, i % 256)
                        .parse()
                        .unwrap(),
                ),
            }
        })
        .collect();
    let pools = (0..POOLS)
        .map(|k| ExternalIpPool {
            name: format!("pool-{k}"),
            created: 0,
            ip_ranges: vec![IpRange {
                cidr: Some(format!("172.{}.0.0/24", 16 + k)),
                ..IpRange::default()
            }],
            node_selector: if all_nodes_eligible {
                LabelSelector::default()
            } else {
                selector(&[("egress-gateway", format!("pool-{k}"))])
            },
        })
        .collect();
    let egresses = (0..EGRESSES)
        .map(|e| {
            let pool = e % POOLS;
            let is_static = e % 20 == 19;
            Egress {
                name: format!("egress-{e:04}"),
                created: (e / 3) as i64,
                applied_to: AppliedTo {
                    pod_selector: Some(selector(&[("app", format!("a{}", e % 100))])),
                    // One Egress in ten selects across all Namespaces.
                    namespace_selector: (e % 10 != 0)
                        .then(|| selector(&[("team", format!("t{}", e % 50))])),
                },
                egress_ip: Some(if is_static {
                    node_ip(e).to_string()
                } else {
                    format!("172.{}.0.{}", 16 + pool, e / POOLS + 1)
                }),
                external_ip_pool: (!is_static).then(|| format!("pool-{pool}")),
                failure_policy: Default::default(),
            }
        })
        .collect();
    let namespaces = (0..NAMESPACES)
        .map(|i| Namespace {
            name: format!("ns-{i}"),
            labels: BTreeMap::from([
                ("team".to_string(), format!("t{}", i % 50)),
                (
                    "env".to_string(),
                    ["prod", "staging", "dev"][i % 3].to_string(),
                ),
            ]),
        })
        .collect();
    // Pod i runs app a{i % 100} in a Namespace of team t{app % 50}: it matches the ten Egresses
    // e ≡ app (mod 100), so every compute resolves nine losers per Pod.
    let pods = (0..PODS)
        .map(|i| Pod {
            namespace: format!("ns-{}", (i % 100) % 50 + 50 * ((i / 100) % 10)),
            name: format!("pod-{i}"),
            labels: BTreeMap::from([
                ("app".to_string(), format!("a{}", i % 100)),
                ("tier".to_string(), ["web", "db"][i % 2].to_string()),
            ]),
            // 30 consecutive Pods (30 different apps) per Node, Nodes in a scattered order.
            node_name: Some(format!("node-{:04}", (i / 30 * 7919) % NODES)),
            ips: vec![IpAddr::V4(Ipv4Addr::from(0x0a80_0000 + i as u32))],
            phase: if i % 50 == 0 {
                PodPhase::Succeeded
            } else {
                PodPhase::Running
            },
            host_network: i % 100 == 1,
        })
        .collect();
    ClusterView {
        egresses,
        pools,
        nodes,
        namespaces,
        pods,
        ..ClusterView::default()
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<T>(mut f: impl FnMut() -> T) -> Duration {
    black_box(f());
    median(
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                black_box(f());
                start.elapsed()
            })
            .collect(),
    )
}

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn scenario(all_nodes_eligible: bool) {
    let mut view = cluster(all_nodes_eligible);
    // The measured Node holds the IP of the first pool Egress, so it has SNAT work too.
    let node = placement::place(&view)["egress-0000"]
        .clone()
        .expect("egress-0000 is placed")
        .1;
    let index: usize = node["node-".len()..].parse().expect("node-NNNN");
    view.local_ips = BTreeSet::from([node_ip(index)]);

    let baseline = time(|| {
        view.pods
            .iter()
            .filter(|p| {
                p.node_name.as_deref() == Some(node.as_str()) && membership::is_candidate(p)
            })
            .count()
    });
    let placement_only = time(|| placement::place(&view));
    let first = plan::compute(&view, &node, None);
    let compute = time(|| plan::compute(&view, &node, Some(&first)));
    println!(
        "pools select {}: compute({node}) median {:.2} ms over {RUNS} runs \
         (placement alone {:.2} ms); baseline (one pass over {PODS} Pods) {:.3} ms; ratio {:.1}x",
        if all_nodes_eligible {
            "every Node"
        } else {
            "20 gateway Nodes each"
        },
        compute.as_secs_f64() * 1e3,
        placement_only.as_secs_f64() * 1e3,
        baseline.as_secs_f64() * 1e3,
        compute.as_secs_f64() / baseline.as_secs_f64(),
    );
    println!(
        "  plan: {} local Pods bound, {} egress IPs used, {} SNAT rules, {} IPs held, {} statuses ({} written here)",
        first.pods.len(),
        first.egress_ips.len(),
        first.snat_rules.len(),
        first.hold_ips.len(),
        first.statuses.len(),
        first.statuses.values().filter(|s| s.writer).count(),
    );
}

fn main() {
    println!(
        "cluster: {NODES} Nodes, {PODS} Pods, {EGRESSES} Egresses, {POOLS} pools, {NAMESPACES} Namespaces"
    );
    scenario(true);
    scenario(false);
    println!("peak RSS (VmHWM): {}", vm_hwm());
}
