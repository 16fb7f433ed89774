//! Benchmarks, not tests (ignored by `cargo test`; run `scripts/bench-egress.sh`), on a private
//! OVS in a namespace of their own:
//! - one more selected Pod: from the new cluster view to its Egress flow on the switch
//!   (`plan::compute` → `pipeline::egress` → `FlowProgrammer::sync`), median and p99 over 100
//!   Pods per run, against a bare `ovs-ofctl add-flow` of the same pre-rendered flow measured
//!   alternately in the same run;
//! - 200 local egress IPs applied from scratch (SNAT rules, flows, addresses + GARP, final
//!   rules), with the time of each step, so the iptables step can be compared with the flow step.
//!
//! Needs root and Open vSwitch.

mod host_support;
mod programmer_support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ovs_egress::datapath::egress::{DeviceChoice, EgressHost};
use ovs_egress::ovs::ofctl::FlowProgrammer;
use ovs_egress_core::model::ClusterView;
use ovs_egress_core::pipeline::egress::MarkCarrier;
use ovs_egress_core::pipeline::egress::{EgressContext, egress_flows};
use ovs_egress_core::pipeline::{Flow, Style, pod_network_flows};
use ovs_egress_core::plan::{self, IpLocality, NodePlan, PodBinding, SnatRule};
use ovs_egress_core::render::parse_cluster;
use ovs_egress_host::iptables::SnatConfig;
use ovs_egress_integration::Netns;
use programmer_support::{Bridge, block, node};

const PODS: u32 = 100;
const IPS: u32 = 200;

fn runs() -> usize {
    std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
        .max(5)
}

fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pod_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 2 + i as u8)
}

/// Node `node1` with the first `selected` of [`PODS`] Pods labelled for the Egress `web`, whose
/// static IP 172.30.0.100 is configured on this Node.
fn view(selected: u32) -> ClusterView {
    let mut docs = vec![
        "apiVersion: v1\nkind: Node\nmetadata: {name: node1}\nspec: {podCIDR: 10.244.1.0/24}\n\
         status: {addresses: [{type: InternalIP, address: 172.30.0.11}]}\n"
            .to_string(),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n".to_string(),
        "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata: {name: web}\n\
         spec: {appliedTo: {podSelector: {matchLabels: {app: web}}}, egressIP: 172.30.0.100}\n"
            .to_string(),
    ];
    for i in 0..PODS {
        let app = if i < selected { "web" } else { "other" };
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i:03}, namespace: default, \
             labels: {{app: {app}}}}}\nspec: {{nodeName: node1}}\n\
             status: {{phase: Running, podIPs: [{{ip: {}}}]}}\n",
            pod_ip(i)
        ));
    }
    let mut view = parse_cluster(&docs.join("---\n")).unwrap().view;
    view.local_ips = BTreeSet::from([
        IpAddr::V4(Ipv4Addr::new(172, 30, 0, 11)),
        IpAddr::V4(Ipv4Addr::new(172, 30, 0, 100)),
    ]);
    view
}

fn context(carrier: MarkCarrier) -> EgressContext {
    EgressContext {
        pod_ofports: (0..PODS.max(IPS))
            .map(|i| (format!("default/p{i:03}"), 100 + i))
            .collect(),
        gateway_mac: "02:44:01:00:00:01".parse().unwrap(),
        local_transport_ip: Ipv4Addr::new(172, 30, 0, 11),
        remote_transport_ips: vec![Ipv4Addr::new(172, 30, 0, 12)],
        pod_cidrs: vec![
            "10.244.1.0/24".parse().unwrap(),
            "10.244.2.0/24".parse().unwrap(),
        ],
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
        except_cidrs: Vec::new(),
        ipv6: Default::default(),
        carrier,
    }
}

/// The flows of the bench Node's Pod networking (its 100 Pods, one remote Node).
fn base_flows() -> Vec<Flow> {
    let mut net = node(1, &[], &[2]);
    net.pods = (0..PODS)
        .map(|i| ovs_egress_core::pipeline::LocalPod {
            ofport: 100 + i,
            mac: format!("02:44:01:00:01:{i:02x}").parse().unwrap(),
            ip: pod_ip(i),
        })
        .collect();
    pod_network_flows(&net)
}

#[test]
#[ignore = "benchmark: run scripts/bench-egress.sh"]
fn bench_one_more_selected_pod_to_flow_installed() {
    let bridge = Bridge::start("ebench");
    let base = base_flows();
    let ctx = context(MarkCarrier::SourceMac);
    let (mut ours, mut compute, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs() {
        let mut programmer = FlowProgrammer::new(bridge.ofctl(), 1 + run as u16);
        block(programmer.sync(&base)).unwrap();
        let mut previous: Option<NodePlan> = None;
        for selected in 1..=PODS {
            let view = view(selected);
            let start = Instant::now();
            let plan = plan::compute(&view, "node1", previous.as_ref());
            let egress = egress_flows(&plan, &ctx).flows;
            let mut all = base.clone();
            all.extend(egress.iter().cloned());
            let computed = start.elapsed();
            let change = block(programmer.sync(&all)).unwrap();
            ours.push(start.elapsed());
            compute.push(computed);
            // The Pod's flow is the only change besides the Node-wide flows of the first Pod.
            assert!(change.added >= 1, "selected {selected}: {change:?}");
            previous = Some(plan);

            // Baseline: the same flow, pre-rendered, with one bare `ovs-ofctl add-flow`.
            let pod_flow = egress
                .iter()
                .find(|f| {
                    f.matches
                        .to_string()
                        .contains(&format!("in_port={}", 99 + selected))
                })
                .unwrap()
                .render(99, Style::Numeric)
                .replace("priority=200", "priority=201");
            let start = Instant::now();
            bridge
                .ovs
                .ofctl(&["add-flow", "br-int", &pod_flow])
                .unwrap();
            raw.push(start.elapsed());
        }
        bridge.ovs.ofctl(&["del-flows", "br-int"]).unwrap();
    }
    let (m, r) = (percentile(&ours, 50), percentile(&raw, 50));
    println!(
        "one more selected Pod -> flow installed ({} samples, {PODS} Pods x {} runs): \
         median {:.2} ms, p99 {:.2} ms (of which compute+render median {:.3} ms, p99 {:.3} ms); \
         bare ovs-ofctl add-flow median {:.2} ms, p99 {:.2} ms; ratio of medians {:.2}",
        ours.len(),
        runs(),
        ms(m),
        ms(percentile(&ours, 99)),
        ms(percentile(&compute, 50)),
        ms(percentile(&compute, 99)),
        ms(r),
        ms(percentile(&raw, 99)),
        m.as_secs_f64() / r.as_secs_f64()
    );
}

/// A plan holding [`IPS`] egress IPs 172.31.<i/250>.<i%250+1>, each used by one local Pod.
fn plan_with_ips(count: u32) -> NodePlan {
    let ip = |i: u32| IpAddr::V4(Ipv4Addr::new(172, 31, (i / 250) as u8, (i % 250 + 1) as u8));
    let mut plan = NodePlan {
        node: "node1".into(),
        ..NodePlan::default()
    };
    for i in 0..count {
        let mark = (i + 1) as u8;
        plan.snat_rules.push(SnatRule { ip: ip(i), mark });
        plan.hold_ips.insert(ip(i));
        plan.egress_ips.insert(ip(i), IpLocality::Local { mark });
        plan.pods.insert(
            format!("default/p{i:03}"),
            PodBinding {
                ips: vec![IpAddr::V4(Ipv4Addr::new(
                    10,
                    244,
                    1 + (i / 250) as u8,
                    (i % 250) as u8,
                ))],
                egress: format!("e{i}"),
                egress_ip: Some(ip(i)),
                losers: Vec::new(),
                drop_external: false,
            },
        );
    }
    plan
}

#[test]
#[ignore = "benchmark: run scripts/bench-egress.sh"]
fn bench_apply_200_local_egress_ips_from_scratch() {
    let bridge = Bridge::start("ebench200");
    let ns = Netns::new("ebench200host").unwrap();
    ns.exec(&[
        "ip", "link", "add", "eg0", "type", "veth", "peer", "name", "eg1",
    ])
    .unwrap();
    for dev in ["eg0", "eg1"] {
        ns.exec(&["ip", "link", "set", dev, "up"]).unwrap();
    }
    let plan = plan_with_ips(IPS);
    let empty = NodePlan::default();
    let flows = egress_flows(&plan, &context(MarkCarrier::SourceMac)).flows;
    let flow_count = flows.len();
    let ofctl_target = bridge.ofctl();
    let samples = host_support::in_netns(&ns, move || async move {
        let config = SnatConfig {
            gateway: "antrea-gw0".into(),
            random_fully: false,
            carrier: MarkCarrier::SourceMac,
            pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
        };
        let device = DeviceChoice {
            configured: Some("eg0".into()),
            transport: "eg0".into(),
        };
        let mut samples = Vec::new();
        for run in 0..runs() {
            let mut host = EgressHost::new(config.clone(), device.clone());
            let mut programmer = FlowProgrammer::new(ofctl_target.clone(), 1 + run as u16);
            let t0 = Instant::now();
            let due = host.prepare(&plan).await.unwrap();
            let t1 = Instant::now();
            programmer.sync(&flows).await.unwrap();
            let t2 = Instant::now();
            let report = host.finish(due, &plan).await.unwrap();
            let t3 = Instant::now();
            assert!(report.ip_errors.is_empty(), "{report:?}");
            assert_eq!(report.added.len(), IPS as usize);
            samples.push([t1 - t0, t2 - t1, t3 - t2, t3 - t0]);
            // Back to nothing for the next run.
            let due = host.prepare(&empty).await.unwrap();
            programmer.sync(&[]).await.unwrap();
            let report = host.finish(due, &empty).await.unwrap();
            assert_eq!(report.removed.len(), IPS as usize);
        }
        samples
    });
    let step = |k: usize| percentile(&samples.iter().map(|s| s[k]).collect::<Vec<_>>(), 50);
    println!(
        "apply {IPS} local egress IPs from scratch ({} runs, medians): total {:.1} ms = \
         SNAT rules (iptables-restore, nat+mangle) {:.1} ms + {} Egress flows {:.1} ms + \
         addresses/GARP/final rules {:.1} ms; iptables step / flow step = {:.2}",
        samples.len(),
        ms(step(3)),
        ms(step(0)),
        flow_count,
        ms(step(1)),
        ms(step(2)),
        step(0).as_secs_f64() / step(1).as_secs_f64()
    );
}
