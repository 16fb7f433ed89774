//! The resource registry: which group/version/plural exists, its kind, scope, subresources,
//! schema and printer columns. Built-ins are fixed; CRDs are turned into entries when created.
//! It holds definitions only, never objects (those live in `store`).

use serde_json::Value;

/// One printer column (`additionalPrinterColumns` or a built-in default column).
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    /// Simple JSONPath like `.status.egressNode`; empty for built-in computed columns.
    pub json_path: String,
}

/// One served version of a resource.
#[derive(Debug, Clone)]
pub struct VersionDef {
    pub name: String,
    pub storage: bool,
    pub schema: Option<Value>,
    pub status_subresource: bool,
    pub columns: Vec<Column>,
}

/// Built-in resources whose behaviour differs from plain storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    None,
    Namespace,
    Pod,
    Node,
    Secret,
    Service,
    /// events.k8s.io/v1 Event: stored as core/v1 Event, converted on the way in and out.
    EventsV1,
    Crd,
    /// admissionregistration.k8s.io/v1 ValidatingWebhookConfiguration: defaulted and validated
    /// on write (see `admission`), never itself subject to webhooks.
    WebhookConfig,
}

/// A resource (all its versions share one storage).
#[derive(Debug, Clone)]
pub struct ResourceDef {
    pub group: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    pub versions: Vec<VersionDef>,
    pub special: Special,
    /// Extra field selectors beyond metadata.name/namespace (CRD `selectableFields`, pod fields).
    pub selectable_fields: Vec<String>,
}

impl ResourceDef {
    /// Storage key shared by all versions: `plural.group` (or `plural` for core).
    /// Identity in the registry: `plural.group` (or `plural` for core).
    pub fn id(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// Storage key shared by all versions; events.k8s.io Events live with core/v1 Events.
    pub fn key(&self) -> String {
        if self.special == Special::EventsV1 {
            "events".into()
        } else {
            self.id()
        }
    }
    pub fn version(&self, v: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|x| x.name == v)
    }
    pub fn api_version(&self, v: &str) -> String {
        if self.group.is_empty() {
            v.to_string()
        } else {
            format!("{}/{}", self.group, v)
        }
    }
    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

/// Kubernetes version priority: GA > beta > alpha, higher numbers first, then others by name.
pub fn version_priority(v: &str) -> (u8, u32, u32, String) {
    let parse = |s: &str| -> Option<(u8, u32, u32)> {
        let rest = s.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let major: u32 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((3, major, 0));
        }
        for (pfx, rank) in [("beta", 2u8), ("alpha", 1u8)] {
            if let Some(n) = tail.strip_prefix(pfx) {
                return n.parse().ok().map(|minor| (rank, major, minor));
            }
        }
        None
    };
    match parse(v) {
        Some((rank, major, minor)) => (rank, major, minor, String::new()),
        None => (0, 0, 0, v.to_string()),
    }
}

/// Sorts versions most-preferred first.
pub fn sort_versions(vs: &mut [String]) {
    vs.sort_by(|a, b| {
        let (pa, pb) = (version_priority(a), version_priority(b));
        (pb.0, pb.1, pb.2)
            .cmp(&(pa.0, pa.1, pa.2))
            .then_with(|| pa.3.cmp(&pb.3))
    });
}

fn col(name: &str, type_: &str, path: &str, priority: i64) -> Column {
    Column {
        name: name.into(),
        type_: type_.into(),
        format: String::new(),
        description: String::new(),
        priority,
        json_path: path.into(),
    }
}

fn age() -> Column {
    col("Age", "date", ".metadata.creationTimestamp", 0)
}

struct B {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short: &'static [&'static str],
    namespaced: bool,
    status: bool,
    special: Special,
}

/// The built-in resources served from the start.
pub fn builtins() -> Vec<ResourceDef> {
    let list = [
        B {
            group: "",
            version: "v1",
            kind: "Namespace",
            plural: "namespaces",
            short: &["ns"],
            namespaced: false,
            status: true,
            special: Special::Namespace,
        },
        B {
            group: "",
            version: "v1",
            kind: "Node",
            plural: "nodes",
            short: &["no"],
            namespaced: false,
            status: true,
            special: Special::Node,
        },
        B {
            group: "",
            version: "v1",
            kind: "Pod",
            plural: "pods",
            short: &["po"],
            namespaced: true,
            status: true,
            special: Special::Pod,
        },
        B {
            group: "",
            version: "v1",
            kind: "Event",
            plural: "events",
            short: &["ev"],
            namespaced: true,
            status: false,
            special: Special::None,
        },
        B {
            group: "",
            version: "v1",
            kind: "ConfigMap",
            plural: "configmaps",
            short: &["cm"],
            namespaced: true,
            status: false,
            special: Special::None,
        },
        B {
            group: "",
            version: "v1",
            kind: "Secret",
            plural: "secrets",
            short: &[],
            namespaced: true,
            status: false,
            special: Special::Secret,
        },
        B {
            group: "",
            version: "v1",
            kind: "Service",
            plural: "services",
            short: &["svc"],
            namespaced: true,
            status: true,
            special: Special::Service,
        },
        B {
            group: "",
            version: "v1",
            kind: "ServiceAccount",
            plural: "serviceaccounts",
            short: &["sa"],
            namespaced: true,
            status: false,
            special: Special::None,
        },
        B {
            group: "events.k8s.io",
            version: "v1",
            kind: "Event",
            plural: "events",
            short: &["ev"],
            namespaced: true,
            status: false,
            special: Special::EventsV1,
        },
        B {
            group: "coordination.k8s.io",
            version: "v1",
            kind: "Lease",
            plural: "leases",
            short: &[],
            namespaced: true,
            status: false,
            special: Special::None,
        },
        B {
            group: "apiextensions.k8s.io",
            version: "v1",
            kind: "CustomResourceDefinition",
            plural: "customresourcedefinitions",
            short: &["crd", "crds"],
            namespaced: false,
            status: true,
            special: Special::Crd,
        },
        B {
            group: "admissionregistration.k8s.io",
            version: "v1",
            kind: "ValidatingWebhookConfiguration",
            plural: "validatingwebhookconfigurations",
            short: &[],
            namespaced: false,
            status: false,
            special: Special::WebhookConfig,
        },
    ];
    list.iter()
        .map(|b| ResourceDef {
            group: b.group.into(),
            kind: b.kind.into(),
            plural: b.plural.into(),
            singular: b.kind.to_lowercase(),
            short_names: b.short.iter().map(|s| s.to_string()).collect(),
            categories: if matches!(b.plural, "pods" | "services") {
                vec!["all".into()]
            } else {
                vec![]
            },
            namespaced: b.namespaced,
            versions: vec![VersionDef {
                name: b.version.into(),
                storage: true,
                schema: None,
                status_subresource: b.status,
                columns: builtin_columns(b.plural, b.group),
            }],
            special: b.special,
            selectable_fields: builtin_fields(b.plural, b.group),
        })
        .collect()
}

fn builtin_fields(plural: &str, group: &str) -> Vec<String> {
    let f: &[&str] = match (plural, group) {
        ("pods", _) => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("nodes", _) => &["spec.unschedulable"],
        ("namespaces", _) => &["status.phase"],
        ("secrets", _) => &["type"],
        ("events", _) => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        _ => &[],
    };
    f.iter().map(|s| s.to_string()).collect()
}

/// Default `kubectl get` columns for built-ins (empty path = computed in `table`).
fn builtin_columns(plural: &str, group: &str) -> Vec<Column> {
    match (plural, group) {
        ("namespaces", _) => vec![col("Status", "string", ".status.phase", 0), age()],
        ("nodes", _) => vec![
            col("Status", "string", "", 0),
            col("Roles", "string", "", 0),
            age(),
            col("Version", "string", ".status.nodeInfo.kubeletVersion", 0),
            col("Internal-IP", "string", "", 1),
        ],
        ("pods", _) => vec![
            col("Ready", "string", "", 0),
            col("Status", "string", ".status.phase", 0),
            col("Restarts", "string", "", 0),
            age(),
            col("IP", "string", ".status.podIP", 1),
            col("Node", "string", ".spec.nodeName", 1),
        ],
        ("configmaps", _) => vec![col("Data", "integer", "", 0), age()],
        ("secrets", _) => vec![
            col("Type", "string", ".type", 0),
            col("Data", "integer", "", 0),
            age(),
        ],
        ("services", _) => vec![
            col("Type", "string", ".spec.type", 0),
            col("Cluster-IP", "string", ".spec.clusterIP", 0),
            age(),
        ],
        ("leases", _) => vec![col("Holder", "string", ".spec.holderIdentity", 0), age()],
        ("events", "events.k8s.io") => vec![
            col("Type", "string", ".type", 0),
            col("Reason", "string", ".reason", 0),
            col("Note", "string", ".note", 0),
            age(),
        ],
        ("events", _) => vec![
            col("Type", "string", ".type", 0),
            col("Reason", "string", ".reason", 0),
            col("Message", "string", ".message", 0),
            age(),
        ],
        ("validatingwebhookconfigurations", _) => vec![col("Webhooks", "integer", "", 0), age()],
        ("customresourcedefinitions", _) => {
            vec![col("Created At", "date", ".metadata.creationTimestamp", 0)]
        }
        _ => vec![age()],
    }
}

/// Turns a CustomResourceDefinition object into a registry entry (or says which field is wrong).
pub fn from_crd(crd: &Value) -> Result<ResourceDef, (String, String)> {
    let spec = &crd["spec"];
    let s = |v: &Value, field: &str| -> Result<String, (String, String)> {
        match v.as_str() {
            Some(x) if !x.is_empty() => Ok(x.to_string()),
            _ => Err((format!("spec.{field}"), "Required value".to_string())),
        }
    };
    let group = s(&spec["group"], "group")?;
    let names = &spec["names"];
    let plural = s(&names["plural"], "names.plural")?;
    let kind = s(&names["kind"], "names.kind")?;
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let scope = s(&spec["scope"], "scope")?;
    let namespaced = match scope.as_str() {
        "Namespaced" => true,
        "Cluster" => false,
        other => {
            return Err((
                "spec.scope".into(),
                format!(
                    "Unsupported value: \"{other}\": supported values: \"Cluster\", \"Namespaced\""
                ),
            ));
        }
    };
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut versions = Vec::new();
    for (i, v) in spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = s(&v["name"], &format!("versions[{i}].name"))?;
        if v["served"].as_bool() == Some(false) {
            continue;
        }
        let mut columns: Vec<Column> = v["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| Column {
                name: c["name"].as_str().unwrap_or_default().to_string(),
                type_: c["type"].as_str().unwrap_or("string").to_string(),
                format: c["format"].as_str().unwrap_or_default().to_string(),
                description: c["description"].as_str().unwrap_or_default().to_string(),
                priority: c["priority"].as_i64().unwrap_or(0),
                json_path: c["jsonPath"].as_str().unwrap_or_default().to_string(),
            })
            .collect();
        if columns.is_empty() {
            columns.push(age());
        }
        versions.push(VersionDef {
            name,
            storage: v["storage"].as_bool().unwrap_or(false),
            schema: v["schema"].get("openAPIV3Schema").cloned(),
            status_subresource: v["subresources"].get("status").is_some(),
            columns,
        });
    }
    if versions.is_empty() {
        return Err((
            "spec.versions".into(),
            "Required value: must have at least one served version".into(),
        ));
    }
    let expected = format!("{plural}.{group}");
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if name != expected {
        return Err((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let selectable_fields = spec["versions"][0]["selectableFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            f["jsonPath"]
                .as_str()
                .map(|p| p.trim_start_matches('.').to_string())
        })
        .collect();
    Ok(ResourceDef {
        group,
        kind,
        plural,
        singular,
        short_names: strs(&names["shortNames"]),
        categories: strs(&names["categories"]),
        namespaced,
        versions,
        special: Special::None,
        selectable_fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_ga_then_beta_then_alpha() {
        let mut v = vec![
            "v1alpha2".to_string(),
            "v1beta1".into(),
            "v2".into(),
            "v1".into(),
            "foo".into(),
        ];
        sort_versions(&mut v);
        assert_eq!(v, ["v2", "v1", "v1beta1", "v1alpha2", "foo"]);
    }
}
