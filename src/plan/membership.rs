//! Which Pods an Egress applies to (`spec.appliedTo`), with the API server's semantics:
//! `podSelector` alone selects across all Namespaces, `namespaceSelector` alone selects every Pod
//! of the matching Namespaces, both together is an AND, an empty `appliedTo` selects nothing.
//! A Pod that is hostNetwork, not scheduled or terminated is never a member. Pure; it must never
//! look at Egress IPs or Nodes (that is `plan`'s business).

use std::collections::HashMap;

use crate::api::AppliedTo;
use crate::model::{Labels, Namespace, Pod, PodPhase};

/// The label the API server puts on every Namespace, so selectors can name a Namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Whether a Pod can be an Egress member at all: scheduled, not hostNetwork, not terminated.
pub fn is_candidate(pod: &Pod) -> bool {
    pod.node_name.is_some()
        && !pod.host_network
        && !matches!(pod.phase, PodPhase::Succeeded | PodPhase::Failed)
}

/// Whether `applied_to` selects a Pod with `pod_labels` in a Namespace with `namespace_labels`
/// (eligibility aside, see [`is_candidate`]).
pub fn selects(applied_to: &AppliedTo, pod_labels: &Labels, namespace_labels: &Labels) -> bool {
    match (&applied_to.pod_selector, &applied_to.namespace_selector) {
        (None, None) => false,
        (Some(pods), None) => pods.matches(pod_labels),
        (None, Some(namespaces)) => namespaces.matches(namespace_labels),
        (Some(pods), Some(namespaces)) => {
            namespaces.matches(namespace_labels) && pods.matches(pod_labels)
        }
    }
}

/// Namespace labels as selectors see them, including the implicit
/// `kubernetes.io/metadata.name=<namespace>`, computed once per Namespace on demand.
pub struct NamespaceLabels<'a> {
    declared: HashMap<&'a str, &'a Labels>,
    effective: HashMap<&'a str, Labels>,
}

impl<'a> NamespaceLabels<'a> {
    pub fn new(namespaces: &'a [Namespace]) -> Self {
        Self {
            declared: namespaces
                .iter()
                .map(|ns| (ns.name.as_str(), &ns.labels))
                .collect(),
            effective: HashMap::new(),
        }
    }

    /// The labels of Namespace `name`; a Namespace missing from the view has only the implicit
    /// name label.
    pub fn get(&mut self, name: &'a str) -> &Labels {
        let declared = &self.declared;
        self.effective.entry(name).or_insert_with(|| {
            let mut labels = declared.get(name).map(|l| (*l).clone()).unwrap_or_default();
            labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
            labels
        })
    }
}
