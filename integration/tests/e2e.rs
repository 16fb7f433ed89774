//! End-to-end tests of the user guide's scenarios on the cluster-in-a-box
//! (`ovs_egress_integration::cluster`): real controller and agent processes, a real kube-apiserver, one OVS
//! per Node, Pods through the CNI plugin, and an external host that reports the source address
//! of every connection. Needs root and Open vSwitch; fails loudly without them.

use std::net::IpAddr;
use std::time::Duration;

use ovs_egress_core::api::v1beta1;
use ovs_egress_integration::cluster::{ClusterBox, node_ip};

const REALIZED: Duration = Duration::from_secs(10);

/// Waits until the Egress's status names `node` as its Egress Node (the owner writes it right
/// after programming, so traffic may use the IP a moment before).
async fn wait_egress_node(c: &ClusterBox, name: &str, node: &str) {
    let on_node = |e: &v1beta1::Egress| {
        e.status.as_ref().and_then(|s| s.egress_node.as_deref()) == Some(node)
    };
    if let Err(e) = c.wait_egress(name, REALIZED, on_node).await {
        panic!("{e:#}\n{}", c.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_egress_selected_pods_on_both_nodes_leave_with_the_egress_ip_others_with_their_node_ip()
 {
    let mut c = ClusterBox::start(&[1, 2])
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
    let node2: IpAddr = node_ip(2).into();
    let egress_ip: IpAddr = node2;

    c.apply(&format!(
        "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata:\n  name: egress-prod-web\n\
             spec:\n  appliedTo:\n    podSelector:\n      matchLabels:\n        app: web\n  \
             egressIP: {egress_ip}\n"
    ))
    .expect("applying the Egress");
    for pod in [&web1, &web2] {
        if let Err(e) = c.wait_source(pod, egress_ip, REALIZED).await {
            panic!("{e}\n{}", c.logs());
        }
    }
    wait_egress_node(&c, "egress-prod-web", "node-2").await;
    assert_eq!(c.source_of(&db1, Duration::from_secs(2)).unwrap(), node1);
}

/// `scripts/demo.sh` runs this binary (release); here the debug build runs the same scenario,
/// so the README's main command cannot silently break.
#[test]
fn the_demo_sees_every_pod_with_the_source_the_user_guide_promises() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ovs-egress-demo"))
        .output()
        .expect("running ovs-egress-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches(" ok\n").count(), 14, "{stdout}");
    assert!(!stdout.contains("WRONG"), "{stdout}");
}
