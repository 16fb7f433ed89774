//! The cluster-in-a-box: everything a user's cluster has that ovs-egress touches, on one
//! machine. A real kube-apiserver with etcd ([`ApiServer`]) and `ovs-egress controller` run as
//! processes on loopback; every Node is a namespace on a shared underlay (10.10.0.0/24) with its
//! own OVS (userspace datapath) and its own `ovs-egress agent` process; an external host records
//! the source of every connection; the controller's validating webhook is registered with the
//! API server (which calls it over TLS, verifying the `caBundle`), so invalid objects are
//! rejected as in a real cluster; Nodes, Namespaces and Pods are real objects, Pods created as
//! the kubelet would (Pod object, CNI ADD in the Node, Pod status with the IP). `kubectl` of the
//! server's release works against it ([`ClusterBox::kubectl`], admin credentials).
//!
//! The controller and the agents authenticate as themselves: ServiceAccount tokens bound to the
//! ClusterRoles the chart ships ([`crate::identity`]), so the tests prove least privilege.
//!
//! Agents reach the API at `127.0.0.1:6443` inside their Node: the box listens there (a socket
//! created inside the Node's namespace) and relays to the API server ([`Relay`], also where a
//! Node's link to the API is broken, slowed or cut on purpose), so no address of the machine is
//! exposed to the underlay and nothing is configured in the default namespace.
//!
//! Addressing for Node index `i`: name `node-<i>`, IP `10.10.0.<100+i>`, Pod CIDR
//! `10.244.<i>.0/24`; the external host is `10.10.0.200`. Dropping the box stops the agents,
//! the controller and the API server (by PID) and removes every namespace and directory it made,
//! etcd's data included.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Node as KubeNode, Pod as KubePod, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use ovs_egress_core::api::v1beta1;
use serde_json::json;

use crate::apiserver::{self, ApiServer};
use crate::cni::{self, Pod};
use crate::ext_server::{self, ExtServer};
use crate::identity::{AGENT, CONTROLLER};
use crate::netns::{Netns, unique_token};
use crate::node::Node;
use crate::process::ChildGuard;
use crate::relay::{LinkMode, Relay};
use crate::underlay::Underlay;
use crate::webhook;

/// The external host's address.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 200);
/// Where agents find the API server inside their Node.
const API_IN_NODE: &str = "127.0.0.1:6443";
/// The agents' health, metrics and `/plan` endpoints inside their Node.
pub const AGENT_HEALTH: &str = "127.0.0.1:10350";

/// The underlay IP of Node index `i`.
pub fn node_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 10, 0, 100 + index)
}

/// The Kubernetes name of Node index `i`.
pub fn node_name(index: u8) -> String {
    format!("node-{index}")
}

/// The agent config every Node gets (antrea-agent.conf style).
const AGENT_CONFIG: &str = "featureGates: {Egress: true}\novsBridge: br-int\n\
    ovsDatapathType: netdev\ntrafficEncapMode: encap\ntransportInterface: br-phy\n\
    egressDevice: br-phy\nserviceCIDR: 10.96.0.0/12\n\
    membership: {keySecret: {namespace: kube-system, name: ovs-egress-membership-keys}}\n";

/// Where the box keeps the agents' membership keys (the agent config above points at it; the
/// agent's RBAC rule names it).
pub const MEMBERSHIP_SECRET: (&str, &str) = ("kube-system", "ovs-egress-membership-keys");

/// A fresh random membership key, base64 (one line of the Secret's `keys`).
pub fn random_membership_key() -> Result<String> {
    use base64::Engine;
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

/// Creates or replaces the membership key Secret with `keys` (one base64 key per line).
pub async fn write_membership_keys(client: &kube::Client, keys: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let (namespace, name) = MEMBERSHIP_SECRET;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let object: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"keys": keys},
    }))?;
    if secrets.get_opt(name).await?.is_some() {
        secrets
            .replace(name, &PostParams::default(), &object)
            .await
            .with_context(|| format!("replacing Secret {namespace}/{name}"))?;
    } else {
        secrets
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("creating Secret {namespace}/{name}"))?;
    }
    Ok(())
}

/// One Node: its namespace and OVS, its agent, the relay to the API.
pub struct BoxNode {
    pub name: String,
    agent: Option<ChildGuard>,
    relay: Relay,
    pub node: Node,
    state_dir: PathBuf,
    pub agent_log: PathBuf,
}

impl BoxNode {
    pub fn netns(&self) -> &Netns {
        self.node.netns()
    }

    /// `ovs-ofctl --names dump-flows br-int` on this Node.
    pub fn dump_flows(&self, table: Option<&str>) -> Result<String> {
        let mut args = vec!["--names", "dump-flows", "br-int"];
        let filter = table.map(|t| format!("table={t}"));
        args.extend(filter.as_deref());
        self.node.ovs.ofctl(&args)
    }

    /// `GET <path>` on this Node's agent (health, `/metrics`, `/plan`): status code and body.
    pub fn agent_get(&self, path: &str) -> Result<(u16, String)> {
        let url = format!("http://{AGENT_HEALTH}{path}");
        let out = self.netns().exec(&[
            "curl",
            "-s",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
            &url,
        ])?;
        let (body, code) = out.rsplit_once('\n').context("curl printed no status")?;
        Ok((code.trim().parse()?, body.to_string()))
    }

    /// This Node's agent endpoints on a free port of the box's loopback (for a process outside
    /// the Node, e.g. a Prometheus server).
    pub async fn expose_agent(&self) -> Result<crate::relay::Exposed> {
        crate::relay::Exposed::start(self.netns(), AGENT_HEALTH.parse()?).await
    }

    pub fn agent_logs(&self) -> String {
        std::fs::read_to_string(&self.agent_log).unwrap_or_default()
    }

    /// Whether `ip` is an address of an interface of this Node (`ip -br addr`).
    pub fn has_ip(&self, ip: IpAddr) -> Result<bool> {
        let with_prefix = format!("{ip}/");
        let addresses = self.netns().exec(&["ip", "-br", "addr"])?;
        Ok(addresses
            .split_whitespace()
            .any(|a| a.starts_with(&with_prefix)))
    }

    /// The rules of this Node's `iptables -t nat -S` that SNAT to `ip`.
    pub fn snat_rules_to(&self, ip: IpAddr) -> Result<Vec<String>> {
        let ip = ip.to_string();
        let nat = self.netns().exec(&["iptables", "-t", "nat", "-S"])?;
        Ok(nat
            .lines()
            .filter(|rule| {
                let words: Vec<&str> = rule.split_whitespace().collect();
                words.contains(&"SNAT") && words.windows(2).any(|w| w == ["--to-source", &ip])
            })
            .map(str::to_string)
            .collect())
    }

    /// What [`ClusterBox::create_pod`] hands the plugin on this Node (same IP reservations).
    pub fn cni_netconf(&self) -> serde_json::Value {
        cni::netconf(&self.node, &self.state_dir)
    }

    /// The PID of this Node's agent (`ip netns exec` execs it, so it is the agent itself), or
    /// `None` when it is not running.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(|agent| agent.0.id())
    }
}

impl Drop for BoxNode {
    fn drop(&mut self) {
        if let Some(agent) = &mut self.agent {
            agent.stop(Duration::from_secs(2));
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// A Pod of the box: its API identity, its Node and its sandbox.
#[derive(Clone)]
pub struct BoxPod {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub netns: Netns,
    container_id: String,
    cni_args: String,
}

/// The running cluster. Field order = drop order: agents before OVS and namespaces, the API
/// server last.
pub struct ClusterBox {
    pods: Vec<BoxPod>,
    pub nodes: Vec<BoxNode>,
    pub server: ExtServer,
    controller: ChildGuard,
    /// The controller's health and metrics address (on the box's loopback).
    pub controller_health: SocketAddr,
    underlay: Underlay,
    /// A client with the admin's credentials.
    pub client: kube::Client,
    api: ApiServer,
    pub dir: PathBuf,
    keep_logs: bool,
}

impl ClusterBox {
    /// Brings up the API server with the CRDs and the identities, the controller, Nodes
    /// `node-<i>` for each index (each with OVS and an agent) and the external host; returns
    /// once every agent is ready.
    pub async fn start(indices: &[u8]) -> Result<ClusterBox> {
        Self::start_with_api_args(indices, &[]).await
    }

    /// [`Self::start`] with extra kube-apiserver flags (see [`ApiServer::start_with`]).
    pub async fn start_with_api_args(indices: &[u8], api_args: &[&str]) -> Result<ClusterBox> {
        let started = Instant::now();
        let dir = std::env::temp_dir().join(format!("{}-box", unique_token()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // From here on a failure drops what was started: the server stops and `dir` goes.
        let dir_guard = RemoveDir(dir.clone());
        let api = ApiServer::start_with(&dir, apiserver::READY_TIMEOUT, api_args)?;
        let client = api.client().await?;
        apiserver::apply_crds_and_wait(&client).await?;
        for identity in [AGENT, CONTROLLER] {
            identity.install(&client).await?;
        }
        ensure_default_service_account(&client, "default").await?;
        write_membership_keys(&client, &format!("{}\n", random_membership_key()?)).await?;
        let underlay = Underlay::new()?;
        let server = ExtServer::start(&underlay, SERVER_IP)?;
        let controller_kubeconfig = dir.join("kubeconfig-controller");
        let url = format!("https://{}", api.authority());
        CONTROLLER
            .write_kubeconfig(&client, &controller_kubeconfig, &url, &api.ca_pem()?)
            .await?;
        let (controller, controller_health) =
            start_controller(&dir, &controller_kubeconfig, &client).await?;
        std::mem::forget(dir_guard);
        let mut cluster = ClusterBox {
            pods: Vec::new(),
            nodes: Vec::new(),
            server,
            controller,
            controller_health,
            underlay,
            client,
            api,
            dir,
            keep_logs: false,
        };
        for &index in indices {
            let node = cluster.add_node(index).await?;
            cluster.nodes.push(node);
        }
        cluster.warm_tunnels()?;
        for node in &cluster.nodes {
            cluster.wait_agent_ready(node).await?;
        }
        crate::process::note(format_args!(
            "cluster-in-a-box: {} Node(s) ready in {:.1} s",
            cluster.nodes.len(),
            started.elapsed().as_secs_f64()
        ));
        Ok(cluster)
    }

    /// The admin's kubeconfig of the API server (for kubectl and clients).
    pub fn kubeconfig(&self) -> &Path {
        &self.api.kubeconfig
    }

    /// The API server, to stop, freeze or compact it.
    pub fn api_server(&mut self) -> Result<&mut ApiServer> {
        Ok(&mut self.api)
    }

    /// Breaks, slows or restores the link between `node` and the API server (its relay).
    pub fn set_link(&self, node: &str, mode: LinkMode) -> Result<()> {
        self.node(node)?.relay.set_mode(mode);
        Ok(())
    }

    /// Closes every open connection between `node` and the API server (its agent's watch
    /// streams end); new connections go through at once.
    pub fn cut_link(&self, node: &str) -> Result<()> {
        self.node(node)?.relay.cut();
        Ok(())
    }

    async fn add_node(&self, index: u8) -> Result<BoxNode> {
        let name = node_name(index);
        let node = Node::start_at(&self.underlay, index, node_ip(index))?;
        let nodes: Api<KubeNode> = Api::all(self.client.clone());
        let object = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
            "spec": {"podCIDR": node.pod_cidr(), "podCIDRs": [node.pod_cidr()]},
        }))?;
        nodes.create(&PostParams::default(), &object).await?;
        let status = json!({"status": {
            "addresses": [
                {"type": "InternalIP", "address": node.ip().to_string()},
                {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0 (cluster-in-a-box)", "osImage": "netns",
                "architecture": "amd64", "operatingSystem": "linux", "bootID": "",
                "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "",
                "machineID": "", "systemUUID": ""}}});
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("setting the addresses of Node {name}"))?;

        let relay = Relay::start(node.netns(), API_IN_NODE, self.api.authority().to_string())?;
        let kubeconfig = self.dir.join(format!("kubeconfig-{name}"));
        let in_node = format!("https://{API_IN_NODE}");
        AGENT
            .write_kubeconfig(&self.client, &kubeconfig, &in_node, &self.api.ca_pem()?)
            .await?;
        let config = self.dir.join(format!("agent-{name}.conf"));
        std::fs::write(&config, AGENT_CONFIG)?;
        let agent_log = self.dir.join(format!("agent-{name}.log"));
        let state_dir = self.dir.join(format!("cni-{name}"));
        let mut box_node = BoxNode {
            name,
            agent: None,
            relay,
            node,
            state_dir,
            agent_log,
        };
        box_node.agent = Some(spawn_agent(&box_node, &kubeconfig, &config)?);
        Ok(box_node)
    }

    /// OVS learns the tunnel neighbours (other Nodes' MACs) by snooping ARP replies
    /// (its first packet to a new tunnel destination is dropped while it ARPs): one answered ping between every pair of Nodes (`-w 10`: on a
    /// busy machine the first echo may go unanswered while the Nodes' OVS is still settling).
    fn warm_tunnels(&self) -> Result<()> {
        for a in &self.nodes {
            for b in self.nodes.iter().filter(|b| b.name != a.name) {
                a.netns()
                    .exec(&["ping", "-c", "1", "-w", "10", &b.node.ip().to_string()])?;
            }
        }
        Ok(())
    }

    async fn wait_agent_ready(&self, node: &BoxNode) -> Result<()> {
        let url = format!("http://{AGENT_HEALTH}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let probe = node.netns().exec(&["curl", "-sf", "--max-time", "1", &url]);
            if probe.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "the agent of {} is not ready after 60 s; its log:\n{}",
            node.name,
            node.agent_logs()
        )
    }

    pub fn node(&self, name: &str) -> Result<&BoxNode> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no Node {name} in the box"))
    }

    /// Runs `kubectl` against the box with `args`; returns its output whatever the exit code.
    pub fn kubectl(&self, args: &[&str]) -> Result<Output> {
        self.kubectl_stdin(args, None)
    }

    /// `kubectl` with `input` on stdin (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: Option<&str>) -> Result<Output> {
        use std::io::Write;
        let mut command = Command::new(crate::bins::go_tool("kubectl")?);
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("starting kubectl")?;
        if let Some(text) = input {
            child
                .stdin
                .take()
                .context("kubectl stdin")?
                .write_all(text.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// `kubectl <args>` with `input` on stdin; its stdout, or an error with its stderr.
    pub fn kubectl_ok(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        let out = self.kubectl_stdin(args, input)?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl apply -f -` of `manifest`; kubectl's report, or an error with its stderr.
    pub fn apply(&self, manifest: &str) -> Result<String> {
        self.kubectl_ok(&["apply", "-f", "-"], Some(manifest))
    }

    /// The Egress `name` as the API has it.
    pub async fn egress(&self, name: &str) -> Result<v1beta1::Egress> {
        let api: Api<v1beta1::Egress> = Api::all(self.client.clone());
        api.get(name)
            .await
            .with_context(|| format!("reading Egress {name}"))
    }

    /// Polls `check` every `every` until it succeeds; after `timeout` panics with its last
    /// error and the box's logs.
    pub async fn poll_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut check: impl AsyncFnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            match check().await {
                Ok(value) => return value,
                Err(last) if Instant::now() > deadline => {
                    panic!(
                        "{what}: not after {timeout:?}; last: {last}\n{}",
                        self.logs()
                    )
                }
                Err(_) => tokio::time::sleep(every).await,
            }
        }
    }

    /// Polls Egress `name` until `done` holds for it, at most `timeout`; the error shows the
    /// last object seen.
    pub async fn wait_egress(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&v1beta1::Egress) -> bool,
    ) -> Result<v1beta1::Egress> {
        let api: Api<v1beta1::Egress> = Api::all(self.client.clone());
        let deadline = Instant::now() + timeout;
        loop {
            let egress = api.get_opt(name).await?;
            match egress {
                Some(e) if done(&e) => return Ok(e),
                _ if Instant::now() > deadline => {
                    bail!("Egress {name} not as expected after {timeout:?}; last: {egress:#?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Creates Namespace `name` (with its `kubernetes.io/metadata.name` label) unless it
    /// exists, with its `default` ServiceAccount.
    pub async fn ensure_namespace(&self, name: &str, labels: &[(&str, &str)]) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        if namespaces.get_opt(name).await?.is_none() {
            let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
            let object =
                serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))?;
            namespaces.create(&PostParams::default(), &object).await?;
        }
        ensure_default_service_account(&self.client, name).await
    }

    /// Creates Pod `namespace/name` on `node` as the kubelet would: the Pod object, the sandbox
    /// through the CNI plugin in the Node, then the Pod's status with its IP.
    pub async fn create_pod(
        &mut self,
        namespace: &str,
        name: &str,
        node: &str,
        labels: &[(&str, &str)],
    ) -> Result<BoxPod> {
        let (pod, ()) = self
            .create_pod_running(namespace, name, node, labels, |_| ())
            .await?;
        Ok(pod)
    }

    /// Deletes a Pod as the kubelet would: CNI DEL, then the Pod object.
    pub async fn delete_pod(&mut self, pod: &BoxPod) -> Result<()> {
        let box_node = self.node(&pod.node)?;
        let sandbox = Pod {
            ns: pod.netns.clone(),
            container_id: pod.container_id.clone(),
            cni_args: pod.cni_args.clone(),
        };
        let conf = box_node.cni_netconf();
        let (ok, out) = cni::call(box_node.netns(), "DEL", &sandbox, &conf)?;
        if !ok {
            bail!("CNI DEL of {}/{} failed: {out}", pod.namespace, pod.name);
        }
        // The kubelet's final delete: grace period 0 (the Pod is gone at once).
        let pods: Api<KubePod> = Api::namespaced(self.client.clone(), &pod.namespace);
        pods.delete(&pod.name, &DeleteParams::default().grace_period(0))
            .await?;
        self.pods
            .retain(|p| (&p.namespace, &p.name) != (&pod.namespace, &pod.name));
        Ok(())
    }

    /// One connection from `pod` to the external host: the source address it saw.
    pub fn source_of(&self, pod: &BoxPod, timeout: Duration) -> Result<IpAddr> {
        ext_server::fetch(&pod.netns, self.server.address(), 0, timeout)
            .map(|(source, _)| source)
            .with_context(|| {
                format!(
                    "Pod {}/{} calling the external host",
                    pod.namespace, pod.name
                )
            })
    }

    /// Polls [`Self::source_of`] until it is `want` (connection errors count as "not yet");
    /// returns the last source seen on timeout.
    pub async fn wait_source(
        &self,
        pod: &BoxPod,
        want: IpAddr,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            match self.source_of(pod, Duration::from_millis(500)) {
                Ok(source) if source == want => return Ok(()),
                Ok(source) => last = source.to_string(),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "Pod {}/{} not seen with {want} after {timeout:?}; last: {last}",
            pod.namespace, pod.name
        ))
    }

    /// Keep the logs directory when the box is dropped (it is also kept when dropped while
    /// panicking).
    pub fn keep_logs(&mut self) {
        self.keep_logs = true;
    }

    /// The controller's log.
    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("controller.log")).unwrap_or_default()
    }

    /// Every process log of the box, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut out = format!("--- controller ---\n{}", self.controller_log());
        for node in &self.nodes {
            out.push_str(&format!(
                "--- agent {} ---\n{}",
                node.name,
                node.agent_logs()
            ));
        }
        out
    }

    /// Creates a Pod as the kubelet would (Pod object, CNI ADD, Pod status), with the Pod's
    /// application started the way the kubelet starts it:
    /// `app` runs in the Pod's namespace as soon as CNI ADD returns, before the Pod's status
    /// reaches the API server. Returns the Pod and what `app` returned.
    pub async fn create_pod_running<T>(
        &mut self,
        namespace: &str,
        name: &str,
        node: &str,
        labels: &[(&str, &str)],
        app: impl FnOnce(&Netns) -> T,
    ) -> Result<(BoxPod, T)> {
        let box_node = self.node(node)?;
        let pods: Api<KubePod> = Api::namespaced(self.client.clone(), namespace);
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let object = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}]},
        }))?;
        pods.create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("creating Pod {namespace}/{name}"))?;
        let sandbox = Pod::in_namespace(namespace, name)?;
        let conf = box_node.cni_netconf();
        let added = cni::add(box_node.netns(), &sandbox, &conf)?;
        let host_ip = box_node.node.ip().to_string();
        let pod = BoxPod {
            namespace: namespace.to_string(),
            name: name.to_string(),
            node: node.to_string(),
            ip: added.ip,
            netns: sandbox.ns.clone(),
            container_id: sandbox.container_id,
            cni_args: sandbox.cni_args,
        };
        self.pods.push(pod.clone());
        let output = app(&pod.netns);
        let status = json!({"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "ready": true, "started": true,
                "restartCount": 0, "image": "busybox", "imageID": "",
                "state": {"running": {}}}],
            "hostIP": host_ip,
            "podIP": added.ip.to_string(),
            "podIPs": [{"ip": added.ip.to_string()}],
        }});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("setting the status of Pod {namespace}/{name}"))?;
        Ok((pod, output))
    }

    /// Kills the agent of `node` (SIGKILL: a crash, so it does no clean-up; on SIGTERM an agent
    /// hands its egress IPs over first) and starts a new one with the same flags, without
    /// waiting for it to be ready (the API may be failing on purpose: see
    /// [`Self::wait_agent_ready_of`]). The previous log is kept as `agent-<node>.log.<n>`; the
    /// new agent logs to the usual file. OVS, iptables, addresses and Pods of the Node are left
    /// as the old process left them.
    pub fn respawn_agent(&mut self, node: &str) -> Result<()> {
        let dir = self.dir.clone();
        let box_node = self
            .nodes
            .iter_mut()
            .find(|n| n.name == node)
            .with_context(|| format!("no Node {node} in the box"))?;
        if let Some(mut agent) = box_node.agent.take() {
            agent.stop(Duration::ZERO);
        }
        let kept = (1..)
            .map(|n| dir.join(format!("agent-{node}.log.{n}")))
            .find(|path| !path.exists())
            .context("a free name for the previous agent log")?;
        std::fs::rename(&box_node.agent_log, &kept)
            .with_context(|| format!("keeping the log of the agent of {node}"))?;
        let kubeconfig = dir.join(format!("kubeconfig-{node}"));
        let config = dir.join(format!("agent-{node}.conf"));
        box_node.agent = Some(spawn_agent(box_node, &kubeconfig, &config)?);
        Ok(())
    }

    /// Waits (up to 60 s) until the agent of `node` answers `/readyz`.
    pub async fn wait_agent_ready_of(&self, node: &str) -> Result<()> {
        self.wait_agent_ready(self.node(node)?).await
    }

    /// [`Self::respawn_agent`], then waits until the new agent is ready.
    pub async fn restart_agent(&mut self, node: &str) -> Result<()> {
        self.respawn_agent(node)?;
        self.wait_agent_ready_of(node).await
    }

    /// The PID of the controller process.
    pub fn controller_pid(&self) -> u32 {
        self.controller.0.id()
    }
}

impl Drop for ClusterBox {
    fn drop(&mut self) {
        self.controller.stop(Duration::from_secs(2));
        self.nodes.clear();
        self.pods.clear();
        self.api.stop();
        // etcd's data and the certificates go even when the logs are kept.
        let _ = std::fs::remove_dir_all(self.api.state_dir());
        if self.keep_logs || std::thread::panicking() {
            crate::process::note(format_args!(
                "cluster-in-a-box logs kept in {}",
                self.dir.display()
            ));
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Starts the controller with its validating webhook and registers the webhook with the API
/// server once it listens (with failurePolicy Fail every write would fail before); returns it
/// with its health and metrics address.
async fn start_controller(
    dir: &Path,
    kubeconfig: &Path,
    client: &kube::Client,
) -> Result<(ChildGuard, SocketAddr)> {
    let log = dir.join("controller.log");
    let health = free_port()?;
    let webhook_addr = free_port()?;
    let tls = webhook::write_tls(dir, webhook_addr.ip())?;
    let child = Command::new(crate::bins::binary("ovs-egress")?)
        .args(["controller", "--kubeconfig"])
        .arg(kubeconfig)
        .args([
            "--identity",
            "controller-0",
            "--health-listen",
            &health.to_string(),
        ])
        .args([
            "--lease-duration-seconds",
            "2",
            "--lease-renew-seconds",
            "0.4",
        ])
        .args([
            "--webhook-listen",
            &webhook_addr.to_string(),
            "--tls-cert-file",
        ])
        .arg(&tls.cert_file)
        .arg("--tls-key-file")
        .arg(&tls.key_file)
        .env("RUST_LOG", "info,ovs_egress=debug")
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting ovs-egress controller")?;
    let controller = ChildGuard(child);
    controller.write_pid_file(&dir.join("controller.pid"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(webhook_addr).await.is_err() {
        if Instant::now() > deadline {
            bail!(
                "the controller's webhook does not listen on {webhook_addr} after 30 s; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let configuration = serde_json::from_value(webhook::configuration(webhook_addr, &tls.ca_pem))?;
    configurations
        .create(&PostParams::default(), &configuration)
        .await
        .context("registering the controller's validating webhook")?;
    Ok((controller, health))
}

fn spawn_agent(node: &BoxNode, kubeconfig: &Path, config: &Path) -> Result<ChildGuard> {
    let child = node
        .netns()
        .command(
            crate::bins::binary("ovs-egress")?
                .to_str()
                .context("binary path")?,
        )
        .args(["agent", "--node-name", &node.name, "--kubeconfig"])
        .arg(kubeconfig)
        .arg("--config")
        .arg(config)
        .arg("--ovs-rundir")
        .arg(node.node.ovs.rundir())
        .args(["--health-listen", AGENT_HEALTH])
        .env("RUST_LOG", "info,ovs_egress=debug")
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&node.agent_log)?)
        .spawn()
        .with_context(|| format!("starting the agent of {}", node.name))?;
    Ok(ChildGuard(child))
}

/// A free TCP port on loopback (bound and released).
fn free_port() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The `default` ServiceAccount of `namespace`, which kube-controller-manager would create
/// (the API server's ServiceAccount admission wants it for every Pod).
async fn ensure_default_service_account(client: &kube::Client, namespace: &str) -> Result<()> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    if accounts.get_opt("default").await?.is_none() {
        let account = serde_json::from_value(json!({"metadata": {"name": "default"}}))?;
        accounts
            .create(&PostParams::default(), &account)
            .await
            .with_context(|| format!("creating ServiceAccount {namespace}/default"))?;
    }
    Ok(())
}

/// Removes a directory when dropped (a box that fails to start leaves nothing behind).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
