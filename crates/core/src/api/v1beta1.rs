//! `crd.antrea.io/v1beta1`: the current Antrea version, served beside the v1alpha2 storage
//! version. Same fields as v1alpha2 (one stored object serves both without conversion); the
//! `EgressIP` printer column shows `.status.egressIP` and the spec must use either the singular
//! (`egressIP`/`externalIPPool`) or the plural (`egressIPs`/`externalIPPools`) fields.

// Several `printcolumn(type_ = ..)` in one `#[kube]` look like duplicated attributes to clippy,
// which reports them on the derived items, out of reach of an item-level allow.
#![allow(clippy::duplicated_attributes)]

super::version::crd_version! {
    version: "v1beta1",
    egress_ip_column: (".status.egressIP", "The effective SNAT IP address for the selected workloads."),
    spec_rule: ("oneOf" = [
        {"anyOf": [{"required": ["egressIP"]}, {"required": ["externalIPPool"]}]},
        {"anyOf": [{"required": ["egressIPs"]}, {"required": ["externalIPPools"]}]}
    ]),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_converts_and_keeps_status_fields() {
        let egress: Egress = serde_yaml::from_str(
            "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata:\n  name: web\n\
             \x20 creationTimestamp: \"1970-01-01T00:01:40Z\"\nspec:\n  appliedTo: {}\n\
             \x20 externalIPPool: pool-a\n  bandwidth: {rate: 100M, burst: 200M}\n\
             status:\n  egressIP: 10.0.0.1\n  conditions:\n  - {type: IPAllocated, status: \"True\", reason: Allocated}\n",
        )
        .unwrap();
        let model = model::Egress::from(&egress);
        assert_eq!((model.name.as_str(), model.created), ("web", 100));
        assert_eq!(model.egress_ip, None);
        assert_eq!(model.external_ip_pool.as_deref(), Some("pool-a"));
        let status = egress.status.unwrap();
        assert_eq!(status.egress_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(status.conditions[0].reason.as_deref(), Some("Allocated"));
    }

    #[test]
    fn pool_converts() {
        let pool: ExternalIPPool = serde_yaml::from_str(
            "apiVersion: crd.antrea.io/v1beta1\nkind: ExternalIPPool\nmetadata: {name: p}\n\
             spec:\n  ipRanges: [{cidr: 2021:1::aaa0/124}]\n  nodeSelector: {matchLabels: {a: b}}\n\
             status: {usage: {total: 15, used: 1}}\n",
        )
        .unwrap();
        let model = model::ExternalIpPool::from(&pool);
        assert_eq!((model.name.as_str(), model.created), ("p", 0));
        assert_eq!(model.node_selector.match_labels["a"], "b");
        assert_eq!(pool.status.unwrap().usage.unwrap().total, 15);
    }
}
