//! Test bed for the agent tests: a network namespace of our own that the test thread enters
//! (so the API server, the agents it spawns and its own client all live there, and an egress IP
//! added to its `lo` is a real local IP seen over netlink), the real API server with the CRDs
//! (the controller tests' `Cluster`), `ovs-egress agent` processes stopped by PID on drop, and
//! object builders.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use ovs_egress_core::api::{EgressCondition, EgressStatus, v1beta1};
use ovs_egress_integration::Netns;
use serde_json::json;

use crate::ctl::{self, Cluster, Process, eventually, free_port, http};

/// Move the calling thread (the test's runtime thread) into `ns`; processes it spawns from now
/// on start there too.
pub fn enter(ns: &Netns) {
    let file = std::fs::File::open(format!("/var/run/netns/{}", ns.name()))
        .expect("opening the test namespace");
    // SAFETY: setns on a valid fd only changes this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {}: {}",
        ns.name(),
        std::io::Error::last_os_error()
    );
}

/// A namespace entered by the test thread, with the API server running inside.
pub struct Bed {
    pub cluster: Cluster,
    pub ns: Netns,
}

impl Bed {
    pub async fn start() -> Self {
        // Build before entering the namespace (cargo needs nothing from the network, but keep
        // the build out of it anyway).
        ctl::cargo_bin("ovs-egress");
        let ns = Netns::new("agent").expect("creating the test namespace");
        enter(&ns);
        let cluster = Cluster::start().await;
        Self { cluster, ns }
    }

    /// Configure `ip` as a /32 on `lo` of the test namespace (the agents' Node IPs).
    pub fn add_ip(&self, ip: &str) {
        self.ns
            .exec(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .expect("adding an address");
    }

    pub fn agent(&self, node: &str, config: Option<&str>) -> Agent {
        agent(&self.cluster.kubeconfig, &self.cluster.dir.0, node, config)
    }

    pub fn client(&self) -> kube::Client {
        self.cluster.client.clone()
    }

    /// Create a cluster-scoped object.
    pub async fn create<K>(&self, object: K) -> K
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + k8s_openapi::serde::Serialize
            + k8s_openapi::serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client());
        api.create(&PostParams::default(), &object)
            .await
            .expect("creating an object")
    }

    /// Create a Pod as the kubelet would: the object, then its status (a create drops it),
    /// with the Namespace's `default` ServiceAccount the API server's admission wants.
    pub async fn create_pod(&self, pod: Pod) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), &namespace);
        if accounts.get_opt("default").await.unwrap().is_none() {
            let account = serde_json::from_value(json!({"metadata": {"name": "default"}}));
            accounts
                .create(&PostParams::default(), &account.unwrap())
                .await
                .expect("creating the default ServiceAccount");
        }
        let pods: Api<Pod> = Api::namespaced(self.client(), &namespace);
        let name = pod.metadata.name.clone().unwrap_or_default();
        let status = json!({"status": pod.status.clone()});
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("creating a Pod");
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("setting a Pod's status");
    }

    pub fn egresses(&self) -> Api<v1beta1::Egress> {
        self.cluster.egresses()
    }

    pub async fn status(&self, egress: &str) -> EgressStatus {
        let egress = self
            .egresses()
            .get(egress)
            .await
            .expect("reading an Egress");
        egress.status.unwrap_or_default()
    }

    /// Wait until `check` accepts the Egress's status; returns it.
    pub async fn wait_status(
        &self,
        egress: &str,
        what: &str,
        check: impl Fn(&EgressStatus) -> bool,
    ) -> EgressStatus {
        eventually(&format!("Egress {egress}: {what}"), 20.0, || async {
            // Errors (e.g. injected faults) count as "not yet".
            let status = self.egresses().get(egress).await.ok()?.status?;
            check(&status).then_some(status)
        })
        .await
    }

    /// Notes of the events.k8s.io/v1 Events with `reason` about Egress `egress`.
    pub async fn event_notes(&self, reason: &str, egress: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client(), "default");
        let list = events
            .list(&ListParams::default())
            .await
            .expect("listing events");
        list.items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(egress))
            .filter(|e| e.reporting_controller.as_deref() == Some("ovs-egress-agent"))
            .filter(|e| e.action.as_deref() == Some("NodeAssignment"))
            .filter_map(|e| e.note)
            .collect()
    }
}

/// Start `ovs-egress agent` for `node` against `kubeconfig`, logging into `dir`, in
/// status-only mode (no OVS in this test bed: it reports IPAssigned=False).
pub fn agent(
    kubeconfig: &std::path::Path,
    dir: &std::path::Path,
    node: &str,
    config: Option<&str>,
) -> Agent {
    agent_with(kubeconfig, dir, node, config, &["--no-datapath"])
}

/// Start `ovs-egress agent` with `args` added (e.g. `--ovs-rundir`).
pub fn agent_with(
    kubeconfig: &std::path::Path,
    dir: &std::path::Path,
    node: &str,
    config: Option<&str>,
    args: &[&str],
) -> Agent {
    let health = free_port();
    let log = dir.join(format!("agent-{node}.log"));
    let mut command = Command::new(ctl::cargo_bin("ovs-egress"));
    command
        .args(["agent", "--node-name", node, "--kubeconfig"])
        .arg(kubeconfig)
        .args(["--health-listen", &health.to_string()])
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info,ovs_egress=debug")
        .stderr(std::fs::File::create(&log).expect("creating the agent log"));
    if let Some(text) = config {
        let path = dir.join(format!("agent-{node}.conf"));
        std::fs::write(&path, text).expect("writing the agent config");
        command.arg("--config").arg(path);
    }
    Agent {
        _process: Process(command.spawn().expect("starting ovs-egress agent")),
        health,
        log,
    }
}

pub struct Agent {
    _process: Process,
    pub health: SocketAddr,
    pub log: PathBuf,
}

impl Agent {
    /// The HTTP status of `path` on the health port, `None` when nothing answers.
    pub async fn probe(&self, path: &str) -> Option<u16> {
        let stream = tokio::net::TcpStream::connect(self.health).await.ok()?;
        http(stream, "GET", path, "")
            .await
            .ok()
            .map(|(status, _)| status)
    }

    pub async fn wait_ready(&self) {
        eventually("the agent is ready", 30.0, || async {
            (self.probe("/readyz").await == Some(200)).then_some(())
        })
        .await;
    }

    /// The log, without ANSI colour codes.
    pub fn logs(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// How many times this agent wrote the status of `egress`.
    pub fn status_writes(&self, egress: &str) -> usize {
        let needle = format!("egress=\"{egress}\"");
        let plain = format!("egress={egress} ");
        self.logs()
            .lines()
            .filter(|l| l.contains("status updated"))
            .filter(|l| l.contains(&needle) || l.contains(&plain))
            .count()
    }
}

pub fn node(name: &str, ip: &str, labels: &[(&str, &str)]) -> Node {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
    }))
    .unwrap()
}

pub fn namespace(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

pub fn pod(namespace: &str, name: &str, node: &str, ip: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"namespace": namespace, "name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    }))
    .unwrap()
}

/// An Egress selecting `app=web` Pods with `spec.egressIP = ip` and, if given, a pool.
pub fn egress(name: &str, ip: &str, pool: Option<&str>) -> v1beta1::Egress {
    let mut egress = ctl::egress(name, pool.unwrap_or(""), Some(ip));
    egress.spec.external_ip_pool = pool.map(str::to_string);
    egress
}

/// An ExternalIPPool whose nodeSelector matches `labels`.
pub fn pool(
    name: &str,
    start: &str,
    end: &str,
    labels: &[(&str, &str)],
) -> v1beta1::ExternalIPPool {
    let mut pool = ctl::pool(name, &[(start, end)]);
    pool.spec.node_selector.match_labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    pool
}

pub fn ip_assigned(status: &EgressStatus) -> Option<&EgressCondition> {
    status.conditions.iter().find(|c| c.type_ == "IPAssigned")
}

impl Bed {
    /// Make the API server answer every Egress status write with 500 for `seconds`: a
    /// validating webhook on `egresses/status` that nothing serves, with failurePolicy Fail
    /// (the server answers "failed calling webhook", 500), removed after `seconds`.
    pub async fn fail_status_writes(&self, seconds: u64) {
        let hooks: Api<ValidatingWebhookConfiguration> = Api::all(self.client());
        let nobody = free_port();
        let hook = serde_json::from_value(json!({
            "metadata": {"name": "fail-status-writes"},
            "webhooks": [{
                "name": "fail-status-writes.ovs-egress.test",
                "clientConfig": {"url": format!("https://{nobody}/nobody")},
                "rules": [{"apiGroups": ["crd.antrea.io"], "apiVersions": ["*"],
                    "resources": ["egresses/status"], "operations": ["UPDATE"]}],
                "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "timeoutSeconds": 1,
            }],
        }))
        .unwrap();
        hooks
            .create(&PostParams::default(), &hook)
            .await
            .expect("registering the failing webhook");
        let client = self.client();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let hooks: Api<ValidatingWebhookConfiguration> = Api::all(client);
            hooks
                .delete("fail-status-writes", &DeleteParams::default())
                .await
                .expect("removing the failing webhook");
        });
    }
}
