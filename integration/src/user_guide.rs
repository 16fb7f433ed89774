//! The user guide's cluster as the demo and the end-to-end render test build it in the
//! cluster-in-a-box: its two usage examples (verbatim manifests from `examples/user-guide/`) and
//! the Pods they are shown on, and the waits between the steps. It starts nothing.

use std::time::Duration;

use anyhow::{Result, bail};
use ovs_egress_core::api::v1beta1;

use crate::cluster::ClusterBox;

/// Usage example "Configuring High-Availability Egress".
pub const HA_EXAMPLE: &str =
    include_str!("../../examples/user-guide/1-high-availability-egress.yaml");
/// Usage example "Configuring static Egress".
pub const STATIC_EXAMPLE: &str = include_str!("../../examples/user-guide/2-static-egress.yaml");

/// The Pods: (namespace, name, app label, Node index) on Nodes `node-4`, `node-5`, `node-6`.
pub const PODS: &[(&str, &str, &str, u8)] = &[
    ("prod", "web-0", "web", 4),
    ("prod", "web-1", "web", 5),
    ("prod", "web-2", "web", 6),
    ("prod", "db-0", "db", 6),
    ("staging", "web-0", "web", 5),
    ("staging", "web-1", "web", 6),
    ("staging", "db-0", "db", 4),
];

/// Sleeps until the wall clock enters its next second: `creationTimestamp` has a resolution of
/// one second (ties go to the lower name), so objects created after this are really younger.
pub async fn next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let rest = Duration::from_secs(1) - Duration::from_nanos(u64::from(now.subsec_nanos()));
    tokio::time::sleep(rest + Duration::from_millis(10)).await;
}

/// Waits until every named Egress has an Egress Node in its status (30 s at most; the error
/// carries the box's logs).
pub async fn wait_placed(cluster: &ClusterBox, names: &[&str]) -> Result<()> {
    for name in names {
        let placed =
            |e: &v1beta1::Egress| e.status.as_ref().is_some_and(|s| s.egress_node.is_some());
        if let Err(e) = cluster
            .wait_egress(name, Duration::from_secs(30), placed)
            .await
        {
            bail!("{e:#}\n{}", cluster.logs());
        }
    }
    Ok(())
}
