//! What the switch and the host should hold, as pure functions of the runtime's configuration,
//! the Pod ports seen in OVSDB and the caller's inputs. No I/O: the runtime applies the result.

use std::collections::BTreeSet;

use super::{DatapathConfig, DatapathInputs, PodPort, RemoteNodeSpec};
use ovs_egress_core::pipeline::{
    Flow, Gateway, PodNetwork, RemoteNode, first_host, pod_network_flows,
};
use ovs_egress_host::routes::NodeRoute;
use ovs_egress_ovsdb::bridge::{GATEWAY_OFPORT, TUNNEL_OFPORT};

/// The remote Nodes that are really remote (not this Node's IP or Pod CIDR).
fn remote_nodes<'a>(
    cfg: &DatapathConfig,
    inputs: &'a DatapathInputs,
) -> impl Iterator<Item = &'a RemoteNodeSpec> {
    let (ip, cidr) = (cfg.node_ip, cfg.pod_cidr);
    inputs
        .remote_nodes
        .iter()
        .filter(move |n| n.transport_ip != ip && n.pod_cidr != cidr)
}

/// The full flow set (Pod networking, then the caller's extra flows) and the Pods it serves.
/// Ports outside the Pod CIDR, or sharing an IP or MAC with an earlier port (two flows with
/// one key would make every bundle fail), are skipped with a warning.
pub fn desired_flows(
    cfg: &DatapathConfig,
    ports: Vec<PodPort>,
    inputs: &DatapathInputs,
) -> (Vec<Flow>, Vec<PodPort>) {
    let cidr = cfg.pod_cidr;
    let mut pods: Vec<PodPort> = Vec::with_capacity(ports.len());
    for p in ports {
        let clash = pods.iter().find(|q| q.ip == p.ip || q.mac == p.mac);
        if let Some(q) = clash {
            tracing::warn!(port = %p.name, pod = %p.pod, "skipping Pod port: its IP or MAC is also on port {}", q.name);
        } else if !cidr.contains(p.ip) {
            tracing::warn!(port = %p.name, pod = %p.pod, "skipping Pod port: IP {} is outside the Pod CIDR {cidr}", p.ip);
        } else {
            pods.push(p);
        }
    }
    let net = PodNetwork {
        gateway: Gateway {
            // Fixed small constants (1 and 2); the conversion cannot truncate.
            ofport: GATEWAY_OFPORT as u32,
            mac: cfg.gateway_mac,
            ip: first_host(cidr),
        },
        tunnel_ofport: TUNNEL_OFPORT as u32,
        pod_cidr: cidr,
        pods: pods.iter().map(PodPort::local_pod).collect(),
        remote_nodes: remote_nodes(cfg, inputs)
            .map(|n| RemoteNode {
                pod_cidr: n.pod_cidr,
                transport_ip: n.transport_ip,
            })
            .collect(),
    };
    let mut flows = pod_network_flows(&net);
    flows.extend(inputs.extra_flows.iter().cloned());
    (flows, pods)
}

/// Routes to every remote Pod CIDR via that Node's gateway IP (on-link on our gateway).
pub fn node_routes(cfg: &DatapathConfig, inputs: &DatapathInputs) -> BTreeSet<NodeRoute> {
    remote_nodes(cfg, inputs)
        .map(|n| NodeRoute {
            dst: n.pod_cidr.network(),
            prefix: n.pod_cidr.prefix(),
            via: first_host(n.pod_cidr),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::path::Path;

    use super::*;
    use ovs_egress_core::pipeline::{Action, Cookie, Ipv4Network, Mac, Match, Table};
    use ovs_egress_ovsdb::bridge::DatapathType;

    fn cidr(s: &str) -> Ipv4Network {
        let (ip, len) = s.split_once('/').unwrap();
        Ipv4Network::new(ip.parse().unwrap(), len.parse().unwrap()).unwrap()
    }

    fn cfg() -> DatapathConfig {
        DatapathConfig::new(
            Path::new("/run/ovs"),
            "br-int",
            DatapathType::Netdev,
            Mac([0x0e, 0, 0, 0, 0, 1]),
            cidr("10.244.1.0/24"),
            Ipv4Addr::new(172, 30, 0, 11),
        )
    }

    fn port(name: &str, ofport: u32, ip: [u8; 4], mac_last: u8) -> PodPort {
        PodPort {
            name: name.into(),
            pod: format!("default/{name}"),
            ofport,
            mac: Mac([2, 0, 0, 0, 0, mac_last]),
            ip: Ipv4Addr::from(ip),
            acked: false,
        }
    }

    fn remote(name: &str, pod_cidr: &str, ip: [u8; 4]) -> RemoteNodeSpec {
        RemoteNodeSpec {
            name: name.into(),
            pod_cidr: cidr(pod_cidr),
            transport_ip: Ipv4Addr::from(ip),
        }
    }

    #[test]
    fn this_node_in_the_remote_list_gets_no_route_and_no_tunnel_flow() {
        let inputs = DatapathInputs {
            remote_nodes: vec![
                remote("self-by-ip", "10.244.9.0/24", [172, 30, 0, 11]),
                remote("self-by-cidr", "10.244.1.0/24", [172, 30, 0, 99]),
                remote("node2", "10.244.2.0/24", [172, 30, 0, 12]),
            ],
            extra_flows: vec![],
        };
        let routes: Vec<_> = node_routes(&cfg(), &inputs).into_iter().collect();
        assert_eq!(
            routes,
            [NodeRoute {
                dst: Ipv4Addr::new(10, 244, 2, 0),
                prefix: 24,
                via: Ipv4Addr::new(10, 244, 2, 1),
            }]
        );
        let (flows, _) = desired_flows(&cfg(), vec![], &inputs);
        let text: String = flows.iter().map(|f| format!("{f:?}\n")).collect();
        assert!(
            text.contains("172.30.0.12") && !text.contains("172.30.0.99"),
            "{text}"
        );
        assert!(!text.contains("10.244.9.0"), "{text}");
    }

    #[test]
    fn clashing_or_foreign_ports_are_skipped_and_extra_flows_appended() {
        let extra = Flow::new(
            Table::EgressMark,
            200,
            Match::new().ip(),
            vec![Action::GotoTable(Table::L2ForwardingCalc)],
            Cookie::DEFAULT,
        );
        let inputs = DatapathInputs {
            remote_nodes: vec![],
            extra_flows: vec![extra.clone()],
        };
        let ports = vec![
            port("a", 3, [10, 244, 1, 2], 2),
            port("same-ip", 4, [10, 244, 1, 2], 4),
            port("same-mac", 5, [10, 244, 1, 5], 2),
            port("outside", 6, [10, 9, 9, 9], 6),
            port("b", 7, [10, 244, 1, 7], 7),
        ];
        let (flows, pods) = desired_flows(&cfg(), ports, &inputs);
        let names: Vec<_> = pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(flows.last(), Some(&extra));
    }
}
