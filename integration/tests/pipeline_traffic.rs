//! Real packets through the Pod networking pipeline: two Nodes (namespaces, each with a private
//! userspace OVS: `br-phy` on the underlay, `br-int` programmed by the FlowProgrammer with
//! `pod_network_flows`), Pods wired by hand as the testbed recipe does (the CNI plugin is tested
//! elsewhere). Proves Pod ↔ Pod on one Node, Pod ↔ gateway, Pod ↔ Pod across Nodes through
//! Geneve, host → remote Pod through the ARP responder, and that spoofed sources are dropped.
//! Needs root and Open vSwitch; fails (never skips) without them.

mod programmer_support;

use ovs_egress::ovs::ofctl::FlowProgrammer;
use ovs_egress::pipeline::{PodNetwork, pod_network_flows};
use ovs_egress_integration::{Netns, OvsInstance};
use programmer_support::{block, node};

/// One Node: its namespace, OVS (kept running until drop) and Pods. Field order = drop order.
struct Node {
    pods: Vec<Netns>,
    _ovs: OvsInstance,
    ns: Netns,
}

/// P1 of the testbed notes: an OVS "system" port must be invisible to the Node's kernel.
fn quiet_port(ns: &Netns, dev: &str) {
    ns.exec(&["ip", "link", "set", dev, "arp", "off"]).unwrap();
    ns.sysctl(&[&format!("net.ipv4.conf.{dev}.forwarding=0")])
        .unwrap();
    ns.exec(&[
        "iptables",
        "-t",
        "raw",
        "-A",
        "PREROUTING",
        "-i",
        dev,
        "-j",
        "DROP",
    ])
    .unwrap();
    ns.exec(&["ip", "link", "set", dev, "up"]).unwrap();
}

fn start_node(underlay: &Netns, i: u8, net: &PodNetwork) -> Node {
    let ns = Netns::new(&format!("n{i}")).unwrap();
    let uplink = format!("u{i}");
    underlay.veth_to(&uplink, &ns, "eth0").unwrap();
    underlay
        .exec(&["ip", "link", "set", &uplink, "master", "br-u", "up"])
        .unwrap();
    quiet_port(&ns, "eth0");
    ns.exec(&["ethtool", "-K", "eth0", "tx", "off"]).unwrap();
    ns.sysctl(&[
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.default.rp_filter=0",
    ])
    .unwrap();
    let ovs = OvsInstance::start(&ns).unwrap();
    let gw_mac = format!("\"{}\"", net.gateway.mac);
    ovs.vsctl(&[
        "add-br",
        "br-phy",
        "--",
        "set",
        "bridge",
        "br-phy",
        "datapath_type=netdev",
        &format!("other-config:hwaddr=\"02:30:00:00:00:1{i}\""),
        "--",
        "add-port",
        "br-phy",
        "eth0",
        "--",
        "add-br",
        "br-int",
        "--",
        "set",
        "bridge",
        "br-int",
        "datapath_type=netdev",
        "fail-mode=secure",
        "protocols=OpenFlow10,OpenFlow13,OpenFlow15",
        "--",
        "add-port",
        "br-int",
        "antrea-tun0",
        "--",
        "set",
        "interface",
        "antrea-tun0",
        "type=geneve",
        &format!("ofport_request={}", net.tunnel_ofport),
        "options:remote_ip=flow",
        "options:key=flow",
        "--",
        "add-port",
        "br-int",
        "antrea-gw0",
        "--",
        "set",
        "interface",
        "antrea-gw0",
        "type=internal",
        &format!("ofport_request={}", net.gateway.ofport),
        "mtu_request=1450",
        &format!("mac={gw_mac}"),
    ])
    .unwrap();
    ns.exec(&[
        "ip",
        "addr",
        "add",
        &format!("172.30.0.1{i}/24"),
        "dev",
        "br-phy",
    ])
    .unwrap();
    ns.exec(&["ip", "link", "set", "br-phy", "up"]).unwrap();
    let gw = format!("{}/{}", net.gateway.ip, net.pod_cidr.prefix());
    ns.exec(&["ip", "addr", "add", &gw, "dev", "antrea-gw0"])
        .unwrap();
    ns.exec(&["ip", "link", "set", "antrea-gw0", "up"]).unwrap();
    // Antrea's Node routes: remote Pod CIDRs via the remote gateway IP, on-link on the gateway.
    for remote in &net.remote_nodes {
        let via = remote.pod_cidr.gateway().to_string();
        ns.exec(&[
            "ip",
            "route",
            "add",
            &remote.pod_cidr.to_string(),
            "via",
            &via,
            "dev",
            "antrea-gw0",
            "onlink",
        ])
        .unwrap();
    }
    let mut pods = Vec::new();
    for pod in &net.pods {
        let pod_ns = Netns::new(&format!("n{i}p{}", pod.ofport)).unwrap();
        let port = format!("vp{i}x{}", pod.ofport);
        ns.veth_to(&port, &pod_ns, "eth0").unwrap();
        quiet_port(&ns, &port);
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
        ovs.vsctl(&[
            "add-port",
            "br-int",
            &port,
            "--",
            "set",
            "interface",
            &port,
            &format!("ofport_request={}", pod.ofport),
        ])
        .unwrap();
        pods.push(pod_ns);
    }
    let ofctl =
        ovs_egress::ovs::ofctl::Ofctl::new(format!("unix:{}/br-int.mgmt", ovs.rundir().display()));
    block(FlowProgrammer::new(ofctl, 1).sync(&pod_network_flows(net))).unwrap();
    Node {
        pods,
        _ovs: ovs,
        ns,
    }
}

/// `ping` that tolerates the first packet to a new tunnel destination being dropped (P8).
fn ping(from: &Netns, args: &[&str]) -> anyhow::Result<String> {
    let mut argv = vec!["ping", "-c", "3", "-i", "0.2", "-W", "1"];
    argv.extend_from_slice(args);
    from.exec(&argv)
}

#[test]
fn pods_reach_each_other_the_gateway_and_remote_pods_and_spoofed_sources_are_dropped() {
    let underlay = Netns::new("ul").unwrap();
    underlay
        .exec(&["ip", "link", "add", "br-u", "type", "bridge"])
        .unwrap();
    underlay.exec(&["ip", "link", "set", "br-u", "up"]).unwrap();
    let n1 = start_node(&underlay, 1, &node(1, &[10, 11], &[2]));
    let n2 = start_node(&underlay, 2, &node(2, &[10], &[1]));
    // Warm both OVS tunnel neighbour caches (snooped from the replies to the Node kernels).
    ping(&n1.ns, &["172.30.0.12"]).unwrap();
    ping(&n2.ns, &["172.30.0.11"]).unwrap();

    let (a, b, c) = (&n1.pods[0], &n1.pods[1], &n2.pods[0]);
    ping(a, &["10.244.1.11"]).expect("Pod to Pod on one Node");
    ping(a, &["10.244.1.1"]).expect("Pod to its gateway");
    ping(a, &["10.244.2.10"]).expect("Pod to Pod across Nodes");
    ping(c, &["10.244.1.11"]).expect("Pod to Pod across Nodes, other direction");
    ping(&n1.ns, &["10.244.2.10"]).expect("Node to remote Pod via the ARP responder");
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

/// Packets counted by the `-s src` rule of `pod`'s INPUT chain.
fn icmp_from(pod: &Netns, src: &str) -> u64 {
    let table = pod.exec(&["iptables", "-nvxL", "INPUT"]).unwrap();
    table
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == src))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter for {src} in\n{table}"))
}
