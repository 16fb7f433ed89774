//! Core Kubernetes objects (k8s-openapi `Node`, `Namespace`, `Pod`) → the plain model types the
//! pure core decides on. Only reads the fields egress cares about; never fails: a missing or
//! unparsable field becomes "absent" in the model (e.g. a Node without an InternalIP has no
//! transport IP).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};

use ovs_egress_core::model::{self, PodPhase};

/// Name, labels, annotations, the first parsable `InternalIP` as transport IP, `spec.podCIDR`
/// (when `ovs_egress_inputs::parse_pod_cidr` accepts it; else absent, with a warning naming the
/// Node).
pub fn node(node: &Node) -> model::Node {
    let transport_ip = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse::<IpAddr>().ok());
    model::Node {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        annotations: node.metadata.annotations.clone().unwrap_or_default(),
        transport_ip,
        // A podCIDR no Node can have (prefix 0, special addresses) is treated as absent.
        pod_cidr: node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|cidr| match ovs_egress_inputs::parse_pod_cidr(cidr) {
                Ok(net) => Some(net),
                Err(rule) => {
                    tracing::warn!(node = ?node.metadata.name, %rule, "spec.podCIDR ignored");
                    None
                }
            }),
    }
}

/// Name and labels.
pub fn namespace(namespace: &Namespace) -> model::Namespace {
    model::Namespace {
        name: namespace.metadata.name.clone().unwrap_or_default(),
        labels: namespace.metadata.labels.clone().unwrap_or_default(),
    }
}

/// Namespace, name, labels, `spec.nodeName`, `status.podIPs` (else `status.podIP`), phase,
/// `spec.hostNetwork`.
pub fn pod(pod: &Pod) -> model::Pod {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some("Unknown") => PodPhase::Unknown,
        _ => PodPhase::Pending,
    };
    model::Pod {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        node_name: spec.and_then(|s| s.node_name.clone()),
        ips,
        phase,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_takes_the_internal_ip_pod_cidr_labels_and_annotations() {
        let object: Node = serde_json::from_value(json!({
            "metadata": {"name": "node-4", "labels": {"zone": "a"},
                         "annotations": {"node.antrea.io/max-egress-ips": "3"}},
            "spec": {"podCIDR": "10.244.4.0/24"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "node-4"},
                {"type": "ExternalIP", "address": "203.0.113.4"},
                {"type": "InternalIP", "address": "10.10.0.104"}]}
        }))
        .unwrap();
        let node = node(&object);
        assert_eq!(node.name, "node-4");
        assert_eq!(node.transport_ip, Some("10.10.0.104".parse().unwrap()));
        assert_eq!(node.pod_cidr, Some("10.244.4.0/24".parse().unwrap()));
        assert_eq!(node.labels["zone"], "a");
        assert_eq!(node.annotations["node.antrea.io/max-egress-ips"], "3");
    }

    #[test]
    fn a_pod_cidr_no_node_can_have_is_absent() {
        for cidr in ["0.0.0.0/0", "::/0", "127.0.0.0/8", "nonsense"] {
            let object: Node = serde_json::from_value(json!({
                "metadata": {"name": "n"}, "spec": {"podCIDR": cidr}
            }))
            .unwrap();
            assert_eq!(node(&object).pod_cidr, None, "{cidr}");
        }
    }

    #[test]
    fn node_without_internal_ip_has_no_transport_ip() {
        let object: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {"addresses": [{"type": "InternalIP", "address": "not-an-ip"}]}
        }))
        .unwrap();
        assert_eq!(node(&object).transport_ip, None);
    }

    #[test]
    fn pod_takes_ips_phase_node_and_host_network() {
        let object: Pod = serde_json::from_value(json!({
            "metadata": {"namespace": "prod", "name": "web-1", "labels": {"app": "web"}},
            "spec": {"nodeName": "node-4", "hostNetwork": true, "containers": []},
            "status": {"phase": "Running", "podIP": "10.244.4.2",
                       "podIPs": [{"ip": "10.244.4.2"}, {"ip": "fd00::2"}]}
        }))
        .unwrap();
        let pod = pod(&object);
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str()),
            ("prod", "web-1")
        );
        assert_eq!(pod.node_name.as_deref(), Some("node-4"));
        assert_eq!(pod.ips.len(), 2);
        assert_eq!(pod.phase, PodPhase::Running);
        assert!(pod.host_network);
        assert_eq!(pod.labels["app"], "web");
    }

    #[test]
    fn pod_falls_back_to_pod_ip_and_pending() {
        let object: Pod = serde_json::from_value(json!({
            "metadata": {"namespace": "n", "name": "p"},
            "status": {"podIP": "10.244.4.3"}
        }))
        .unwrap();
        let pod = pod(&object);
        assert_eq!(pod.ips, vec!["10.244.4.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(pod.phase, PodPhase::Pending);
        assert!(!pod.host_network);
    }

    #[test]
    fn namespace_takes_name_and_labels() {
        let object: Namespace = serde_json::from_value(
            json!({"metadata": {"name": "prod", "labels": {"env": "prod"}}}),
        )
        .unwrap();
        let ns = namespace(&object);
        assert_eq!(ns.name, "prod");
        assert_eq!(ns.labels["env"], "prod");
    }
}
