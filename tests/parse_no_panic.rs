//! Property: the cluster-file parser (and the webhook's rules and `render` after it) never
//! panics, whatever the input: arbitrary text, YAML-looking text, and structured values built
//! from the fields it reads. The parser alone gets 10,000 cases per input shape; rendering
//! every Node is slower and gets 512.

use ovs_egress_core::render::validate::admission_errors;
use ovs_egress_core::render::{node_names, parse_cluster, render};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Parse, and when that succeeds check the webhook's rules and render every Node: errors are
/// fine, panics are not.
fn parse_and_render(text: &str) {
    if let Ok(parsed) = parse_cluster(text) {
        let _ = admission_errors(&parsed);
        for node in node_names(&parsed.view) {
            let _ = render(parsed.view.clone(), &node);
        }
    }
}

const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "creationTimestamp",
    "spec",
    "status",
    "items",
    "appliedTo",
    "podSelector",
    "namespaceSelector",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "egressIP",
    "egressIPs",
    "externalIPPool",
    "ipRanges",
    "cidr",
    "start",
    "end",
    "nodeSelector",
    "nodeName",
    "hostNetwork",
    "phase",
    "podIP",
    "podIPs",
    "ip",
    "addresses",
    "type",
    "address",
    "podCIDR",
    "ovs-egress.io/down",
    "ovs-egress.io/local-ips",
    "node.antrea.io/max-egress-ips",
];

const STRINGS: &[&str] = &[
    "v1",
    "crd.antrea.io/v1alpha2",
    "crd.antrea.io/v1beta1",
    "Node",
    "Namespace",
    "Pod",
    "Egress",
    "ExternalIPPool",
    "List",
    "In",
    "NotIn",
    "Exists",
    "DoesNotExist",
    "InternalIP",
    "Running",
    "Succeeded",
    "true",
    "n1",
    "p",
    "10.0.0.1",
    "10.0.0.0/30",
    "10.0.0.0/0",
    "::/0",
    "fd00::/120",
    "10.0.0.3",
    "255.255.255.255",
    "0",
    "300",
    "-1",
    "2024-05-01T10:00:00Z",
    "",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(STRINGS).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ]
}

fn structured() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|pairs| {
                Value::Object(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn one_of(values: &'static [&'static str]) -> impl Strategy<Value = Value> + Clone {
    prop::sample::select(values).prop_map(Value::from)
}

/// A `spec` or `status` made of the fields the parser reads, with good and bad values.
fn plausible_fields() -> impl Strategy<Value = Value> {
    let ip = one_of(&["10.0.0.1", "10.0.0.2", "fd00::1", "10.0.0.300", ""]);
    let labels = prop::collection::btree_map(
        prop::sample::select(&["app", "env"][..]),
        one_of(&["web", "prod"]),
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    prop_oneof![
        3 => (labels.clone(), labels.clone(), ip.clone(), one_of(&["p", "q", ""])).prop_map(
            |(pods, namespaces, ip, pool)| serde_json::json!({
                "appliedTo": {"podSelector": {"matchLabels": pods},
                              "namespaceSelector": {"matchLabels": namespaces}},
                "egressIP": ip, "externalIPPool": pool})
        ),
        2 => (one_of(&["10.0.0.0/30", "10.0.0.0/0", "::/0", "fd00::/126", "10.0.0.1/32"]), labels)
            .prop_map(|(cidr, nodes)| serde_json::json!({
                "ipRanges": [{"cidr": cidr}, {"start": "10.1.0.1", "end": "10.1.0.3"}],
                "nodeSelector": {"matchLabels": nodes}})),
        2 => (one_of(&["n1", "n2"]), ip.clone(), any::<bool>()).prop_map(|(node, ip, host)| {
            serde_json::json!({"nodeName": node, "hostNetwork": host, "podCIDR": "10.244.0.0/24",
                "addresses": [{"type": "InternalIP", "address": ip}],
                "phase": "Running", "podIPs": [{"ip": ip}]})
        }),
        1 => structured(),
    ]
}

/// An object with a plausible kind, version and name, so the input gets past the envelope
/// checks into each kind's fields (and into `render`).
fn plausible_object() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(
            &[
                ("v1", "Node"),
                ("v1", "Namespace"),
                ("v1", "Pod"),
                ("crd.antrea.io/v1alpha2", "Egress"),
                ("crd.antrea.io/v1beta1", "ExternalIPPool"),
                ("v1", "Egress"),
            ][..],
        ),
        one_of(&["n1", "n2", "n3", "n4", "p", "q"]),
        one_of(&["0", "1", "x"]),
        plausible_fields(),
        plausible_fields(),
    )
        .prop_map(|((version, kind), name, max, spec, status)| {
            serde_json::json!({
                "apiVersion": version,
                "kind": kind,
                "metadata": {"name": name, "annotations": {"node.antrea.io/max-egress-ips": max}},
                "spec": spec,
                "status": status,
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        parse_and_render(&text);
    }

    #[test]
    fn yaml_looking_text_never_panics(
        text in "([a-zA-Z]{1,10}|[-:{}\\[\\],#&*!|>'\"%@ ]|\n  ?|10\\.0\\.0\\.[0-9]|---\n){0,80}"
    ) {
        parse_and_render(&text);
    }

    #[test]
    fn structured_values_never_panic_as_yaml_or_json(
        documents in prop::collection::vec(prop_oneof![1 => structured(), 4 => plausible_object()], 1..6)
    ) {
        let yaml: Vec<String> = documents
            .iter()
            .map(|d| serde_yaml::to_string(d).expect("any JSON value serializes as YAML"))
            .collect();
        parse_and_render(&yaml.join("---\n"));
        for document in &documents {
            parse_and_render(&document.to_string());
        }
    }
}

/// Parse and check the webhook's rules only.
fn parse_and_check(text: &str) {
    if let Ok(parsed) = parse_cluster(text) {
        let _ = admission_errors(&parsed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn the_parser_never_panics_on_10_000_texts(text in "\\PC{0,300}") {
        parse_and_check(&text);
    }

    #[test]
    fn the_parser_never_panics_on_10_000_yaml_looking_texts(
        text in "([a-zA-Z]{1,10}|[-:{}\\[\\],#&*!|>'\"%@ ]|\n  ?|10\\.0\\.0\\.[0-9]|---\n){0,80}"
    ) {
        parse_and_check(&text);
    }

    #[test]
    fn the_parser_never_panics_on_10_000_structured_documents(
        documents in prop::collection::vec(prop_oneof![1 => structured(), 4 => plausible_object()], 1..4)
    ) {
        let yaml: Vec<String> = documents
            .iter()
            .map(|d| serde_yaml::to_string(d).expect("any JSON value serializes as YAML"))
            .collect();
        parse_and_check(&yaml.join("---\n"));
    }
}
