//! Pod networking in encap mode as a pure function: given the Node's ports, its Pods and the
//! other Nodes, the complete set of flows that carries Pod ↔ Pod (same Node and across Nodes
//! through Geneve), Pod ↔ gateway and Pod → outside (via the gateway) traffic, with spoof
//! guards. It follows Antrea's flows, but never uses the NORMAL action: ARP is answered or
//! forwarded by explicit flows, which behaves the same on the kernel and userspace datapaths.
//!
//! Egress adds its own flows on top (L3Forwarding priority 190, EgressMark priorities 190–210);
//! this module leaves EgressMark with its table-miss default (everything to the gateway).
//!
//! IPv4 only: PipelineRootClassifier passes `arp` and `ip` and drops every other packet, IPv6
//! included, so the IPv6 Egress flows of `pipeline::egress` see no traffic until this module
//! carries IPv6 (spoof guard by the Pods' IPv6 addresses, conntrack, neighbour discovery).

use std::net::Ipv4Addr;

use super::flow::{Action, Category, Cookie, Ct, CtFlag, CtState, Flow, Match, MoveField};
use super::net::{GLOBAL_VIRTUAL_MAC, Ipv4Network, Mac, first_host};
use super::regs;
use super::table::{Table, miss_flows};

/// The Node's gateway port (`antrea-gw0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    pub ofport: u32,
    pub mac: Mac,
    pub ip: Ipv4Addr,
}

/// A Pod attached to this Node's `br-int`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPod {
    pub ofport: u32,
    pub mac: Mac,
    pub ip: Ipv4Addr,
}

/// Another Node of the cluster, reached through the tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteNode {
    pub pod_cidr: Ipv4Network,
    pub transport_ip: Ipv4Addr,
}

/// Everything Pod networking flows depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNetwork {
    pub gateway: Gateway,
    pub tunnel_ofport: u32,
    pub pod_cidr: Ipv4Network,
    pub pods: Vec<LocalPod>,
    pub remote_nodes: Vec<RemoteNode>,
}

const POD: Cookie = Cookie::new(Category::PodConnectivity, 0);

/// ARP opcode of a request and a reply.
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

fn pod_cookie(pod: &LocalPod) -> Cookie {
    Cookie::new(Category::PodConnectivity, pod.ofport)
}

fn goto(table: Table) -> Action {
    Action::GotoTable(table)
}

/// The full flow set of the pipeline for Pod networking: table-miss flows plus the flows for the
/// gateway, the tunnel, every local Pod and every remote Node. Deterministic for a given input.
pub fn pod_network_flows(net: &PodNetwork) -> Vec<Flow> {
    let mut flows = miss_flows();
    flows.extend(skeleton_flows(net));
    for pod in &net.pods {
        flows.extend(local_pod_flows(net, pod));
    }
    for node in &net.remote_nodes {
        flows.extend(remote_node_flows(net, node));
    }
    flows
}

/// Flows that exist once per Node: classification, conntrack, the gateway and the tunnel.
fn skeleton_flows(net: &PodNetwork) -> Vec<Flow> {
    use Table::*;
    let gw = &net.gateway;
    let tracked = Match::new().ip();
    vec![
        Flow::new(
            PipelineRootClassifier,
            200,
            Match::new().arp(),
            vec![goto(ArpSpoofGuard)],
            POD,
        ),
        Flow::new(
            PipelineRootClassifier,
            200,
            Match::new().ip(),
            vec![goto(Classifier)],
            POD,
        ),
        Flow::new(
            ArpSpoofGuard,
            200,
            Match::new().arp().in_port(gw.ofport),
            vec![goto(ArpResponder)],
            POD,
        ),
        Flow::new(
            ArpResponder,
            190,
            Match::new().arp().arp_tpa(gw.ip),
            vec![Action::Output(gw.ofport)],
            POD,
        ),
        Flow::new(
            Classifier,
            200,
            Match::new().in_port(net.tunnel_ofport),
            vec![
                Action::SetReg(regs::FROM_TUNNEL),
                Action::SetReg(regs::REWRITE_MAC),
                goto(ConntrackZone),
            ],
            POD,
        ),
        Flow::new(
            Classifier,
            200,
            Match::new().in_port(gw.ofport),
            vec![Action::SetReg(regs::FROM_GATEWAY), goto(SpoofGuard)],
            POD,
        ),
        Flow::new(
            SpoofGuard,
            200,
            Match::new().ip().in_port(gw.ofport),
            vec![goto(ConntrackZone)],
            POD,
        ),
        Flow::new(
            ConntrackZone,
            200,
            tracked.clone(),
            vec![Action::Ct(Ct {
                commit: false,
                table: Some(ConntrackState),
                zone: regs::CT_ZONE,
                nat: true,
                exec: vec![],
            })],
            POD,
        ),
        Flow::new(
            ConntrackState,
            190,
            Match::new()
                .ip()
                .ct_state(CtState::default().set(CtFlag::Inv).set(CtFlag::Trk)),
            vec![Action::Drop],
            POD,
        ),
        // Remote Pods (through the tunnel) and local Pods may talk to the gateway IP.
        Flow::new(
            L3Forwarding,
            210,
            Match::new().ip().nw_dst(Ipv4Network::from(gw.ip)),
            vec![
                Action::SetEthDst(gw.mac),
                Action::SetReg(regs::TO_GATEWAY),
                goto(L2ForwardingCalc),
            ],
            POD,
        ),
        // Within the local Pod CIDR, packets that already carry real MACs are switched. Priority
        // 200 like Antrea: Egress's priority-190 flows must never see local Pod traffic.
        Flow::new(
            L3Forwarding,
            200,
            Match::new()
                .ip()
                .reg(regs::NOT_REWRITE_MAC)
                .nw_dst(net.pod_cidr),
            vec![goto(L2ForwardingCalc)],
            POD,
        ),
        // The host already decremented the TTL of what it routed into the gateway.
        Flow::new(
            L3DecTtl,
            210,
            Match::new().ip().reg(regs::FROM_GATEWAY),
            vec![goto(L2ForwardingCalc)],
            POD,
        ),
        Flow::new(
            L3DecTtl,
            200,
            Match::new().ip(),
            vec![Action::DecTtl, goto(L2ForwardingCalc)],
            POD,
        ),
        l2_flow(gw.mac, gw.ofport, POD),
        l2_flow(GLOBAL_VIRTUAL_MAC, net.tunnel_ofport, POD),
        Flow::new(
            ConntrackCommit,
            200,
            Match::new()
                .ip()
                .ct_state(CtState::default().set(CtFlag::New).set(CtFlag::Trk)),
            vec![Action::Ct(Ct {
                commit: true,
                table: Some(Output),
                zone: regs::CT_ZONE,
                nat: false,
                exec: vec![Action::Move {
                    src: MoveField::Reg {
                        reg: 0,
                        lo: 0,
                        hi: 3,
                    },
                    dst: MoveField::CtMark { lo: 0, hi: 3 },
                }],
            })],
            POD,
        ),
        Flow::new(
            Output,
            200,
            Match::new().reg(regs::OUTPUT_TO_OFPORT),
            vec![Action::OutputReg(regs::TARGET_OFPORT_REG)],
            POD,
        ),
    ]
}

/// L2ForwardingCalc: frames for `mac` leave through `ofport`.
fn l2_flow(mac: Mac, ofport: u32, cookie: Cookie) -> Flow {
    Flow::new(
        Table::L2ForwardingCalc,
        200,
        Match::new().eth_dst(mac),
        vec![
            Action::SetReg(regs::target_ofport(ofport)),
            Action::SetReg(regs::OUTPUT_TO_OFPORT),
            goto(Table::ConntrackCommit),
        ],
        cookie,
    )
}

/// Flows of one local Pod: spoof guards, ARP delivery, routing and switching to it.
fn local_pod_flows(net: &PodNetwork, pod: &LocalPod) -> Vec<Flow> {
    use Table::*;
    let cookie = pod_cookie(pod);
    vec![
        Flow::new(
            ArpSpoofGuard,
            200,
            Match::new()
                .arp()
                .in_port(pod.ofport)
                .arp_spa(pod.ip)
                .arp_sha(pod.mac),
            vec![goto(ArpResponder)],
            cookie,
        ),
        Flow::new(
            ArpResponder,
            190,
            Match::new().arp().arp_tpa(pod.ip),
            vec![Action::Output(pod.ofport)],
            cookie,
        ),
        Flow::new(
            Classifier,
            190,
            Match::new().in_port(pod.ofport),
            vec![Action::SetReg(regs::FROM_POD), goto(SpoofGuard)],
            cookie,
        ),
        Flow::new(
            SpoofGuard,
            200,
            Match::new()
                .ip()
                .in_port(pod.ofport)
                .eth_src(pod.mac)
                .nw_src(Ipv4Network::from(pod.ip)),
            vec![goto(ConntrackZone)],
            cookie,
        ),
        // Packets that arrived with the virtual MAC (from the tunnel) get real MACs and are routed.
        Flow::new(
            L3Forwarding,
            200,
            Match::new()
                .ip()
                .reg(regs::REWRITE_MAC)
                .nw_dst(Ipv4Network::from(pod.ip)),
            vec![
                Action::SetEthSrc(net.gateway.mac),
                Action::SetEthDst(pod.mac),
                goto(L3DecTtl),
            ],
            cookie,
        ),
        l2_flow(pod.mac, pod.ofport, cookie),
    ]
}

/// Flows of one remote Node: answer ARP for its gateway, route its Pod CIDR into the tunnel.
fn remote_node_flows(net: &PodNetwork, node: &RemoteNode) -> Vec<Flow> {
    use Table::*;
    let remote_gw = first_host(node.pod_cidr);
    vec![
        Flow::new(
            ArpResponder,
            200,
            Match::new().arp().arp_tpa(remote_gw).arp_op(ARP_REQUEST),
            vec![
                Action::Move {
                    src: MoveField::EthSrc,
                    dst: MoveField::EthDst,
                },
                Action::SetEthSrc(GLOBAL_VIRTUAL_MAC),
                Action::SetArpOp(ARP_REPLY),
                Action::Move {
                    src: MoveField::ArpSha,
                    dst: MoveField::ArpTha,
                },
                Action::SetArpSha(GLOBAL_VIRTUAL_MAC),
                Action::Move {
                    src: MoveField::ArpSpa,
                    dst: MoveField::ArpTpa,
                },
                Action::SetArpSpa(remote_gw),
                Action::InPort,
            ],
            POD,
        ),
        Flow::new(
            L3Forwarding,
            200,
            Match::new().ip().nw_dst(node.pod_cidr),
            vec![
                Action::SetEthSrc(net.gateway.mac),
                Action::SetEthDst(GLOBAL_VIRTUAL_MAC),
                Action::SetTunDst(node.transport_ip),
                Action::SetReg(regs::TO_TUNNEL),
                goto(L3DecTtl),
            ],
            POD,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn node(i: u8, pods: &[u8], others: &[u8]) -> PodNetwork {
        let pod_cidr: Ipv4Network = format!("10.244.{i}.0/24").parse().unwrap();
        PodNetwork {
            gateway: Gateway {
                ofport: 32769,
                mac: format!("02:44:0{i}:00:00:01").parse().unwrap(),
                ip: first_host(pod_cidr),
            },
            tunnel_ofport: 32768,
            pod_cidr,
            pods: pods
                .iter()
                .enumerate()
                .map(|(n, host)| LocalPod {
                    ofport: 3 + n as u32,
                    mac: format!("02:44:0{i}:00:00:{host:02x}").parse().unwrap(),
                    ip: Ipv4Addr::new(10, 244, i, *host),
                })
                .collect(),
            remote_nodes: others
                .iter()
                .map(|j| RemoteNode {
                    pod_cidr: format!("10.244.{j}.0/24").parse().unwrap(),
                    transport_ip: Ipv4Addr::new(172, 30, 0, 10 + j),
                })
                .collect(),
        }
    }

    #[test]
    fn two_node_flows_match_the_golden_files() {
        for (i, pods, others) in [(1u8, &[10u8, 11][..], &[2u8][..]), (2, &[10], &[1])] {
            let flows = pod_network_flows(&node(i, pods, others));
            let text = crate::pipeline::render_sorted(&flows, 1, crate::pipeline::Style::Names);
            crate::pipeline::check_golden(&format!("ovs-flows/pod-network-node{i}.txt"), &text);
        }
    }

    #[test]
    fn flow_keys_are_unique_so_no_flow_silently_replaces_another() {
        let flows = pod_network_flows(&node(1, &[10, 11, 12], &[2, 3]));
        let keys: BTreeSet<_> = flows.iter().map(Flow::key).collect();
        assert_eq!(keys.len(), flows.len());
    }

    #[test]
    fn priorities_reserved_for_egress_stay_free() {
        // Egress adds L3Forwarding priority 190 and EgressMark 190..=210, as Antrea's; a Pod
        // networking flow there would overlap them with undefined precedence.
        for flow in pod_network_flows(&node(1, &[10, 11], &[2])) {
            let reserved = match flow.table {
                Table::L3Forwarding => flow.priority == 190,
                Table::EgressMark => flow.priority > 0,
                _ => false,
            };
            assert!(
                !reserved,
                "{}",
                flow.render(1, crate::pipeline::Style::Names)
            );
        }
    }

    #[test]
    fn every_goto_table_jumps_forward() {
        for flow in pod_network_flows(&node(1, &[10, 11], &[2])) {
            for action in &flow.actions {
                if let Action::GotoTable(to) = action {
                    assert!(*to > flow.table, "{:?}", flow);
                }
            }
        }
    }

    #[test]
    fn remote_pod_cidr_goes_to_the_tunnel_with_that_nodes_transport_ip() {
        let flows = pod_network_flows(&node(1, &[10], &[2, 3]));
        let rendered: Vec<String> = flows
            .iter()
            .map(|f| f.render(1, crate::pipeline::Style::Numeric))
            .collect();
        for j in [2, 3] {
            let want = format!(
                "table=7,priority=200,ip,nw_dst=10.244.{j}.0/24 actions=set_field:02:44:01:00:00:01->eth_src,\
                 set_field:aa:bb:cc:dd:ee:ff->eth_dst,set_field:172.30.0.{}->tun_dst,set_field:0x10/0xf0->reg0,goto_table:9",
                10 + j
            );
            assert!(
                rendered.iter().any(|r| r.ends_with(&want)),
                "missing {want}"
            );
        }
    }

    #[test]
    fn a_pod_may_send_only_with_its_own_mac_and_ip() {
        let net = node(1, &[10], &[]);
        let guards: Vec<Flow> = pod_network_flows(&net)
            .into_iter()
            .filter(|f| {
                matches!(f.table, Table::SpoofGuard | Table::ArpSpoofGuard) && f.priority > 0
            })
            .filter(|f| {
                f.matches
                    .to_string()
                    .split(',')
                    .any(|field| field == "in_port=3")
            })
            .collect();
        let rendered: Vec<String> = guards.iter().map(|f| f.matches.to_string()).collect();
        assert_eq!(
            rendered,
            vec![
                "arp,in_port=3,arp_spa=10.244.1.10,arp_sha=02:44:01:00:00:0a".to_string(),
                "ip,in_port=3,dl_src=02:44:01:00:00:0a,nw_src=10.244.1.10".to_string(),
            ]
        );
    }
}
