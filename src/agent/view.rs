//! The agent's reflector stores → one `ClusterView` (plus what the status writer compares
//! against: each Egress's current status and uid). Objects that do not deserialize are logged
//! by name and skipped (`controller::typed_objects`); the rest of the view is unaffected.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::core::DynamicObject;
use kube::runtime::reflector::Store;

use super::config::AgentConfig;
use crate::api::{EgressStatus, v1beta1};
use crate::controller::typed_objects;
use crate::kube::convert;
use crate::model::{ClusterView, PlanConfig};

/// The agent's caches, all untyped.
pub struct Stores {
    pub egresses: Store<DynamicObject>,
    pub pools: Store<DynamicObject>,
    pub nodes: Store<DynamicObject>,
    pub namespaces: Store<DynamicObject>,
    /// Only this Node's Pods.
    pub pods: Store<DynamicObject>,
}

/// One consistent read of the caches.
pub struct Snapshot {
    pub view: ClusterView,
    /// Egress name → its status as last seen.
    pub statuses: BTreeMap<String, EgressStatus>,
    /// Egress name → uid (for events).
    pub uids: BTreeMap<String, String>,
}

impl Stores {
    /// Wait until every cache has its first full list.
    pub async fn wait_until_ready(&self) -> anyhow::Result<()> {
        for (kind, store) in [
            ("Egress", &self.egresses),
            ("ExternalIPPool", &self.pools),
            ("Node", &self.nodes),
            ("Namespace", &self.namespaces),
            ("Pod", &self.pods),
        ] {
            store
                .wait_until_ready()
                .await
                .map_err(|error| anyhow::anyhow!("{kind} cache: {error}"))?;
        }
        Ok(())
    }

    /// The view as of now, with `local_ips` and the plan knobs of `config`.
    pub fn snapshot(&self, local_ips: BTreeSet<IpAddr>, config: &AgentConfig) -> Snapshot {
        let egresses = typed_objects::<v1beta1::Egress>(&self.egresses.state(), "Egress");
        let pools = typed_objects::<v1beta1::ExternalIPPool>(&self.pools.state(), "ExternalIPPool");
        let nodes = typed_objects::<Node>(&self.nodes.state(), "Node");
        let namespaces = typed_objects::<Namespace>(&self.namespaces.state(), "Namespace");
        let pods = typed_objects::<Pod>(&self.pods.state(), "Pod");
        let name = |e: &v1beta1::Egress| e.metadata.name.clone().unwrap_or_default();
        Snapshot {
            statuses: egresses
                .iter()
                .map(|e| (name(e), e.status.clone().unwrap_or_default()))
                .collect(),
            uids: egresses
                .iter()
                .filter_map(|e| Some((name(e), e.metadata.uid.clone()?)))
                .collect(),
            view: ClusterView {
                egresses: egresses.iter().map(Into::into).collect(),
                pools: pools.iter().map(Into::into).collect(),
                nodes: nodes.iter().map(convert::node).collect(),
                namespaces: namespaces.iter().map(convert::namespace).collect(),
                pods: pods.iter().map(convert::pod).collect(),
                local_ips,
                alive: None,
                config: PlanConfig {
                    max_egress_ips_per_node: config.egress.max_egress_ips_per_node,
                },
            },
        }
    }
}
