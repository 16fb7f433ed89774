//! A minimal OpenAPI v3 surface (`/openapi/v3` index and one document per group/version): PATCH
//! operations tagged with `x-kubernetes-group-version-kind` and the `fieldValidation` parameter,
//! so kubectl uses server-side field validation instead of downloading full schemas, plus each
//! CRD version's `openAPIV3Schema` as a component. Not a complete Kubernetes OpenAPI document.

use crate::store::State;
use serde_json::{Map, Value, json};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

pub fn index(st: &State) -> Value {
    let mut paths = Map::new();
    for d in st.defs.values() {
        for v in &d.versions {
            let p = gv_path(&d.group, &v.name);
            let url = format!("/openapi/v3/{p}?hash={}", st.rv());
            paths.insert(p, json!({"serverRelativeURL": url}));
        }
    }
    json!({"paths": paths})
}

/// The document for `api/v1` or `apis/<group>/<version>`.
pub fn group_version(st: &State, gv: &str) -> Option<Value> {
    let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for d in st.defs.values().filter(|d| d.group == group) {
        let Some(v) = d.version(&version) else {
            continue;
        };
        let gvk = json!([{"group": d.group, "version": version, "kind": d.kind}]);
        let base = if d.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}",
                gv_path(&group, &version),
                d.plural
            )
        } else {
            format!("/{}/{}", gv_path(&group, &version), d.plural)
        };
        let params = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
        ]);
        let op = |verb: &str| json!({"operationId": format!("{verb}{}", d.kind), "x-kubernetes-action": verb, "x-kubernetes-group-version-kind": gvk[0], "parameters": params, "responses": {"200": {"description": "OK"}}});
        paths.insert(format!("{base}/{{name}}"), json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
        paths.insert(base, json!({"get": op("list"), "post": op("post")}));
        if let Some(schema) = &v.schema {
            let mut s = schema.clone();
            s["x-kubernetes-group-version-kind"] = gvk;
            let name = format!(
                "{}.{}.{}",
                d.group.split('.').rev().collect::<Vec<_>>().join("."),
                version,
                d.kind
            );
            schemas.insert(name, s);
        }
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes (kube-emu)", "version": "v1.32.0"}, "paths": paths, "components": {"schemas": schemas}}),
    )
}
