//! Benchmark of an agent's `/metrics` scrape (run with `cargo bench --bench metrics`): a Node
//! holding 255 egress IPs (one Egress each, from 5 pools) with 1,000 selected local Pods
//! (every tenth also selected by a second Egress) and 3,000 flows over the pipeline's tables.
//! Targets: < 10 ms and < 200 KB per scrape. Prints the median of several runs for both
//! formats (OpenMetrics for Prometheus, text 0.0.4 for everyone else), a baseline measured in
//! the same run (a scrape of an agent with no plan yet) and their ratio, and what the agent
//! loop adds per applied plan for the metrics (cloning and swapping the snapshot).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovs_egress::metrics::agent::{self, PlanSnapshot, flows_per_table};
use ovs_egress::metrics::{OPENMETRICS_CONTENT_TYPE, exposition};
use ovs_egress_core::pipeline::table::Table;
use ovs_egress_core::plan::{Condition, EgressStatus, IpLocality, NodePlan, PodBinding, SnatRule};

const IPS: usize = 255;
const PODS: usize = 1_000;
const FLOWS: usize = 3_000;
const RUNS: usize = 9;

fn ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xac10_0000 + i as u32 + 1))
}

/// The applied plan of `node` and its realized statuses, as the agent loop publishes them.
fn snapshot(node: &str) -> PlanSnapshot {
    let mut plan = NodePlan {
        node: node.into(),
        ..NodePlan::default()
    };
    let mut statuses = BTreeMap::new();
    let mut pools = BTreeMap::new();
    for i in 0..IPS {
        let name = format!("egress-{i:03}");
        plan.egress_ips.insert(
            ip(i),
            IpLocality::Local {
                mark: (i + 1) as u8,
            },
        );
        plan.snat_rules.push(SnatRule {
            ip: ip(i),
            mark: (i + 1) as u8,
        });
        plan.hold_ips.insert(ip(i));
        statuses.insert(
            name.clone(),
            EgressStatus {
                egress_node: node.into(),
                egress_ip: ip(i).to_string(),
                ip_assigned: Some(Condition::assigned()),
                writer: true,
            },
        );
        pools.insert(name, format!("pool-{}", i % 5));
    }
    for p in 0..PODS {
        let egress = p % IPS;
        plan.pods.insert(
            format!("ns-{}/pod-{p:04}", p % 20),
            PodBinding {
                ips: vec![IpAddr::V4(Ipv4Addr::from(0x0af4_0000 + p as u32 + 2))],
                egress: format!("egress-{egress:03}"),
                egress_ip: Some(ip(egress)),
                losers: if p % 10 == 0 {
                    vec![format!("egress-{:03}", (egress + 1) % IPS)]
                } else {
                    Vec::new()
                },
                drop_external: false,
            },
        );
    }
    PlanSnapshot {
        node: node.into(),
        plan: Arc::new(plan),
        statuses,
        pools,
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Median time of one scrape in the given format, and the body's size.
fn scrape(
    registry: &prometheus_client::registry::Registry,
    accept: Option<&str>,
) -> (Duration, usize) {
    let mut size = 0;
    let samples = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let (_, body) = exposition(registry, accept).expect("encoding never fails");
            let elapsed = start.elapsed();
            size = black_box(body).len();
            elapsed
        })
        .collect();
    (median(samples), size)
}

fn main() {
    let metrics = agent::metrics();
    let registry = agent::registry();
    // Baseline: the agent before its first plan (build, process and counter families only).
    let (base_text, base_size) = scrape(&registry, None);

    let tables: Vec<u8> = Table::ALL
        .iter()
        .map(|t| t.number())
        .cycle()
        .take(FLOWS)
        .collect();
    metrics.set_flows(flows_per_table(tables));
    for _ in 0..50 {
        metrics.observe_realization(0.012);
        metrics.bundle_duration.observe(0.004);
        metrics.bundle_flows.observe(40.0);
    }
    let node = "node-1";
    let applied = snapshot(node);
    let published: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            // What the agent loop does per applied plan: clone the realized statuses and the
            // pool names into a snapshot (the plan is shared) and swap it in.
            metrics.set_snapshot(Arc::new(PlanSnapshot {
                node: applied.node.clone(),
                plan: applied.plan.clone(),
                statuses: applied.statuses.clone(),
                pools: applied.pools.clone(),
            }));
            start.elapsed()
        })
        .collect();
    let (text, text_size) = scrape(&registry, None);
    let (open, open_size) = scrape(&registry, Some(OPENMETRICS_CONTENT_TYPE));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "scrape of an agent holding {IPS} egress IPs with {PODS} selected Pods and {FLOWS} flows \
         (median of {RUNS}):"
    );
    println!(
        "  text 0.0.4:  {:.3} ms, {:.1} KB; OpenMetrics: {:.3} ms, {:.1} KB (targets: < 10 ms, < 200 KB)",
        ms(text),
        text_size as f64 / 1024.0,
        ms(open),
        open_size as f64 / 1024.0
    );
    println!(
        "  baseline (no plan yet): {:.3} ms, {:.1} KB; ratio {:.1}x",
        ms(base_text),
        base_size as f64 / 1024.0,
        text.as_secs_f64() / base_text.as_secs_f64()
    );
    println!(
        "  per applied plan, cloning and swapping the metrics snapshot: {:.3} ms",
        ms(median(published))
    );
    assert!(
        ms(text) < 10.0 && ms(open) < 10.0,
        "a scrape took 10 ms or more"
    );
    assert!(
        text_size < 200 * 1024 && open_size < 200 * 1024,
        "a scrape is 200 KB or more"
    );
}
