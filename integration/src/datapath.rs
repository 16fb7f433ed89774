//! A test-bed Node driven by the real datapath runtime: `ovs_egress::datapath::NodeDatapath`
//! runs in-process on a dedicated thread that entered the Node's namespace (setns) with its own
//! tokio runtime, so its netlink and `ovs-ofctl` calls act on that Node only. Stopping it (or
//! dropping it) is an agent restart as far as OVS is concerned: flows stay on the switch.
//! Pods are created through the CNI plugin binary (`crate::cni`).

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use ovs_egress::datapath::{
    DatapathConfig, DatapathHandle, DatapathInputs, DatapathStatus, NodeDatapath, RemoteNodeSpec,
};
use ovs_egress_core::pipeline::{Ipv4Network, Mac};
use ovs_egress_ovsdb::bridge::DatapathType;
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use crate::cni::{self, Pod};
use crate::netns::unique_token;
use crate::node::Node;
use crate::traffic::ping;
use crate::underlay::Underlay;

/// The runtime on its namespace thread. Dropping it stops the runtime and joins the thread.
pub struct RuntimeThread {
    stop: Option<oneshot::Sender<()>>,
    handle: DatapathHandle,
    status: watch::Receiver<DatapathStatus>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RuntimeThread {
    /// Starts `NodeDatapath` with `cfg` inside the namespace `netns` (a name under /run/netns).
    pub fn start(netns: &str, cfg: DatapathConfig, inputs: DatapathInputs) -> Result<Self> {
        let path = format!("/run/netns/{netns}");
        let file = File::open(&path).with_context(|| format!("open {path}"))?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd only changes this thread's network
            // namespace; the thread runs nothing but the runtime below.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                let _ = ready_tx.send(Err(anyhow!(
                    "setns {path}: {}",
                    std::io::Error::last_os_error()
                )));
                return;
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                let dp = NodeDatapath::start(cfg, inputs);
                let _ = ready_tx.send(Ok(dp.handle()));
                let _ = stop_rx.await;
            });
        });
        let handle: DatapathHandle = ready_rx
            .recv()
            .context("datapath thread ended before starting")??;
        Ok(RuntimeThread {
            stop: Some(stop_tx),
            status: handle.status(),
            handle,
            thread: Some(thread),
        })
    }

    /// Replaces the runtime's inputs; returns their generation.
    pub fn set_inputs(&self, inputs: DatapathInputs) -> Result<u64> {
        if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
            return Err(anyhow!("datapath thread is gone"));
        }
        Ok(self.handle.set_inputs(inputs))
    }

    /// The runtime's handle (for an `EgressApplier`, or waiting for a generation).
    pub fn handle(&self) -> DatapathHandle {
        self.handle.clone()
    }

    pub fn status(&self) -> DatapathStatus {
        self.status.borrow().clone()
    }

    /// The status channel itself (for waiting inside a caller's own tokio runtime).
    pub fn status_receiver(&self) -> watch::Receiver<DatapathStatus> {
        self.status.clone()
    }

    /// Waits (at most `timeout`) until `pred` holds for the status; errors with the last one.
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl FnMut(&DatapathStatus) -> bool,
    ) -> Result<DatapathStatus> {
        let mut rx = self.status.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let found = rt.block_on(async {
            match tokio::time::timeout(timeout, rx.wait_for(pred)).await {
                Ok(Ok(s)) => Some(s.clone()),
                _ => None,
            }
        });
        found.ok_or_else(|| anyhow!("datapath status after {timeout:?}: {:?}", self.status()))
    }
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A Node of the test bed with the datapath runtime and a CNI state directory.
/// Field order = drop order: the runtime stops before OVS and the namespace go.
pub struct DatapathNode {
    pub runtime: Option<RuntimeThread>,
    pub node: Node,
    state_dir: PathBuf,
}

impl DatapathNode {
    /// Starts Node `index` on `underlay` (no runtime yet).
    pub fn new(underlay: &Underlay, index: u8) -> Result<DatapathNode> {
        let node = Node::start(underlay, index)?;
        let state_dir = std::env::temp_dir().join(format!("{}-cni-state", unique_token()));
        Ok(DatapathNode {
            runtime: None,
            node,
            state_dir,
        })
    }

    pub fn pod_cidr(&self) -> Ipv4Network {
        Ipv4Network::new(Ipv4Addr::new(10, 244, self.node.index, 0), 24)
            .expect("/24 is a valid prefix")
    }

    /// Fixed per Node so flow dumps are reproducible.
    pub fn gateway_mac(&self) -> Mac {
        Mac([0x0e, 0x00, 0x00, 0x00, 0x00, self.node.index])
    }

    /// The runtime configuration for this Node (netdev datapath, MTU 1450).
    pub fn config(&self) -> DatapathConfig {
        let ovs = &self.node.ovs;
        let mut cfg = DatapathConfig::new(
            ovs.rundir(),
            "br-int",
            DatapathType::Netdev,
            self.gateway_mac(),
            self.pod_cidr(),
            self.node.ip(),
        );
        cfg.bridge.gateway.mtu = Some(1450);
        cfg.ovsdb_socket = ovs.db_socket();
        cfg
    }

    /// How other Nodes see this one.
    pub fn as_remote(&self) -> RemoteNodeSpec {
        RemoteNodeSpec {
            name: format!("node{}", self.node.index),
            pod_cidr: self.pod_cidr(),
            transport_ip: self.node.ip(),
        }
    }

    /// (Re)starts the runtime with `cfg` and `remote` Nodes; stops a running one first.
    pub fn start_runtime_with(
        &mut self,
        cfg: DatapathConfig,
        remote: Vec<RemoteNodeSpec>,
    ) -> Result<()> {
        self.runtime = None;
        let inputs = DatapathInputs {
            remote_nodes: remote,
            extra_flows: Vec::new(),
        };
        self.runtime = Some(RuntimeThread::start(self.node.netns().name(), cfg, inputs)?);
        Ok(())
    }

    /// Starts the runtime with [`Self::config`] and waits until it is ready.
    pub fn start_runtime(&mut self, remote: Vec<RemoteNodeSpec>) -> Result<DatapathStatus> {
        self.start_runtime_with(self.config(), remote)?;
        self.runtime()?
            .wait_for(Duration::from_secs(30), |s| s.ready)
    }

    pub fn runtime(&self) -> Result<&RuntimeThread> {
        self.runtime
            .as_ref()
            .context("datapath runtime not started")
    }

    pub fn cni_conf(&self) -> Value {
        cni::netconf(&self.node, &self.state_dir)
    }

    /// CNI ADD of Pod `name` on this Node; returns the Pod, its IP and MAC, once the runtime
    /// has installed its flows.
    pub fn add_pod(&self, name: &str) -> Result<CniPod> {
        let pod = Pod::new(name)?;
        let added = cni::add(self.node.netns(), &pod, &self.cni_conf())?;
        self.runtime()?
            .wait_for(Duration::from_secs(10), |s| s.pods.contains(&added.host_if))
            .with_context(|| format!("flows for Pod {name} ({})", added.host_if))?;
        Ok(CniPod {
            pod,
            ip: added.ip,
            mac: added.mac,
            host_if: added.host_if,
        })
    }
}

impl Drop for DatapathNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// A Pod created by CNI ADD.
pub struct CniPod {
    pub pod: Pod,
    pub ip: Ipv4Addr,
    pub mac: String,
    /// The host end of its veth (the OVS port).
    pub host_if: String,
}

impl CniPod {
    pub fn ns(&self) -> &crate::Netns {
        &self.pod.ns
    }
}

/// Two Nodes on one underlay, each running the runtime with the other as remote Node, their
/// OVS tunnel neighbour caches warmed. Field order = drop order.
pub struct TwoNodes {
    pub n1: DatapathNode,
    pub n2: DatapathNode,
    /// Keep it bound while the Nodes are used (destructuring with `..` drops it).
    pub underlay: Underlay,
}

impl TwoNodes {
    pub fn start() -> Result<TwoNodes> {
        let underlay = Underlay::new()?;
        let mut n1 = DatapathNode::new(&underlay, 1)?;
        let mut n2 = DatapathNode::new(&underlay, 2)?;
        n1.start_runtime(vec![n2.as_remote()])?;
        n2.start_runtime(vec![n1.as_remote()])?;
        // OVS learns tunnel neighbours by snooping the Node kernels' ARP replies; the first packet
        // to a new tunnel destination is dropped while it ARPs.
        ping(n1.node.netns(), &n2.node.ip().to_string())?;
        ping(n2.node.netns(), &n1.node.ip().to_string())?;
        Ok(TwoNodes { n1, n2, underlay })
    }
}
