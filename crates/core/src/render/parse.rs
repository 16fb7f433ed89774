//! Reads a cluster described as multi-document YAML (or JSON) into the plain model: Nodes,
//! Namespaces, Pods, Egresses and ExternalIPPools (`crd.antrea.io/v1alpha2` or `v1beta1`). A
//! document may be one object, a YAML list of objects (as in the user guide) or a `kind: List`.
//! Unknown kinds are skipped with a warning. It must never panic on any input: every problem is a
//! [`ParseError`] naming the document, the object and the field.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::api::{AppliedTo, IpRange, LabelSelector, v1beta1};
use crate::model::{
    ClusterView, Egress, ExternalIpPool, FAILURE_POLICY_ANNOTATION, FailurePolicy, Labels,
    Namespace, Node, Pod, PodPhase, Timestamp,
};

/// API versions accepted for Egress and ExternalIPPool.
const CRD_VERSIONS: [&str; 2] = ["crd.antrea.io/v1alpha2", "crd.antrea.io/v1beta1"];
/// How deeply lists of objects may nest (a list inside a `kind: List` ...).
const MAX_LIST_DEPTH: usize = 4;

/// A problem in the input: where (document, list item, object) and which field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}{}{message}", if .field.is_empty() { "" } else { ": " })]
pub struct ParseError {
    /// e.g. `document 2, item 1 (ExternalIPPool external-ip-pool)`.
    pub object: String,
    /// e.g. `spec.ipRanges`; empty when the problem is not in one field.
    pub field: String,
    pub message: String,
}

/// The objects of a cluster file and the warnings about what was skipped.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    /// The objects; `local_ips`, `alive` and `config` are left at their defaults.
    pub view: ClusterView,
    /// The Egresses as the API types the webhook's rules take, in file order.
    pub egress_objects: Vec<v1beta1::Egress>,
    pub warnings: Vec<String>,
}

/// Parse every document of `text`.
pub fn parse_cluster(text: &str) -> Result<Parsed, ParseError> {
    let mut builder = Builder::default();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let place = format!("document {}", index + 1);
        let value = Value::deserialize(document).map_err(|e| ParseError {
            object: place.clone(),
            field: String::new(),
            message: format!("not valid YAML: {e}"),
        })?;
        builder.add(&value, &place, 0)?;
    }
    Ok(Parsed {
        view: builder.view,
        egress_objects: builder.egress_objects,
        warnings: builder.warnings,
    })
}

#[derive(Default)]
struct Builder {
    view: ClusterView,
    egress_objects: Vec<v1beta1::Egress>,
    warnings: Vec<String>,
    /// (kind, key) → where it was first seen, to reject duplicates.
    seen: BTreeMap<(String, String), String>,
}

impl Builder {
    fn add(&mut self, value: &Value, place: &str, depth: usize) -> Result<(), ParseError> {
        let whole = |message: String| ParseError {
            object: place.to_string(),
            field: String::new(),
            message,
        };
        match value {
            Value::Null => Ok(()),
            Value::Sequence(items) => self.add_items(items, place, depth),
            Value::Mapping(_) if value.get("kind").and_then(Value::as_str) == Some("List") => {
                match value.get("items") {
                    Some(Value::Sequence(items)) => self.add_items(items, place, depth),
                    Some(Value::Null) | None => Ok(()),
                    Some(other) => Err(ParseError {
                        object: format!("{place} (List)"),
                        field: "items".to_string(),
                        message: format!("expected a list, found {}", describe(other)),
                    }),
                }
            }
            Value::Mapping(_) => self.add_object(value, place),
            other => Err(whole(format!(
                "expected a Kubernetes object or a list of objects, found {}",
                describe(other)
            ))),
        }
    }

    fn add_items(&mut self, items: &[Value], place: &str, depth: usize) -> Result<(), ParseError> {
        if depth >= MAX_LIST_DEPTH {
            return Err(ParseError {
                object: place.to_string(),
                field: String::new(),
                message: format!("lists of objects nested more than {MAX_LIST_DEPTH} deep"),
            });
        }
        for (i, item) in items.iter().enumerate() {
            self.add(item, &format!("{place}, item {}", i + 1), depth + 1)?;
        }
        Ok(())
    }

    fn add_object(&mut self, value: &Value, place: &str) -> Result<(), ParseError> {
        let partial = Obj {
            value,
            object: place.to_string(),
        };
        let kind = partial.required_str("kind")?;
        let name = partial.required_str("metadata.name")?;
        let obj = Obj {
            value,
            object: format!("{place} ({kind} {name})"),
        };
        let api_version = obj.required_str("apiVersion")?;
        let expect_version = |accepted: &[&str]| {
            if accepted.contains(&api_version) {
                Ok(())
            } else {
                Err(obj.error(
                    "apiVersion",
                    format!("{api_version:?} is not supported for {kind} (use {accepted:?})"),
                ))
            }
        };
        let key = match kind {
            "Node" => {
                expect_version(&["v1"])?;
                let node = parse_node(&obj, name)?;
                self.view.nodes.push(node);
                name.to_string()
            }
            "Namespace" => {
                expect_version(&["v1"])?;
                self.view.namespaces.push(Namespace {
                    name: name.to_string(),
                    labels: obj.string_map("metadata.labels")?,
                });
                name.to_string()
            }
            "Pod" => {
                expect_version(&["v1"])?;
                let pod = parse_pod(&obj, name)?;
                let key = format!("{}/{}", pod.namespace, pod.name);
                self.view.pods.push(pod);
                key
            }
            "Egress" => {
                expect_version(&CRD_VERSIONS)?;
                self.view.egresses.push(parse_egress(&obj, name)?);
                let object = serde_yaml::from_value(value.clone())
                    .map_err(|e| obj.error("", format!("not a valid Egress: {e}")))?;
                self.egress_objects.push(object);
                name.to_string()
            }
            "ExternalIPPool" => {
                expect_version(&CRD_VERSIONS)?;
                self.view.pools.push(parse_pool(&obj, name)?);
                name.to_string()
            }
            _ => {
                self.warnings
                    .push(format!("{}: kind {kind} is not used, skipped", obj.object));
                return Ok(());
            }
        };
        if let Some(first) = self.seen.get(&(kind.to_string(), key.clone())) {
            return Err(obj.error(
                "metadata.name",
                format!("duplicate {kind} {key} (first in {first})"),
            ));
        }
        self.seen.insert((kind.to_string(), key), place.to_string());
        Ok(())
    }
}

fn parse_node(obj: &Obj<'_>, name: &str) -> Result<Node, ParseError> {
    let mut transport_ip = None;
    for (i, address) in obj.sequence("status.addresses")?.iter().enumerate() {
        let field = format!("status.addresses[{i}]");
        let item = obj.nested(address);
        if item.optional_str("type").map_err(|e| e.within(&field))? == Some("InternalIP") {
            let text = item.required_str("address").map_err(|e| e.within(&field))?;
            let ip = text.parse::<IpAddr>().map_err(|_| {
                obj.error(
                    &format!("{field}.address"),
                    format!("{text:?} is not an IP address"),
                )
            })?;
            transport_ip.get_or_insert(ip);
        }
    }
    Ok(Node {
        name: name.to_string(),
        labels: obj.string_map("metadata.labels")?,
        annotations: obj.string_map("metadata.annotations")?,
        transport_ip,
        pod_cidr: match obj.optional_str("spec.podCIDR")? {
            Some(cidr) => Some(
                ovs_egress_inputs::parse_pod_cidr(cidr)
                    .map_err(|rule| obj.error("spec.podCIDR", rule))?,
            ),
            None => None,
        },
    })
}

fn parse_pod(obj: &Obj<'_>, name: &str) -> Result<Pod, ParseError> {
    let phase = match obj.optional_str("status.phase")? {
        None | Some("Pending") => PodPhase::Pending,
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some("Unknown") => PodPhase::Unknown,
        Some(other) => {
            return Err(obj.error(
                "status.phase",
                format!("{other:?} is not one of Pending, Running, Succeeded, Failed, Unknown"),
            ));
        }
    };
    let mut ips = Vec::new();
    let pod_ips = obj.sequence("status.podIPs")?;
    for (i, entry) in pod_ips.iter().enumerate() {
        let field = format!("status.podIPs[{i}]");
        let text = obj
            .nested(entry)
            .required_str("ip")
            .map_err(|e| e.within(&field))?;
        ips.push(parse_ip(obj, &format!("{field}.ip"), text)?);
    }
    if pod_ips.is_empty()
        && let Some(text) = obj.optional_str("status.podIP")?
    {
        ips.push(parse_ip(obj, "status.podIP", text)?);
    }
    Ok(Pod {
        namespace: obj
            .optional_str("metadata.namespace")?
            .unwrap_or("default")
            .to_string(),
        name: name.to_string(),
        labels: obj.string_map("metadata.labels")?,
        node_name: obj.optional_str("spec.nodeName")?.map(str::to_string),
        ips,
        phase,
        host_network: obj.optional_bool("spec.hostNetwork")?.unwrap_or(false),
    })
}

fn parse_egress(obj: &Obj<'_>, name: &str) -> Result<Egress, ParseError> {
    for plural in ["spec.egressIPs", "spec.externalIPPools"] {
        if !obj.sequence(plural)?.is_empty() {
            return Err(obj.error(plural, "is not supported yet".to_string()));
        }
    }
    let applied_to_value = obj
        .get("spec.appliedTo")
        .ok_or_else(|| obj.error("spec.appliedTo", "is required".to_string()))?;
    if let Value::Mapping(map) = applied_to_value {
        for key in map.keys() {
            if !matches!(key.as_str(), Some("podSelector" | "namespaceSelector")) {
                return Err(obj.error(
                    "spec.appliedTo",
                    format!(
                        "unknown field {}, expected podSelector or namespaceSelector",
                        serde_yaml::to_string(key).unwrap_or_default().trim()
                    ),
                ));
            }
        }
    }
    let applied_to: AppliedTo = obj.required_typed("spec.appliedTo")?;
    let non_empty = |field| -> Result<Option<String>, ParseError> {
        Ok(obj
            .optional_str(field)?
            .filter(|s| !s.is_empty())
            .map(str::to_string))
    };
    let egress_ip = non_empty("spec.egressIP")?;
    let external_ip_pool = non_empty("spec.externalIPPool")?;
    if egress_ip.is_none() && external_ip_pool.is_none() {
        return Err(obj.error(
            "spec",
            "one of egressIP or externalIPPool is required".to_string(),
        ));
    }
    let failure_policy = match obj.get("metadata.annotations") {
        Some(annotations) => match annotations.get(FAILURE_POLICY_ANNOTATION) {
            None => None,
            Some(Value::String(value)) if FailurePolicy::is_valid_annotation(value) => {
                Some(value.as_str())
            }
            Some(other) => {
                let found = match other {
                    Value::String(value) => format!("{value:?}"),
                    other => describe(other).to_string(),
                };
                return Err(obj.error(
                    &format!("metadata.annotations[{FAILURE_POLICY_ANNOTATION}]"),
                    format!("must be node-ip or drop, found {found}"),
                ));
            }
        },
        None => None,
    };
    Ok(Egress {
        name: name.to_string(),
        created: obj.created()?,
        applied_to,
        egress_ip,
        external_ip_pool,
        failure_policy: FailurePolicy::from_annotation(failure_policy),
    })
}

fn parse_pool(obj: &Obj<'_>, name: &str) -> Result<ExternalIpPool, ParseError> {
    let ip_ranges: Vec<IpRange> = obj.required_typed("spec.ipRanges")?;
    let node_selector: LabelSelector = obj.get("spec.nodeSelector").map_or_else(
        || {
            Err(obj.error(
                "spec.nodeSelector",
                "is required (write `nodeSelector: {}` to select every Node)".to_string(),
            ))
        },
        |_| obj.required_typed("spec.nodeSelector"),
    )?;
    Ok(ExternalIpPool {
        name: name.to_string(),
        created: obj.created()?,
        ip_ranges,
        node_selector,
    })
}

fn parse_ip(obj: &Obj<'_>, field: &str, text: &str) -> Result<IpAddr, ParseError> {
    text.parse()
        .map_err(|_| obj.error(field, format!("{text:?} is not an IP address")))
}

/// One object (or a part of it) and the name used in its errors.
struct Obj<'a> {
    value: &'a Value,
    object: String,
}

impl<'a> Obj<'a> {
    fn error(&self, field: &str, message: String) -> ParseError {
        ParseError {
            object: self.object.clone(),
            field: field.to_string(),
            message,
        }
    }

    /// A part of this object, reported under the same object name.
    fn nested(&self, value: &'a Value) -> Obj<'a> {
        Obj {
            value,
            object: self.object.clone(),
        }
    }

    /// The value at a dotted path; an explicit `null` counts as absent.
    fn get(&self, path: &str) -> Option<&'a Value> {
        path.split('.')
            .try_fold(self.value, |value, key| value.get(key))
            .filter(|v| !v.is_null())
    }

    fn optional_str(&self, path: &str) -> Result<Option<&'a str>, ParseError> {
        match self.get(path) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(
                path,
                format!("expected a string, found {}", describe(other)),
            )),
        }
    }

    fn required_str(&self, path: &str) -> Result<&'a str, ParseError> {
        self.optional_str(path)?
            .ok_or_else(|| self.error(path, "is required".to_string()))
    }

    fn optional_bool(&self, path: &str) -> Result<Option<bool>, ParseError> {
        match self.get(path) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.error(
                path,
                format!("expected true or false, found {}", describe(other)),
            )),
        }
    }

    /// A list; absent is empty.
    fn sequence(&self, path: &str) -> Result<&'a [Value], ParseError> {
        match self.get(path) {
            None => Ok(&[]),
            Some(Value::Sequence(items)) => Ok(items),
            Some(other) => {
                Err(self.error(path, format!("expected a list, found {}", describe(other))))
            }
        }
    }

    /// Labels or annotations: a mapping of strings to strings; absent is empty.
    fn string_map(&self, path: &str) -> Result<Labels, ParseError> {
        let map = match self.get(path) {
            None => return Ok(Labels::new()),
            Some(Value::Mapping(map)) => map,
            Some(other) => {
                return Err(self.error(
                    path,
                    format!("expected a mapping, found {}", describe(other)),
                ));
            }
        };
        map.iter()
            .map(|(k, v)| match (k, v) {
                (Value::String(k), Value::String(v)) => Ok((k.clone(), v.clone())),
                (Value::String(k), other) => Err(self.error(
                    &format!("{path}.{k}"),
                    format!("expected a string value, found {}", describe(other)),
                )),
                (other, _) => Err(self.error(
                    path,
                    format!("expected string keys, found {}", describe(other)),
                )),
            })
            .collect()
    }

    /// A field deserialized into an API type; required.
    fn required_typed<T: DeserializeOwned>(&self, path: &str) -> Result<T, ParseError> {
        let value = self
            .get(path)
            .ok_or_else(|| self.error(path, "is required".to_string()))?;
        serde_yaml::from_value(value.clone()).map_err(|e| self.error(path, e.to_string()))
    }

    /// `metadata.creationTimestamp` in seconds since the epoch; absent is 0.
    fn created(&self) -> Result<Timestamp, ParseError> {
        const FIELD: &str = "metadata.creationTimestamp";
        match self.optional_str(FIELD)? {
            None => Ok(0),
            Some(text) => parse_rfc3339(text).ok_or_else(|| {
                self.error(
                    FIELD,
                    format!("{text:?} is not an RFC 3339 time like 2024-05-01T10:00:00Z"),
                )
            }),
        }
    }
}

impl ParseError {
    /// The same error reported for a field inside `parent` (e.g. one list entry).
    fn within(mut self, parent: &str) -> Self {
        self.field = format!("{parent}.{}", self.field);
        self
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Seconds since the epoch of an RFC 3339 time (`2024-05-01T10:00:00Z`, optional fraction,
/// `Z` or `±hh:mm`); `None` when malformed.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    let number = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (date, rest) = text.split_once(['T', 't'])?;
    let mut date_parts = date.splitn(3, '-');
    let year = number(date_parts.next()?)?;
    let month = number(date_parts.next()?)?;
    let day = number(date_parts.next()?)?;
    let (time, offset_seconds) = if let Some(time) = rest.strip_suffix(['Z', 'z']) {
        (time, 0)
    } else {
        let split = rest.rfind(['+', '-'])?;
        let (time, offset) = rest.split_at(split);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = offset.get(1..)?.split_once(':')?;
        let (hours, minutes) = (number(hours)?, number(minutes)?);
        if hours > 23 || minutes > 59 {
            return None;
        }
        (time, sign * (hours * 3600 + minutes * 60))
    };
    let time = time.split_once('.').map_or(time, |(whole, fraction)| {
        if number(fraction).is_some() {
            whole
        } else {
            ""
        }
    });
    let mut time_parts = time.splitn(3, ':');
    let hour = number(time_parts.next()?)?;
    let minute = number(time_parts.next()?)?;
    let second = number(time_parts.next()?)?;
    let valid = (1..=9999).contains(&year)
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61;
    valid.then(|| {
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
            - offset_seconds
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}
