//! The CustomResourceDefinitions generated from the Rust types: one CRD per kind holding both
//! versions (v1alpha2 stored, v1beta1 served). The chart's `crds/` files are this output, and a
//! test keeps them from drifting.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::crd::merge_crds;
use serde_json::Value;

use super::{v1alpha2, v1beta1};

/// The API group of both kinds.
pub const GROUP: &str = "crd.antrea.io";

/// The version stored by the API server; the other version is served from the same object.
pub const CRD_STORAGE_VERSION: &str = "v1alpha2";

/// The `Egress` CRD with both versions.
pub fn egress_crd() -> CustomResourceDefinition {
    merged(vec![v1alpha2::Egress::crd(), v1beta1::Egress::crd()])
}

/// The `ExternalIPPool` CRD with both versions.
pub fn external_ip_pool_crd() -> CustomResourceDefinition {
    merged(vec![
        v1alpha2::ExternalIPPool::crd(),
        v1beta1::ExternalIPPool::crd(),
    ])
}

/// The chart's CRD files: (file name under `charts/ovs-egress/crds/`, YAML document).
pub fn crd_yaml() -> Result<Vec<(&'static str, String)>, serde_yaml::Error> {
    Ok(vec![
        ("egress.yaml", serde_yaml::to_string(&egress_crd())?),
        (
            "externalippool.yaml",
            serde_yaml::to_string(&external_ip_pool_crd())?,
        ),
    ])
}

fn merged(crds: Vec<CustomResourceDefinition>) -> CustomResourceDefinition {
    // Invariant: both versions of a kind come from the same `#[kube]` names and scope, which is
    // all merge_crds checks (proven by the tests below).
    let crd = merge_crds(crds, CRD_STORAGE_VERSION).expect("versions of one kind must merge");
    // Invariant: a CRD serializes to JSON and back without loss.
    let mut json = serde_json::to_value(crd).expect("a CRD serializes to JSON");
    strip_nullable(&mut json);
    serde_json::from_value(json).expect("a CRD without `nullable` is still a CRD")
}

/// Drop the `nullable: true` schemars puts on every `Option`: Antrea's schema has none, and
/// without it the API server drops explicit nulls instead of storing them.
fn strip_nullable(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("nullable");
            map.values_mut().for_each(strip_nullable);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nullable),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(crd: &CustomResourceDefinition, version: &str) -> Value {
        let v = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == version)
            .expect("version present");
        serde_json::to_value(&v.schema.as_ref().unwrap().open_api_v3_schema).unwrap()
    }

    #[test]
    fn chart_crd_files_match_the_generated_crds() {
        let dir = crate::pipeline::repository_path("charts/ovs-egress/crds");
        for (file, yaml) in crd_yaml().unwrap() {
            let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            assert!(
                committed == yaml,
                "charts/ovs-egress/crds/{file} is out of date with crates/core/src/api; regenerate it with \
                 `cargo run -- crds --dir charts/ovs-egress/crds`"
            );
        }
    }

    #[test]
    fn pool_ip_ranges_are_bounded_by_max_items_in_both_versions() {
        let crd = external_ip_pool_crd();
        for version in ["v1alpha2", "v1beta1"] {
            let ranges = &schema(&crd, version)["properties"]["spec"]["properties"]["ipRanges"];
            assert_eq!(
                ranges["maxItems"],
                serde_json::json!(crate::ipam::MAX_IP_RANGES),
                "{version}: {ranges}"
            );
        }
    }

    #[test]
    fn both_kinds_store_v1alpha2_and_serve_both_versions_cluster_scoped() {
        for (crd, plural, short) in [
            (egress_crd(), "egresses", "eg"),
            (external_ip_pool_crd(), "externalippools", "eip"),
        ] {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Cluster");
            assert_eq!(crd.spec.names.plural, plural);
            assert_eq!(crd.spec.names.short_names, Some(vec![short.to_string()]));
            let versions: Vec<_> = crd
                .spec
                .versions
                .iter()
                .map(|v| {
                    (
                        v.name.as_str(),
                        v.served,
                        v.storage,
                        v.subresources.is_some(),
                    )
                })
                .collect();
            assert_eq!(
                versions,
                [
                    ("v1alpha2", true, true, true),
                    ("v1beta1", true, false, true)
                ]
            );
        }
    }

    #[test]
    fn both_versions_have_the_same_fields_so_nothing_is_pruned_across_versions() {
        for crd in [egress_crd(), external_ip_pool_crd()] {
            let fields = |version| {
                let s = schema(&crd, version);
                (
                    s["properties"]["spec"]["properties"].clone(),
                    s["properties"]["status"].clone(),
                )
            };
            assert_eq!(
                fields("v1alpha2"),
                fields("v1beta1"),
                "{}",
                crd.spec.names.kind
            );
        }
    }

    #[test]
    fn egress_ip_printer_column_reads_spec_in_v1alpha2_and_status_in_v1beta1() {
        let crd = egress_crd();
        let column = |version: &str| {
            let v = crd
                .spec
                .versions
                .iter()
                .find(|v| v.name == version)
                .unwrap();
            let columns = v.additional_printer_columns.as_ref().unwrap();
            let names: Vec<_> = columns.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names, ["EgressIP", "Age", "Node"]);
            columns[0].json_path.clone()
        };
        assert_eq!(column("v1alpha2"), ".spec.egressIP");
        assert_eq!(column("v1beta1"), ".status.egressIP");
    }

    /// Kubernetes' structural-schema rule: inside `oneOf`/`anyOf`/`allOf`/`not` only value
    /// validations, never `type`, `description`, `default`, `properties` or `items`; and every
    /// node outside them says its `type` (or preserves unknown fields).
    fn assert_structural(node: &Value, path: &str, in_junctor: bool) {
        let Value::Object(map) = node else { return };
        const FORBIDDEN: [&str; 6] = [
            "type",
            "description",
            "default",
            "nullable",
            "additionalProperties",
            "x-kubernetes-preserve-unknown-fields",
        ];
        if in_junctor {
            for key in FORBIDDEN {
                assert!(!map.contains_key(key), "{path}: `{key}` inside a junctor");
            }
        } else {
            assert!(
                map.contains_key("type") || map.contains_key("x-kubernetes-int-or-string"),
                "{path}: no type"
            );
        }
        for (key, child) in map {
            match (key.as_str(), child) {
                ("properties", Value::Object(props)) => {
                    for (name, prop) in props {
                        assert_structural(prop, &format!("{path}.{name}"), in_junctor);
                    }
                }
                ("items" | "additionalProperties", _) => {
                    assert_structural(child, &format!("{path}[]"), in_junctor)
                }
                ("oneOf" | "anyOf" | "allOf", Value::Array(branches)) => {
                    for (i, branch) in branches.iter().enumerate() {
                        assert_structural(branch, &format!("{path}.{key}[{i}]"), true);
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn every_schema_is_structural() {
        for crd in [egress_crd(), external_ip_pool_crd()] {
            for version in ["v1alpha2", "v1beta1"] {
                let s = schema(&crd, version);
                assert_structural(&s, &format!("{}/{version}", crd.spec.names.kind), false);
            }
        }
    }

    #[test]
    #[should_panic(expected = "`type` inside a junctor")]
    fn structural_check_catches_a_type_inside_one_of() {
        let bad = serde_json::json!({"type": "string", "oneOf": [{"type": "string"}]});
        assert_structural(&bad, "bad", false);
    }

    #[test]
    fn egress_schema_requires_spec_and_applied_to_and_an_ip_source() {
        let crd = egress_crd();
        let s = schema(&crd, "v1alpha2");
        assert_eq!(s["required"], serde_json::json!(["spec"]));
        let spec = &s["properties"]["spec"];
        assert_eq!(spec["required"], serde_json::json!(["appliedTo"]));
        assert_eq!(
            spec["anyOf"],
            serde_json::json!([{"required": ["egressIP"]}, {"required": ["externalIPPool"]}])
        );
        let beta = schema(&crd, "v1beta1");
        assert_eq!(
            beta["properties"]["spec"]["oneOf"][1],
            serde_json::json!({"anyOf": [{"required": ["egressIPs"]}, {"required": ["externalIPPools"]}]})
        );
    }
}
