//! Attaching the host end of a Pod's veth to the OVS bridge, with the Interface `external_ids`
//! the agent reads to learn local Pods:
//!
//! | key | value |
//! |---|---|
//! | `container-id` | `CNI_CONTAINERID` |
//! | `k8s-pod-name` | `K8S_POD_NAME` from `CNI_ARGS` (empty if absent) |
//! | `k8s-pod-namespace` | `K8S_POD_NAMESPACE` from `CNI_ARGS` (empty if absent) |
//! | `ip` | the Pod's address, without prefix length |
//! | `mac` | the MAC of the container interface |
//!
//! INTERIM: this talks to OVSDB through `ovs-vsctl --db=unix:<socket>` (argv, no shell) until the
//! crate's OVSDB client (`src/ovs/`) lands; only the two functions below need to change then.
//! `ovs-vsctl` without `--no-wait` returns once ovs-vswitchd has applied the change.

use std::path::Path;
use std::process::Command;

use super::error::{CniError, Code};

/// The `external_ids` keys written on a Pod's Interface row.
pub mod keys {
    pub const CONTAINER_ID: &str = "container-id";
    pub const POD_NAME: &str = "k8s-pod-name";
    pub const POD_NAMESPACE: &str = "k8s-pod-namespace";
    pub const IP: &str = "ip";
    pub const MAC: &str = "mac";
}

fn vsctl(db: &Path, what: &str, args: &[String]) -> Result<(), CniError> {
    if !db.exists() {
        return Err(CniError::new(
            Code::TryAgainLater,
            format!(
                "{what}: OVSDB socket {} does not exist (is OVS running?)",
                db.display()
            ),
        ));
    }
    let out = Command::new("ovs-vsctl")
        .arg(format!("--db=unix:{}", db.display()))
        .arg("--timeout=10")
        .args(args)
        .output()
        .map_err(|e| CniError::host(format!("{what} (ovs-vsctl)"), e))?;
    if !out.status.success() {
        return Err(CniError::host(
            format!("{what} (ovs-vsctl)"),
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(())
}

/// An OVSDB string atom in ovs-vsctl syntax (JSON-style quoting).
fn quoted(value: &str) -> String {
    serde_json::Value::String(value.to_string()).to_string()
}

/// Add `port` to `bridge` with `external_ids` on its Interface row.
pub fn attach(db: &Path, bridge: &str, port: &str, ids: &[(&str, &str)]) -> Result<(), CniError> {
    let mut args = vec![
        "--".into(),
        "--may-exist".into(),
        "add-port".into(),
        bridge.into(),
        port.into(),
        "--".into(),
        "set".into(),
        "Interface".into(),
        port.into(),
    ];
    args.extend(
        ids.iter()
            .map(|(k, v)| format!("external_ids:{k}={}", quoted(v))),
    );
    vsctl(db, &format!("adding port {port} to bridge {bridge}"), &args)
}

/// Remove `port` from `bridge`; a missing port is not an error.
pub fn detach(db: &Path, bridge: &str, port: &str) -> Result<(), CniError> {
    let args = ["--", "--if-exists", "del-port", bridge, port].map(String::from);
    vsctl(
        db,
        &format!("removing port {port} from bridge {bridge}"),
        &args,
    )
}
