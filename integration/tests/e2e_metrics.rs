//! The metrics of the agents and the controller in the cluster-in-a-box, proven by the real
//! tools: after the user guide's scenario (Pods in `prod` and `staging`, the high-availability
//! example, then the static one) every `/metrics` passes `promtool check metrics` and unknown
//! paths are 404; a real Prometheus server (Debian's package, on the box's loopback, its own
//! temporary directory) scrapes the controller and every agent, and its HTTP API shows every
//! egress IP held by exactly one Node (`sum by (ip) (ovs_egress_agent_egress_ip_held) == 1`)
//! and each pool's used/total IPs equal to `kubectl get eip`. Then one pool IP is forced to
//! move (the pool's nodeSelector narrowed to another Node): the old holder's release counter
//! and the new holder's assignment counter move, and the invariant still holds.
//! Needs root, Open vSwitch and the prometheus package; fails loudly without them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ovs_egress_integration::cluster::ClusterBox;
use ovs_egress_integration::prometheus::{Prometheus, Target, promtool_check};
use ovs_egress_integration::user_guide::{
    HA_EXAMPLE, PODS, STATIC_EXAMPLE, next_second, wait_placed,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// `GET` on the box's loopback: status code and body.
fn get(url: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').expect("curl printed a status");
    (code.trim().parse().unwrap(), body.to_string())
}

/// Egress name → (IP, Node) of every Egress that has both, from the API.
fn egress_holders(cluster: &ClusterBox) -> BTreeMap<String, (String, String)> {
    let json = cluster
        .kubectl_ok(&["get", "egresses", "-o", "json"], None)
        .unwrap();
    let list: Value = serde_json::from_str(&json).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let ip = e["status"]["egressIP"].as_str().filter(|s| !s.is_empty())?;
            let node = e["status"]["egressNode"]
                .as_str()
                .filter(|s| !s.is_empty())?;
            Some((
                e["metadata"]["name"].as_str()?.to_string(),
                (ip.to_string(), node.to_string()),
            ))
        })
        .collect()
}

/// Pool → (used, total) as `kubectl get eip` shows it.
fn pool_usage(cluster: &ClusterBox) -> BTreeMap<String, (f64, f64)> {
    let json = cluster
        .kubectl_ok(&["get", "eip", "-o", "json"], None)
        .unwrap();
    let list: Value = serde_json::from_str(&json).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let usage = &p["status"]["usage"];
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                (
                    usage["used"].as_f64().unwrap_or(-1.0),
                    usage["total"].as_f64().unwrap_or(-1.0),
                ),
            )
        })
        .collect()
}

/// label → value of each sample.
fn by_label(
    samples: &[(serde_json::Map<String, Value>, f64)],
    label: &str,
) -> BTreeMap<String, f64> {
    samples
        .iter()
        .filter_map(|(labels, v)| Some((labels.get(label)?.as_str()?.to_string(), *v)))
        .collect()
}

/// Whether every IP in `ips` is held exactly once and no other IP is held.
fn held_once(samples: &[(serde_json::Map<String, Value>, f64)], ips: &BTreeSet<String>) -> bool {
    let held = by_label(samples, "ip");
    held.keys().cloned().collect::<BTreeSet<_>>() == *ips && held.values().all(|v| *v == 1.0)
}

fn counter(prometheus: &Prometheus, promql: &str) -> f64 {
    prometheus
        .query(promql)
        .unwrap()
        .first()
        .map_or(0.0, |(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_passes_promtool_and_prometheus_sees_each_egress_ip_held_once_and_pools_as_kubectl_shows()
 {
    let mut cluster = ClusterBox::start(&[4, 5, 6])
        .await
        .expect("starting the box");
    for namespace in ["prod", "staging"] {
        cluster.ensure_namespace(namespace, &[]).await.unwrap();
    }
    for &(namespace, name, app, node) in PODS {
        cluster
            .create_pod(namespace, name, &format!("node-{node}"), &[("app", app)])
            .await
            .unwrap();
    }
    cluster.apply(HA_EXAMPLE).unwrap();
    wait_placed(&cluster, &["egress-prod-web", "egress-staging-web"])
        .await
        .unwrap();
    next_second().await;
    cluster.apply(STATIC_EXAMPLE).unwrap();
    wait_placed(&cluster, &["egress-prod", "egress-staging"])
        .await
        .unwrap();

    // Every endpoint's exposition passes promtool; unknown paths are 404.
    for node in &cluster.nodes {
        let (code, body) = node.agent_get("/metrics").unwrap();
        assert_eq!(code, 200, "{}: /metrics: {body}", node.name);
        promtool_check(&body).unwrap_or_else(|e| panic!("agent of {}: {e:#}", node.name));
        assert!(body.contains("ovs_egress_agent_egress_ip_held"), "{body}");
        // The membership: the two other Nodes up (alive, or suspect for a moment on a busy
        // machine), every drop reason exported.
        let members = |state: &str| {
            let name = format!("ovs_egress_agent_membership_members{{state=\"{state}\"}} ");
            body.lines()
                .find_map(|l| l.strip_prefix(&name)?.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{}: no {name}\n{body}", node.name))
        };
        assert_eq!(
            members("alive") + members("suspect"),
            2.0,
            "{}: {body}",
            node.name
        );
        assert_eq!(
            members("down") + members("left"),
            0.0,
            "{}: {body}",
            node.name
        );
        assert!(
            body.contains(
                "ovs_egress_agent_membership_datagrams_dropped_total{reason=\"unauthenticated\"}"
            ),
            "{body}"
        );
        assert_eq!(node.agent_get("/no-such-path").unwrap().0, 404);
    }
    let controller = format!("http://{}", cluster.controller_health);
    let (code, body) = get(&format!("{controller}/metrics"));
    assert_eq!(code, 200, "controller /metrics: {body}");
    promtool_check(&body).unwrap_or_else(|e| panic!("controller: {e:#}"));
    assert!(body.contains("ovs_egress_controller_leader 1"), "{body}");
    assert_eq!(get(&format!("{controller}/no-such-path")).0, 404);

    // A real Prometheus scrapes the controller and every agent.
    let mut exposed = Vec::new();
    let mut targets = vec![Target {
        addr: cluster.controller_health,
        node: "controller".into(),
    }];
    for node in &cluster.nodes {
        let e = node.expose_agent().await.unwrap();
        targets.push(Target {
            addr: e.addr,
            node: node.name.clone(),
        });
        exposed.push(e);
    }
    let prometheus = Prometheus::start(cluster.dir.join("prometheus"), &targets)
        .await
        .expect("starting Prometheus");
    prometheus
        .wait_for("up == 1", WAIT, |s| s.len() == targets.len())
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", prometheus.log()));

    let holders = egress_holders(&cluster);
    let ips: BTreeSet<String> = holders.values().map(|(ip, _)| ip.clone()).collect();
    assert_eq!(ips.len(), 4, "the scenario's egress IPs: {holders:?}");
    let held = "sum by (ip) (ovs_egress_agent_egress_ip_held)";
    prometheus
        .wait_for(held, WAIT, |s| held_once(s, &ips))
        .await
        .unwrap();
    let want = pool_usage(&cluster);
    let used = prometheus
        .wait_for("ovs_egress_controller_pool_used_ips", WAIT, |s| {
            by_label(s, "pool").len() == want.len()
        })
        .await
        .unwrap();
    let total = prometheus
        .query("ovs_egress_controller_pool_capacity_ips")
        .unwrap();
    let (used, total) = (by_label(&used, "pool"), by_label(&total, "pool"));
    for (pool, (want_used, want_total)) in &want {
        assert_eq!(used.get(pool), Some(want_used), "used IPs of {pool}");
        assert_eq!(total.get(pool), Some(want_total), "IPs of {pool}");
    }

    // Force a move: the pool may only use another Node than egress-prod-web's holder.
    let (ip, from) = holders["egress-prod-web"].clone();
    let to = cluster
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| *n != from)
        .unwrap();
    let released =
        format!("sum(ovs_egress_agent_ip_releases_total{{reason=\"placement\",node=\"{from}\"}})");
    let assigned =
        format!("sum(ovs_egress_agent_ip_assignments_total{{reason=\"placement\",node=\"{to}\"}})");
    let (released_before, assigned_before) = (
        counter(&prometheus, &released),
        counter(&prometheus, &assigned),
    );
    cluster
        .kubectl_ok(
            &["label", "node", &to, "metrics-test=move", "--overwrite"],
            None,
        )
        .unwrap();
    cluster
        .kubectl_ok(
            &[
                "patch",
                "eip",
                "external-ip-pool",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"nodeSelector":{"matchLabels":{"metrics-test":"move"}}}}"#,
            ],
            None,
        )
        .unwrap();
    cluster
        .wait_egress("egress-prod-web", WAIT, |e| {
            e.status
                .as_ref()
                .is_some_and(|s| s.egress_node.as_deref() == Some(to.as_str()))
        })
        .await
        .unwrap();
    prometheus
        .wait_for(&released, WAIT, |s| {
            s.first().is_some_and(|(_, v)| *v > released_before)
        })
        .await
        .unwrap();
    prometheus
        .wait_for(&assigned, WAIT, |s| {
            s.first().is_some_and(|(_, v)| *v > assigned_before)
        })
        .await
        .unwrap();
    let on_new_holder = format!("ovs_egress_agent_egress_ip_held{{ip=\"{ip}\"}}");
    prometheus
        .wait_for(&on_new_holder, WAIT, |s| {
            by_label(s, "node") == BTreeMap::from([(to.clone(), 1.0)])
        })
        .await
        .unwrap();
    let ips: BTreeSet<String> = egress_holders(&cluster)
        .values()
        .map(|(ip, _)| ip.clone())
        .collect();
    prometheus
        .wait_for(held, WAIT, |s| held_once(s, &ips))
        .await
        .unwrap();
}
