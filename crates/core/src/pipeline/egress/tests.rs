//! Unit tests of the Egress flows: golden files per mark carrier and the properties the
//! datapath relies on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::pipeline::{Style, check_golden, pod_network_flows, render_sorted};
use crate::plan::{PodBinding, SnatRule};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn binding(pod_ip: &str, egress: &str, egress_ip: Option<&str>) -> PodBinding {
    PodBinding {
        ips: vec![ip(pod_ip)],
        egress: egress.to_string(),
        egress_ip: egress_ip.map(ip),
        losers: Vec::new(),
        drop_external: false,
    }
}

/// Node 1 holds 172.30.0.100 (mark 1; also used by Pods of other Nodes) and 172.30.0.101
/// (mark 2, used by nobody here); 172.30.0.102 is held elsewhere.
fn plan() -> NodePlan {
    NodePlan {
        node: "node-1".into(),
        pods: BTreeMap::from([
            (
                "prod/web-0".to_string(),
                binding("10.244.1.10", "eg-a", Some("172.30.0.100")),
            ),
            (
                "prod/web-1".to_string(),
                binding("10.244.1.11", "eg-b", Some("172.30.0.102")),
            ),
            (
                "prod/pending".to_string(),
                binding("10.244.1.12", "eg-c", None),
            ),
        ]),
        egress_ips: BTreeMap::from([
            (ip("172.30.0.100"), IpLocality::Local { mark: 1 }),
            (ip("172.30.0.102"), IpLocality::Remote { holder: None }),
        ]),
        snat_rules: vec![
            SnatRule {
                ip: ip("172.30.0.100"),
                mark: 1,
            },
            SnatRule {
                ip: ip("172.30.0.101"),
                mark: 2,
            },
        ],
        hold_ips: BTreeSet::new(),
        statuses: BTreeMap::new(),
    }
}

fn context(carrier: MarkCarrier) -> EgressContext {
    EgressContext {
        pod_ofports: BTreeMap::from([
            ("prod/web-0".to_string(), 3),
            ("prod/web-1".to_string(), 4),
            ("prod/pending".to_string(), 5),
        ]),
        gateway_mac: "02:44:01:00:00:01".parse().unwrap(),
        local_transport_ip: "172.30.0.11".parse().unwrap(),
        remote_transport_ips: vec!["172.30.0.12".parse().unwrap()],
        pod_cidrs: vec![
            "10.244.1.0/24".parse().unwrap(),
            "10.244.2.0/24".parse().unwrap(),
        ],
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
        except_cidrs: vec!["192.0.2.0/24".parse().unwrap()],
        ipv6: Ipv6Bypass::default(),
        carrier,
    }
}

/// [`plan`] plus IPv6: Node 1 also holds fd00:30::100 (mark 3; Pod `prod/v6-local`) and
/// fd00:30::101 (mark 4, used by nobody here); fd00:30::102 (Pod `prod/v6-remote`) is held
/// elsewhere.
fn dual_stack_plan() -> NodePlan {
    let mut plan = plan();
    plan.pods.insert(
        "prod/v6-local".to_string(),
        binding("fd00:10:244:1::20", "eg-6a", Some("fd00:30::100")),
    );
    plan.pods.insert(
        "prod/v6-remote".to_string(),
        binding("fd00:10:244:1::21", "eg-6b", Some("fd00:30::102")),
    );
    plan.egress_ips
        .insert(ip("fd00:30::100"), IpLocality::Local { mark: 3 });
    plan.egress_ips
        .insert(ip("fd00:30::102"), IpLocality::Remote { holder: None });
    plan.snat_rules.extend([
        SnatRule {
            ip: ip("fd00:30::100"),
            mark: 3,
        },
        SnatRule {
            ip: ip("fd00:30::101"),
            mark: 4,
        },
    ]);
    plan
}

/// [`context`] of a dual-stack cluster: Pods `prod/v6-local` and `prod/v6-remote` on ports 6
/// and 7, and IPv6 Node IPs, Pod CIDRs, Service CIDR and except-CIDR.
fn dual_stack_context(carrier: MarkCarrier) -> EgressContext {
    let mut ctx = context(carrier);
    ctx.pod_ofports.insert("prod/v6-local".to_string(), 6);
    ctx.pod_ofports.insert("prod/v6-remote".to_string(), 7);
    ctx.ipv6 = Ipv6Bypass {
        transport_ips: vec![
            "fd00:30::11".parse().unwrap(),
            "fd00:30::12".parse().unwrap(),
        ],
        pod_cidrs: vec![
            "fd00:10:244:1::/64".parse().unwrap(),
            "fd00:10:244:2::/64".parse().unwrap(),
        ],
        service_cidrs: vec!["fd00:10:96::/112".parse().unwrap()],
        except_cidrs: vec!["2001:db8::/32".parse().unwrap()],
    };
    ctx
}

fn rendered(flows: &EgressFlows) -> Vec<String> {
    flows
        .flows
        .iter()
        .map(|f| f.render(1, Style::Names))
        .collect()
}

#[test]
fn egress_flows_match_the_golden_files_for_both_carriers() {
    for (carrier, file) in [
        (MarkCarrier::PktMark, "ovs-flows/egress-node1-pkt-mark.txt"),
        (
            MarkCarrier::SourceMac,
            "ovs-flows/egress-node1-source-mac.txt",
        ),
    ] {
        let flows = egress_flows(&plan(), &context(carrier));
        check_golden(file, &render_sorted(&flows.flows, 1, Style::Names));
    }
    let flows = egress_flows(
        &dual_stack_plan(),
        &dual_stack_context(MarkCarrier::PktMark),
    );
    check_golden(
        "ovs-flows/egress-node1-dual-stack.txt",
        &render_sorted(&flows.flows, 1, Style::Names),
    );
}

#[test]
fn local_egress_ip_marks_the_pod_with_pkt_mark_or_the_mark_mac() {
    let pkt = rendered(&egress_flows(&plan(), &context(MarkCarrier::PktMark)));
    let want = "table=EgressMark, priority=200,ct_state=+trk,ip,in_port=3 actions=\
                set_field:0x1/0xff->pkt_mark,set_field:0x20/0xf0->reg0,goto_table:L2ForwardingCalc";
    assert!(pkt.iter().any(|f| f.ends_with(want)), "{pkt:#?}");
    let mac = rendered(&egress_flows(&plan(), &context(MarkCarrier::SourceMac)));
    let mark_mac = Mac(mark_mac(NonZeroU8::MIN));
    let want = format!(
        "table=EgressMark, priority=200,ct_state=+trk,ip,in_port=3 actions=\
         set_field:{mark_mac}->eth_src,set_field:0x20/0xf0->reg0,goto_table:L2ForwardingCalc"
    );
    assert!(mac.iter().any(|f| f.ends_with(&want)), "{mac:#?}");
    assert!(mac.iter().all(|f| !f.contains("pkt_mark")));
}

#[test]
fn remote_egress_ip_tunnels_to_the_egress_ip_itself() {
    let flows = rendered(&egress_flows(&plan(), &context(MarkCarrier::PktMark)));
    let want = "table=EgressMark, priority=200,ip,in_port=4 actions=\
                set_field:02:44:01:00:00:01->eth_src,set_field:aa:bb:cc:dd:ee:ff->eth_dst,\
                set_field:172.30.0.102->tun_dst,set_field:0x10/0xf0->reg0,goto_table:L2ForwardingCalc";
    assert!(flows.iter().any(|f| f.ends_with(want)), "{flows:#?}");
}

#[test]
fn every_local_egress_ip_marks_tunnelled_traffic_and_other_new_tunnelled_connections_drop() {
    let flows = rendered(&egress_flows(&plan(), &context(MarkCarrier::PktMark)));
    for (egress_ip, mark) in [("172.30.0.100", 1), ("172.30.0.101", 2)] {
        let want = format!(
            "table=EgressMark, priority=200,ct_state=+trk,ip,tun_dst={egress_ip} actions=\
             set_field:{mark:#x}/0xff->pkt_mark,set_field:0x20/0xf0->reg0,goto_table:L2ForwardingCalc"
        );
        assert!(flows.iter().any(|f| f.ends_with(&want)), "missing {want}");
    }
    assert!(!flows.iter().any(|f| f.contains("tun_dst=172.30.0.102")));
    for family in ["ip", "ipv6"] {
        let drop = format!(
            "table=EgressMark, priority=190,ct_state=+new+trk,{family},reg0=0x1/0xf actions=drop"
        );
        assert!(flows.iter().any(|f| f.ends_with(&drop)), "{flows:#?}");
    }
}

#[test]
fn cluster_destinations_and_except_cidrs_bypass_egress_to_the_gateway() {
    let flows = rendered(&egress_flows(&plan(), &context(MarkCarrier::PktMark)));
    for dst in [
        "172.30.0.11",
        "172.30.0.12",
        "10.244.1.0/24",
        "10.244.2.0/24",
        "10.96.0.0/12",
        "192.0.2.0/24",
    ] {
        let want = format!(
            "table=EgressMark, priority=210,ip,nw_dst={dst} actions=\
             set_field:0x20/0xf0->reg0,goto_table:L2ForwardingCalc"
        );
        assert!(flows.iter().any(|f| f.ends_with(&want)), "missing {want}");
    }
}

#[test]
fn only_non_reply_traffic_from_pods_and_the_tunnel_enters_egress_mark() {
    let flows = rendered(&egress_flows(&plan(), &context(MarkCarrier::PktMark)));
    let mut entries: Vec<&str> = flows
        .iter()
        .filter(|f| f.contains("table=L3Forwarding"))
        .map(|f| f.split_once("priority=").unwrap().1)
        .collect();
    entries.sort();
    let mut want = Vec::new();
    for family in ["ip", "ipv6"] {
        want.push(format!(
            "190,ct_state=-rpl+trk,{family},reg0=0x1/0xf \
             actions=set_field:02:44:01:00:00:01->eth_dst,goto_table:EgressMark"
        ));
        want.push(format!(
            "190,ct_state=-rpl+trk,{family},reg0=0x3/0xf actions=goto_table:EgressMark"
        ));
    }
    assert_eq!(entries, want);
}

#[test]
fn egress_flows_use_only_the_reserved_slots_egress_cookies_and_forward_jumps() {
    let flows = egress_flows(
        &dual_stack_plan(),
        &dual_stack_context(MarkCarrier::SourceMac),
    )
    .flows;
    for flow in &flows {
        let text = flow.render(1, Style::Names);
        let reserved = match flow.table {
            Table::L3Forwarding => flow.priority == PRIORITY_TO_EGRESS,
            Table::EgressMark => (PRIORITY_DROP..=PRIORITY_BYPASS).contains(&flow.priority),
            _ => false,
        };
        assert!(reserved, "{text}");
        assert_eq!(flow.cookie.category, Category::Egress, "{text}");
        for action in &flow.actions {
            if let Action::GotoTable(to) = action {
                assert!(*to > flow.table, "{text}");
            }
        }
    }
}

#[test]
fn egress_flows_never_collide_with_pod_network_flows() {
    let net = crate::pipeline::PodNetwork {
        gateway: crate::pipeline::Gateway {
            ofport: 2,
            mac: "02:44:01:00:00:01".parse().unwrap(),
            ip: "10.244.1.1".parse().unwrap(),
        },
        tunnel_ofport: 1,
        pod_cidr: "10.244.1.0/24".parse().unwrap(),
        pods: Vec::new(),
        remote_nodes: Vec::new(),
    };
    let mut all = pod_network_flows(&net);
    all.extend(
        egress_flows(
            &dual_stack_plan(),
            &dual_stack_context(MarkCarrier::PktMark),
        )
        .flows,
    );
    let keys: BTreeSet<_> = all.iter().map(Flow::key).collect();
    assert_eq!(keys.len(), all.len());
}

#[test]
fn unattached_pods_and_unmarked_local_ips_are_reported_not_programmed() {
    let mut plan = dual_stack_plan();
    plan.pods.insert(
        "prod/late".to_string(),
        binding("10.244.1.13", "eg-a", Some("172.30.0.100")),
    );
    plan.pods.insert(
        "prod/late-v6".to_string(),
        binding("fd00:10:244:1::13", "eg-6a", Some("fd00:30::100")),
    );
    plan.snat_rules.push(SnatRule {
        ip: ip("fd00:30::200"),
        mark: 0,
    });
    let flows = egress_flows(&plan, &dual_stack_context(MarkCarrier::PktMark));
    assert_eq!(
        flows.unprogrammed,
        vec![
            Unprogrammed::NoMark {
                ip: ip("fd00:30::200")
            },
            Unprogrammed::PodNotAttached {
                pod: "prod/late".to_string()
            },
            Unprogrammed::PodNotAttached {
                pod: "prod/late-v6".to_string()
            },
        ]
    );
    assert!(!rendered(&flows).iter().any(|f| f.contains("fd00:30::200")));
}

#[test]
fn local_ipv6_egress_ip_marks_the_pods_ipv6_traffic_and_traffic_tunnelled_to_it() {
    for carrier in [MarkCarrier::PktMark, MarkCarrier::SourceMac] {
        let flows = rendered(&egress_flows(
            &dual_stack_plan(),
            &dual_stack_context(carrier),
        ));
        let mark = match carrier {
            MarkCarrier::PktMark => "set_field:0x3/0xff->pkt_mark".to_string(),
            MarkCarrier::SourceMac => format!(
                "set_field:{}->eth_src",
                Mac(mark_mac(NonZeroU8::new(3).unwrap()))
            ),
        };
        for matches in [
            "ct_state=+trk,ipv6,in_port=6",
            "ct_state=+trk,ipv6,tun_ipv6_dst=fd00:30::100",
        ] {
            let want = format!(
                "table=EgressMark, priority=200,{matches} actions=\
                 {mark},set_field:0x20/0xf0->reg0,goto_table:L2ForwardingCalc"
            );
            assert!(flows.iter().any(|f| f.ends_with(&want)), "missing {want}");
        }
        // The unused local IP still marks what other Nodes tunnel to it.
        assert!(
            flows
                .iter()
                .any(|f| f.contains(",ipv6,tun_ipv6_dst=fd00:30::101 ")),
            "{flows:#?}"
        );
    }
}

#[test]
fn remote_ipv6_egress_ip_tunnels_the_pods_ipv6_traffic_to_the_egress_ip_itself() {
    let flows = rendered(&egress_flows(
        &dual_stack_plan(),
        &dual_stack_context(MarkCarrier::PktMark),
    ));
    let want = "table=EgressMark, priority=200,ipv6,in_port=7 actions=\
                set_field:02:44:01:00:00:01->eth_src,set_field:aa:bb:cc:dd:ee:ff->eth_dst,\
                set_field:fd00:30::102->tun_ipv6_dst,set_field:0x10/0xf0->reg0,goto_table:L2ForwardingCalc";
    assert!(flows.iter().any(|f| f.ends_with(want)), "{flows:#?}");
    assert!(
        !flows
            .iter()
            .any(|f| f.contains("tun_ipv6_dst=fd00:30::102 "))
    );
    assert!(!flows.iter().any(|f| f.contains("ip,in_port=7")));
}

#[test]
fn ipv4_and_ipv6_pods_keep_their_own_family_and_ipv4_flows_are_unchanged_by_ipv6() {
    let v4 = egress_flows(&plan(), &context(MarkCarrier::PktMark)).flows;
    let dual = egress_flows(
        &dual_stack_plan(),
        &dual_stack_context(MarkCarrier::PktMark),
    )
    .flows;
    let ipv4_only = |flows: &[Flow]| -> BTreeSet<String> {
        flows
            .iter()
            .map(|f| f.render(1, Style::Names))
            .filter(|f| f.contains(",ip,") || f.contains(",ip "))
            .collect()
    };
    assert_eq!(ipv4_only(&v4), ipv4_only(&dual));
    let families: BTreeMap<u32, BTreeSet<String>> = [3u32, 4, 6, 7]
        .into_iter()
        .map(|port| {
            let of_port: BTreeSet<String> = dual
                .iter()
                .filter(|f| f.matches.to_string().ends_with(&format!("in_port={port}")))
                .map(|f| {
                    let m = f.matches.to_string();
                    m.split(',')
                        .find(|x| *x == "ip" || *x == "ipv6")
                        .unwrap()
                        .to_string()
                })
                .collect();
            (port, of_port)
        })
        .collect();
    let one = |family: &str| BTreeSet::from([family.to_string()]);
    assert_eq!(
        families,
        BTreeMap::from([
            (3, one("ip")),
            (4, one("ip")),
            (6, one("ipv6")),
            (7, one("ipv6"))
        ])
    );
}

#[test]
fn ipv6_cluster_destinations_and_except_cidrs_bypass_egress_to_the_gateway() {
    let flows = rendered(&egress_flows(
        &dual_stack_plan(),
        &dual_stack_context(MarkCarrier::PktMark),
    ));
    for dst in [
        "fd00:30::11",
        "fd00:30::12",
        "fd00:10:244:1::/64",
        "fd00:10:244:2::/64",
        "fd00:10:96::/112",
        "2001:db8::/32",
    ] {
        let want = format!(
            "table=EgressMark, priority=210,ipv6,ipv6_dst={dst} actions=\
             set_field:0x20/0xf0->reg0,goto_table:L2ForwardingCalc"
        );
        assert!(flows.iter().any(|f| f.ends_with(&want)), "missing {want}");
    }
    let bypasses = flows.iter().filter(|f| f.contains("priority=210,")).count();
    assert_eq!(bypasses, 12, "6 IPv4 and 6 IPv6 bypasses: {flows:#?}");
}

#[test]
fn an_ipv6_only_node_gets_no_ipv4_bypass_for_its_missing_ipv4_transport_ip() {
    let mut ctx = dual_stack_context(MarkCarrier::PktMark);
    ctx.local_transport_ip = Ipv4Addr::UNSPECIFIED;
    let flows = rendered(&egress_flows(&dual_stack_plan(), &ctx));
    assert!(
        !flows.iter().any(|f| f.contains("nw_dst=0.0.0.0")),
        "{flows:#?}"
    );
    assert!(flows.iter().any(|f| f.contains(",nw_dst=172.30.0.12 ")));
}

#[test]
fn ipv6_bypass_takes_only_the_ipv6_entries_of_mixed_cluster_inputs() {
    let node = |name: &str, ip: &str, cidr: &str| Node {
        name: name.to_string(),
        transport_ip: Some(ip.parse().unwrap()),
        pod_cidr: cidr.parse().ok(),
        ..Node::default()
    };
    let nodes = [
        node("a", "172.30.0.11", "10.244.1.0/24"),
        node("b", "fd00:30::12", "fd00:10:244:2::/64"),
        node("c", "fd00:30::13", "no Pod CIDR"),
    ];
    let cidrs =
        |list: &[&str]| -> Vec<IpNetwork> { list.iter().map(|c| c.parse().unwrap()).collect() };
    let bypass = Ipv6Bypass::from_cluster(
        &nodes,
        &cidrs(&["10.96.0.0/12", "fd00:10:96::/112"]),
        &cidrs(&["192.0.2.0/24", "2001:db8::/32"]),
    );
    assert_eq!(
        bypass,
        Ipv6Bypass {
            transport_ips: vec![
                "fd00:30::12".parse().unwrap(),
                "fd00:30::13".parse().unwrap()
            ],
            pod_cidrs: vec!["fd00:10:244:2::/64".parse().unwrap()],
            service_cidrs: vec!["fd00:10:96::/112".parse().unwrap()],
            except_cidrs: vec!["2001:db8::/32".parse().unwrap()],
        }
    );
}

#[test]
fn a_pod_whose_egress_drops_without_a_holder_gets_a_drop_flow_per_family() {
    let mut plan = plan();
    let binding = plan
        .pods
        .values_mut()
        .find(|b| b.egress_ip.is_none())
        .unwrap();
    binding.drop_external = true;
    let flows = rendered(&egress_flows(&plan, &context(MarkCarrier::PktMark)));
    let port5: Vec<&String> = flows.iter().filter(|f| f.contains("in_port=5")).collect();
    assert_eq!(port5.len(), 2, "{flows:#?}");
    for family in ["ip", "ipv6"] {
        let want = format!("table=EgressMark, priority=200,{family},in_port=5 actions=drop");
        assert!(
            port5.iter().any(|f| f.ends_with(&want)),
            "{want}: {port5:#?}"
        );
    }
}

#[test]
fn a_pod_without_an_egress_ip_gets_no_flow_and_keeps_the_default_masquerade() {
    let flows = rendered(&egress_flows(&plan(), &context(MarkCarrier::PktMark)));
    assert!(!flows.iter().any(|f| f.contains("in_port=5")), "{flows:#?}");
}

/// A one-Node cluster: Pod `p<i>` (label `n: "<i>"`) selected by Egress `e<i>` with IP
/// `ips[i]`; every valid IP is configured on the Node.
fn cluster_plan(ips: &[String]) -> NodePlan {
    let mut docs = vec![
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDR: 10.244.0.0/16}\n\
         status: {addresses: [{type: InternalIP, address: 172.30.0.11}]}\n"
            .to_string(),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n".to_string(),
    ];
    for (i, egress_ip) in ips.iter().enumerate() {
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: default, labels: {{n: '{i}'}}}}\n\
             spec: {{nodeName: n1}}\nstatus: {{phase: Running, podIPs: [{{ip: 10.244.{}.{}}}]}}\n\
             ---\napiVersion: crd.antrea.io/v1beta1\nkind: Egress\n\
             metadata: {{name: e{i}, creationTimestamp: '2024-01-01T00:{:02}:{:02}Z'}}\n\
             spec: {{appliedTo: {{podSelector: {{matchLabels: {{n: '{i}'}}}}}}, egressIP: '{egress_ip}'}}\n",
            i / 250,
            i % 250 + 1,
            i / 60,
            i % 60
        ));
    }
    let mut view = crate::render::parse_cluster(&docs.join("---\n"))
        .unwrap()
        .view;
    view.local_ips = ips.iter().filter_map(|t| t.parse().ok()).collect();
    crate::plan::compute(&view, "n1", None)
}

fn pod_context(plan: &NodePlan) -> EgressContext {
    let mut ctx = context(MarkCarrier::PktMark);
    ctx.pod_ofports = plan.pods.keys().cloned().zip(100..).collect();
    ctx
}

#[test]
fn an_invalid_egress_ip_gives_its_pod_no_flow_and_leaves_the_other_egresses_alone() {
    let plan = cluster_plan(&["172.30.0.300".to_string(), "172.30.0.100".to_string()]);
    let message = &plan.statuses["e0"].ip_assigned.as_ref().unwrap().message;
    assert!(message.contains("is not a valid IP address"), "{message}");
    let flows = egress_flows(&plan, &pod_context(&plan));
    let rendered = rendered(&flows);
    let ofport = |pod: &str| plan.pods.keys().position(|k| k == pod).unwrap() + 100;
    assert!(
        !rendered
            .iter()
            .any(|f| f.contains(&format!("in_port={},", ofport("default/p0"))))
    );
    assert!(rendered.iter().any(|f| {
        f.contains(&format!("in_port={} ", ofport("default/p1"))) && f.contains("pkt_mark")
    }));
    assert!(flows.unprogrammed.is_empty(), "{:?}", flows.unprogrammed);
}

#[test]
fn the_256th_local_egress_ip_gets_no_mark_its_pod_keeps_the_default_and_255_others_work() {
    let ips: Vec<String> = (0..256u32)
        .map(|i| format!("172.31.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let plan = cluster_plan(&ips);
    let last = &plan.statuses["e255"].ip_assigned.as_ref().unwrap().message;
    assert!(last.contains("no SNAT mark available"), "{last}");
    let flows = egress_flows(&plan, &pod_context(&plan));
    let rendered = rendered(&flows);
    let marked = rendered.iter().filter(|f| f.contains("tun_dst=")).count();
    assert_eq!(marked, 255);
    assert!(!rendered.iter().any(|f| f.contains("tun_dst=172.31.1.6 ")));
    let pod_flows = rendered.iter().filter(|f| f.contains("in_port=")).count();
    assert_eq!(pod_flows, 255, "the Pod of the 256th IP must get no flow");
}
