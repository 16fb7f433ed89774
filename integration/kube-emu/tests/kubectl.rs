//! kubectl 1.32 against kube-emu: the CRDs and the user guide's examples apply, `kubectl get`
//! prints the printer columns, schema violations are rejected naming the field, server-side
//! apply works. Fails loudly when kubectl is missing.

mod common;
use common::{Emu, crds_dir, fixture};

fn header(out: &str) -> Vec<String> {
    out.lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn row<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in\n{out}"))
        .split_whitespace()
        .collect()
}

fn apply_fixtures(emu: &Emu) {
    emu.kubectl_ok(&["apply", "-f", crds_dir().to_str().unwrap()]);
    emu.kubectl_ok(&[
        "wait",
        "--for",
        "condition=established",
        "crd/egresses.crd.antrea.io",
        "crd/externalippools.crd.antrea.io",
    ]);
    let out = emu.kubectl_ok(&[
        "apply",
        "-f",
        fixture("user-guide-examples.yaml").to_str().unwrap(),
    ]);
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" created")).count(),
        6,
        "{out}"
    );
}

#[test]
fn kubectl_get_egress_prints_name_egressip_age_node_from_printer_columns() {
    let emu = Emu::start(&[]);
    apply_fixtures(&emu);
    emu.kubectl_ok(&[
        "patch",
        "egress",
        "egress-prod",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"egressNode":"node-4","egressIP":"10.10.0.104"}}"#,
    ]);
    let out = emu.kubectl_ok(&["get", "egress"]);
    assert_eq!(header(&out), ["NAME", "EGRESSIP", "AGE", "NODE"], "{out}");
    assert_eq!(out.lines().count(), 1 + 4, "{out}");
    let r = row(&out, "egress-prod");
    assert_eq!((r[1], r[3]), ("10.10.0.104", "node-4"), "{out}");
    assert!(r[2].ends_with('s'), "age column {}", r[2]);
    // The v1alpha2 columns read the IP from spec, as in Antrea's v1alpha2 CRD.
    let alpha = emu.kubectl_ok(&["get", "egresses.v1alpha2.crd.antrea.io", "egress-staging"]);
    assert_eq!(row(&alpha, "egress-staging")[1], "10.10.0.105", "{alpha}");
}

#[test]
fn kubectl_get_eip_prints_total_used_age() {
    let emu = Emu::start(&[]);
    apply_fixtures(&emu);
    emu.kubectl_ok(&[
        "patch",
        "eip",
        "external-ip-pool",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"usage":{"total":10,"used":2}}}"#,
    ]);
    let out = emu.kubectl_ok(&["get", "eip"]);
    assert_eq!(header(&out), ["NAME", "TOTAL", "USED", "AGE"], "{out}");
    assert_eq!(row(&out, "external-ip-pool")[1..3], ["10", "2"], "{out}");
}

#[test]
fn kubectl_schema_violations_are_rejected_naming_the_field() {
    let emu = Emu::start(&[]);
    apply_fixtures(&emu);
    let bad = [
        (
            r#"{"apiVersion":"crd.antrea.io/v1beta1","kind":"Egress","metadata":{"name":"b1"},"spec":{"appliedTo":{},"egressIP":"10.0.0.300"}}"#,
            "spec.egressIP: Invalid value: \"10.0.0.300\"",
        ),
        (
            r#"{"apiVersion":"crd.antrea.io/v1beta1","kind":"Egress","metadata":{"name":"b2"},"spec":{"egressIP":"10.0.0.1"}}"#,
            "spec.appliedTo: Required value",
        ),
        (
            r#"{"apiVersion":"crd.antrea.io/v1alpha2","kind":"ExternalIPPool","metadata":{"name":"b3"},"spec":{"ipRanges":[{"cidr":"10.0.0.0/40"}],"nodeSelector":{}}}"#,
            "spec.ipRanges[0].cidr",
        ),
        (
            r#"{"apiVersion":"crd.antrea.io/v1beta1","kind":"ExternalIPPool","metadata":{"name":"b4"},"spec":{"ipRanges":[],"nodeSelector":{"matchLabels":{"a":"pro-"}}}}"#,
            "spec.nodeSelector.matchLabels.a",
        ),
    ];
    for (obj, want) in bad {
        let path = emu.dir.join("bad.json");
        std::fs::write(&path, obj).unwrap();
        for mode in [
            &["apply", "-f"][..],
            &["apply", "--server-side", "-f"],
            &["create", "-f"],
        ] {
            let mut args = mode.to_vec();
            args.push(path.to_str().unwrap());
            let (ok, _, err) = emu.kubectl(&args);
            assert!(!ok, "{args:?} accepted {obj}");
            assert!(
                err.contains("is invalid") && err.contains(want),
                "{args:?}: stderr lacks {want:?}: {err}"
            );
        }
    }
    assert_eq!(
        emu.kubectl_ok(&["get", "egress", "-o", "name"])
            .lines()
            .count(),
        4
    );
}

#[test]
fn kubectl_server_side_apply_creates_then_updates_and_bumps_generation() {
    let emu = Emu::start(&[]);
    emu.kubectl_ok(&["apply", "--server-side", "-f", crds_dir().to_str().unwrap()]);
    let out = emu.kubectl_ok(&[
        "apply",
        "--server-side",
        "-f",
        fixture("user-guide-examples.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.matches("serverside-applied").count(), 6, "{out}");
    let path = emu.dir.join("eg.yaml");
    std::fs::write(&path, "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata: {name: egress-prod}\nspec: {appliedTo: {}, egressIP: 10.10.0.99}\n").unwrap();
    emu.kubectl_ok(&["apply", "--server-side", "-f", path.to_str().unwrap()]);
    let got = emu.kubectl_ok(&[
        "get",
        "egress",
        "egress-prod",
        "-o",
        "jsonpath={.spec.egressIP} {.metadata.generation}",
    ]);
    assert_eq!(got, "10.10.0.99 2");
    // Re-applying an unchanged file is a no-op: the resourceVersion stays.
    let rv = emu.kubectl_ok(&[
        "get",
        "egress",
        "egress-staging",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    emu.kubectl_ok(&[
        "apply",
        "--server-side",
        "-f",
        fixture("user-guide-examples.yaml").to_str().unwrap(),
    ]);
    assert_eq!(
        emu.kubectl_ok(&[
            "get",
            "egress",
            "egress-staging",
            "-o",
            "jsonpath={.metadata.resourceVersion}"
        ]),
        rv
    );
}

#[test]
fn kubectl_builtin_workflow_namespaces_pods_nodes_selectors_delete() {
    let emu = Emu::start(&[]);
    let path = emu.dir.join("objs.yaml");
    std::fs::write(&path, "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: prod, labels: {app: web}}\nspec: {nodeName: node1, containers: [{name: c, image: x}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: db-1, namespace: prod, labels: {app: db}}\nspec: {nodeName: node2, containers: [{name: c, image: x}]}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: node1}\nstatus: {conditions: [{type: Ready, status: \"True\"}]}\n").unwrap();
    emu.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    let ns = emu.kubectl_ok(&["get", "ns", "prod", "-o", "jsonpath={.metadata.labels}"]);
    assert!(
        ns.contains(r#""kubernetes.io/metadata.name":"prod""#),
        "{ns}"
    );
    let pods = emu.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        "prod",
        "-l",
        "app notin (db)",
        "-o",
        "name",
    ]);
    assert_eq!(pods.trim(), "pod/web-1");
    let pods = emu.kubectl_ok(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        "spec.nodeName=node2",
        "-o",
        "name",
    ]);
    assert_eq!(pods.trim(), "pod/db-1");
    let nodes = emu.kubectl_ok(&["get", "nodes"]);
    assert_eq!(
        header(&nodes),
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    );
    assert_eq!(row(&nodes, "node1")[1], "Ready");
    // `kubectl create <kind>` sends protobuf bodies.
    emu.kubectl_ok(&["create", "namespace", "staging"]);
    emu.kubectl_ok(&[
        "create",
        "configmap",
        "c1",
        "-n",
        "staging",
        "--from-literal=a=b",
    ]);
    emu.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "-n",
        "staging",
        "--from-literal=x=y",
    ]);
    assert_eq!(
        emu.kubectl_ok(&[
            "get",
            "cm",
            "c1",
            "-n",
            "staging",
            "-o",
            "jsonpath={.data.a}"
        ]),
        "b"
    );
    assert_eq!(
        emu.kubectl_ok(&[
            "get",
            "secret",
            "s1",
            "-n",
            "staging",
            "-o",
            "jsonpath={.data.x}"
        ]),
        "eQ=="
    );
    emu.kubectl_ok(&["delete", "namespace", "staging"]);
    let (ok, _, err) = emu.kubectl(&["get", "cm", "c1", "-n", "staging"]);
    assert!(
        !ok && err.contains("not found"),
        "namespace deletion removes its objects: {err}"
    );
    emu.kubectl_ok(&["delete", "pod", "-n", "prod", "web-1"]);
    assert_eq!(
        emu.kubectl_ok(&["get", "pods", "-n", "prod", "-o", "name"])
            .trim(),
        "pod/db-1"
    );
}

#[test]
fn kubectl_strict_field_validation_rejects_unknown_fields_unless_validate_false() {
    let emu = Emu::start(&[]);
    apply_fixtures(&emu);
    let path = emu.dir.join("typo.yaml");
    std::fs::write(&path, "apiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata: {name: t}\nspec: {appliedTo: {}, egressIP: 10.0.0.1, egresIp: 1}\n").unwrap();
    for mode in ["apply", "create"] {
        let (ok, _, err) = emu.kubectl(&[mode, "-f", path.to_str().unwrap()]);
        assert!(
            !ok && err.contains(r#"unknown field "spec.egresIp""#),
            "{mode}: {err}"
        );
    }
    emu.kubectl_ok(&["create", "--validate=false", "-f", path.to_str().unwrap()]);
    let spec = emu.kubectl_ok(&["get", "egress", "t", "-o", "jsonpath={.spec}"]);
    assert!(
        !spec.contains("egresIp") && spec.contains("10.0.0.1"),
        "unknown field pruned: {spec}"
    );
}
