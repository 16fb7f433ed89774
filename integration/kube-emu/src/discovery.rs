//! Discovery documents (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>`) in
//! the legacy (unaggregated) JSON format, which kubectl and kube-rs accept when the server does
//! not answer the aggregated `apidiscovery.k8s.io` media type. Generated from the registry only.

use crate::resources::{ResourceDef, sort_versions};
use crate::store::State;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub fn version() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-kube-emu", "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64",
        "emulationMajor": "1", "emulationMinor": "32",
    })
}

pub fn core_versions(server: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}]})
}

/// group name -> versions (most preferred first), for non-core groups.
fn groups(st: &State) -> BTreeMap<String, Vec<String>> {
    let mut g: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in st.defs.values().filter(|d| !d.group.is_empty()) {
        let vs = g.entry(d.group.clone()).or_default();
        for v in &d.versions {
            if !vs.contains(&v.name) {
                vs.push(v.name.clone());
            }
        }
    }
    g.values_mut().for_each(|v| sort_versions(v));
    g
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0]})
}

pub fn group_list(st: &State) -> Value {
    let gs: Vec<Value> = groups(st).iter().map(|(n, v)| group_json(n, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

pub fn group(st: &State, name: &str) -> Option<Value> {
    groups(st).get(name).map(|v| {
        let mut g = group_json(name, v);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

fn resource_json(d: &ResourceDef) -> Vec<Value> {
    let mut main = json!({
        "name": d.plural, "singularName": d.singular, "namespaced": d.namespaced, "kind": d.kind, "verbs": d.verbs(),
    });
    if !d.short_names.is_empty() {
        main["shortNames"] = json!(d.short_names);
    }
    if !d.categories.is_empty() {
        main["categories"] = json!(d.categories);
    }
    vec![main]
}

/// `APIResourceList` for one group/version, or None when nothing is served there.
pub fn resource_list(st: &State, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for d in st.defs.values().filter(|d| d.group == group) {
        let Some(v) = d.version(version) else {
            continue;
        };
        resources.extend(resource_json(d));
        if v.status_subresource {
            resources.push(json!({"name": format!("{}/status", d.plural), "singularName": "", "namespaced": d.namespaced, "kind": d.kind, "verbs": ["get", "patch", "update"]}));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}
