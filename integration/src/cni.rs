//! Invoking the CNI plugin binary exactly as the kubelet's container runtime does: `CNI_*`
//! variables, the network configuration on stdin, inside the Node's namespace. Shared by every
//! test that needs real Pods; the plugin's own behaviour is tested in `tests/cni.rs`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::Netns;

/// The `ovs-egress` binary of this build profile, built once per test process (cargo does not
/// build another package's binary for this crate's tests).
pub fn plugin_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/ovs-egress
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-q", "-p", "ovs-egress", "--bin", "ovs-egress"]);
        // The CARGO_* variables cargo sets for this test process would change the nested
        // build's fingerprints and force a rebuild of every dependency.
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("CARGO_")) {
            build.env_remove(key);
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build for the plugin");
        assert!(status.success(), "cargo build -p ovs-egress failed");
        let bin = profile_dir.join("ovs-egress");
        assert!(bin.exists(), "{} missing after cargo build", bin.display());
        bin
    })
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
        let ns = Netns::new(name)?;
        Ok(Pod {
            container_id: format!("c0ffee{}", ns.name().replace('-', "")),
            cni_args: format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}"),
            ns,
        })
    }

    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.ns.name())
    }
}

/// Runs the plugin in `node` with `env` and `stdin`; returns exit success and the parsed
/// stdout (Null when empty).
pub fn run_plugin(node: &Netns, env: &[(&str, &str)], stdin: &[u8]) -> Result<(bool, Value)> {
    let mut cmd = node.command(plugin_binary().to_str().context("binary path")?);
    cmd.arg("cni")
        .envs(env.iter().copied())
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting the plugin")?;
    child.stdin.take().context("stdin")?.write_all(stdin)?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8(out.stdout)?;
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("plugin stdout {text:?}"))?
    };
    Ok((out.status.success(), value))
}

/// CNI `command` (ADD, DEL, CHECK) for `pod` with interface `eth0`.
pub fn call(node: &Netns, command: &str, pod: &Pod, conf: &Value) -> Result<(bool, Value)> {
    let netns = pod.netns_path();
    let env = [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", pod.container_id.as_str()),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", pod.cni_args.as_str()),
    ];
    run_plugin(node, &env, conf.to_string().as_bytes())
}
