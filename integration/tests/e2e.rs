//! End-to-end tests of the user guide's scenarios on the cluster-in-a-box
//! (`ovs_egress_integration::cluster`): real controller and agent processes, kube-emu, one OVS
//! per Node, Pods through the CNI plugin, and an external host that reports the source address
//! of every connection. Needs root and Open vSwitch; fails loudly without them.

use std::net::IpAddr;
use std::time::Duration;

use ovs_egress::api::v1beta1;
use ovs_egress_integration::cluster::{ClusterBox, node_ip};

const REALIZED: Duration = Duration::from_secs(10);

async fn egress_node(c: &ClusterBox, name: &str) -> Option<String> {
    let api: kube::Api<v1beta1::Egress> = kube::Api::all(c.client.clone());
    api.get(name).await.ok()?.status?.egress_node
}

fn kubectl_apply(c: &ClusterBox, yaml: &str) {
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(yaml)).unwrap();
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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

    kubectl_apply(
        &c,
        &format!(
            "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata:\n  name: egress-prod-web\n\
             spec:\n  appliedTo:\n    podSelector:\n      matchLabels:\n        app: web\n  \
             egressIP: {egress_ip}\n"
        ),
    );
    for pod in [&web1, &web2] {
        if let Err(e) = c.wait_source(pod, egress_ip, REALIZED).await {
            panic!("{e}\n{}", c.logs());
        }
    }
    assert_eq!(
        egress_node(&c, "egress-prod-web").await.as_deref(),
        Some("node-2")
    );
    assert_eq!(c.source_of(&db1, Duration::from_secs(2)).unwrap(), node1);
}
