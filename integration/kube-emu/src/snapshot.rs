//! Initial state: the default namespaces every cluster has, and objects from a snapshot file
//! (YAML stream or JSON; single objects, `kind: List`, or arrays). Snapshot objects keep their
//! `status` as written (a dump of a live cluster restores as it was). CRDs load first so their
//! instances can follow in the same file; missing namespaces are created.

use crate::ops::{self, Ctx};
use crate::store::State;
use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

pub const DEFAULT_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

fn ensure_namespace(st: &mut State, name: &str) -> anyhow::Result<()> {
    if st.get("namespaces", "", name).is_some() {
        return Ok(());
    }
    let def = st
        .find("", "v1", "namespaces")
        .context("namespaces are a built-in resource")?;
    let ctx = Ctx {
        def,
        version: "v1".into(),
        ns: String::new(),
        dry_run: false,
        strict: false,
    };
    ops::create(st, &ctx, json!({"metadata": {"name": name}}), false)
        .map_err(|e| anyhow::anyhow!("creating namespace {name}: {}", e.message))?;
    Ok(())
}

/// What every cluster starts with: the default namespaces and the `kubernetes` Service (which
/// gets the first address of the service CIDR).
pub fn cluster_defaults(st: &mut State) -> anyhow::Result<()> {
    DEFAULT_NAMESPACES
        .iter()
        .try_for_each(|n| ensure_namespace(st, n))?;
    let def = st
        .find("", "v1", "services")
        .context("services are a built-in resource")?;
    let ctx = Ctx {
        def,
        version: "v1".into(),
        ns: "default".into(),
        dry_run: false,
        strict: false,
    };
    let svc = json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}});
    ops::create(st, &ctx, svc, false)
        .map_err(|e| anyhow::anyhow!("creating service default/kubernetes: {}", e.message))?;
    Ok(())
}

fn flatten(v: Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.into_iter().for_each(|i| flatten(i, out)),
        Value::Object(ref m)
            if m.get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"))
                && m.get("items").is_some() =>
        {
            if let Some(Value::Array(items)) = m.get("items").cloned() {
                items.into_iter().for_each(|i| flatten(i, out));
            }
        }
        Value::Null => {}
        other => out.push(other),
    }
}

/// Parses a snapshot document stream into objects.
pub fn parse(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut objs = Vec::new();
    if text.trim_start().starts_with(['[', '{']) {
        // JSON: much faster than the YAML parser for large dumps.
        let mut docs = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        for (i, doc) in docs.by_ref().enumerate() {
            flatten(
                doc.with_context(|| format!("snapshot JSON document #{}", i + 1))?,
                &mut objs,
            );
        }
        return Ok(objs);
    }
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).with_context(|| format!("snapshot document #{}", i + 1))?;
        flatten(v, &mut objs);
    }
    Ok(objs)
}

/// Loads objects into the store, CRDs and namespaces first.
pub fn load(st: &mut State, mut objs: Vec<Value>) -> anyhow::Result<usize> {
    let rank = |o: &Value| match o["kind"].as_str() {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        _ => 2,
    };
    objs.sort_by_key(rank);
    for o in &objs {
        let (api_version, kind, name) = (
            o["apiVersion"].as_str().unwrap_or_default(),
            o["kind"].as_str().unwrap_or_default(),
            o["metadata"]["name"].as_str().unwrap_or_default(),
        );
        let Some((def, version)) = st.find_kind(api_version, kind) else {
            bail!(
                "snapshot object {kind} {name:?}: apiVersion {api_version:?} kind {kind:?} is not served (is its CRD in the snapshot?)"
            );
        };
        let ns = if def.namespaced {
            o["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        if def.namespaced {
            ensure_namespace(st, &ns)?;
        }
        if def.plural == "namespaces" && st.get("namespaces", "", name).is_some() {
            continue;
        }
        let ctx = Ctx {
            def,
            version,
            ns,
            dry_run: false,
            strict: false,
        };
        let mut obj = o.clone();
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        ops::create(st, &ctx, obj, true)
            .map_err(|e| anyhow::anyhow!("snapshot object {kind} {name:?}: {}", e.message))?;
    }
    Ok(objs.len())
}
