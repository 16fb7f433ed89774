//! `meta.k8s.io/v1` Table output for `kubectl get`: CRD `additionalPrinterColumns` (simple
//! JSONPath) and default columns for built-ins, with ages rendered server-side like the real
//! server's `HumanDuration`. It only formats; it never filters or mutates objects.

use crate::ops::output;
use crate::resources::{Column, ResourceDef, Special};
use serde_json::{Value, json};
use std::borrow::Cow;

/// True when the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// The real server's `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('.');
    if path.is_empty() {
        return Some(obj);
    }
    path.split('.')
        .try_fold(obj, |v, seg| match seg.split_once('[') {
            Some((field, idx)) => {
                let v = if field.is_empty() { v } else { v.get(field)? };
                v.get(idx.trim_end_matches(']').parse::<usize>().ok()?)
            }
            None => v.get(seg),
        })
}

fn age_of(v: &Value) -> Value {
    match v.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) {
        Some(t) => Value::String(human_duration(
            jiff::Timestamp::now().duration_since(t).as_secs(),
        )),
        None => Value::Null,
    }
}

/// Cells computed for built-ins whose columns have no JSONPath.
fn computed(def: &ResourceDef, col: &Column, obj: &Value) -> Value {
    let len = |v: &Value| v.as_object().map_or(0, |m| m.len());
    match (def.plural.as_str(), col.name.as_str()) {
        ("pods", "Ready") => {
            let total = obj["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = obj["status"]["containerStatuses"]
                .as_array()
                .map_or(0, |c| c.iter().filter(|s| s["ready"] == true).count());
            json!(format!("{ready}/{total}"))
        }
        ("pods", "Restarts") => {
            let n: i64 = obj["status"]["containerStatuses"]
                .as_array()
                .map_or(0, |c| {
                    c.iter().filter_map(|s| s["restartCount"].as_i64()).sum()
                });
            json!(n.to_string())
        }
        ("nodes", "Status") => {
            let ready = obj["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .map(|c| c["status"] == "True");
            let mut s = if ready == Some(true) {
                "Ready".to_string()
            } else {
                "NotReady".to_string()
            };
            if obj["spec"]["unschedulable"] == true {
                s.push_str(",SchedulingDisabled");
            }
            json!(s)
        }
        ("nodes", "Roles") => {
            let roles: Vec<&str> = obj["metadata"]["labels"]
                .as_object()
                .map_or(Vec::new(), |m| {
                    m.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .collect()
                });
            json!(if roles.is_empty() {
                "<none>".to_string()
            } else {
                roles.join(",")
            })
        }
        ("nodes", "Internal-IP") => obj["status"]["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
            .map_or(json!("<none>"), |x| x["address"].clone()),
        (_, "Webhooks") => json!(obj["webhooks"].as_array().map_or(0, Vec::len)),
        (_, "Data") => json!(len(&obj["data"]) + len(&obj["binaryData"])),
        _ => Value::Null,
    }
}

fn cell(def: &ResourceDef, col: &Column, obj: &Value) -> Value {
    if col.json_path.is_empty() {
        return computed(def, col, obj);
    }
    match lookup(obj, &col.json_path) {
        None | Some(Value::Null) => Value::Null,
        Some(v) if col.type_ == "date" => age_of(v),
        Some(v) => v.clone(),
    }
}

fn object(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// Builds the Table for stored `objects` (built from owned values: `json!` would re-serialize).
pub fn table(
    def: &ResourceDef,
    version: &str,
    objects: &[&Value],
    rv: Option<u64>,
    include_object: bool,
) -> Value {
    let columns = def
        .version(version)
        .map(|v| v.columns.clone())
        .unwrap_or_default();
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    defs.extend(columns.iter().map(|c| {
        json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority})
    }));
    let rows: Vec<Value> = objects
        .iter()
        .map(|stored| {
            let shown = if include_object || def.special == Special::EventsV1 {
                Cow::Owned(output(def, version, stored))
            } else {
                Cow::Borrowed(*stored)
            };
            let mut cells = Vec::with_capacity(columns.len() + 1);
            cells.push(shown["metadata"]["name"].clone());
            cells.extend(columns.iter().map(|c| cell(def, c, &shown)));
            let obj = if include_object {
                shown.into_owned()
            } else {
                object(vec![
                    ("kind", json!("PartialObjectMetadata")),
                    ("apiVersion", json!("meta.k8s.io/v1")),
                    ("metadata", shown["metadata"].clone()),
                ])
            };
            object(vec![("cells", Value::Array(cells)), ("object", obj)])
        })
        .collect();
    let mut meta = json!({});
    if let Some(rv) = rv {
        meta["resourceVersion"] = json!(rv.to_string());
    }
    object(vec![
        ("kind", json!("Table")),
        ("apiVersion", json!("meta.k8s.io/v1")),
        ("metadata", meta),
        ("columnDefinitions", Value::Array(defs)),
        ("rows", Value::Array(rows)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_duration_matches_kubernetes_formatting() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 7200, "3d2h"),
            (40 * 86400, "40d"),
        ];
        for (s, want) in cases {
            assert_eq!(human_duration(s), want, "{s}s");
        }
    }

    #[test]
    fn lookup_follows_dotted_and_indexed_paths() {
        let v = json!({"status": {"usage": {"total": 9}, "list": [{"a": 1}, {"a": 2}]}});
        assert_eq!(lookup(&v, ".status.usage.total"), Some(&json!(9)));
        assert_eq!(lookup(&v, ".status.list[1].a"), Some(&json!(2)));
        assert_eq!(lookup(&v, ".status.missing"), None);
    }

    #[test]
    fn table_accept_header_detection() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
