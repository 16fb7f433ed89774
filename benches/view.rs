//! Benchmark of the agent's view maintenance, in process (run with `cargo bench --bench view`):
//! the reflector stores of a cluster with 1,000 Nodes, 1,000 Namespaces, 100 Pods on the
//! agent's Node and 200 Egresses take 1,000 Egress updates (an annotation changed, a new
//! `resourceVersion`, round-robin), each followed by one pass, as when every event gets its
//! own pass (the real agent coalesces bursts, so this is the worst case). Per update it times
//! the full rebuild (`Stores::snapshot`, every stored object parsed: the baseline) and the
//! incremental view (`Views::refresh`) in the same run, and for scale one `plan::compute` on
//! that view. Prints medians of 7 runs and the ratio.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use ovs_egress::agent::config::AgentConfig;
use ovs_egress::agent::view::{Stores, Views};
use ovs_egress_core::api::v1beta1;
use ovs_egress_core::plan;
use serde_json::{Value, json};

const NODES: usize = 1_000;
const NAMESPACES: usize = 1_000;
const PODS: usize = 100;
const EGRESSES: usize = 200;
const UPDATES: usize = 1_000;
const RUNS: usize = 7;
const NODE: &str = "node-0000";

fn writer<K: kube::Resource<DynamicType = ()>>(
    objects: impl Iterator<Item = Value>,
) -> Writer<DynamicObject> {
    let mut writer = Writer::new(ApiResource::erase::<K>(&()));
    for object in objects {
        let object = serde_json::from_value(object).expect("a valid object");
        writer.apply_watcher_event(&Event::Apply(object));
    }
    writer
}

fn egress(i: usize, update: usize) -> Value {
    json!({
        "apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
        "metadata": {"name": format!("bench-{i:04}"), "uid": format!("uid-{i}"),
                     "resourceVersion": format!("{}", 10_000 + update),
                     "annotations": {"bench.ovs-egress.io/update": format!("{update}")}},
        "spec": {"appliedTo": {"podSelector": {"matchLabels": {"app": "web"}}},
                 "egressIP": format!("10.30.{}.{}", i / 250, i % 250 + 1)},
        "status": {"egressNode": "", "conditions": []}
    })
}

struct Cluster {
    egresses: Writer<DynamicObject>,
    /// Updates so far (each gets a new `resourceVersion`).
    updates: usize,
    // Kept alive for their readers.
    _others: Vec<Writer<DynamicObject>>,
    stores: Stores,
}

fn cluster() -> Cluster {
    let egresses = writer::<v1beta1::Egress>((0..EGRESSES).map(|i| egress(i, 0)));
    let pools = writer::<v1beta1::ExternalIPPool>(std::iter::empty());
    let nodes = writer::<Node>((0..NODES).map(|i| {
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": format!("node-{i:04}"), "labels": {"zone": "a"},
                            "resourceVersion": "1"},
               "spec": {"podCIDR": "10.244.1.0/24"},
               "status": {"addresses": [{"type": "InternalIP",
                                         "address": format!("10.10.{}.{}", i / 250, i % 250 + 1)}]}})
    }));
    let namespaces = writer::<Namespace>((0..NAMESPACES).map(|i| {
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": format!("ns-{i:04}"), "resourceVersion": "1"}})
    }));
    let pods = writer::<Pod>((0..PODS).map(|i| {
        let ip = format!("10.244.1.{}", i + 2);
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"namespace": format!("ns-{i:04}"), "name": format!("web-{i:04}"),
                            "labels": {"app": "web"}, "resourceVersion": "1"},
               "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}]},
               "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
    }));
    let stores = Stores {
        egresses: egresses.as_reader(),
        pools: pools.as_reader(),
        nodes: nodes.as_reader(),
        namespaces: namespaces.as_reader(),
        pods: pods.as_reader(),
    };
    Cluster {
        egresses,
        updates: 0,
        _others: vec![pools, nodes, namespaces, pods],
        stores,
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The time `pass` takes over [`UPDATES`] Egress updates, each applied to the store first.
fn burst(cluster: &mut Cluster, mut pass: impl FnMut(&Stores)) -> Duration {
    let first = cluster.updates + 1;
    cluster.updates += UPDATES;
    let updates: Vec<DynamicObject> = (first..first + UPDATES)
        .map(|u| serde_json::from_value(egress(u % EGRESSES, u)).expect("a valid object"))
        .collect();
    let mut total = Duration::ZERO;
    for update in updates {
        cluster.egresses.apply_watcher_event(&Event::Apply(update));
        let start = Instant::now();
        pass(&cluster.stores);
        total += start.elapsed();
    }
    total
}

fn main() {
    let config = AgentConfig::default();
    let local = BTreeSet::<IpAddr>::new();
    let mut cluster = cluster();
    let (mut full, mut incremental, mut compute) = (vec![], vec![], vec![]);
    for _ in 0..RUNS {
        full.push(burst(&mut cluster, |stores| {
            black_box(stores.snapshot(local.clone(), &config));
        }));
        let mut views = Views::new();
        views.refresh(&cluster.stores, local.clone(), &config);
        incremental.push(burst(&mut cluster, |stores| {
            black_box(views.refresh(stores, local.clone(), &config));
        }));
        let view = views
            .refresh(&cluster.stores, local.clone(), &config)
            .view
            .clone();
        let start = Instant::now();
        for _ in 0..UPDATES / 10 {
            black_box(plan::compute(&view, NODE, None));
        }
        compute.push(start.elapsed() * 10);
    }
    let (full, incremental, compute) = (median(full), median(incremental), median(compute));
    let each = |d: Duration| d.as_secs_f64() * 1e6 / UPDATES as f64;
    println!(
        "cluster: {NODES} Nodes, {NAMESPACES} Namespaces, {PODS} Pods on {NODE}, {EGRESSES} \
         Egresses; {UPDATES} Egress updates, one pass each; medians of {RUNS} runs"
    );
    println!(
        "full rebuild (baseline): {:.1} ms ({:.0} us per update); incremental: {:.1} ms \
         ({:.1} us per update); ratio {:.0}x",
        full.as_secs_f64() * 1e3,
        each(full),
        incremental.as_secs_f64() * 1e3,
        each(incremental),
        full.as_secs_f64() / incremental.as_secs_f64()
    );
    println!(
        "for scale, plan::compute on that view: {:.0} us per pass",
        each(compute)
    );
}
