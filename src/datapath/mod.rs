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
//! Every change of the caller's inputs gets a generation ([`DatapathHandle::set_extra_flows_and_acks`]
//! returns it); once a bundle carrying them lands, or is rejected, the status says so
//! ([`DatapathStatus::installed_generation`], [`DatapathStatus::rejected`]), so a caller waits
//! for its flows on this channel ([`DatapathHandle::wait_installed`]) rather than reading the
//! switch back. The runtime holds the Node's only OVSDB connection and publishes the Pod ports
//! it sees ([`NodeDatapath::pod_ports`]). A runtime started [held](NodeDatapath::start_held)
//! sets the bridge up and publishes the ports but programs no flow until the caller's first
//! inputs arrive (so an agent's first install already carries its Egress flows).
//!
//! It decides nothing about Egress: which extra flows exist is the caller's business. It never
//! touches flows outside its rounds, routes it did not add, or other bridges, and writes no
//! `external_ids` of Interfaces but the acknowledgement.

mod desired;
pub mod egress;
mod ports;
mod runtime;
pub mod switch;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use ovs_egress_core::pipeline::{Flow, Ipv4Network, Mac, table_names};
use ovs_egress_ovsdb::bridge::{BridgeConfig, DatapathType};

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
    pub pod_cidr: Ipv4Network,
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
        pod_cidr: Ipv4Network,
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
    pub pod_cidr: Ipv4Network,
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
    /// Bumped by every change; reported back once the flows of this change are installed.
    generation: u64,
    /// No flows are programmed until the caller's first inputs (see [`NodeDatapath::start_held`]).
    held: bool,
}

/// A generation of inputs whose flows the switch refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub generation: u64,
    /// What the flow programmer reported (the bundle's error names the offending flow).
    pub error: String,
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
    /// The latest generation of inputs whose flows are all on the switch (0: none yet).
    pub installed_generation: u64,
    /// The latest generation whose flows could not be installed, if it is newer than
    /// `installed_generation`.
    pub rejected: Option<Rejected>,
}

/// Why the flows of a generation are not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("flows of input generation {generation} rejected: {error}")]
    Rejected { generation: u64, error: String },
    #[error(
        "flows of input generation {generation} not installed within {timeout:?} \
         (installed: generation {installed}; datapath: {state})"
    )]
    Timeout {
        generation: u64,
        timeout: Duration,
        installed: u64,
        state: String,
    },
    #[error("the datapath runtime stopped")]
    Stopped,
}

/// A running datapath runtime. Dropping it stops the runtime (flows stay on the switch, where
/// the next runtime finds and retires them).
pub struct NodeDatapath {
    handle: DatapathHandle,
    ports: watch::Receiver<Option<Vec<PodPort>>>,
    task: JoinHandle<()>,
}

/// The caller's side of a running runtime: change its inputs, read its status, wait for a
/// generation. Cheap to clone; it may live on another thread than the runtime.
#[derive(Clone)]
pub struct DatapathHandle {
    wanted: watch::Sender<Wanted>,
    status: watch::Receiver<DatapathStatus>,
}

impl NodeDatapath {
    /// Starts the runtime on the current tokio runtime, acknowledging every Pod port once its
    /// Pod networking is installed ([`PortAcks::Installed`]). Host-side changes (gateway
    /// address, routes) happen in the network namespace of the calling thread.
    pub fn start(cfg: DatapathConfig, inputs: DatapathInputs) -> NodeDatapath {
        NodeDatapath::spawn(cfg, inputs, PortAcks::Installed, false)
    }

    /// Starts the runtime without programming any flow: it sets the bridge up and publishes
    /// the Pod ports ([`NodeDatapath::pod_ports`]) until the first
    /// [`DatapathHandle::set_extra_flows_and_acks`], whose flows the first install carries.
    pub fn start_held(cfg: DatapathConfig, remote_nodes: Vec<RemoteNodeSpec>) -> NodeDatapath {
        let inputs = DatapathInputs {
            remote_nodes,
            extra_flows: Vec::new(),
        };
        NodeDatapath::spawn(cfg, inputs, PortAcks::Settled(BTreeMap::new()), true)
    }

    fn spawn(cfg: DatapathConfig, inputs: DatapathInputs, acks: PortAcks, held: bool) -> Self {
        let wanted = Wanted {
            inputs,
            acks,
            generation: 1,
            held,
        };
        let (wanted_tx, wanted_rx) = watch::channel(wanted);
        let (status_tx, status_rx) = watch::channel(DatapathStatus::default());
        let (ports_tx, ports_rx) = watch::channel(None);
        let task = tokio::spawn(runtime::run(cfg, wanted_rx, status_tx, ports_tx));
        NodeDatapath {
            handle: DatapathHandle {
                wanted: wanted_tx,
                status: status_rx,
            },
            ports: ports_rx,
            task,
        }
    }

    pub fn handle(&self) -> DatapathHandle {
        self.handle.clone()
    }

    /// The Pod ports in OVSDB (`None` until the first snapshot), as the runtime sees them.
    pub fn pod_ports(&self) -> watch::Receiver<Option<Vec<PodPort>>> {
        self.ports.clone()
    }
}

impl std::ops::Deref for NodeDatapath {
    type Target = DatapathHandle;

    fn deref(&self) -> &DatapathHandle {
        &self.handle
    }
}

impl DatapathHandle {
    /// Applies `change` to the inputs as one new generation; returns it.
    fn change(&self, change: impl FnOnce(&mut Wanted)) -> u64 {
        let mut generation = 0;
        self.wanted.send_modify(|w| {
            change(w);
            w.generation += 1;
            w.held = false;
            generation = w.generation;
        });
        generation
    }

    /// Replaces all inputs at once; returns the new generation.
    pub fn set_inputs(&self, inputs: DatapathInputs) -> u64 {
        self.change(|w| w.inputs = inputs)
    }

    /// Replaces the remote Nodes; returns the new generation.
    pub fn set_remote_nodes(&self, nodes: Vec<RemoteNodeSpec>) -> u64 {
        self.change(|w| w.inputs.remote_nodes = nodes)
    }

    /// Replaces the extra flows (installed with Pod networking, in one bundle per change).
    pub fn set_extra_flows(&self, flows: Vec<Flow>) -> u64 {
        self.change(|w| w.inputs.extra_flows = flows)
    }

    /// Replaces the extra flows and the ports to acknowledge once installed, in one change;
    /// returns its generation.
    pub fn set_extra_flows_and_acks(&self, flows: Vec<Flow>, acks: PortAcks) -> u64 {
        self.change(|w| {
            w.inputs.extra_flows = flows;
            w.acks = acks;
        })
    }

    pub fn status(&self) -> watch::Receiver<DatapathStatus> {
        self.status.clone()
    }

    /// Waits until the flows of input `generation` (or a later one) are installed, at most
    /// `timeout`; a bundle of that generation (or later) that the switch rejected ends the
    /// wait at once with its error.
    pub async fn wait_installed(
        &self,
        generation: u64,
        timeout: Duration,
    ) -> Result<(), InstallError> {
        let mut rx = self.status.clone();
        let done = |s: &DatapathStatus| {
            s.installed_generation >= generation
                || s.rejected
                    .as_ref()
                    .is_some_and(|r| r.generation >= generation)
        };
        let waited = tokio::time::timeout(timeout, rx.wait_for(done))
            .await
            .map(|r| r.map(|s| (s.installed_generation, s.rejected.clone())));
        match waited {
            Ok(Ok((installed, _))) if installed >= generation => Ok(()),
            Ok(Ok((_, rejected))) => {
                let r = rejected.unwrap_or_else(|| Rejected {
                    generation,
                    error: String::new(),
                });
                Err(InstallError::Rejected {
                    generation: r.generation,
                    error: r.error,
                })
            }
            Ok(Err(_)) => Err(InstallError::Stopped),
            Err(_) => {
                let s = rx.borrow();
                Err(InstallError::Timeout {
                    generation,
                    timeout,
                    installed: s.installed_generation,
                    state: s.error.clone().unwrap_or_else(|| "no error".into()),
                })
            }
        }
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
