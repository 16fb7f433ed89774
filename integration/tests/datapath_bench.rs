//! Benchmark, not a correctness test: latency from a new Pod port appearing in OVSDB (the
//! Interface row with the CNI plugin's `external_ids` committed) to the runtime reporting its
//! flows installed, over 100 Pods added one at a time on one Node (netdev datapath). It
//! includes ovs-vswitchd assigning the ofport, the monitor update, the debounce and the
//! `ovs-ofctl` bundle. Baseline, same run: one raw `ovs-ofctl --bundle add-flows` of 8 flows
//! (a Pod's flow count) into another bridge, i.e. the programming floor. Run as root:
//! `scripts/bench-datapath.sh` (or
//! `cargo test -p ovs-egress-integration --release --test datapath_bench -- --ignored --nocapture`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ovs_egress_integration::Underlay;
use ovs_egress_integration::datapath::DatapathNode;
use ovs_egress_ovsdb::bridge::add_port;
use ovs_egress_ovsdb::{Atom, Client, ClientOptions, MonitorSpec, TableCache};

const PODS: usize = 100;

/// Whether ovs-vswitchd has assigned `name` an OpenFlow port.
fn has_ofport(cache: &TableCache, name: &str) -> bool {
    cache.rows("Interface").any(|(_, r)| {
        r.str("Interface", "name").is_ok_and(|n| n == name)
            && matches!(r.optional("Interface", "ofport"), Ok(Some(Atom::Integer(p))) if *p > 0)
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[test]
#[ignore]
fn bench_pod_port_to_flows_installed_latency() {
    let underlay = Underlay::new().unwrap();
    let mut n = DatapathNode::new(&underlay, 1).unwrap();
    n.start_runtime(vec![]).unwrap();
    let ns = n.node.netns().clone();
    n.node
        .ovs
        .vsctl(&[
            "add-br",
            "br-base",
            "--",
            "set",
            "bridge",
            "br-base",
            "datapath_type=netdev",
        ])
        .unwrap();
    for i in 0..PODS {
        let (host, peer) = (format!("bp{i}"), format!("bp{i}x"));
        ns.exec(&[
            "ip", "link", "add", &host, "type", "veth", "peer", "name", &peer,
        ])
        .unwrap();
        ns.exec(&["ip", "link", "set", &host, "up"]).unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut status = n.runtime().unwrap().status_receiver();
    let db = n.node.ovs.db_socket();
    let base_target = format!("{}/br-base.mgmt", n.node.ovs.rundir().display());
    let (mut latency, mut ofport, mut baseline) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        let client = Client::connect(&db, ClientOptions::default()).await.unwrap();
        let spec = MonitorSpec::new().table("Interface", &["name", "ofport"]);
        let mut monitor = client.monitor(&spec).await.unwrap();
        let mut cache = TableCache::new();
        for i in 0..PODS {
            let name = format!("bp{i}");
            let ids: BTreeMap<String, String> = [
                ("container-id", format!("bench{i}")),
                ("k8s-pod-name", format!("bench-{i}")),
                ("k8s-pod-namespace", "default".into()),
                ("ip", format!("10.244.1.{}", 10 + i)),
                ("mac", format!("02:00:00:00:01:{i:02x}")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let start = Instant::now();
            add_port(&client, "br-int", &name, None, &ids).await.unwrap();
            let realized = async {
                while let Some(ev) = monitor.recv().await {
                    cache.apply(&ev);
                    if has_ofport(&cache, &name) {
                        return start.elapsed();
                    }
                }
                panic!("monitor ended");
            };
            let installed = async {
                status.wait_for(|s| s.pods.contains(&name)).await.unwrap();
                start.elapsed()
            };
            let both = async { tokio::join!(realized, installed) };
            let (r, l) = tokio::time::timeout(Duration::from_secs(10), both)
                .await
                .expect("port realized and flows installed within 10 s");
            ofport.push(r);
            latency.push(l);

            let flows: String = (0..8)
                .map(|j| format!("add cookie=0x{i:x},table=0,priority=100,ip,nw_dst=10.9.{i}.{j} actions=drop\n"))
                .collect();
            let start = Instant::now();
            let mut child = tokio::process::Command::new("ovs-ofctl")
                .args(["--no-names", "-O", "OpenFlow15", "--bundle", "add-flows"])
                .arg(format!("unix:{base_target}"))
                .arg("-")
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(flows.as_bytes()).await.unwrap();
            drop(stdin);
            assert!(child.wait().await.unwrap().success());
            baseline.push(start.elapsed());
        }
    });
    latency.sort();
    ofport.sort();
    baseline.sort();
    let (med, p99) = (percentile(&latency, 0.5), percentile(&latency, 0.99));
    let base = percentile(&baseline, 0.5);
    println!(
        "Pod port → flows installed over {PODS} Pods: median {med:?}, p99 {p99:?}, max {:?}; \
         baseline (raw ovs-ofctl bundle of 8 flows) median {base:?}; median/baseline {:.1}x; \
         of which OVSDB commit → ofport assigned (seen by a monitor): median {:?}, p99 {:?}",
        latency[PODS - 1],
        med.as_secs_f64() / base.as_secs_f64(),
        percentile(&ofport, 0.5),
        percentile(&ofport, 0.99),
    );
}
