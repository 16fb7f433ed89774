//! Attaching the host end of a Pod's veth to the OVS bridge through the crate's OVSDB client,
//! with the Interface `external_ids` the agent reads to learn local Pods:
//!
//! | key | value |
//! |---|---|
//! | `container-id` | `CNI_CONTAINERID` |
//! | `k8s-pod-name` | `K8S_POD_NAME` from `CNI_ARGS` (empty if absent) |
//! | `k8s-pod-namespace` | `K8S_POD_NAMESPACE` from `CNI_ARGS` (empty if absent) |
//! | `ip` | the Pod's address, without prefix length |
//! | `mac` | the MAC of the container interface |
//!
//! and the keys the agent adds once the Pod's flows are installed (the acknowledgement ADD
//! waits for, see [`wait_flows_ready`]):
//!
//! | key | value |
//! |---|---|
//! | `ovs-egress-flows-ready` | `true` |
//! | `ovs-egress-flows-round` | the agent's cookie round that installed them |
//!
//! [`attach`] returns only once ovs-vswitchd has realized the port (its `ofport` is set).
//! Never touches ports other than the one it is given.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::error::{CniError, Code};
use ovs_egress_ovsdb::bridge::{self, BridgeError};
use ovs_egress_ovsdb::{
    Atom, Client, ClientOptions, Condition, Operation, OvsdbError, Row, Value, WaitUntil,
};

/// The `external_ids` keys of a Pod's Interface row (the contract with the agent).
pub use ovs_egress_ovsdb::bridge::pod_port_keys as keys;

/// Upper bound for each OVSDB request, including the wait for ovs-vswitchd.
const TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(db: &Path, what: &str, longest_wait: Duration) -> Result<Client, CniError> {
    let opts = ClientOptions {
        request_timeout: TIMEOUT.max(longest_wait + Duration::from_secs(1)),
        ..ClientOptions::default()
    };
    Client::connect(db, opts).await.map_err(|e| {
        CniError::with_cause(
            Code::TryAgainLater,
            format!("{what}: OVSDB is not reachable"),
            e,
        )
    })
}

fn bridge_err(what: &str) -> impl Fn(BridgeError) -> CniError + '_ {
    move |e| CniError::host(what.to_string(), e)
}

fn ovsdb_err(what: &str) -> impl Fn(OvsdbError) -> CniError + '_ {
    move |e| CniError::host(what.to_string(), e)
}

/// Whether the agent acknowledged the Pod's flows within the time ADD gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowsReady {
    Acknowledged,
    /// Not acknowledged within the timeout (no agent, or a stuck one).
    TimedOut,
    /// The timeout is zero: not waited for.
    NotAwaited,
}

/// Add `port` to `bridge` with `external_ids` on its Interface row, wait until ovs-vswitchd
/// has given it an OpenFlow port, then up to `flows_ready` for the agent's acknowledgement.
pub async fn attach(
    db: &Path,
    bridge: &str,
    port: &str,
    ids: &[(&str, &str)],
    flows_ready: Duration,
) -> Result<FlowsReady, CniError> {
    let what = format!("adding port {port} to bridge {bridge}");
    let client = connect(db, &what, flows_ready).await?;
    let ids: BTreeMap<String, String> = ids
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    bridge::add_port(&client, bridge, port, None, &ids)
        .await
        .map_err(bridge_err(&what))?;
    let ms = u64::try_from(TIMEOUT.as_millis()).unwrap_or(u64::MAX);
    let unset = vec![Row::new().with("ofport", Value::empty_set())];
    let realized = Operation::wait(
        "Interface",
        &["ofport"],
        WaitUntil::NotEqual,
        unset,
        Some(ms),
    )
    .where_eq("name", port);
    let read = Operation::select("Interface")
        .where_eq("name", port)
        .columns(&["ofport", "error"]);
    let waited = format!("{what}: waiting for ovs-vswitchd to realize it");
    let r = client
        .transact(&[realized, read])
        .await
        .map_err(ovsdb_err(&waited))?;
    let row = r[1]
        .rows()
        .first()
        .ok_or_else(|| CniError::host(waited.clone(), "row vanished"))?;
    let ofport = row
        .optional("Interface", "ofport")
        .map_err(ovsdb_err(&waited))?;
    if let Some(Atom::Integer(n)) = ofport
        && *n < 0
    {
        let error = row
            .optional("Interface", "error")
            .ok()
            .flatten()
            .and_then(Atom::as_str);
        return Err(CniError::host(
            what,
            format!("ovs-vswitchd rejected it: {}", error.unwrap_or("ofport -1")),
        ));
    }
    wait_flows_ready(&client, port, flows_ready).await
}

/// Waits up to `timeout` until the Interface `port` carries the agent's acknowledgement
/// ([`keys::FLOWS_READY`]). OVSDB itself blocks the `wait` operation until a commit makes the
/// condition true, so the acknowledgement is seen the moment it is written.
pub async fn wait_flows_ready(
    client: &Client,
    port: &str,
    timeout: Duration,
) -> Result<FlowsReady, CniError> {
    if timeout.is_zero() {
        return Ok(FlowsReady::NotAwaited);
    }
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let acknowledged = Value::map([(keys::FLOWS_READY, keys::FLOWS_READY_VALUE)]);
    // "Until the Interface named `port` that carries the acknowledgement is no longer absent."
    let wait = Operation::wait(
        "Interface",
        &["name"],
        WaitUntil::NotEqual,
        vec![],
        Some(ms),
    )
    .where_eq("name", port)
    .filter(Condition::includes("external_ids", acknowledged));
    match client.transact(&[wait]).await {
        Ok(_) => Ok(FlowsReady::Acknowledged),
        Err(OvsdbError::OpFailed { error, .. }) if error == "timed out" => Ok(FlowsReady::TimedOut),
        Err(e) => Err(CniError::host(
            format!("waiting for the agent to acknowledge the flows of port {port}"),
            e,
        )),
    }
}

/// Remove `port` from `bridge`; a missing port is not an error.
pub async fn detach(db: &Path, bridge: &str, port: &str) -> Result<(), CniError> {
    let what = format!("removing port {port} from bridge {bridge}");
    let client = connect(db, &what, Duration::ZERO).await?;
    bridge::delete_port(&client, bridge, port)
        .await
        .map(drop)
        .map_err(bridge_err(&what))
}
