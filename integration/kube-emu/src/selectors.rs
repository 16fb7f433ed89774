//! Label selectors (full string syntax: `=`, `==`, `!=`, `in`, `notin`, `key`, `!key`, `>`, `<`)
//! and field selectors (`metadata.name`, `metadata.namespace` and each resource's selectable
//! fields). Parsing errors become 400 BadRequest; unknown field labels are rejected as the real
//! server does. Matching must never mutate objects.

use crate::status::ApiError;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

/// A parsed label selector (all requirements must hold).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<(String, Op)>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let bad = |t: &str, why: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: {why}: \"{t}\" in labelSelector \"{s}\""
            ))
        };
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for term in split_top(s) {
            let t = term.trim();
            if t.is_empty() {
                return Err(bad(t, "empty requirement"));
            }
            if let Some(k) = t.strip_prefix('!') {
                reqs.push((k.trim().to_string(), Op::NotExists));
            } else if let Some(open) = t.find('(') {
                let close = t.rfind(')').ok_or_else(|| bad(t, "missing ')'"))?;
                let head: Vec<&str> = t[..open].split_whitespace().collect();
                let values: Vec<String> = t[open + 1..close]
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                match head.as_slice() {
                    [k, "in"] => reqs.push((k.to_string(), Op::In(values))),
                    [k, "notin"] => reqs.push((k.to_string(), Op::NotIn(values))),
                    _ => return Err(bad(t, "expected 'key in (...)' or 'key notin (...)'")),
                }
            } else if let Some((k, v)) = t.split_once("!=") {
                reqs.push((k.trim().to_string(), Op::NotEq(v.trim().to_string())));
            } else if let Some((k, v)) = t.split_once("==") {
                reqs.push((k.trim().to_string(), Op::Eq(v.trim().to_string())));
            } else if let Some((k, v)) = t.split_once('=') {
                reqs.push((k.trim().to_string(), Op::Eq(v.trim().to_string())));
            } else if let Some((k, v)) = t.split_once('>') {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| bad(t, "'>' needs an integer"))?;
                reqs.push((k.trim().to_string(), Op::Gt(n)));
            } else if let Some((k, v)) = t.split_once('<') {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| bad(t, "'<' needs an integer"))?;
                reqs.push((k.trim().to_string(), Op::Lt(n)));
            } else if t.split_whitespace().count() == 1 {
                reqs.push((t.to_string(), Op::Exists));
            } else {
                return Err(bad(t, "unknown operator"));
            }
        }
        if let Some((k, _)) = reqs.iter().find(|(k, _)| k.is_empty()) {
            return Err(bad(k, "empty key"));
        }
        Ok(Self(reqs))
    }

    /// A `metav1.LabelSelector` object (`matchLabels`, `matchExpressions` with `In`, `NotIn`,
    /// `Exists`, `DoesNotExist`); `{}` or null selects everything. Errors name the offending part.
    pub fn from_struct(v: &Value) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for (k, val) in v["matchLabels"].as_object().into_iter().flatten() {
            let val = val
                .as_str()
                .ok_or_else(|| format!("matchLabels.{k}: must be a string"))?;
            reqs.push((k.clone(), Op::Eq(val.to_string())));
        }
        for (i, e) in v["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let key = e["key"].as_str().unwrap_or_default().to_string();
            if key.is_empty() {
                return Err(format!("matchExpressions[{i}].key: Required value"));
            }
            let values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect();
            let op = match e["operator"].as_str().unwrap_or_default() {
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::NotExists,
                other => {
                    return Err(format!(
                        "matchExpressions[{i}].operator: Unsupported value: {other:?}: supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\""
                    ));
                }
            };
            reqs.push((key, op));
        }
        Ok(Self(reqs))
    }

    /// True when it selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.0.iter().all(|(k, op)| {
            let v = labels.get(k).and_then(Value::as_str);
            match op {
                Op::Eq(x) => v == Some(x.as_str()),
                Op::NotEq(x) => v != Some(x.as_str()),
                Op::In(xs) => v.is_some_and(|v| xs.iter().any(|x| x == v)),
                Op::NotIn(xs) => v.is_none_or(|v| xs.iter().all(|x| x != v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }
}

/// A parsed field selector (`path=value`, `path==value`, `path!=value`, comma-separated).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// `allowed` lists the resource's selectable fields besides metadata.name/namespace.
    pub fn parse(s: &str, allowed: &[String]) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, eq, v) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            let k = k.trim();
            if !matches!(k, "metadata.name" | "metadata.namespace")
                && !allowed.iter().any(|a| a == k)
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            reqs.push((k.to_string(), eq, v.trim().to_string()));
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let got = path.split('.').try_fold(obj, |v, seg| v.get(seg));
            let got = match got {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (got == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn structured_label_selector_matches_like_its_string_form() {
        let sel = LabelSelector::from_struct(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }))
        .unwrap();
        assert_eq!(
            sel,
            LabelSelector::parse("app=web,tier in (a,b),!legacy").unwrap()
        );
        assert!(sel.matches(&obj(json!({"app": "web", "tier": "b"}))));
        assert!(!sel.matches(&obj(json!({"app": "web", "tier": "c"}))));
        assert!(LabelSelector::from_struct(&json!({})).unwrap().is_empty());
        let bad = LabelSelector::from_struct(
            &json!({"matchExpressions": [{"key": "k", "operator": "Near"}]}),
        );
        assert!(
            bad.unwrap_err()
                .starts_with("matchExpressions[0].operator: Unsupported value: \"Near\"")
        );
    }

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns1", "labels": labels}, "spec": {"nodeName": "n1"}})
    }

    #[test]
    fn label_selector_full_syntax_matches_like_kubernetes() {
        let o = obj(json!({"app": "web", "tier": "front", "n": "5"}));
        let yes = [
            "app=web",
            "app==web",
            "tier!=back",
            "app in (web, db)",
            "tier notin (back)",
            "app",
            "!missing",
            "missing notin (x)",
            "missing!=x",
            "n>3",
            "n<6",
            "app=web,tier in (front)",
        ];
        for s in yes {
            assert!(
                LabelSelector::parse(s).unwrap().matches(&o),
                "{s} should match"
            );
        }
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "tier notin (front,back)",
            "missing",
            "!app",
            "n>5",
            "app=web,tier=back",
        ];
        for s in no {
            assert!(
                !LabelSelector::parse(s).unwrap().matches(&o),
                "{s} should not match"
            );
        }
    }

    #[test]
    fn label_selector_rejects_garbage() {
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b c").is_err());
        assert!(LabelSelector::parse("app,,x").is_err());
    }

    #[test]
    fn field_selector_supports_only_known_fields() {
        let o = obj(json!({}));
        let allowed = vec!["spec.nodeName".to_string()];
        assert!(
            FieldSelector::parse("spec.nodeName=n1,metadata.namespace!=x", &allowed)
                .unwrap()
                .matches(&o)
        );
        assert!(
            !FieldSelector::parse("metadata.name=b", &allowed)
                .unwrap()
                .matches(&o)
        );
        let err = FieldSelector::parse("spec.other=1", &allowed).unwrap_err();
        assert_eq!(err.message, "field label not supported: spec.other");
    }
}
