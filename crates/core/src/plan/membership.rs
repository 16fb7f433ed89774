//! Which Pods an Egress applies to (`spec.appliedTo`), with the API server's semantics:
//! `podSelector` alone selects across all Namespaces, `namespaceSelector` alone selects every Pod
//! of the matching Namespaces, both together is an AND, an empty `appliedTo` selects nothing.
//! A Pod that is hostNetwork, not scheduled or terminated is never a member. Pure; it must never
//! look at Egress IPs or Nodes (that is `plan`'s business).

use std::collections::{BTreeSet, HashMap};

use crate::api::AppliedTo;
use crate::model::{ClusterView, Labels, Namespace, Pod, PodPhase};

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

/// `namespace/name` of the Pods of `node` whose Egress a plan computed from `view` has decided
/// (one Egress or none): those whose object and Namespace are both in `view`, since membership
/// is decided from the Pod's and its Namespace's labels. The agent lets CNI ADD of a Pod return
/// only once the applied plan has decided it.
pub fn decided_pods(view: &ClusterView, node: &str) -> BTreeSet<String> {
    let namespaces: BTreeSet<&str> = view.namespaces.iter().map(|n| n.name.as_str()).collect();
    view.pods
        .iter()
        .filter(|p| p.node_name.as_deref() == Some(node))
        .filter(|p| namespaces.contains(p.namespace.as_str()))
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LabelSelector, LabelSelectorRequirement, Operator};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selector(pairs: &[(&str, &str)]) -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: labels(pairs),
            ..LabelSelector::default()
        })
    }

    fn applied_to(pods: Option<LabelSelector>, namespaces: Option<LabelSelector>) -> AppliedTo {
        AppliedTo {
            pod_selector: pods,
            namespace_selector: namespaces,
        }
    }

    fn running_pod() -> Pod {
        Pod {
            namespace: "prod".into(),
            name: "web-0".into(),
            node_name: Some("node-4".into()),
            phase: PodPhase::Running,
            ..Pod::default()
        }
    }

    #[test]
    fn pod_selector_alone_selects_in_every_namespace() {
        let to = applied_to(selector(&[("app", "web")]), None);
        let web = labels(&[("app", "web")]);
        assert!(selects(&to, &web, &labels(&[("env", "prod")])));
        assert!(selects(&to, &web, &Labels::new()));
        assert!(!selects(&to, &labels(&[("app", "db")]), &Labels::new()));
    }

    #[test]
    fn namespace_selector_alone_selects_every_pod_of_matching_namespaces() {
        let to = applied_to(None, selector(&[("env", "prod")]));
        let prod = labels(&[("env", "prod")]);
        assert!(selects(&to, &Labels::new(), &prod));
        assert!(selects(&to, &labels(&[("app", "db")]), &prod));
        assert!(!selects(
            &to,
            &Labels::new(),
            &labels(&[("env", "staging")])
        ));
    }

    #[test]
    fn both_selectors_must_match() {
        let to = applied_to(selector(&[("app", "web")]), selector(&[("env", "prod")]));
        let (web, db) = (labels(&[("app", "web")]), labels(&[("app", "db")]));
        let (prod, staging) = (labels(&[("env", "prod")]), labels(&[("env", "staging")]));
        assert!(selects(&to, &web, &prod));
        assert!(!selects(&to, &db, &prod));
        assert!(!selects(&to, &web, &staging));
    }

    #[test]
    fn empty_applied_to_selects_nothing_but_empty_selectors_select_everything() {
        let any = labels(&[("app", "web")]);
        assert!(!selects(&applied_to(None, None), &any, &any));
        let empty = Some(LabelSelector::default());
        assert!(selects(&applied_to(empty.clone(), None), &any, &any));
        assert!(selects(
            &applied_to(None, empty),
            &Labels::new(),
            &Labels::new()
        ));
    }

    #[test]
    fn match_expressions_apply_to_namespaces() {
        let expression = LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.into(),
                operator: Operator::NotIn,
                values: vec!["kube-system".into()],
            }],
            ..LabelSelector::default()
        };
        let to = applied_to(None, Some(expression));
        let namespaces = [Namespace {
            name: "kube-system".into(),
            labels: Labels::new(),
        }];
        let mut index = NamespaceLabels::new(&namespaces);
        assert!(!selects(&to, &Labels::new(), index.get("kube-system")));
        assert!(selects(&to, &Labels::new(), index.get("prod")));
    }

    #[test]
    fn namespaces_carry_their_implicit_name_label_next_to_declared_ones() {
        let namespaces = [Namespace {
            name: "prod".into(),
            labels: labels(&[("env", "prod")]),
        }];
        let mut index = NamespaceLabels::new(&namespaces);
        assert_eq!(
            index.get("prod"),
            &labels(&[("env", "prod"), (NAMESPACE_NAME_LABEL, "prod")])
        );
        // A Namespace missing from the view still has its name label.
        assert_eq!(
            index.get("staging"),
            &labels(&[(NAMESPACE_NAME_LABEL, "staging")])
        );
    }

    #[test]
    fn only_scheduled_non_host_network_live_pods_are_candidates() {
        assert!(is_candidate(&running_pod()));
        for phase in [PodPhase::Pending, PodPhase::Unknown] {
            assert!(is_candidate(&Pod {
                phase,
                ..running_pod()
            }));
        }
        for phase in [PodPhase::Succeeded, PodPhase::Failed] {
            assert!(!is_candidate(&Pod {
                phase,
                ..running_pod()
            }));
        }
        assert!(!is_candidate(&Pod {
            host_network: true,
            ..running_pod()
        }));
        assert!(!is_candidate(&Pod {
            node_name: None,
            ..running_pod()
        }));
    }

    fn local_pod(namespace: &str, name: &str, node: &str) -> Pod {
        Pod {
            namespace: namespace.into(),
            name: name.into(),
            node_name: Some(node.into()),
            ..Pod::default()
        }
    }

    #[test]
    fn a_local_pod_is_decided_once_its_object_and_its_namespace_are_in_the_view() {
        let view = ClusterView {
            namespaces: vec![Namespace {
                name: "prod".into(),
                labels: Default::default(),
            }],
            pods: vec![
                local_pod("prod", "web", "n1"),
                local_pod("prod", "elsewhere", "n2"),
                local_pod("staging", "no-namespace-yet", "n1"),
            ],
            ..ClusterView::default()
        };
        let decided = decided_pods(&view, "n1");
        assert_eq!(decided, BTreeSet::from(["prod/web".to_string()]));
    }
}
