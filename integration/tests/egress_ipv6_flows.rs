//! IPv6 Egress flows against a real OVS (private instance in our own namespace): every flow
//! `pipeline::egress` renders for IPv6 egress IPs (Pod mark and tunnel flows, tunnelled-in mark
//! flows, IPv6 bypasses, the IPv6 hand-off and drop), mixed with IPv4 ones and Pod networking,
//! is accepted by `ovs-ofctl` and dumps back with the same key and actions, so the programmer's
//! verification finds nothing to repair. Needs root and Open vSwitch; fails (never skips)
//! without them.

mod programmer_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ovs_egress::ovs::ofctl::{FlowProgrammer, Repair};
use ovs_egress_core::pipeline::egress::MarkCarrier;
use ovs_egress_core::pipeline::egress::{EgressContext, Ipv6Bypass, egress_flows};
use ovs_egress_core::pipeline::{Flow, pod_network_flows};
use ovs_egress_core::plan::{IpLocality, NodePlan, PodBinding, SnatRule};
use programmer_support::{Bridge, block, expected, node};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test IP")
}

fn binding(egress_ip: &str) -> PodBinding {
    PodBinding {
        ips: Vec::new(),
        egress: format!("eg-{egress_ip}"),
        egress_ip: Some(ip(egress_ip)),
        losers: Vec::new(),
        drop_external: false,
    }
}

/// Node 1 holds 172.30.0.100 (mark 1), fd00:30::100 (mark 2) and the IPv4-compatible
/// ::10.0.0.7 (mark 3, spelled in hex on input, dotted by OVS); 172.30.0.102 and
/// fd00:30:0:1::2 are held elsewhere. Ports 10–14: one Pod per IP.
fn dual_stack_plan() -> NodePlan {
    let ips = [
        "172.30.0.100",
        "fd00:30::100",
        "::a00:7",
        "172.30.0.102",
        "fd00:30:0:1::2",
    ];
    let mut egress_ips = BTreeMap::new();
    let mut snat_rules = Vec::new();
    for (mark, local) in (1u8..).zip(&ips[..3]) {
        egress_ips.insert(ip(local), IpLocality::Local { mark });
        snat_rules.push(SnatRule {
            ip: ip(local),
            mark,
        });
    }
    for remote in &ips[3..] {
        egress_ips.insert(ip(remote), IpLocality::Remote { holder: None });
    }
    NodePlan {
        node: "node-1".to_string(),
        pods: ips
            .iter()
            .enumerate()
            .map(|(i, egress_ip)| (format!("prod/p{i}"), binding(egress_ip)))
            .collect(),
        egress_ips,
        snat_rules,
        hold_ips: BTreeSet::new(),
        statuses: BTreeMap::new(),
    }
}

fn cidrs<C: std::str::FromStr>(list: &[&str]) -> Vec<C> {
    list.iter()
        .map(|c| c.parse().unwrap_or_else(|_| panic!("CIDR {c}")))
        .collect()
}

fn context(carrier: MarkCarrier) -> EgressContext {
    EgressContext {
        pod_ofports: (0..5).map(|i| (format!("prod/p{i}"), 10 + i)).collect(),
        gateway_mac: "02:44:01:00:00:01".parse().expect("MAC"),
        local_transport_ip: "172.30.0.11".parse().expect("IP"),
        remote_transport_ips: vec!["172.30.0.12".parse().expect("IP")],
        pod_cidrs: cidrs(&["10.244.1.0/24", "10.244.2.0/24"]),
        service_cidrs: cidrs(&["10.96.0.0/12"]),
        except_cidrs: cidrs(&["192.0.2.0/24"]),
        ipv6: Ipv6Bypass {
            transport_ips: vec![
                "fd00:30::11".parse().expect("IP"),
                "fd00:30::12".parse().expect("IP"),
            ],
            pod_cidrs: cidrs(&["fd00:10:244:1::/64", "fd00:10:244:2::/64"]),
            service_cidrs: cidrs(&["fd00:10:96::/112"]),
            // Host bits set on input, a run-of-zeros tie, an IPv4-compatible prefix.
            except_cidrs: cidrs(&["2001:db8::77/32", "1:0:0:1:0:0:1:0/112", "::a00:0/120"]),
        },
        carrier,
    }
}

/// Pod networking of Node 1 plus its Egress flows for `carrier`.
fn all_flows(carrier: MarkCarrier) -> Vec<Flow> {
    let mut flows = pod_network_flows(&node(1, &[10, 11, 12, 13, 14], &[2]));
    let egress = egress_flows(&dual_stack_plan(), &context(carrier));
    assert!(egress.unprogrammed.is_empty(), "{:?}", egress.unprogrammed);
    flows.extend(egress.flows);
    flows
}

#[test]
fn ipv6_egress_flows_are_accepted_and_read_back_exactly_as_rendered() {
    let bridge = Bridge::start("egress-v6");
    let mut p = FlowProgrammer::new(bridge.ofctl(), 1);
    for carrier in [MarkCarrier::PktMark, MarkCarrier::SourceMac] {
        let desired = all_flows(carrier);
        block(p.sync(&desired)).expect("the switch accepts every flow");
        let dumped = bridge.flows();
        let want = expected(&desired, 1);
        let unexpected: Vec<_> = dumped.difference(&want).collect();
        let missing: Vec<_> = want.difference(&dumped).collect();
        assert!(
            unexpected.is_empty() && missing.is_empty(),
            "{carrier:?}: the switch dumped {unexpected:#?}\ninstead of {missing:#?}"
        );
        assert_eq!(block(p.verify()).expect("verify"), Repair::default());

        // Not vacuous: the IPv6 flows are on the switch, spelled as OVS spells them.
        let keys: BTreeSet<String> = dumped.iter().map(|(_, key, _)| key.clone()).collect();
        for key in [
            "table=7,priority=190,ct_state=-rpl+trk,ipv6,reg0=0x3/0xf",
            "table=7,priority=190,ct_state=-rpl+trk,ipv6,reg0=0x1/0xf",
            "table=8,priority=190,ct_state=+new+trk,ipv6,reg0=0x1/0xf",
            "table=8,priority=200,ct_state=+trk,ipv6,in_port=11",
            "table=8,priority=200,ct_state=+trk,ipv6,tun_ipv6_dst=fd00:30::100",
            "table=8,priority=200,ct_state=+trk,ipv6,tun_ipv6_dst=::10.0.0.7",
            "table=8,priority=200,ipv6,in_port=14",
            "table=8,priority=210,ipv6,ipv6_dst=fd00:30::12",
            "table=8,priority=210,ipv6,ipv6_dst=fd00:10:244:2::/64",
            "table=8,priority=210,ipv6,ipv6_dst=fd00:10:96::/112",
            "table=8,priority=210,ipv6,ipv6_dst=2001:db8::/32",
            "table=8,priority=210,ipv6,ipv6_dst=1::1:0:0:1:0/112",
            "table=8,priority=210,ipv6,ipv6_dst=::10.0.0.0/120",
        ] {
            assert!(keys.contains(key), "{carrier:?}: {key} not in {keys:#?}");
        }
        let tunnel = dumped
            .iter()
            .find(|(_, key, _)| key.ends_with(",ipv6,in_port=14"))
            .map(|(_, _, actions)| actions.as_str());
        assert_eq!(
            tunnel,
            Some(
                "set_field:02:44:01:00:00:01->eth_src,set_field:aa:bb:cc:dd:ee:ff->eth_dst,\
                 set_field:fd00:30:0:1::2->tun_ipv6_dst,set_field:0x10/0xf0->reg0,goto_table:10"
            )
        );
    }
}
