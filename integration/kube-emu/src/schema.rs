//! Structural-schema handling of custom resources, as the API server does it: drop nulls and
//! unknown fields (pruning, unless `x-kubernetes-preserve-unknown-fields`), apply `default`s, then
//! validate against the version's `openAPIV3Schema` (type, required, enum, pattern, formats
//! ipv4/ipv6/cidr/date-time, lengths, bounds, items, additionalProperties, oneOf/anyOf/allOf/not).
//! Every violation becomes a `Cause` naming the field (`spec.egressIP`). Metadata is never pruned.

use crate::status::Cause;
use regex::Regex;
use serde_json::{Map, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn preserve(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
}

/// Prunes unknown fields and nulls and fills defaults, in place; the dotted paths of pruned
/// unknown fields are appended to `unknown` (for `fieldValidation=Strict`).
pub fn prune_and_default(schema: &Value, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
    let is_root = path.is_empty();
    match value {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let keep_unknown =
                preserve(schema) || schema["additionalProperties"].as_bool() == Some(true);
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if is_root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let sub = props.and_then(|p| p.get(&k)).or(additional);
                match sub {
                    Some(sub) => {
                        let nullable = sub["nullable"].as_bool() == Some(true);
                        if map[&k].is_null() && !nullable {
                            map.remove(&k);
                        } else if let Some(v) = map.get_mut(&k) {
                            prune_and_default(sub, v, &child(path, &k), unknown);
                        }
                    }
                    None if !keep_unknown => {
                        unknown.push(child(path, &k));
                        map.remove(&k);
                    }
                    None => {}
                }
            }
            if let Some(props) = props {
                for (k, sub) in props {
                    if !map.contains_key(k)
                        && let Some(d) = sub.get("default")
                    {
                        let mut d = d.clone();
                        prune_and_default(sub, &mut d, &child(path, k), &mut Vec::new());
                        map.insert(k.clone(), d);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    prune_and_default(item_schema, v, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// Validates `value` against `schema`; returns all causes (empty = valid).
pub fn validate(schema: &Value, value: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    walk(schema, value, "", &mut out);
    out
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn invalid(out: &mut Vec<Cause>, path: &str, v: &Value, what: String) {
    let name = if path.is_empty() { "body" } else { path };
    out.push(Cause {
        reason: "FieldValueInvalid",
        field: path.to_string(),
        message: format!("Invalid value: {}: {name} in body {what}", show(v)),
    });
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "ip" => s.parse::<IpAddr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, len)| {
            match (ip.parse::<IpAddr>(), len.parse::<u8>()) {
                (Ok(IpAddr::V4(_)), Ok(l)) => l <= 32,
                (Ok(IpAddr::V6(_)), Ok(l)) => l <= 128,
                _ => false,
            }
        }),
        "date-time" => s.parse::<jiff::Timestamp>().is_ok(),
        _ => true,
    }
}

fn walk(schema: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    if v.is_null() && schema["nullable"].as_bool() == Some(true) {
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"].as_bool() == Some(true);
    if int_or_string {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            invalid(out, path, v, "must be of type int-or-string".into());
            return;
        }
    } else if let Some(t) = schema["type"].as_str()
        && !type_ok(t, v)
    {
        let name = if path.is_empty() { "body" } else { path };
        out.push(Cause {
            reason: "FieldValueTypeInvalid",
            field: path.to_string(),
            message: format!(
                "Invalid value: {}: {name} in body must be of type {t}: {}",
                show(v),
                show(v)
            ),
        });
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(show).collect();
        out.push(Cause {
            reason: "FieldValueNotSupported",
            field: path.to_string(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                show(v),
                list.join(", ")
            ),
        });
    }
    match v {
        Value::String(s) => check_string(schema, s, v, path, out),
        Value::Number(n) => check_number(schema, n.as_f64().unwrap_or(0.0), v, path, out),
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(min) = schema["minItems"].as_u64().filter(|m| len < *m) {
                invalid(out, path, v, format!("should have at least {min} items"));
            }
            if let Some(max) = schema["maxItems"].as_u64().filter(|m| len > *m) {
                out.push(Cause {
                    reason: "FieldValueTooMany",
                    field: path.into(),
                    message: format!("Too many: {len}: must have at most {max} items"),
                });
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => check_object(schema, map, path, out),
        _ => {}
    }
    combinators(schema, v, path, out);
}

fn check_string(schema: &Value, s: &str, v: &Value, path: &str, out: &mut Vec<Cause>) {
    let len = s.chars().count() as u64;
    if let Some(max) = schema["maxLength"].as_u64().filter(|m| len > *m) {
        out.push(Cause {
            reason: "FieldValueTooLong",
            field: path.into(),
            message: format!("Too long: may not be more than {max} bytes"),
        });
    }
    if let Some(min) = schema["minLength"].as_u64().filter(|m| len < *m) {
        invalid(out, path, v, format!("should be at least {min} chars long"));
    }
    if let Some(p) = schema["pattern"].as_str() {
        match Regex::new(p) {
            Ok(re) if !re.is_match(s) => invalid(out, path, v, format!("should match '{p}'")),
            Ok(_) => {}
            Err(e) => invalid(out, path, v, format!("has an unusable pattern '{p}': {e}")),
        }
    }
    if let Some(f) = schema["format"].as_str()
        && !format_ok(f, s)
    {
        invalid(out, path, v, format!("must be of type {f}: {}", show(v)));
    }
}

fn check_number(schema: &Value, n: f64, v: &Value, path: &str, out: &mut Vec<Cause>) {
    if let Some(min) = schema["minimum"].as_f64() {
        let excl = schema["exclusiveMinimum"].as_bool() == Some(true);
        if n < min || (excl && n == min) {
            invalid(
                out,
                path,
                v,
                format!("should be greater than or equal to {min}"),
            );
        }
    }
    if let Some(max) = schema["maximum"].as_f64() {
        let excl = schema["exclusiveMaximum"].as_bool() == Some(true);
        if n > max || (excl && n == max) {
            invalid(
                out,
                path,
                v,
                format!("should be less than or equal to {max}"),
            );
        }
    }
}

fn check_object(schema: &Value, map: &Map<String, Value>, path: &str, out: &mut Vec<Cause>) {
    for r in schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(r) {
            out.push(Cause {
                reason: "FieldValueRequired",
                field: child(path, r),
                message: "Required value".into(),
            });
        }
    }
    let props = schema["properties"].as_object();
    for (k, val) in map {
        if path.is_empty() && k == "metadata" {
            continue;
        }
        if let Some(sub) = props.and_then(|p| p.get(k)) {
            walk(sub, val, &child(path, k), out);
        } else if let Some(sub) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            walk(sub, val, &child(path, k), out);
        }
    }
}

fn combinators(schema: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    let branch = |s: &Value| {
        let mut o = Vec::new();
        walk(s, v, path, &mut o);
        o
    };
    let name = if path.is_empty() {
        "body".to_string()
    } else {
        path.to_string()
    };
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            out.extend(branch(s));
        }
    }
    if let Some(any) = schema["anyOf"].as_array() {
        let results: Vec<Vec<Cause>> = any.iter().map(branch).collect();
        if results.iter().all(|r| !r.is_empty()) {
            results.into_iter().for_each(|r| out.extend(r));
            invalid(
                out,
                path,
                v,
                format!("must validate at least one schema (anyOf) of {name}"),
            );
        }
    }
    if let Some(one) = schema["oneOf"].as_array() {
        let results: Vec<Vec<Cause>> = one.iter().map(branch).collect();
        let ok = results.iter().filter(|r| r.is_empty()).count();
        if ok != 1 {
            if ok == 0 {
                results.into_iter().for_each(|r| out.extend(r));
            }
            invalid(
                out,
                path,
                v,
                format!(
                    "must validate one and only one schema (oneOf) of {name}; found {ok} valid"
                ),
            );
        }
    }
    if let Some(not) = schema.get("not")
        && branch(not).is_empty()
    {
        invalid(out, path, v, "must not validate the schema (not)".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["appliedTo"],
                "anyOf": [{"required": ["egressIP"]}, {"required": ["externalIPPool"]}],
                "properties": {
                    "appliedTo": {"type": "object", "properties": {"podSelector": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                    "egressIP": {"type": "string", "oneOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
                    "externalIPPool": {"type": "string"},
                    "ranges": {"type": "array", "items": {"type": "object", "oneOf": [{"required": ["cidr"]}, {"required": ["start", "end"]}],
                        "properties": {"cidr": {"type": "string", "format": "cidr"}, "start": {"type": "string"}, "end": {"type": "string"}}}},
                    "op": {"type": "string", "enum": ["In", "NotIn"]},
                    "label": {"type": "string", "pattern": "^[a-z]+$"},
                    "count": {"type": "integer", "minimum": 1, "default": 3}}},
            "status": {"type": "object", "properties": {"egressNode": {"type": "string"}}}}})
    }

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn valid_object_has_no_causes() {
        let v = json!({"spec": {"appliedTo": {}, "egressIP": "fd00::1", "ranges": [{"cidr": "10.0.0.0/24"}, {"start": "a", "end": "b"}], "op": "In"}});
        assert_eq!(validate(&schema(), &v), vec![]);
    }

    #[test]
    fn bad_ip_names_the_field() {
        let v = json!({"spec": {"appliedTo": {}, "egressIP": "10.0.0.300"}});
        let c = validate(&schema(), &v);
        assert!(fields(&c).iter().all(|f| *f == "spec.egressIP"), "{c:?}");
        assert!(c[0].message.contains("must be of type ipv4"), "{c:?}");
    }

    #[test]
    fn missing_required_enum_pattern_cidr_and_oneof_are_reported_per_field() {
        let v = json!({"spec": {"egressIP": "10.0.0.1", "op": "Maybe", "label": "UP", "ranges": [{"cidr": "10.0.0.0/33"}, {}]}});
        let c = validate(&schema(), &v);
        let f = fields(&c);
        for want in [
            "spec.appliedTo",
            "spec.op",
            "spec.label",
            "spec.ranges[0].cidr",
            "spec.ranges[1].cidr",
            "spec.ranges[1]",
        ] {
            assert!(f.contains(&want), "{want} missing in {c:?}");
        }
        assert!(
            c.iter()
                .any(|x| x.reason == "FieldValueRequired" && x.field == "spec.appliedTo")
        );
    }

    #[test]
    fn anyof_failure_and_type_errors() {
        let c = validate(&schema(), &json!({"spec": {"appliedTo": {}, "count": "x"}}));
        let f = fields(&c);
        assert!(
            f.contains(&"spec.egressIP")
                && f.contains(&"spec.externalIPPool")
                && f.contains(&"spec.count"),
            "{c:?}"
        );
    }

    #[test]
    fn pruning_drops_unknown_keeps_preserved_and_defaults() {
        let mut v = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "x": 1}, "junk": 1,
            "spec": {"appliedTo": {"podSelector": {"anything": {"goes": 1}}, "unknown": 2}, "egressIP": null, "other": 1}});
        let mut unknown = Vec::new();
        prune_and_default(&schema(), &mut v, "", &mut unknown);
        assert_eq!(unknown, ["junk", "spec.appliedTo.unknown", "spec.other"]);
        assert_eq!(
            v,
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "x": 1},
            "spec": {"appliedTo": {"podSelector": {"anything": {"goes": 1}}}, "count": 3}})
        );
    }
}
