//! The datapath runtime carries Pod traffic on real OVS: two test-bed Nodes, each running
//! `NodeDatapath` in its namespace, Pods created by the CNI plugin binary as the kubelet does.
//! Proves Pod ↔ Pod on one Node and across Nodes over Geneve (ping and TCP), Pod → gateway,
//! Node → remote Pod through the Node route the runtime added, spoofed sources dropped, and
//! compares the installed flows with the golden dumps in `ovs-flows/` (regenerate with
//! `UPDATE_GOLDEN=1`). Needs root and Open vSwitch; fails (never skips) without them.

use std::path::Path;

use ovs_egress_integration::datapath::{CniPod, TwoNodes};
use ovs_egress_integration::traffic::{icmp_from, normalized_dump, ping, tcp_transfer};

fn check_golden(file: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ovs-flows")
        .join(file);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "ovs-flows/{file} differs from the flows on the switch; if intended, regenerate with \
         `UPDATE_GOLDEN=1 cargo test -p ovs-egress-integration --test datapath_traffic` and \
         review the diff.\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

/// Pod MACs and host port names are random: the golden files hold placeholders.
fn placeholders(pods: &[(&str, &CniPod)]) -> Vec<(String, String)> {
    let macs = pods
        .iter()
        .map(|(name, p)| (p.mac.clone(), format!("<mac-of-pod-{name}>")));
    let ports = pods
        .iter()
        .map(|(name, p)| (p.host_if.clone(), format!("<port-of-pod-{name}>")));
    macs.chain(ports).collect()
}

#[test]
fn cni_pods_reach_each_other_gateway_and_remote_pods_spoofing_dropped_flows_match_golden() {
    let nodes = TwoNodes::start().unwrap();
    let (n1, n2) = (&nodes.n1, &nodes.n2);
    let a = n1.add_pod("a").unwrap();
    let b = n1.add_pod("b").unwrap();
    let c = n2.add_pod("c").unwrap();

    check_golden(
        "datapath-two-nodes-node1.txt",
        &normalized_dump(&n1.node, &placeholders(&[("a", &a), ("b", &b)])).unwrap(),
    );
    check_golden(
        "datapath-two-nodes-node2.txt",
        &normalized_dump(&n2.node, &placeholders(&[("c", &c)])).unwrap(),
    );
    let routes = n1.node.netns().exec(&["ip", "route", "show"]).unwrap();
    assert!(
        routes.lines().any(
            |l| l.starts_with("10.244.2.0/24 via 10.244.2.1 dev antrea-gw0")
                && l.contains("onlink")
        ),
        "Node route to the remote Pod CIDR missing:\n{routes}"
    );

    ping(a.ns(), &b.ip.to_string()).expect("Pod to Pod on one Node");
    ping(a.ns(), "10.244.1.1").expect("Pod to its gateway");
    ping(a.ns(), &c.ip.to_string()).expect("Pod to Pod across Nodes");
    ping(c.ns(), &b.ip.to_string()).expect("Pod to Pod across Nodes, other direction");
    ping(n1.node.netns(), &c.ip.to_string()).expect("Node to remote Pod via the Node route");
    tcp_transfer(a.ns(), b.ns(), b.ip).expect("TCP Pod to Pod on one Node");
    tcp_transfer(a.ns(), c.ns(), c.ip).expect("TCP Pod to Pod across Nodes");

    // a and c count what arrives from b's real and forged source addresses.
    let (b_ip, forged) = (b.ip.to_string(), "10.244.1.99");
    for pod in [&a, &c] {
        for src in [forged, b_ip.as_str()] {
            pod.ns()
                .exec(&["iptables", "-A", "INPUT", "-p", "icmp", "-s", src])
                .unwrap();
        }
    }
    ping(b.ns(), &a.ip.to_string()).unwrap();
    assert!(icmp_from(a.ns(), &b_ip) >= 3, "the counters do not count");
    b.ns()
        .exec(&["ip", "addr", "add", &format!("{forged}/32"), "dev", "eth0"])
        .unwrap();
    for target in [&a, &c] {
        let t = target.ip.to_string();
        assert!(
            b.ns()
                .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", forged, &t])
                .is_err(),
            "ping from a forged source to {t} got answers"
        );
    }
    assert_eq!(
        icmp_from(a.ns(), forged),
        0,
        "spoofed IP reached a local Pod"
    );
    assert_eq!(
        icmp_from(c.ns(), forged),
        0,
        "spoofed IP reached a remote Pod"
    );
}
