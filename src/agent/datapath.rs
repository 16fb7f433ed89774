//! The agent's real [`Datapath`]: it starts the Node datapath runtime (`NodeDatapath`: bridge,
//! Pod networking, Node routes, the Node's one OVSDB connection) once this Node's Pod CIDR and
//! transport IP are known, keeps the remote Nodes current from the agent's view, and applies
//! every plan through [`EgressApplier`] (`datapath::egress`: SNAT rules, Egress flows as a new
//! input generation of the runtime, waiting for the runtime to report that generation
//! installed, then tunnel neighbours, egress IPs and the final rules); it repairs the SNAT rules
//! every [`VERIFY_INTERVAL`]. It answers with the statuses it realized; when it could not apply
//! a plan at all (Node not known yet, OVS away, iptables refused, bundle rejected) it drops the
//! answer so the agent retries, never claiming an IP it did not program. Pod ofports come from
//! the runtime's view of the Interface table.
//! An agent restart keeps the Egress datapath: the runtime starts held, and its first install
//! (which retires the previous process's flows) already carries the first plan's Egress flows,
//! Pods' included, with their SNAT rules in place before it.
//!
//! With every change of Egress flows it tells the runtime which Pod ports are settled
//! (`acks::settled_ports`: their Pod is among those the applied plan decided, published by the
//! agent loop after applying it), so the runtime acknowledges a new Pod's port to the CNI plugin
//! only in the bundle that carries the Pod's Egress flow, or once it is known to need none.
//!
//! On the userspace datapath the applier also keeps OVS's tunnel neighbour cache right for
//! egress IPs that move between Nodes (`ovs::tnl_neigh`); it learns the other Nodes' transport
//! IPs from here. It publishes whether the datapath is ready (runtime started and reporting
//! ready: OVS up, flows installed), which the agent's `/readyz` follows, and what it
//! programmed for the last plan ([`Programmed`]: the Egress flow inputs with the real Pod
//! ofports and gateway MAC, and the SNAT configuration), which the agent's `/plan` renders.
//!
//! It decides nothing about Egress (the plan does) and touches OVS only through the runtime.
//!
//! [`status_only`] is the `--no-datapath` mode: nothing is programmed, and every IP the plan
//! would assign is reported `IPAssigned=False` ("datapath disabled").

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::acks::settled_ports;
use super::config::{AgentConfig, DatapathType as ConfigDatapathType};
use super::{Datapath, PlanRequest};
use crate::datapath::egress::{DeviceChoice, EgressApplier, EgressHost, INSTALL_TIMEOUT};
use crate::datapath::{
    DatapathConfig, DatapathStatus, NodeDatapath, PodPort, PortAcks, RemoteNodeSpec,
};
use crate::ovs::tnl_neigh::TunnelNeighbours;
use ovs_egress_core::model::Node;
use ovs_egress_core::pipeline::egress::{
    EgressContext, EgressOptions, MarkCarrier, egress_context,
};
use ovs_egress_core::pipeline::{IpNetwork, Ipv4Network, Mac};
use ovs_egress_core::plan::{Condition, ConditionStatus, EgressStatus, NodePlan};
use ovs_egress_host::iptables::SnatConfig;
use ovs_egress_ovsdb::bridge::DatapathType;

/// How often the SNAT rules are read back and repaired (the runtime does the same for flows).
const VERIFY_INTERVAL: Duration = Duration::from_secs(10);

/// The message of `IPAssigned=False` in status-only mode.
pub const DATAPATH_DISABLED: &str = "datapath disabled (--no-datapath): nothing is programmed";

/// Why the datapath of this Node cannot start yet.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("Node {node} is not in the cluster view yet")]
    UnknownNode { node: String },
    #[error("Node {node}: spec.podCIDR is not set")]
    NoPodCidr { node: String },
    #[error("Node {node}: spec.podCIDR {cidr} is not IPv4 (the Pod network is IPv4)")]
    NotIpv4PodCidr { node: String, cidr: IpNetwork },
    #[error("Node {node}: no IPv4 InternalIP in status.addresses (found {found:?})")]
    NoTransportIp { node: String, found: Option<IpAddr> },
    #[error("OVSDB {socket}: no Interface snapshot within {timeout:?} ({state})")]
    NoSnapshot {
        socket: String,
        timeout: Duration,
        state: String,
    },
}

/// What the datapath programmed for the last plan: the Egress flow inputs (real Pod ofports and
/// gateway MAC) and the SNAT configuration, for the agent's `/plan`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Programmed {
    pub ctx: EgressContext,
    pub snat: SnatConfig,
}

/// The real datapath's outputs besides the plan channel.
pub struct Started {
    pub plans: Datapath,
    /// Whether the datapath is ready (runtime started, OVS up, flows installed).
    pub ready: watch::Receiver<bool>,
    /// What it programmed for the last plan (`None` until one is applied).
    pub programmed: watch::Receiver<Option<Arc<Programmed>>>,
}

/// Starts the real datapath of Node `node`; `nodes` is the agent's current list of Nodes,
/// `decided` the local Pods (`namespace/name`) the applied plan has decided.
/// `ovs_rundir` holds OVS's sockets (`/var/run/openvswitch` in production).
pub fn start(
    node: String,
    config: AgentConfig,
    ovs_rundir: PathBuf,
    nodes: watch::Receiver<Vec<Node>>,
    decided: watch::Receiver<BTreeSet<String>>,
) -> Started {
    let (tx, rx) = mpsc::channel::<PlanRequest>(1);
    let (ready_tx, ready_rx) = watch::channel(false);
    let (programmed_tx, programmed) = watch::channel(None);
    let inputs = Inputs {
        nodes,
        decided,
        requests: rx,
    };
    let outputs = Published {
        ready: ready_tx,
        programmed: programmed_tx,
    };
    tokio::spawn(serve(node, config, ovs_rundir, inputs, outputs));
    Started {
        plans: tx,
        ready: ready_rx,
        programmed,
    }
}

/// What the datapath task publishes.
struct Published {
    ready: watch::Sender<bool>,
    programmed: watch::Sender<Option<Arc<Programmed>>>,
}

/// The `--no-datapath` datapath: programs nothing and says so in every status that would
/// otherwise claim the IP is assigned.
pub fn status_only() -> Datapath {
    let (tx, mut rx) = mpsc::channel::<PlanRequest>(1);
    tracing::warn!("datapath disabled (--no-datapath): plans are computed, never programmed");
    tokio::spawn(async move {
        while let Some(request) = rx.recv().await {
            let _ = request.applied.send(disabled_statuses(&request.plan));
        }
    });
    tx
}

/// The plan's statuses with every `IPAssigned=True` turned into the "datapath disabled" error.
pub fn disabled_statuses(plan: &NodePlan) -> BTreeMap<String, EgressStatus> {
    let mut statuses = plan.statuses.clone();
    for status in statuses.values_mut() {
        if let Some(c) = &mut status.ip_assigned
            && c.status == ConditionStatus::True
        {
            *c = Condition::assignment_error(DATAPATH_DISABLED);
        }
    }
    statuses
}

/// This Node as the runtime needs it: Pod CIDR and IPv4 transport IP.
fn local_node(nodes: &[Node], name: &str) -> Result<(Ipv4Network, Ipv4Addr), StartError> {
    let node = || name.to_string();
    let this = nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| StartError::UnknownNode { node: node() })?;
    let cidr = match this.pod_cidr {
        None => return Err(StartError::NoPodCidr { node: node() }),
        Some(IpNetwork::V4(cidr)) => cidr,
        Some(cidr) => return Err(StartError::NotIpv4PodCidr { node: node(), cidr }),
    };
    match this.transport_ip {
        Some(IpAddr::V4(ip)) => Ok((cidr, ip)),
        found => Err(StartError::NoTransportIp {
            node: node(),
            found,
        }),
    }
}

/// The other Nodes with an IPv4 Pod CIDR and transport IP (the others cannot be reached).
fn remote_nodes(nodes: &[Node], name: &str) -> Vec<RemoteNodeSpec> {
    nodes
        .iter()
        .filter(|n| n.name != name)
        .filter_map(|n| {
            let IpNetwork::V4(pod_cidr) = n.pod_cidr? else {
                return None;
            };
            let IpAddr::V4(transport_ip) = n.transport_ip? else {
                return None;
            };
            Some(RemoteNodeSpec {
                name: n.name.clone(),
                pod_cidr,
                transport_ip,
            })
        })
        .collect()
}

/// The other Nodes' transport IPs by name (where tunnelled egress traffic goes).
fn remote_transport_ips(nodes: &[Node], name: &str) -> BTreeMap<String, IpAddr> {
    nodes
        .iter()
        .filter(|n| n.name != name)
        .filter_map(|n| Some((n.name.clone(), n.transport_ip?)))
        .collect()
}

/// The gateway MAC: locally administered, derived from the transport IP so it is stable
/// across restarts and unique in the cluster.
fn gateway_mac(node_ip: Ipv4Addr) -> Mac {
    let [a, b, c, d] = node_ip.octets();
    Mac([0x0e, 0x00, a, b, c, d])
}

fn carrier(config: &AgentConfig) -> MarkCarrier {
    match config.ovs_datapath_type {
        ConfigDatapathType::System => MarkCarrier::PktMark,
        ConfigDatapathType::Netdev => MarkCarrier::SourceMac,
    }
}

/// The agent configuration's part of the Egress flow inputs.
pub fn egress_options(config: &AgentConfig) -> EgressOptions {
    EgressOptions {
        carrier: carrier(config),
        service_cidrs: config.service_cidr.into_iter().collect(),
        except_cidrs: config.egress.except_cidrs.clone(),
    }
}

/// What the datapath task listens to besides its own runtime.
struct Inputs {
    nodes: watch::Receiver<Vec<Node>>,
    decided: watch::Receiver<BTreeSet<String>>,
    requests: mpsc::Receiver<PlanRequest>,
}

/// What the runtime reported.
enum RuntimeChange {
    Ports,
    Status,
    /// Egress IPs whose lease ran out.
    LeaseLost(Vec<IpAddr>),
}

/// The running datapath of this Node.
struct Running {
    node: String,
    runtime: NodeDatapath,
    applier: EgressApplier,
    status: watch::Receiver<DatapathStatus>,
    ports: watch::Receiver<Option<Vec<PodPort>>>,
    gateway_mac: Mac,
    options: EgressOptions,
    nodes: Vec<Node>,
    /// The local Pods the applied plan has decided (their ports may be acknowledged).
    decided: BTreeSet<String>,
    /// The last plan applied, to follow Pod ports and Nodes that change under it.
    plan: Option<Arc<NodePlan>>,
    snat: SnatConfig,
    /// What was programmed for `plan` (for `/plan`).
    programmed: watch::Sender<Option<Arc<Programmed>>>,
    /// Egress IPs whose lease ran out before it was renewed (the agent was frozen): the last
    /// plan is applied again, which adds and advertises them again.
    lost: Option<mpsc::Receiver<Vec<IpAddr>>>,
}

async fn serve(
    node: String,
    config: AgentConfig,
    ovs_rundir: PathBuf,
    mut inputs: Inputs,
    outputs: Published,
) {
    let Published { ready, programmed } = outputs;
    let mut running: Option<Running> = None;
    let mut verify = tokio::time::interval(VERIFY_INTERVAL);
    verify.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = verify.tick() => {
                if let Some(rt) = &mut running
                    && let Err(error) = rt.applier.host_mut().verify().await
                {
                    tracing::warn!(node, %error, "SNAT rules could not be repaired");
                }
            }
            request = inputs.requests.recv() => {
                let Some(request) = request else { return };
                if running.is_none() {
                    let list = inputs.nodes.borrow_and_update().clone();
                    let pods = inputs.decided.borrow_and_update().clone();
                    let published = programmed.clone();
                    match Running::start(&node, &config, &ovs_rundir, list, pods, published).await {
                        Ok(started) => running = Some(started),
                        Err(error) => {
                            tracing::warn!(node, %error, "datapath not started; plan not applied");
                            continue; // dropping `applied`: the agent retries
                        }
                    }
                }
                let Some(rt) = &mut running else { continue };
                if let Some(statuses) = rt.apply(request.plan).await {
                    let _ = request.applied.send(statuses);
                }
            }
            Ok(()) = inputs.nodes.changed() => {
                let list = inputs.nodes.borrow_and_update().clone();
                if let Some(rt) = &mut running {
                    rt.set_nodes(list);
                }
            }
            Ok(()) = inputs.decided.changed() => {
                let pods = inputs.decided.borrow_and_update().clone();
                if let Some(rt) = &mut running {
                    rt.decided = pods;
                    rt.refresh_flows();
                }
            }
            Some(change) = async {
                match &mut running {
                    Some(rt) => tokio::select! {
                        r = rt.ports.changed() => r.ok().map(|()| RuntimeChange::Ports),
                        r = rt.status.changed() => r.ok().map(|()| RuntimeChange::Status),
                        Some(lost) = async {
                            match rt.lost.as_mut() {
                                Some(lost) => lost.recv().await,
                                None => std::future::pending().await,
                            }
                        } => Some(RuntimeChange::LeaseLost(lost)),
                    },
                    None => std::future::pending().await,
                }
            } => {
                match (change, &mut running) {
                    (RuntimeChange::Ports, Some(rt)) => rt.refresh_flows(),
                    (RuntimeChange::LeaseLost(lost), Some(rt)) => {
                        if let Some(plan) = rt.plan.clone() {
                            tracing::warn!(node, ?lost, "egress IP lease lost; applying the plan again");
                            rt.apply(plan).await;
                        }
                    }
                    _ => {}
                }
            }
        }
        let now = running
            .as_mut()
            .is_some_and(|rt| rt.status.borrow_and_update().ready);
        ready.send_if_modified(|r| std::mem::replace(r, now) != now);
    }
}

impl Running {
    /// Starts the runtime held (bridge set up, Pod ports published, no flow programmed) and
    /// waits for its first view of the Pod ports: the first plan's apply then makes the
    /// runtime's first install, which retires the flows of a previous agent process, carry the
    /// Egress flows, Pods' included, or selected Pods would briefly leave with their Node's IP.
    async fn start(
        node: &str,
        config: &AgentConfig,
        ovs_rundir: &Path,
        nodes: Vec<Node>,
        decided: BTreeSet<String>,
        programmed: watch::Sender<Option<Arc<Programmed>>>,
    ) -> Result<Running, StartError> {
        let (pod_cidr, node_ip) = local_node(&nodes, node)?;
        let datapath_type = match config.ovs_datapath_type {
            ConfigDatapathType::System => DatapathType::System,
            ConfigDatapathType::Netdev => DatapathType::Netdev,
        };
        let gateway_mac = gateway_mac(node_ip);
        let mut cfg = DatapathConfig::new(
            ovs_rundir,
            &config.ovs_bridge,
            datapath_type,
            gateway_mac,
            pod_cidr,
            node_ip,
        );
        cfg.bridge.gateway.name = config.host_gateway.clone();
        cfg.bridge.tunnel.csum = config.tunnel_csum;
        cfg.bridge.tunnel.dst_port = (config.tunnel_port != 0).then_some(config.tunnel_port);
        let socket = cfg.ovsdb_socket.display().to_string();
        let runtime = NodeDatapath::start_held(cfg, remote_nodes(&nodes, node));
        let mut ports = runtime.pod_ports();
        let snapshot = tokio::time::timeout(INSTALL_TIMEOUT, ports.wait_for(Option::is_some));
        if !matches!(snapshot.await, Ok(Ok(_))) {
            let state = runtime.status().borrow().error.clone();
            return Err(StartError::NoSnapshot {
                socket,
                timeout: INSTALL_TIMEOUT,
                state: state.unwrap_or_else(|| "no error reported".into()),
            });
        }
        let snat = SnatConfig {
            gateway: config.host_gateway.clone(),
            random_fully: config.egress.snat_fully_random_ports,
            carrier: carrier(config),
            pod_cidrs: vec![IpNetwork::V4(pod_cidr)],
        };
        let device = DeviceChoice {
            configured: config.egress_device.clone(),
            // Only used when the kernel has no dummy driver; an unset one fails by name.
            transport: config.transport_interface.clone().unwrap_or_default(),
        };
        let mut host =
            EgressHost::new(snat.clone(), device).with_lease(config.egress.ip_lease_seconds);
        let lost = match host.start_lease_renewal() {
            Ok(lost) => lost,
            Err(error) => {
                // Without renewals a leased address would vanish: hold IPs forever instead.
                tracing::error!(node, %error, "egress IP leases cannot be renewed; adding IPs without a lease");
                host = host.with_lease(0);
                None
            }
        };
        if datapath_type == DatapathType::Netdev {
            host = host.with_tunnel_neighbours(TunnelNeighbours::new(ovs_rundir));
            host.set_remote_transport_ips(remote_transport_ips(&nodes, node));
        }
        tracing::info!(node, %pod_cidr, %node_ip, bridge = %config.ovs_bridge, "datapath started");
        Ok(Running {
            node: node.to_string(),
            applier: EgressApplier::new(host, runtime.handle()),
            status: runtime.status(),
            ports,
            runtime,
            gateway_mac,
            options: egress_options(config),
            nodes,
            decided,
            plan: None,
            snat,
            programmed,
            lost,
        })
    }

    /// The Egress flow inputs for the Pod ports now attached, and which of those ports the
    /// flows settle: both from one read of the runtime's ports.
    fn context_and_acks(&self) -> (EgressContext, PortAcks) {
        let ports = self.ports.borrow().clone().unwrap_or_default();
        let ofports = ports.iter().map(|p| (p.pod.clone(), p.ofport)).collect();
        let ctx = egress_context(
            &self.nodes,
            &self.node,
            ofports,
            self.gateway_mac,
            &self.options,
        );
        (ctx, settled_ports(&ports, &self.decided))
    }

    fn set_nodes(&mut self, nodes: Vec<Node>) {
        if nodes == self.nodes {
            return;
        }
        self.nodes = nodes;
        self.runtime
            .set_remote_nodes(remote_nodes(&self.nodes, &self.node));
        self.applier
            .host_mut()
            .set_remote_transport_ips(remote_transport_ips(&self.nodes, &self.node));
        self.refresh_flows();
    }

    /// Recomputes the last plan's flows after a Pod port, Node or decided-Pods change (the SNAT
    /// rules and IPs depend on the plan only, so they stay).
    fn refresh_flows(&mut self) {
        if let Some(plan) = self.plan.clone() {
            let (ctx, acks) = self.context_and_acks();
            self.applier.refresh_flows(&plan, &ctx, acks);
            self.publish(ctx);
        }
    }

    /// Tells `/plan` what the flows of the current plan were built from.
    fn publish(&self, ctx: EgressContext) {
        let snat = self.snat.clone();
        self.programmed
            .send_replace(Some(Arc::new(Programmed { ctx, snat })));
    }

    /// Applies `plan`; `None` when it could not (logged), so the agent retries.
    async fn apply(&mut self, plan: Arc<NodePlan>) -> Option<BTreeMap<String, EgressStatus>> {
        let (ctx, acks) = self.context_and_acks();
        self.plan = Some(plan.clone());
        match self.applier.apply(&plan, &ctx, acks).await {
            Ok(report) => {
                self.publish(ctx);
                Some(report.statuses(&plan))
            }
            Err(error) => {
                tracing::warn!(node = self.node, %error, "plan not applied");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        Node {
            name: name.into(),
            pod_cidr: cidr.map(|c| c.parse().unwrap()),
            transport_ip: ip.map(|i| i.parse().unwrap()),
            ..Node::default()
        }
    }

    #[test]
    fn local_node_needs_an_ipv4_pod_cidr_and_transport_ip_and_names_what_is_missing() {
        let nodes = vec![
            node("a", Some("10.244.1.0/24"), Some("10.10.0.1")),
            node("b", None, Some("10.10.0.2")),
            node("c", Some("10.244.3.0/24"), Some("fd00::3")),
        ];
        let (cidr, ip) = local_node(&nodes, "a").unwrap();
        assert_eq!(cidr.to_string(), "10.244.1.0/24");
        assert_eq!(ip, Ipv4Addr::new(10, 10, 0, 1));
        assert!(
            local_node(&nodes, "b")
                .unwrap_err()
                .to_string()
                .contains("spec.podCIDR")
        );
        assert!(
            local_node(&nodes, "c")
                .unwrap_err()
                .to_string()
                .contains("IPv4 InternalIP")
        );
        assert!(
            local_node(&nodes, "z")
                .unwrap_err()
                .to_string()
                .contains("Node z")
        );
    }

    #[test]
    fn remote_nodes_are_the_others_that_can_be_reached() {
        let nodes = vec![
            node("a", Some("10.244.1.0/24"), Some("10.10.0.1")),
            node("b", Some("10.244.2.0/24"), Some("10.10.0.2")),
            node("c", None, Some("10.10.0.3")),
        ];
        let remotes = remote_nodes(&nodes, "a");
        assert_eq!(remotes.len(), 1);
        assert_eq!(remotes[0].name, "b");
        assert_eq!(remotes[0].transport_ip, Ipv4Addr::new(10, 10, 0, 2));
    }

    #[test]
    fn status_only_mode_never_reports_an_ip_assigned() {
        let assigned = EgressStatus {
            egress_node: "a".into(),
            egress_ip: "10.10.0.50".into(),
            ip_assigned: Some(Condition::assigned()),
            writer: true,
        };
        let failed = EgressStatus {
            ip_assigned: Some(Condition::assignment_error("no Node")),
            ..assigned.clone()
        };
        let plan = NodePlan {
            statuses: BTreeMap::from([("ok".into(), assigned), ("bad".into(), failed.clone())]),
            ..NodePlan::default()
        };
        let statuses = disabled_statuses(&plan);
        let ok = statuses["ok"].ip_assigned.as_ref().unwrap();
        assert_eq!(ok.status, ConditionStatus::False);
        assert!(ok.message.ends_with(DATAPATH_DISABLED), "{}", ok.message);
        assert_eq!(statuses["bad"], failed);
    }
}
