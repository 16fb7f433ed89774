//! `ovs-egress agent` with its real datapath programs the Node: in a Node namespace with its own
//! OVS (userspace datapath), the real API server and a Pod created by the CNI plugin, a static Egress whose
//! IP is on the Node makes the agent install the Pod's EgressMark flow (the mark carried in the
//! source MAC) on br-int and the SNAT rule to the egress IP in the Node's `nat` table, and report
//! `IPAssigned=True` with its event; a flushed SNAT chain is repaired. `/readyz` follows the
//! datapath: false while ovs-vswitchd or ovsdb-server is down, true again once the runtime has
//! reinstalled the flows. Needs root and OVS; fails loudly without them.

#[path = "controller/harness.rs"]
#[allow(dead_code)]
mod ctl;
#[path = "agent/harness.rs"]
#[allow(dead_code)]
mod harness;

use harness::*;
use ovs_egress_integration::datapath::DatapathNode;
use ovs_egress_integration::{Underlay, cni};

const EGRESS_IP: &str = "172.30.0.100";

/// The agent of Node `node1` on `dn`'s OVS (userspace datapath, egress IPs on br-phy), ready.
async fn start_agent(bed: &Bed, dn: &DatapathNode) -> Agent {
    let rundir = dn.node.ovs.rundir().to_str().unwrap().to_string();
    let agent = agent_with(
        &bed.cluster.kubeconfig,
        &bed.cluster.dir.0,
        "node1",
        Some("ovsDatapathType: netdev\negressDevice: br-phy\ntransportInterface: br-phy\n"),
        &["--ovs-rundir", &rundir],
    );
    agent.wait_ready().await;
    agent
}

#[tokio::test]
async fn agent_programs_the_egress_mark_flow_and_snat_rule_of_a_local_static_egress() {
    ctl::cargo_bin("ovs-egress");
    let underlay = Underlay::new().expect("creating the underlay");
    let dn = DatapathNode::new(&underlay, 1).expect("starting Node 1 with OVS");
    let ns = dn.node.netns().clone();
    enter(&ns);
    let bed = Bed {
        cluster: ctl::Cluster::start().await,
        ns: ns.clone(),
    };
    let node_ip = dn.node.ip().to_string();
    bed.create(node("node1", &node_ip, &[])).await;
    ns.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{EGRESS_IP}/32"),
        "dev",
        "br-phy",
    ])
    .unwrap();
    bed.create(egress("web", EGRESS_IP, None)).await;

    let agent = start_agent(&bed, &dn).await;

    // The Pod as the kubelet creates it: the object, the sandbox through the CNI plugin (which
    // returns once the agent acknowledged the Pod's flows), then the status with the IP.
    let mut object = pod("default", "web-1", "node1", "");
    object.status = None;
    bed.create_pod(object).await;
    let pod_ns = cni::Pod::new("web-1").unwrap();
    let added = cni::add(&ns, &pod_ns, &dn.cni_conf()).unwrap();
    let (pod_ip, host_if) = (added.ip.to_string(), added.host_if);
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(bed.client(), "default");
    let status = serde_json::json!({"status": {
        "phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}]}});
    pods.patch_status(
        "web-1",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&status),
    )
    .await
    .unwrap();
    let ofport = dn
        .node
        .ovs
        .vsctl(&["get", "Interface", &host_if, "ofport"])
        .unwrap()
        .trim()
        .to_string();

    let status = bed
        .wait_status("web", "IPAssigned=True on node1", |s| {
            ip_assigned(s).is_some_and(|c| c.status == "True")
        })
        .await;
    assert_eq!(status.egress_node.as_deref(), Some("node1"));
    ctl::eventually("the IPAssigned event", 10.0, || async {
        let notes = bed.event_notes("IPAssigned", "web").await;
        (notes
            == [format!(
                "Assigned Egress web with IP {EGRESS_IP} on Node node1"
            )])
        .then_some(())
    })
    .await;

    // The Pod's EgressMark flow: its port, the mark in the source MAC (netdev datapath).
    let in_port = format!("in_port={ofport}");
    ctl::eventually("the Pod's EgressMark flow", 20.0, || async {
        let dump = dn
            .node
            .ovs
            .ofctl(&["--no-names", "dump-flows", "br-int"])
            .unwrap();
        dump.lines()
            .any(|l| l.contains(&in_port) && l.contains("mod_dl_src:02:ee:00:00:00:"))
            .then_some(())
    })
    .await;
    let nat = ns.exec(&["iptables", "-t", "nat", "-S"]).unwrap();
    assert!(
        nat.lines()
            .any(|l| l.contains("-j SNAT") && l.contains(&format!("--to-source {EGRESS_IP}"))),
        "no SNAT rule to {EGRESS_IP}:\n{nat}\nagent log:\n{}",
        agent.logs()
    );

    // Someone flushes our chain: the agent puts the rule back.
    let chain = ovs_egress_host::iptables::Table::Nat.chain();
    ns.exec(&["iptables", "-t", "nat", "-F", chain]).unwrap();
    let flushed = ns.exec(&["iptables", "-t", "nat", "-S", chain]).unwrap();
    assert!(!flushed.contains(EGRESS_IP), "{flushed}");
    ctl::eventually("the SNAT rule repaired", 30.0, || async {
        let nat = ns.exec(&["iptables", "-t", "nat", "-S"]).unwrap();
        nat.lines()
            .any(|l| l.contains("-j SNAT") && l.contains(&format!("--to-source {EGRESS_IP}")))
            .then_some(())
    })
    .await;
    drop(agent);
}

/// Waits until the agent's `/readyz` (what the kubelet's probe reads) answers `code`.
async fn wait_readyz(agent: &Agent, code: u16, when: &str, seconds: f64) {
    let what = format!("/readyz {code} {when}");
    ctl::eventually(&what, seconds, || async {
        (agent.probe("/readyz").await == Some(code)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn readyz_is_false_while_ovs_is_down_and_true_again_once_the_datapath_is_repaired() {
    ctl::cargo_bin("ovs-egress");
    let underlay = Underlay::new().expect("creating the underlay");
    let mut dn = DatapathNode::new(&underlay, 1).expect("starting Node 1 with OVS");
    let ns = dn.node.netns().clone();
    enter(&ns);
    let bed = Bed {
        cluster: ctl::Cluster::start().await,
        ns: ns.clone(),
    };
    bed.create(node("node1", &dn.node.ip().to_string(), &[]))
        .await;
    let agent = start_agent(&bed, &dn).await;

    // ovs-vswitchd crashes: not ready until it is back and the flows are reinstalled.
    dn.node.ovs.kill_vswitchd().unwrap();
    wait_readyz(&agent, 503, "with ovs-vswitchd down", 10.0).await;
    dn.node.ovs.start_vswitchd().unwrap();
    wait_readyz(&agent, 200, "with ovs-vswitchd back", 20.0).await;

    // ovsdb-server goes away: the same.
    dn.node.ovs.stop_ovsdb_server().unwrap();
    wait_readyz(&agent, 503, "with ovsdb-server down", 10.0).await;
    dn.node.ovs.start_ovsdb_server().unwrap();
    wait_readyz(&agent, 200, "with ovsdb-server back", 20.0).await;
    assert!(
        agent.logs().contains("readiness changed"),
        "agent log:\n{}",
        agent.logs()
    );
    drop(agent);
}
