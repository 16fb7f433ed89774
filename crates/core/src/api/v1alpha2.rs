//! `crd.antrea.io/v1alpha2`: the version of the user guide and the storage version. Its fields
//! are those of v1beta1 (one stored object serves both versions without conversion); only the
//! `EgressIP` printer column (`.spec.egressIP`) and the spec-level rule differ.

// Several `printcolumn(type_ = ..)` in one `#[kube]` look like duplicated attributes to clippy,
// which reports them on the derived items, out of reach of an item-level allow.
#![allow(clippy::duplicated_attributes)]

super::version::crd_version! {
    version: "v1alpha2",
    egress_ip_column: (".spec.egressIP", "Specifies the SNAT IP address for the selected workloads."),
    spec_rule: ("anyOf" = [{"required": ["egressIP"]}, {"required": ["externalIPPool"]}]),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_guide_egress_converts_with_empty_strings_as_unset_and_missing_timestamp_as_zero() {
        let egress: Egress = serde_yaml::from_str(
            "apiVersion: crd.antrea.io/v1alpha2\nkind: Egress\nmetadata:\n  name: egress-prod-web\n\
             spec:\n  appliedTo:\n    podSelector:\n      matchLabels:\n        role: web\n\
             \x20 egressIP: 10.10.0.8\n  externalIPPool: \"\"\nstatus:\n  egressNode: node01\n",
        )
        .unwrap();
        let model = model::Egress::from(&egress);
        assert_eq!(model.name, "egress-prod-web");
        assert_eq!(model.created, 0);
        assert_eq!(model.egress_ip.as_deref(), Some("10.10.0.8"));
        assert_eq!(model.external_ip_pool, None);
        let selector = model.applied_to.pod_selector.unwrap();
        assert_eq!(selector.match_labels["role"], "web");
    }

    #[test]
    fn user_guide_pool_converts_with_creation_timestamp_in_unix_seconds() {
        let pool: ExternalIPPool = serde_yaml::from_str(
            "apiVersion: crd.antrea.io/v1alpha2\nkind: ExternalIPPool\nmetadata:\n  name: prod\n\
             \x20 creationTimestamp: \"2021-05-01T10:00:00Z\"\nspec:\n  ipRanges:\n\
             \x20 - start: 10.10.0.2\n    end: 10.10.0.10\n  - cidr: 10.10.1.0/28\n  nodeSelector: {}\n",
        )
        .unwrap();
        let model = model::ExternalIpPool::from(&pool);
        assert_eq!(
            (model.name.as_str(), model.created),
            ("prod", 1_619_863_200)
        );
        assert_eq!(model.ip_ranges.len(), 2);
        assert_eq!(model.ip_ranges[1].cidr.as_deref(), Some("10.10.1.0/28"));
        assert!(model.node_selector.is_empty());
    }
}
