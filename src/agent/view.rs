//! The agent's reflector stores → one `ClusterView` (plus what the status writer compares
//! against: each Egress's current status and uid). Objects that do not deserialize are logged
//! by name and skipped (`kube::reflect::typed_objects`); the rest of the view is unaffected.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::core::DynamicObject;
use kube::runtime::reflector::Store;

use super::config::AgentConfig;
use ovs_egress_core::api::{EgressStatus, v1beta1};
use ovs_egress_core::model::{ClusterView, PlanConfig};
use ovs_egress_kube::convert;
use ovs_egress_kube::reflect::typed_objects;

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

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::ApiResource;
    use kube::runtime::{reflector, watcher};
    use serde_json::{Value, json};

    fn store<K: kube::Resource<DynamicType = ()>>(objects: Vec<Value>) -> Store<DynamicObject> {
        let mut writer = reflector::store::Writer::new(ApiResource::erase::<K>(&()));
        for object in objects {
            let object: DynamicObject = serde_json::from_value(object).unwrap();
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        writer.as_reader()
    }

    #[test]
    fn snapshot_converts_every_kind_and_skips_what_does_not_parse() {
        let stores = Stores {
            egresses: store::<v1beta1::Egress>(vec![json!({
                "apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
                "metadata": {"name": "e1", "uid": "u-1"},
                "spec": {"appliedTo": {}, "egressIP": "10.0.0.9"},
                "status": {"egressNode": "n1"}
            })]),
            pools: store::<v1beta1::ExternalIPPool>(vec![json!({
                "apiVersion": "crd.antrea.io/v1beta1", "kind": "ExternalIPPool",
                "metadata": {"name": "p1"},
                "spec": {"ipRanges": [{"cidr": "10.0.0.0/30"}], "nodeSelector": {}}
            })]),
            nodes: store::<Node>(vec![json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}
            })]),
            namespaces: store::<Namespace>(vec![json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}
            })]),
            pods: store::<Pod>(vec![
                json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"namespace": "prod", "name": "good"},
                       "spec": {"nodeName": "n1", "containers": []}}),
                json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"namespace": "prod", "name": "bad"},
                       "spec": {"nodeName": "n1", "hostNetwork": "yes", "containers": []}}),
            ]),
        };
        let local: BTreeSet<IpAddr> = ["10.0.0.9".parse().unwrap()].into();
        let mut config = AgentConfig::default();
        config.egress.max_egress_ips_per_node = 7;
        let snapshot = stores.snapshot(local.clone(), &config);
        let view = &snapshot.view;
        assert_eq!(view.egresses[0].egress_ip.as_deref(), Some("10.0.0.9"));
        assert_eq!(view.pools[0].name, "p1");
        assert_eq!(
            view.nodes[0].transport_ip,
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(view.namespaces[0].name, "prod");
        let pods: Vec<&str> = view.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(pods, ["good"]);
        assert_eq!(view.local_ips, local);
        assert_eq!(view.config.max_egress_ips_per_node, 7);
        assert_eq!(snapshot.statuses["e1"].egress_node.as_deref(), Some("n1"));
        assert_eq!(snapshot.uids["e1"], "u-1");
    }
}
