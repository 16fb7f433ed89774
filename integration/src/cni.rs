//! Invoking the CNI plugin binary exactly as the kubelet's container runtime does: `CNI_*`
//! variables, the network configuration on stdin, inside the Node's namespace. Shared by every
//! test that needs real Pods; the plugin's own behaviour is tested in `tests/cni.rs`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;

use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::Netns;
use crate::node::Node;

/// The `ovs-egress` binary of this build profile (see [`crate::bins`]).
pub fn plugin_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| crate::bins::binary("ovs-egress-cni").expect("the ovs-egress-cni binary"))
}

/// A Pod sandbox: its network namespace and the identity the runtime passes to the plugin.
pub struct Pod {
    pub ns: Netns,
    pub container_id: String,
    pub cni_args: String,
}

impl Pod {
    /// A new namespace for Pod `default/<name>`.
    pub fn new(name: &str) -> Result<Pod> {
        Pod::in_namespace("default", name)
    }

    /// A new namespace for Pod `<namespace>/<name>`.
    pub fn in_namespace(namespace: &str, name: &str) -> Result<Pod> {
        let ns = Netns::new(name)?;
        Ok(Pod {
            container_id: format!("c0ffee{}", ns.name().replace('-', "")),
            cni_args: format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}"),
            ns,
        })
    }

    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.ns.name())
    }
}

/// Starts the plugin in `node` with `env` and `stdin` written; stdout and stderr are piped.
pub fn spawn_plugin(node: &Netns, env: &[(&str, &str)], stdin: &[u8]) -> Result<Child> {
    let mut cmd = node.command(plugin_binary().to_str().context("binary path")?);
    cmd.envs(env.iter().copied())
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting the plugin")?;
    child.stdin.take().context("stdin")?.write_all(stdin)?;
    Ok(child)
}

/// Waits for a plugin started by [`spawn_plugin`]: exit success, the parsed stdout (Null when
/// empty) and stderr (where the plugin logs).
pub fn finish_plugin(child: Child) -> Result<(bool, Value, String)> {
    let out = child.wait_with_output()?;
    let text = String::from_utf8(out.stdout)?;
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("plugin stdout {text:?}"))?
    };
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Ok((out.status.success(), value, stderr))
}

/// Runs the plugin in `node` with `env` and `stdin`; returns exit success and the parsed
/// stdout (Null when empty).
pub fn run_plugin(node: &Netns, env: &[(&str, &str)], stdin: &[u8]) -> Result<(bool, Value)> {
    let (ok, value, _) = finish_plugin(spawn_plugin(node, env, stdin)?)?;
    Ok((ok, value))
}

/// Starts CNI `command` (ADD, DEL, CHECK) for `pod` with interface `eth0`.
pub fn spawn_call(node: &Netns, command: &str, pod: &Pod, conf: &Value) -> Result<Child> {
    let netns = pod.netns_path();
    let env = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", pod.container_id.as_str()),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", pod.cni_args.as_str()),
    ];
    spawn_plugin(node, &env, conf.to_string().as_bytes())
}

/// CNI `command` (ADD, DEL, CHECK) for `pod` with interface `eth0`.
pub fn call(node: &Netns, command: &str, pod: &Pod, conf: &Value) -> Result<(bool, Value)> {
    let (ok, value, _) = finish_plugin(spawn_call(node, command, pod, conf)?)?;
    Ok((ok, value))
}

/// How long ADD waits for the agent's (or the datapath runtime's) acknowledgement of a Pod's
/// flows on a test-bed Node: generous, so a slow machine never starts a Pod early; a harness
/// that never acknowledges costs this much per Pod (and the plugin says so on stderr).
pub const FLOWS_READY_TIMEOUT_MS: u64 = 10_000;

/// The network configuration the runtime hands the plugin on a test-bed Node (netdev
/// datapath, MTU 1450 for Geneve, host-local state in `state_dir`, ADD waiting up to
/// [`FLOWS_READY_TIMEOUT_MS`] for the Pod's flows).
pub fn netconf(node: &Node, state_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "oe-datapath",
        "type": "ovs-egress",
        "podCIDR": node.pod_cidr(),
        "mtu": 1450,
        "ovsBridge": "br-int",
        "ovsDbSocket": node.ovs.db_socket(),
        "datapathType": "netdev",
        "stateDir": state_dir,
        "flowsReadyTimeoutMs": FLOWS_READY_TIMEOUT_MS,
    })
}

/// What a successful ADD reports about the Pod.
#[derive(Clone, Debug)]
pub struct Added {
    pub ip: Ipv4Addr,
    /// The MAC of the Pod's `eth0`.
    pub mac: String,
    /// The host end of its veth (the OVS port).
    pub host_if: String,
}

/// CNI ADD of `pod` on `node` with `conf`; fails with the plugin's output when it fails.
pub fn add(node: &Netns, pod: &Pod, conf: &Value) -> Result<Added> {
    let (ok, out) = call(node, "ADD", pod, conf)?;
    if !ok {
        bail!("CNI ADD of {} failed: {out}", pod.ns.name());
    }
    let ip = out["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no IP in CNI result {out}"))?;
    let interfaces = out["interfaces"].as_array();
    let mac = interfaces
        .and_then(|ifs| ifs.iter().find(|i| i["sandbox"].is_string()))
        .and_then(|i| i["mac"].as_str())
        .with_context(|| format!("no sandbox interface MAC in CNI result {out}"))?
        .to_string();
    let host_if = interfaces
        .and_then(|ifs| ifs.iter().find(|i| i.get("sandbox").is_none()))
        .and_then(|i| i["name"].as_str())
        .with_context(|| format!("no host interface in CNI result {out}"))?
        .to_string();
    Ok(Added { ip, mac, host_if })
}
