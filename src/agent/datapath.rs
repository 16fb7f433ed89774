//! The agent's real [`Datapath`]: it starts the Node datapath runtime (`NodeDatapath`: bridge,
//! Pod networking, Node routes) once this Node's Pod CIDR and transport IP are known, keeps the
//! remote Nodes current from the agent's view, and applies every plan in make-before-break
//! order through `EgressHost`: SNAT rules, then the Egress flows through the runtime's extra
//! flows (waiting until the switch has them), then egress IPs and the final rules; it repairs
//! the SNAT rules every [`VERIFY_INTERVAL`]. It answers
//! with the statuses it realized; when it could not apply a plan at all (Node not known yet,
//! OVS away, iptables refused) it drops the answer so the agent retries, never claiming an IP
//! it did not program. Pod ofports come from its own replica of the OVSDB Interface table.
//! An agent restart keeps the Egress datapath: the runtime's first install (which retires the
//! previous process's flows) already carries the first plan's Egress flows, Pods' included,
//! with their SNAT rules in place before it.
//!
//! With every change of Egress flows it tells the runtime which Pod ports are settled
//! (`acks::settled_ports`: their Pod is among those the applied plan decided, published by the
//! agent loop after applying it), so the runtime acknowledges a new Pod's port to the CNI plugin
//! only in the bundle that carries the Pod's Egress flow, or once it is known to need none.
//!
//! On the userspace datapath `EgressHost` also keeps OVS's tunnel neighbour cache right for
//! egress IPs that move between Nodes (`ovs::tnl_neigh`); it learns the other Nodes' transport
//! IPs from here.
//!
//! It decides nothing about Egress (the plan does) and touches OVS only through the runtime's
//! flows and that cache.
//!
//! [`status_only`] is the `--no-datapath` mode: nothing is programmed, and every IP the plan
//! would assign is reported `IPAssigned=False` ("datapath disabled").

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::acks::settled_ports;
use super::config::{AgentConfig, DatapathType as ConfigDatapathType};
use super::{Datapath, PlanRequest};
use crate::datapath::{
    DatapathConfig, DatapathInputs, INTERFACE_COLUMNS, NodeDatapath, PodPort, PortAcks,
    RemoteNodeSpec, pod_ports,
};
use crate::datapath_egress::{DeviceChoice, EgressHost};
use crate::host::iptables::{Cidr, MarkCarrier, SnatConfig};
use crate::model::Node;
use crate::ovs::bridge::DatapathType;
use crate::ovs::ofctl::Ofctl;
use crate::ovs::ovsdb::{
    Client, ClientOptions, MonitorEvent, MonitorSpec, MonitorStream, TableCache,
};
use crate::ovs::tnl_neigh::TunnelNeighbours;
use crate::pipeline::egress::{EgressContext, EgressFlows, Ipv6Bypass, Unprogrammed, egress_flows};
use crate::pipeline::{Category, Flow, Ipv4Cidr, Mac};
use crate::plan::{Condition, ConditionStatus, EgressStatus, NodePlan};

/// How long a plan's Egress flows may take to appear on the switch before the plan counts as
/// not applied (and is retried).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(10);
const INSTALL_POLL: Duration = Duration::from_millis(10);
/// How often the SNAT rules are read back and repaired (the runtime does the same for flows).
const VERIFY_INTERVAL: Duration = Duration::from_secs(10);

/// The message of `IPAssigned=False` in status-only mode.
pub const DATAPATH_DISABLED: &str = "datapath disabled (--no-datapath): nothing is programmed";

/// Starts the real datapath of Node `node`; `nodes` is the agent's current list of Nodes,
/// `decided` the local Pods (`namespace/name`) the applied plan has decided.
/// `ovs_rundir` holds OVS's sockets (`/var/run/openvswitch` in production).
pub fn start(
    node: String,
    config: AgentConfig,
    ovs_rundir: PathBuf,
    nodes: watch::Receiver<Vec<Node>>,
    decided: watch::Receiver<BTreeSet<String>>,
) -> Datapath {
    let (tx, rx) = mpsc::channel::<PlanRequest>(1);
    tokio::spawn(serve(node, config, ovs_rundir, nodes, decided, rx));
    tx
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
fn local_node(nodes: &[Node], name: &str) -> Result<(Ipv4Cidr, Ipv4Addr), String> {
    let node = nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| format!("Node {name} is not in the cluster view yet"))?;
    let cidr = node
        .pod_cidr
        .as_deref()
        .ok_or_else(|| format!("Node {name}: spec.podCIDR is not set"))?;
    let cidr = cidr
        .parse::<Ipv4Cidr>()
        .map_err(|e| format!("Node {name}: spec.podCIDR {cidr:?}: {e}"))?;
    match node.transport_ip {
        Some(IpAddr::V4(ip)) => Ok((cidr, ip)),
        other => Err(format!(
            "Node {name}: no IPv4 InternalIP in status.addresses (found {other:?})"
        )),
    }
}

/// The other Nodes with an IPv4 Pod CIDR and transport IP (the others cannot be reached).
fn remote_nodes(nodes: &[Node], name: &str) -> Vec<RemoteNodeSpec> {
    nodes
        .iter()
        .filter(|n| n.name != name)
        .filter_map(|n| {
            let pod_cidr = n.pod_cidr.as_deref()?.parse().ok()?;
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

/// Egress IPs the flows cannot carry, with why (they fail their Egresses' `IPAssigned`).
fn ip_errors(flows: &EgressFlows) -> impl Iterator<Item = (IpAddr, String)> + '_ {
    flows.unprogrammed.iter().filter_map(|u| match u {
        Unprogrammed::NoMark { ip } => Some((*ip, u.to_string())),
        Unprogrammed::PodNotAttached { .. } => None,
    })
}

/// What the Egress flows of Node `node` depend on besides the plan: the cluster's Nodes, this
/// Node's Pod CIDR, transport IP and gateway MAC, and the Interface table (Pod ports).
/// The Egress flows of `plan` for the Pod ports of `interfaces`, and which of those ports they
/// settle (`decided`: the local Pods the applied plan has decided), from one read of the replica.
fn flows_and_acks(
    plan: &NodePlan,
    node: &str,
    config: &AgentConfig,
    nodes: &[Node],
    addresses: (Ipv4Cidr, Ipv4Addr, Mac),
    interfaces: &TableCache,
    decided: &BTreeSet<String>,
) -> (EgressFlows, PortAcks) {
    let (ports, _) = pod_ports(interfaces);
    let flows = egress_flows(
        plan,
        &egress_context(node, config, nodes, addresses, &ports),
    );
    (flows, settled_ports(&ports, decided))
}

fn egress_context(
    node: &str,
    config: &AgentConfig,
    nodes: &[Node],
    (pod_cidr, node_ip, gateway_mac): (Ipv4Cidr, Ipv4Addr, Mac),
    ports: &[PodPort],
) -> EgressContext {
    let remotes = remote_nodes(nodes, node);
    let cidrs =
        |list: &[String]| -> Vec<Ipv4Cidr> { list.iter().filter_map(|c| c.parse().ok()).collect() };
    EgressContext {
        pod_ofports: ports.iter().map(|p| (p.pod.clone(), p.ofport)).collect(),
        gateway_mac,
        local_transport_ip: node_ip,
        remote_transport_ips: remotes.iter().map(|r| r.transport_ip).collect(),
        pod_cidrs: std::iter::once(pod_cidr)
            .chain(remotes.iter().map(|r| r.pod_cidr))
            .collect(),
        service_cidrs: cidrs(config.service_cidr.as_slice()),
        except_cidrs: cidrs(&config.egress.except_cidrs),
        ipv6: Ipv6Bypass::from_cluster(
            nodes,
            config.service_cidr.iter().filter_map(|c| c.parse().ok()),
            config
                .egress
                .except_cidrs
                .iter()
                .filter_map(|c| c.parse().ok()),
        ),
        carrier: match config.ovs_datapath_type {
            ConfigDatapathType::System => MarkCarrier::PktMark,
            ConfigDatapathType::Netdev => MarkCarrier::SourceMac,
        },
    }
}

/// The Interface table as the monitor's first snapshot shows it (within [`INSTALL_TIMEOUT`]).
async fn interface_snapshot(monitor: &mut MonitorStream) -> Result<TableCache, String> {
    let mut interfaces = TableCache::new();
    let snapshot = async {
        while let Some(event) = monitor.recv().await {
            interfaces.apply(&event);
            if matches!(event, MonitorEvent::Snapshot(_)) {
                return Ok(());
            }
        }
        Err("the Interface monitor ended".to_string())
    };
    match tokio::time::timeout(INSTALL_TIMEOUT, snapshot).await {
        Ok(result) => result.map(|()| interfaces),
        Err(_) => Err(format!("no Interface snapshot within {INSTALL_TIMEOUT:?}")),
    }
}

/// The running datapath of this Node.
struct Running {
    node: String,
    config: AgentConfig,
    runtime: NodeDatapath,
    ofctl: Ofctl,
    host: EgressHost,
    gateway_mac: Mac,
    pod_cidr: Ipv4Cidr,
    node_ip: Ipv4Addr,
    nodes: Vec<Node>,
    /// The local Pods the applied plan has decided (their ports may be acknowledged).
    decided: BTreeSet<String>,
    /// Replica of the Interface table (Pod ofports).
    interfaces: TableCache,
    _ovsdb: Client,
    /// The last plan applied, to follow Pod ports and Nodes that change under it.
    plan: Option<Arc<NodePlan>>,
}

async fn serve(
    node: String,
    config: AgentConfig,
    ovs_rundir: PathBuf,
    mut nodes: watch::Receiver<Vec<Node>>,
    mut decided: watch::Receiver<BTreeSet<String>>,
    mut requests: mpsc::Receiver<PlanRequest>,
) {
    let mut running: Option<(Running, MonitorStream)> = None;
    let mut verify = tokio::time::interval(VERIFY_INTERVAL);
    verify.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = verify.tick() => {
                if let Some((rt, _)) = &mut running
                    && let Err(error) = rt.host.verify().await
                {
                    tracing::warn!(node, %error, "SNAT rules could not be repaired");
                }
            }
            request = requests.recv() => {
                let Some(request) = request else { return };
                if running.is_none() {
                    let list = nodes.borrow_and_update().clone();
                    let pods = decided.borrow_and_update().clone();
                    match Running::start(&node, &config, &ovs_rundir, list, &request.plan, pods).await {
                        Ok(started) => running = Some(started),
                        Err(error) => {
                            tracing::warn!(node, %error, "datapath not started; plan not applied");
                            continue; // dropping `applied`: the agent retries
                        }
                    }
                }
                let Some((rt, _)) = &mut running else { continue };
                if let Some(statuses) = rt.apply(request.plan).await {
                    let _ = request.applied.send(statuses);
                }
            }
            Ok(()) = nodes.changed() => {
                let list = nodes.borrow_and_update().clone();
                if let Some((rt, _)) = &mut running {
                    rt.set_nodes(list);
                }
            }
            Ok(()) = decided.changed() => {
                let pods = decided.borrow_and_update().clone();
                if let Some((rt, _)) = &mut running {
                    rt.decided = pods;
                    rt.refresh_flows();
                }
            }
            Some(event) = async {
                match &mut running {
                    Some((_, monitor)) => monitor.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some((rt, _)) = &mut running {
                    rt.interfaces.apply(&event);
                    rt.refresh_flows();
                }
            }
        }
    }
}

impl Running {
    /// Starts the runtime with the Egress flows of `first`, the plan about to be applied: the
    /// runtime's first install retires the flows of a previous agent process, so after a
    /// restart the Egress flows must be in it, Pods' included (their ports come from the
    /// Interface snapshot, awaited here), or selected Pods would briefly leave with their Node's IP.
    async fn start(
        node: &str,
        config: &AgentConfig,
        ovs_rundir: &std::path::Path,
        nodes: Vec<Node>,
        first: &NodePlan,
        decided: BTreeSet<String>,
    ) -> Result<(Running, MonitorStream), String> {
        let (pod_cidr, node_ip) = local_node(&nodes, node)?;
        let (datapath_type, carrier) = match config.ovs_datapath_type {
            ConfigDatapathType::System => (DatapathType::System, MarkCarrier::PktMark),
            ConfigDatapathType::Netdev => (DatapathType::Netdev, MarkCarrier::SourceMac),
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
        let ovsdb = Client::start(&cfg.ovsdb_socket, ClientOptions::default());
        let spec = MonitorSpec::new().table("Interface", &INTERFACE_COLUMNS);
        let mut monitor = ovsdb.monitor(&spec).await.map_err(|e| {
            format!(
                "OVSDB {}: Interface monitor: {e}",
                cfg.ovsdb_socket.display()
            )
        })?;
        let interfaces = interface_snapshot(&mut monitor)
            .await
            .map_err(|e| format!("OVSDB {}: {e}", cfg.ovsdb_socket.display()))?;
        let (first_flows, first_acks) = flows_and_acks(
            first,
            node,
            config,
            &nodes,
            (pod_cidr, node_ip, gateway_mac),
            &interfaces,
            &decided,
        );
        let pod_cidr_host: Cidr = pod_cidr
            .to_string()
            .parse()
            .map_err(|e| format!("Node {node}: Pod CIDR {pod_cidr}: {e}"))?;
        let snat = SnatConfig {
            gateway: config.host_gateway.clone(),
            random_fully: config.egress.snat_fully_random_ports,
            carrier,
            pod_cidrs: vec![pod_cidr_host],
        };
        let device = DeviceChoice {
            configured: config.egress_device.clone(),
            // Only used when the kernel has no dummy driver; an unset one fails by name.
            transport: config.transport_interface.clone().unwrap_or_default(),
        };
        let mut host = EgressHost::new(snat, device);
        if datapath_type == DatapathType::Netdev {
            host = host.with_tunnel_neighbours(TunnelNeighbours::new(ovs_rundir));
            host.set_remote_transport_ips(remote_transport_ips(&nodes, node));
        }
        // The SNAT rules before the first install's flows that mark traffic for them; `apply`
        // prepares again (no change) and finishes.
        if let Err(report) = host.prepare(first).await {
            return Err(report.node_error.unwrap_or_default());
        }
        let ofctl = Ofctl::new(cfg.ofctl_target.clone());
        let runtime = NodeDatapath::start_with_acks(
            cfg,
            DatapathInputs {
                remote_nodes: remote_nodes(&nodes, node),
                extra_flows: first_flows.flows,
            },
            first_acks,
        );
        tracing::info!(node, %pod_cidr, %node_ip, bridge = %config.ovs_bridge, "datapath started");
        let running = Running {
            node: node.to_string(),
            config: config.clone(),
            runtime,
            ofctl,
            host,
            gateway_mac,
            pod_cidr,
            node_ip,
            nodes,
            decided,
            interfaces,
            _ovsdb: ovsdb,
            plan: None,
        };
        Ok((running, monitor))
    }

    /// The Egress flows of `plan` for the Pod ports now attached, and which of those ports
    /// they settle: both from one read of the Interface replica.
    fn flows_and_acks(&self, plan: &NodePlan) -> (EgressFlows, PortAcks) {
        flows_and_acks(
            plan,
            &self.node,
            &self.config,
            &self.nodes,
            (self.pod_cidr, self.node_ip, self.gateway_mac),
            &self.interfaces,
            &self.decided,
        )
    }

    fn set_nodes(&mut self, nodes: Vec<Node>) {
        if nodes == self.nodes {
            return;
        }
        self.nodes = nodes;
        self.runtime
            .set_remote_nodes(remote_nodes(&self.nodes, &self.node));
        self.host
            .set_remote_transport_ips(remote_transport_ips(&self.nodes, &self.node));
        self.refresh_flows();
    }

    /// Recomputes the last plan's flows after a Pod port, Node or decided-Pods change (the SNAT
    /// rules and IPs depend on the plan only, so they stay).
    fn refresh_flows(&self) {
        if let Some(plan) = &self.plan {
            let (flows, acks) = self.flows_and_acks(plan);
            self.runtime.set_extra_flows_and_acks(flows.flows, acks);
        }
    }

    /// Applies `plan`; `None` when it could not (logged), so the agent retries.
    async fn apply(&mut self, plan: Arc<NodePlan>) -> Option<BTreeMap<String, EgressStatus>> {
        let (flows, acks) = self.flows_and_acks(&plan);
        let due = match self.host.prepare(&plan).await {
            Ok(due) => due,
            Err(report) => {
                tracing::warn!(node = self.node, error = ?report.node_error, "plan not applied");
                return None;
            }
        };
        self.runtime
            .set_extra_flows_and_acks(flows.flows.clone(), acks);
        self.plan = Some(plan.clone());
        if let Err(error) = self.wait_installed(&flows.flows).await {
            tracing::warn!(node = self.node, %error, "plan not applied");
            return None;
        }
        let mut report = self.host.finish(due, &plan).await;
        if let Some(error) = &report.node_error {
            tracing::warn!(node = self.node, %error, "plan not applied");
            return None;
        }
        for (ip, error) in ip_errors(&flows) {
            report.ip_errors.entry(ip).or_insert(error);
        }
        Some(report.statuses(&plan))
    }

    /// Waits until the Egress flows on the switch are exactly `flows`.
    async fn wait_installed(&self, flows: &[Flow]) -> Result<(), String> {
        let want: std::collections::BTreeSet<_> = flows.iter().map(Flow::key).collect();
        let deadline = Instant::now() + INSTALL_TIMEOUT;
        loop {
            let last = match self.ofctl.dump_flows().await {
                Ok(dump) => {
                    let have: std::collections::BTreeSet<_> = dump
                        .into_iter()
                        .filter(|f| Category::Egress.holds(f.cookie))
                        .map(|f| f.key)
                        .collect();
                    if have == want {
                        return Ok(());
                    }
                    format!("{} of {} Egress flows installed", have.len(), want.len())
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "Egress flows on {} not installed within {INSTALL_TIMEOUT:?}: {last}",
                    self.ofctl.target()
                ));
            }
            tokio::time::sleep(INSTALL_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        Node {
            name: name.into(),
            pod_cidr: cidr.map(Into::into),
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
                .contains("spec.podCIDR")
        );
        assert!(
            local_node(&nodes, "c")
                .unwrap_err()
                .contains("IPv4 InternalIP")
        );
        assert!(local_node(&nodes, "z").unwrap_err().contains("Node z"));
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
