//! Real packets through the Pod networking pipeline: two test-bed Nodes (namespaces with a
//! private userspace OVS and `br-phy` on the underlay), `br-int` set up by `ovs::bridge` with the
//! catalog's table names and programmed by the FlowProgrammer with `pod_network_flows`, Pods
//! wired by hand (veth, address, route) (the CNI plugin is tested elsewhere). Proves Pod ↔ Pod
//! on one Node, Pod ↔ gateway, Pod ↔ Pod across Nodes through Geneve, host → remote Pod through
//! the ARP responder, and that spoofed sources are dropped.
//! Needs root and Open vSwitch; fails (never skips) without them.

mod programmer_support;

use std::time::Duration;

use ovs_egress::ovs::ofctl::{FlowProgrammer, Ofctl};
use ovs_egress_core::pipeline::{first_host, pod_network_flows, table_names};
use ovs_egress_integration::Netns;
use ovs_egress_integration::node::{Node, quiet_ovs_port};
use ovs_egress_integration::traffic::icmp_from;
use ovs_egress_integration::underlay::Underlay;
use ovs_egress_ovsdb::bridge::{
    BridgeConfig, DatapathType, GATEWAY_OFPORT, TUNNEL_OFPORT, ensure_bridge, wait_until_applied,
};
use ovs_egress_ovsdb::{Client, ClientOptions};
use programmer_support::block;

/// A test-bed Node with br-int programmed and its Pods. Field order = drop order.
struct PodNode {
    pods: Vec<Netns>,
    node: Node,
}

fn start_node(underlay: &Underlay, i: u8, pods: &[u8], others: &[u8]) -> PodNode {
    let node = Node::start(underlay, i).unwrap();
    let ns = node.netns().clone();
    let mut net = programmer_support::node(i, pods, others);
    net.gateway.ofport = GATEWAY_OFPORT as u32;
    net.tunnel_ofport = TUNNEL_OFPORT as u32;
    let mut cfg = BridgeConfig {
        datapath_type: DatapathType::Netdev,
        table_names: table_names(),
        ..BridgeConfig::default()
    };
    cfg.gateway.mac = Some(net.gateway.mac.to_string());
    cfg.gateway.mtu = Some(1450);
    block(async {
        let client = Client::connect(&node.ovs.db_socket(), ClientOptions::default()).await?;
        ensure_bridge(&client, &cfg).await?;
        wait_until_applied(&client, Duration::from_secs(10)).await?;
        anyhow::Ok(())
    })
    .unwrap();
    let gw = format!("{}/{}", net.gateway.ip, net.pod_cidr.prefix());
    ns.exec(&["ip", "addr", "add", &gw, "dev", "antrea-gw0"])
        .unwrap();
    ns.exec(&["ip", "link", "set", "antrea-gw0", "up"]).unwrap();
    // Antrea's Node routes: remote Pod CIDRs via the remote gateway IP, on-link on the gateway.
    for remote in &net.remote_nodes {
        let (cidr, via) = (
            remote.pod_cidr.to_string(),
            first_host(remote.pod_cidr).to_string(),
        );
        ns.exec(&[
            "ip",
            "route",
            "add",
            &cidr,
            "via",
            &via,
            "dev",
            "antrea-gw0",
            "onlink",
        ])
        .unwrap();
    }
    let mut pod_namespaces = Vec::new();
    for pod in &net.pods {
        let pod_ns = Netns::new(&format!("n{i}p{}", pod.ofport)).unwrap();
        let port = format!("vp{i}x{}", pod.ofport);
        ns.veth_to(&port, &pod_ns, "eth0").unwrap();
        quiet_ovs_port(&ns, &port).unwrap();
        ns.exec(&["ip", "link", "set", &port, "up"]).unwrap();
        let mac = pod.mac.to_string();
        let ip = format!("{}/{}", pod.ip, net.pod_cidr.prefix());
        for argv in [
            &["ip", "link", "set", "eth0", "address", &mac, "mtu", "1450"][..],
            &["ip", "addr", "add", &ip, "dev", "eth0"],
            &["ip", "link", "set", "eth0", "up"],
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &net.gateway.ip.to_string(),
            ],
            &["ethtool", "-K", "eth0", "tx", "off"],
        ] {
            pod_ns.exec(argv).unwrap();
        }
        let ofport = format!("ofport_request={}", pod.ofport);
        node.ovs
            .vsctl(&[
                "add-port",
                "br-int",
                &port,
                "--",
                "set",
                "interface",
                &port,
                &ofport,
            ])
            .unwrap();
        pod_namespaces.push(pod_ns);
    }
    let ofctl = Ofctl::new(format!("unix:{}/br-int.mgmt", node.ovs.rundir().display()));
    block(FlowProgrammer::new(ofctl, 1).sync(&pod_network_flows(&net))).unwrap();
    PodNode {
        pods: pod_namespaces,
        node,
    }
}

/// `ping` that tolerates the first packet to a new tunnel destination being dropped (OVS
/// drops it while it resolves the neighbour).
fn ping(from: &Netns, args: &[&str]) -> anyhow::Result<String> {
    let mut argv = vec!["ping", "-c", "3", "-i", "0.2", "-W", "1"];
    argv.extend_from_slice(args);
    from.exec(&argv)
}

#[test]
fn pods_reach_each_other_the_gateway_and_remote_pods_and_spoofed_sources_are_dropped() {
    let underlay = Underlay::new().unwrap();
    let n1 = start_node(&underlay, 1, &[10, 11], &[2]);
    let n2 = start_node(&underlay, 2, &[10], &[1]);
    let names = n1
        .node
        .ovs
        .ofctl(&["--names", "dump-flows", "br-int"])
        .unwrap();
    assert!(
        names.contains("table=L3Forwarding"),
        "catalog names not in Flow_Table:\n{names}"
    );
    // Warm both OVS tunnel neighbour caches (snooped from the replies to the Node kernels).
    ping(n1.node.netns(), &["172.30.0.12"]).unwrap();
    ping(n2.node.netns(), &["172.30.0.11"]).unwrap();

    let (a, b, c) = (&n1.pods[0], &n1.pods[1], &n2.pods[0]);
    ping(a, &["10.244.1.11"]).expect("Pod to Pod on one Node");
    ping(a, &["10.244.1.1"]).expect("Pod to its gateway");
    ping(a, &["10.244.2.10"]).expect("Pod to Pod across Nodes");
    ping(c, &["10.244.1.11"]).expect("Pod to Pod across Nodes, other direction");
    ping(n1.node.netns(), &["10.244.2.10"]).expect("Node to remote Pod via the ARP responder");
    ping(c, &["10.244.1.1"]).expect("remote Pod to this Node's gateway");

    // b first talks legitimately, so its ARP entries exist and only the IP/MAC guards can stop
    // what follows; a and c count what arrives from b's real and forged addresses.
    ping(b, &["10.244.1.10"]).unwrap();
    ping(b, &["10.244.2.10"]).unwrap();
    for pod in [a, c] {
        for src in ["10.244.1.99", "10.244.1.11"] {
            pod.exec(&["iptables", "-A", "INPUT", "-p", "icmp", "-s", src])
                .unwrap();
        }
    }
    ping(b, &["10.244.1.10"]).unwrap();
    assert!(
        icmp_from(a, "10.244.1.11") >= 3,
        "the counters do not count"
    );

    // b claims an address that is not its own: nothing of it arrives anywhere.
    b.exec(&["ip", "addr", "add", "10.244.1.99/32", "dev", "eth0"])
        .unwrap();
    assert!(ping(b, &["-I", "10.244.1.99", "10.244.1.10"]).is_err());
    assert!(ping(b, &["-I", "10.244.1.99", "10.244.2.10"]).is_err());
    assert_eq!(
        icmp_from(a, "10.244.1.99"),
        0,
        "spoofed IP reached a local Pod"
    );
    assert_eq!(
        icmp_from(c, "10.244.1.99"),
        0,
        "spoofed IP reached a remote Pod"
    );
    // ...nor does anything sent with a MAC that is not its own, even from its own IP.
    let before = icmp_from(a, "10.244.1.11");
    b.exec(&["ip", "link", "set", "eth0", "address", "02:44:01:00:00:99"])
        .unwrap();
    assert!(ping(b, &["10.244.1.10"]).is_err());
    assert_eq!(
        icmp_from(a, "10.244.1.11"),
        before,
        "spoofed MAC reached a local Pod"
    );
}
