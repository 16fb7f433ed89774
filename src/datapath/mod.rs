//! The Node datapath runtime: owns `br-int` and the Node's Pod networking for as long as it runs.
//! It connects to OVSDB (retrying while OVS is down, reporting not-ready), sets the bridge up,
//! learns local Pod ports from the Interface table, computes the desired flows (Pod networking
//! for local Pods and the remote Nodes the caller names, plus caller-supplied extra flows such
//! as Egress flows) and keeps the switch equal to them through the flow programmer, one
//! debounced bundle per burst of changes. It also keeps the host side in step: the gateway
//! address and the routes to remote Pod CIDRs.
//!
//! Restart safety: the cookie round is kept in `Bridge.external_ids:ovs-egress-round`; a new
//! runtime installs the full new round before it deletes the previous round's flows, then
//! stores its round and clears `flow-restore-wait`, so traffic never meets an empty table.
//! When ovs-vswitchd restarts (seen on its OpenFlow management socket) or OVSDB comes back,
//! every flow is reinstalled at once; a periodic verification repairs flows removed behind
//! its back.
//!
//! Pod ports are acknowledged: once the flows of a Pod port are installed, the runtime writes
//! `cni::port::keys::FLOWS_READY` into its Interface's `external_ids`, which CNI ADD waits for,
//! so a Pod starts only when its datapath is in place. Which ports it may acknowledge is the
//! caller's call ([`PortAcks`]): all of them once Pod networking is installed, or only those
//! the caller says its extra flows have settled.
//!
//! It decides nothing about Egress: which extra flows exist is the caller's business. It never
//! touches flows outside its rounds, routes it did not add, or other bridges, and writes no
//! `external_ids` of Interfaces but the acknowledgement.

mod desired;
mod ports;
mod runtime;
pub mod switch;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ovs::bridge::{BridgeConfig, DatapathType};
use crate::pipeline::{Flow, Ipv4Cidr, Mac, table_names};

pub use ports::{BadPort, INTERFACE_COLUMNS, PodPort, pod_ports};

/// `Bridge.external_ids` key holding the cookie round of the runtime that programs the bridge.
pub const ROUND_KEY: &str = "ovs-egress-round";

/// Everything the runtime needs to know about its Node and its OVS.
#[derive(Clone, Debug)]
pub struct DatapathConfig {
    /// Bridge, gateway (name, MTU) and tunnel settings. The gateway MAC and the table names are
    /// filled in by [`DatapathConfig::new`].
    pub bridge: BridgeConfig,
    /// The gateway's MAC (flows rewrite to it; OVS is told to use it).
    pub gateway_mac: Mac,
    /// This Node's Pod CIDR; the gateway gets its first address.
    pub pod_cidr: Ipv4Cidr,
    /// This Node's transport IP: a remote Node entry with this IP is ignored.
    pub node_ip: Ipv4Addr,
    pub ovsdb_socket: PathBuf,
    /// The `ovs-ofctl` switch argument (`unix:<rundir>/br-int.mgmt`, or the bridge name).
    pub ofctl_target: String,
    /// The bridge's OpenFlow management socket, watched to notice vswitchd restarts.
    pub mgmt_socket: PathBuf,
    /// Coalescing window for bursts of changes.
    pub debounce: Duration,
    /// How often the installed flows are compared with the owned ones (and repaired).
    pub verify_interval: Duration,
}

impl DatapathConfig {
    /// A configuration for `bridge` of an OVS whose sockets live in `ovs_rundir`
    /// (`/var/run/openvswitch` in production); 10 ms debounce, 10 s verification.
    pub fn new(
        ovs_rundir: &Path,
        bridge: &str,
        datapath_type: DatapathType,
        gateway_mac: Mac,
        pod_cidr: Ipv4Cidr,
        node_ip: Ipv4Addr,
    ) -> DatapathConfig {
        let mut cfg = BridgeConfig {
            name: bridge.to_string(),
            datapath_type,
            table_names: table_names(),
            ..BridgeConfig::default()
        };
        cfg.gateway.mac = Some(gateway_mac.to_string());
        let mgmt_socket = switch::mgmt_socket(ovs_rundir, bridge);
        DatapathConfig {
            bridge: cfg,
            gateway_mac,
            pod_cidr,
            node_ip,
            ovsdb_socket: ovs_rundir.join("db.sock"),
            ofctl_target: format!("unix:{}", mgmt_socket.display()),
            mgmt_socket,
            debounce: Duration::from_millis(10),
            verify_interval: Duration::from_secs(10),
        }
    }
}

/// Another Node of the cluster, as the caller knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteNodeSpec {
    pub name: String,
    pub pod_cidr: Ipv4Cidr,
    pub transport_ip: Ipv4Addr,
}

/// What the caller supplies; every change triggers a (debounced) reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatapathInputs {
    pub remote_nodes: Vec<RemoteNodeSpec>,
    /// Flows installed beside Pod networking (e.g. Egress flows), in the same round.
    pub extra_flows: Vec<Flow>,
}

/// Which Pod ports the runtime acknowledges once their flows are installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortAcks {
    /// Every Pod port, once its Pod networking flows are installed (the caller adds no per-Pod
    /// flows, or does not gate the Pods' start on them).
    Installed,
    /// Only these ports (Interface name → ofport), once installed: for them, the extra flows
    /// given in the same update hold everything the caller decided.
    Settled(BTreeMap<String, u32>),
}

impl PortAcks {
    /// Whether `port` may be acknowledged once its flows are installed.
    pub fn covers(&self, port: &PodPort) -> bool {
        match self {
            PortAcks::Installed => true,
            PortAcks::Settled(ports) => ports.get(&port.name) == Some(&port.ofport),
        }
    }
}

/// What the runtime reconciles to: the caller's inputs and which ports to acknowledge, changed
/// together so an acknowledgement never precedes the extra flows it vouches for.
#[derive(Clone, Debug)]
struct Wanted {
    inputs: DatapathInputs,
    acks: PortAcks,
}

/// What the runtime reports; observe it with [`NodeDatapath::status`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatapathStatus {
    /// True once the desired flows are installed and the host side is configured, until
    /// something fails or OVS goes away.
    pub ready: bool,
    /// Why the runtime is not ready (names the socket, bridge, flow or device concerned).
    pub error: Option<String>,
    /// The cookie round this runtime programs, once it has one.
    pub round: Option<u16>,
    /// Number of flows installed (owned by this runtime).
    pub flows: usize,
    /// Interface names of the Pod ports whose flows are installed.
    pub pods: Vec<String>,
    /// Completed full (re)installs: the first install, and one per vswitchd or OVSDB restart.
    pub full_installs: u64,
}

/// A running datapath runtime. Dropping it stops the runtime (flows stay on the switch, where
/// the next runtime finds and retires them).
pub struct NodeDatapath {
    wanted: watch::Sender<Wanted>,
    status: watch::Receiver<DatapathStatus>,
    task: JoinHandle<()>,
}

impl NodeDatapath {
    /// Starts the runtime on the current tokio runtime, acknowledging every Pod port once its
    /// Pod networking is installed ([`PortAcks::Installed`]). Host-side changes (gateway
    /// address, routes) happen in the network namespace of the calling thread.
    pub fn start(cfg: DatapathConfig, inputs: DatapathInputs) -> NodeDatapath {
        NodeDatapath::start_with_acks(cfg, inputs, PortAcks::Installed)
    }

    /// [`NodeDatapath::start`], acknowledging the Pod ports `acks` allows.
    pub fn start_with_acks(
        cfg: DatapathConfig,
        inputs: DatapathInputs,
        acks: PortAcks,
    ) -> NodeDatapath {
        let (wanted_tx, wanted_rx) = watch::channel(Wanted { inputs, acks });
        let (status_tx, status_rx) = watch::channel(DatapathStatus::default());
        let task = tokio::spawn(runtime::run(cfg, wanted_rx, status_tx));
        NodeDatapath {
            wanted: wanted_tx,
            status: status_rx,
            task,
        }
    }

    /// Replaces all inputs at once.
    pub fn set_inputs(&self, inputs: DatapathInputs) {
        self.wanted.send_modify(|w| w.inputs = inputs);
    }

    /// Replaces the remote Nodes.
    pub fn set_remote_nodes(&self, nodes: Vec<RemoteNodeSpec>) {
        self.wanted.send_modify(|w| w.inputs.remote_nodes = nodes);
    }

    /// Replaces the extra flows (installed with Pod networking, in one bundle per change).
    pub fn set_extra_flows(&self, flows: Vec<Flow>) {
        self.wanted.send_modify(|w| w.inputs.extra_flows = flows);
    }

    /// Replaces the extra flows and the ports to acknowledge once installed, in one change.
    pub fn set_extra_flows_and_acks(&self, flows: Vec<Flow>, acks: PortAcks) {
        self.wanted.send_modify(|w| {
            w.inputs.extra_flows = flows;
            w.acks = acks;
        });
    }

    pub fn status(&self) -> watch::Receiver<DatapathStatus> {
        self.status.clone()
    }

    /// Waits until `pred` holds for the status, at most `timeout`; returns the last status.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl FnMut(&DatapathStatus) -> bool,
    ) -> Result<DatapathStatus, DatapathStatus> {
        let mut rx = self.status.clone();
        let found = match tokio::time::timeout(timeout, rx.wait_for(pred)).await {
            Ok(Ok(s)) => Some(s.clone()),
            _ => None,
        };
        found.ok_or_else(|| rx.borrow().clone())
    }
}

impl Drop for NodeDatapath {
    fn drop(&mut self) {
        self.task.abort();
    }
}
