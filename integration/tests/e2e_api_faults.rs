//! End-to-end: the real API server misbehaves and traffic never takes a wrong source. On the
//! cluster-in-a-box (`ovs_egress_integration::cluster`), with Pods leaving through an Egress:
//! the API server frozen (`SIGSTOP`) and thawed, stopped and started again on the same etcd
//! data, one Node's link to it slowed, its watch streams cut, and its link broken while etcd is
//! compacted so that the agent's watch resumes into 410 Gone and must list again. During each
//! fault every Pod keeps its source; after it, a change made through the API is realized.
//! Needs root and Open vSwitch; fails loudly without them.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ovs_egress_integration::cluster::{BoxPod, ClusterBox, node_ip};
use ovs_egress_integration::relay::LinkMode;

/// How long a change may take to be realized after a fault has ended (reconnect back-off
/// included; the 1 s bounds without faults are benchmarked elsewhere).
const AFTER_FAULT: Duration = Duration::from_secs(30);

fn egress_yaml(name: &str, app: &str, ip: IpAddr) -> String {
    format!(
        "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata:\n  name: {name}\n\
         spec:\n  appliedTo:\n    podSelector:\n      matchLabels:\n        app: {app}\n  \
         egressIP: {ip}\n"
    )
}

async fn expect_source(c: &ClusterBox, pod: &BoxPod, want: IpAddr, stage: &str) {
    if let Err(e) = c.wait_source(pod, want, AFTER_FAULT).await {
        panic!("{stage}: {e}\n{}", c.logs());
    }
}

/// Has every `(pod, source)` call the external host once; all must be seen with their source.
fn no_wrong_source(c: &ClusterBox, want: &[(&BoxPod, IpAddr)], stage: &str) {
    for (pod, ip) in want {
        let seen = c.source_of(pod, Duration::from_secs(2));
        assert!(
            matches!(seen, Ok(s) if s == *ip),
            "{stage}: Pod {}/{} seen with {seen:?}, not {ip}",
            pod.namespace,
            pod.name
        );
    }
}

/// Samples the sources of `want` for `duration` (every Pod about every 200 ms).
async fn hold_sources_for(
    c: &ClusterBox,
    want: &[(&BoxPod, IpAddr)],
    duration: Duration,
    stage: &str,
) {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        no_wrong_source(c, want, stage);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_frozen_restarted_slowed_cut_and_compacted_never_gives_a_wrong_source_and_changes_are_realized_after()
 {
    // Without the watch cache, a watch resuming past a compaction is answered 410 at once
    // (the cache would serve it from its own history of recent events).
    let mut c = ClusterBox::start_with_api_args(&[1, 2], &["--watch-cache=false"])
        .await
        .expect("the cluster-in-a-box");
    c.ensure_namespace("prod", &[]).await.unwrap();
    let web1 = c
        .create_pod("prod", "web-1", "node-1", &[("app", "web")])
        .await
        .unwrap();
    let web2 = c
        .create_pod("prod", "web-2", "node-2", &[("app", "web")])
        .await
        .unwrap();
    let db1 = c
        .create_pod("prod", "db-1", "node-1", &[("app", "db")])
        .await
        .unwrap();
    let node1: IpAddr = node_ip(1).into();
    let egress_ip: IpAddr = node_ip(2).into();
    c.apply(&egress_yaml("web", "web", egress_ip)).unwrap();
    for pod in [&web1, &web2] {
        expect_source(&c, pod, egress_ip, "before any fault").await;
    }
    let steady = [(&web1, egress_ip), (&web2, egress_ip), (&db1, node1)];

    // Frozen: connections hang, nothing answers; traffic keeps its sources.
    c.api_server().unwrap().pause().unwrap();
    hold_sources_for(&c, &steady, Duration::from_secs(4), "API server frozen").await;
    c.api_server().unwrap().resume().unwrap();
    let web3 = c
        .create_pod("prod", "web-3", "node-1", &[("app", "web")])
        .await
        .unwrap();
    expect_source(&c, &web3, egress_ip, "after the API server was thawed").await;

    // Stopped (connections refused) and started again on the same etcd data.
    c.api_server().unwrap().stop();
    hold_sources_for(&c, &steady, Duration::from_secs(4), "API server stopped").await;
    c.api_server().unwrap().restart().unwrap();
    c.apply(&egress_yaml("db", "db", egress_ip)).unwrap();
    expect_source(&c, &db1, egress_ip, "after the API server restarted").await;

    // node-1's link slowed to 300 ms per chunk each way: it still follows.
    c.set_link("node-1", LinkMode::Slow(Duration::from_millis(300)))
        .unwrap();
    c.kubectl_ok(&["delete", "egress", "db"], None).unwrap();
    expect_source(&c, &db1, node1, "over a slow link").await;
    c.set_link("node-1", LinkMode::Pass).unwrap();

    // Watch streams cut: the agent watches again from where it was.
    c.cut_link("node-1").unwrap();
    c.apply(&egress_yaml("db", "db", egress_ip)).unwrap();
    expect_source(&c, &db1, egress_ip, "after the watch streams were cut").await;

    // Broken while an Egress goes away and etcd is compacted: the agent's watch resumes from a
    // compacted resourceVersion, the server answers 410 Gone, and the agent lists again.
    c.set_link("node-1", LinkMode::Broken).unwrap();
    c.kubectl_ok(&["delete", "egress", "db"], None).unwrap();
    for n in 0..20 {
        // Enough writes that the agent's last resourceVersion is well behind.
        c.kubectl_ok(
            &[
                "annotate",
                "egress",
                "web",
                &format!("touch={n}"),
                "--overwrite",
            ],
            None,
        )
        .unwrap();
    }
    c.api_server().unwrap().compact().unwrap();
    let db1_before = c.source_of(&db1, Duration::from_secs(2));
    assert!(
        matches!(db1_before, Ok(s) if s == egress_ip),
        "with node-1 cut off its agent still holds the old decision: {db1_before:?}"
    );
    c.set_link("node-1", LinkMode::Pass).unwrap();
    expect_source(&c, &db1, node1, "after 410 Gone").await;
    no_wrong_source(
        &c,
        &[(&web1, egress_ip), (&web2, egress_ip), (&web3, egress_ip)],
        "after 410 Gone",
    );
    let log = c.node("node-1").unwrap().agent_logs();
    assert!(
        log.lines()
            // kube-runtime logs a 410 by its reason and message ("too old resource version: …: Expired").
            .any(|l| l.contains("watch error") && (l.contains("Expired") || l.contains("410"))),
        "the agent of node-1 never met 410 Gone; its log:\n{log}"
    );
}
