//! Request semantics on top of the store: create/update/patch/delete with the metadata rules of
//! the real API server (uid, creationTimestamp, generation bumped on spec change only, optimistic
//! concurrency, finalizers + deletionTimestamp, status subresource, namespace label, CRD
//! registration, schema pruning/validation, dry-run). Knows nothing about HTTP.

use crate::resources::{ResourceDef, Special, from_crd, sort_versions};
use crate::schema;
use crate::status::{ApiError, Cause, Target};
use crate::store::{EventType, State};
use serde_json::{Value, json};
use std::sync::Arc;

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Main,
    Status,
}

/// The resource, version and namespace of a request.
#[derive(Clone)]
pub struct Ctx {
    pub def: Arc<ResourceDef>,
    pub version: String,
    /// Empty for cluster-scoped resources (and all-namespace lists).
    pub ns: String,
    pub dry_run: bool,
    /// `fieldValidation=Strict`: unknown fields are an error instead of being pruned silently.
    pub strict: bool,
}

impl Ctx {
    pub fn target<'a>(&'a self, name: &'a str) -> Target<'a> {
        Target {
            group: &self.def.group,
            plural: &self.def.plural,
            kind: &self.def.kind,
            name,
        }
    }
    fn invalid(&self, name: &str, causes: Vec<Cause>) -> ApiError {
        ApiError::invalid(&self.target(name), &causes)
    }
}

/// RFC 3339 time with second precision, as metav1.Time.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The object as served in the requested version (no conversion: only apiVersion changes, as
/// with the `None` conversion strategy).
pub fn output(def: &ResourceDef, version: &str, obj: &Value) -> Value {
    let mut o = if def.special == Special::EventsV1 {
        crate::events::to_events_v1(obj.clone())
    } else {
        obj.clone()
    };
    o["apiVersion"] = Value::String(def.api_version(version));
    o["kind"] = Value::String(def.kind.clone());
    o
}

/// The apiVersion objects are stored with (core/v1 for events.k8s.io Events).
fn storage_api_version(ctx: &Ctx) -> String {
    if ctx.def.special == Special::EventsV1 {
        "v1".into()
    } else {
        ctx.def.api_version(&ctx.version)
    }
}

fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

fn check_name(name: &str) -> Option<Cause> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let edges = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if name.len() <= 253 && name.chars().all(ok_char) && name.split('.').all(edges) {
        return None;
    }
    Some(Cause {
        reason: "FieldValueInvalid",
        field: "metadata.name".into(),
        message: format!(
            "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ),
    })
}

/// Prunes, defaults and validates a custom resource against its version schema.
fn check_schema(ctx: &Ctx, obj: &mut Value) -> Result<(), ApiError> {
    let Some(schema) = ctx
        .def
        .version(&ctx.version)
        .and_then(|v| v.schema.as_ref())
    else {
        return Ok(());
    };
    let mut unknown = Vec::new();
    schema::prune_and_default(schema, obj, "", &mut unknown);
    if ctx.strict && !unknown.is_empty() {
        let fields: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            ctx.def.kind,
            ctx.version,
            ctx.def.kind,
            fields.join(", ")
        )));
    }
    let causes = schema::validate(schema, obj);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ctx.invalid(name_of(obj), causes))
    }
}

fn has_status_sub(ctx: &Ctx) -> bool {
    ctx.def
        .version(&ctx.version)
        .is_some_and(|v| v.status_subresource)
}

/// Everything that counts for `generation`: the object without metadata (and without status
/// when status is a subresource).
fn spec_part(obj: &Value, status_sub: bool) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if status_sub {
            m.remove("status");
        }
    }
    o
}

fn random_suffix(seed: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..5)
        .map(|_| {
            x ^= x >> 29;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

/// Fills server-owned fields that depend on the kind (namespace label, CRD status, pod phase).
fn apply_special(ctx: &Ctx, obj: &mut Value, creating: bool) -> Result<(), ApiError> {
    let name = name_of(obj).to_string();
    match ctx.def.special {
        Special::Namespace => {
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = Value::String(name);
            if creating {
                obj["status"] = json!({"phase": "Active"});
            }
        }
        Special::Pod if creating => obj["status"] = json!({"phase": "Pending"}),
        Special::Secret => {
            use base64::Engine;
            if let Some(Value::Object(sd)) =
                obj.as_object_mut().and_then(|m| m.remove("stringData"))
            {
                for (k, v) in sd {
                    let enc = base64::engine::general_purpose::STANDARD
                        .encode(v.as_str().unwrap_or_default());
                    obj["data"][k] = Value::String(enc);
                }
            }
        }
        Special::Crd => {
            let def = from_crd(obj).map_err(|(field, message)| {
                ctx.invalid(
                    &name,
                    vec![Cause {
                        reason: "FieldValueInvalid",
                        field,
                        message,
                    }],
                )
            })?;
            if crate::resources::builtins()
                .iter()
                .any(|b| b.id() == def.id())
            {
                return Err(ctx.invalid(
                    &name,
                    vec![Cause {
                        reason: "FieldValueInvalid",
                        field: "spec.group".into(),
                        message: "Invalid value: built-in resources cannot be redefined".into(),
                    }],
                ));
            }
            let mut stored: Vec<String> = def
                .versions
                .iter()
                .filter(|v| v.storage)
                .map(|v| v.name.clone())
                .collect();
            sort_versions(&mut stored);
            let t = now();
            obj["status"] = json!({
                "acceptedNames": obj["spec"]["names"].clone(),
                "storedVersions": stored,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": t},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": t},
                ],
            });
        }
        Special::WebhookConfig => {
            crate::admission::default_and_validate(obj).map_err(|c| ctx.invalid(&name, c))?;
        }
        _ => {}
    }
    Ok(())
}

/// Gives a ClusterIP Service its address from the service CIDR, as the real allocator does:
/// the lowest free address when none is requested, an error naming the range otherwise.
fn allocate_cluster_ip(st: &State, ctx: &Ctx, obj: &mut Value) -> Result<(), ApiError> {
    use std::net::Ipv4Addr;
    let name = name_of(obj).to_string();
    let spec = &mut obj["spec"];
    if spec["type"].is_null() {
        spec["type"] = json!("ClusterIP");
    }
    if spec["type"] == "ExternalName" || spec["clusterIP"] == "None" {
        return Ok(());
    }
    let (net, len) = st.service_cidr;
    let size = 1u64 << (32 - u32::from(len));
    let base = u64::from(u32::from(net));
    let in_range = |ip: Ipv4Addr| {
        let v = u64::from(u32::from(ip));
        v >= base && v - base < size
    };
    let used: std::collections::HashSet<String> = st
        .list(&ctx.def.key(), None)
        .iter()
        .filter_map(|s| s["spec"]["clusterIP"].as_str().map(str::to_string))
        .collect();
    let ip = match spec["clusterIP"].as_str().filter(|s| !s.is_empty()) {
        Some(want) => {
            let ok = want.parse::<Ipv4Addr>().is_ok_and(in_range);
            if !ok || used.contains(want) {
                let why = if ok {
                    "provided IP is already allocated".to_string()
                } else {
                    format!(
                        "the provided IP ({want}) is not in the valid range. The range of valid IPs is {net}/{len}"
                    )
                };
                return Err(ctx.invalid(&name, vec![Cause { reason: "FieldValueInvalid", field: "spec.clusterIPs".into(), message: format!("Invalid value: []string{{{want:?}}}: failed to allocate IP {want}: {why}") }]));
            }
            want.to_string()
        }
        None => (1..size.saturating_sub(1))
            .map(|i| Ipv4Addr::from((base + i) as u32).to_string())
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "failed to allocate a serviceIP: range {net}/{len} is full"
                ))
            })?,
    };
    spec["clusterIP"] = json!(ip);
    spec["clusterIPs"] = json!([ip]);
    spec["ipFamilies"] = json!(["IPv4"]);
    Ok(())
}

/// Registers (or re-registers) the resource a stored CRD defines.
fn register_crd(st: &mut State, crd: &Value) {
    if let Ok(def) = from_crd(crd) {
        st.defs.insert(def.id(), Arc::new(def));
    }
}

/// POST: creates an object. `keep_status` is for snapshot loading (status kept as given).
pub fn create(
    st: &mut State,
    ctx: &Ctx,
    mut obj: Value,
    keep_status: bool,
) -> Result<Value, ApiError> {
    if ctx.def.special == Special::EventsV1 {
        obj = crate::events::to_core(obj);
    }
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let given_ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if ctx.def.namespaced {
        if !given_ns.is_empty() && given_ns != ctx.ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        obj["metadata"]["namespace"] = Value::String(ctx.ns.clone());
        if st.get("namespaces", "", &ctx.ns).is_none() {
            let t = Target {
                group: "",
                plural: "namespaces",
                kind: "Namespace",
                name: &ctx.ns,
            };
            return Err(ApiError::not_found(&t));
        }
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    if name_of(&obj).is_empty() {
        match obj["metadata"]["generateName"].as_str() {
            Some(prefix) if !prefix.is_empty() => {
                let n = format!(
                    "{prefix}{}",
                    random_suffix(st.rv() ^ st.list(&ctx.def.key(), None).len() as u64)
                );
                obj["metadata"]["name"] = Value::String(n);
            }
            _ => {
                return Err(ctx.invalid(
                    "",
                    vec![Cause {
                        reason: "FieldValueRequired",
                        field: "metadata.name".into(),
                        message: "Required value: name or generateName is required".into(),
                    }],
                ));
            }
        }
    }
    let name = name_of(&obj).to_string();
    if let Some(c) = check_name(&name) {
        return Err(ctx.invalid(&name, vec![c]));
    }
    if st.get(&ctx.def.key(), &ctx.ns, &name).is_some() {
        return Err(ApiError::already_exists(&ctx.target(&name)));
    }
    obj["apiVersion"] = Value::String(storage_api_version(ctx));
    obj["kind"] = Value::String(ctx.def.kind.clone());
    if has_status_sub(ctx)
        && ctx.def.special == Special::None
        && !keep_status
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    if !(keep_status && ctx.def.special == Special::Pod) {
        apply_special(ctx, &mut obj, true)?;
    }
    if ctx.def.special == Special::Service {
        allocate_cluster_ip(st, ctx, &mut obj)?;
    }
    check_schema(ctx, &mut obj)?;
    let uid = st.next_uid();
    let meta = &mut obj["metadata"];
    meta["uid"] = Value::String(uid);
    meta["creationTimestamp"] = Value::String(now());
    meta["generation"] = json!(1);
    if let Some(m) = meta.as_object_mut() {
        m.remove("deletionTimestamp");
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    if ctx.dry_run {
        return Ok(obj);
    }
    store_created(st, ctx, obj)
}

/// Stores an object `create` prepared (under dry-run, possibly with the lock released since, as
/// while admission webhooks are called): it must still not exist.
pub fn store_created(st: &mut State, ctx: &Ctx, obj: Value) -> Result<Value, ApiError> {
    let name = name_of(&obj);
    if st.get(&ctx.def.key(), &ctx.ns, name).is_some() {
        return Err(ApiError::already_exists(&ctx.target(name)));
    }
    if ctx.def.special == Special::Crd {
        register_crd(st, &obj);
    }
    Ok(Value::clone(&st.commit(
        &ctx.def.key(),
        EventType::Added,
        obj,
    )))
}

/// PUT (and the second half of PATCH): replaces an object or its status.
pub fn update(
    st: &mut State,
    ctx: &Ctx,
    name: &str,
    mut obj: Value,
    sub: Sub,
) -> Result<Value, ApiError> {
    if ctx.def.special == Special::EventsV1 {
        obj = crate::events::to_core(obj);
    }
    let key = ctx.def.key();
    let Some(old) = st.get(&key, &ctx.ns, name) else {
        return Err(ApiError::not_found(&ctx.target(name)));
    };
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    if let Some(body_name) = obj["metadata"]["name"].as_str()
        && body_name != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    match obj["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() && Some(rv) != old["metadata"]["resourceVersion"].as_str() => {
            return Err(ApiError::conflict(&ctx.target(name)));
        }
        _ => {}
    }
    let status_sub = has_status_sub(ctx);
    let mut new = if sub == Sub::Status {
        let mut n = Value::clone(&old);
        n["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
        if n["status"].is_null()
            && let Some(m) = n.as_object_mut()
        {
            m.remove("status");
        }
        n
    } else {
        if status_sub {
            match old.get("status") {
                Some(s) => obj["status"] = s.clone(),
                None => {
                    if let Some(m) = obj.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        obj
    };
    new["apiVersion"] = Value::String(storage_api_version(ctx));
    new["kind"] = Value::String(ctx.def.kind.clone());
    {
        let (om, nm) = (&old["metadata"], &mut new["metadata"]);
        nm["name"] = Value::String(name.to_string());
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
            "namespace",
        ] {
            match om.get(f) {
                Some(v) => nm[f] = v.clone(),
                None => {
                    if let Some(m) = nm.as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        if let Some(m) = nm.as_object_mut() {
            m.remove("managedFields");
        }
    }
    if sub == Sub::Main {
        apply_special(ctx, &mut new, false)?;
        if ctx.def.special == Special::Crd {
            new["status"] = old["status"].clone();
        }
    }
    check_schema(ctx, &mut new)?;
    if spec_part(&new, status_sub) != spec_part(&old, status_sub) {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
        new["metadata"]["generation"] = json!(g + 1);
    }
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    if new == **old || ctx.dry_run {
        return Ok(new);
    }
    let finalizers_left = new["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    let type_ = if new["metadata"].get("deletionTimestamp").is_some() && !finalizers_left {
        EventType::Deleted
    } else {
        EventType::Modified
    };
    if ctx.def.special == Special::Crd {
        if type_ == EventType::Deleted {
            if let Ok(d) = from_crd(&new) {
                st.drop_resource(&d.key());
            }
        } else {
            register_crd(st, &new);
        }
    }
    Ok(Value::clone(&st.commit(&key, type_, new)))
}

/// Supported PATCH encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Removes strategic-merge directives (`$patch`, `$setElementOrder/...`, `$retainKeys`,
/// `$deleteFromPrimitiveList/...`) that a plain merge would otherwise store.
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// PATCH: applies the patch to the current object and stores it like an update.
/// Apply patches create the object when it does not exist. Returns (object, created).
pub fn patch(
    st: &mut State,
    ctx: &Ctx,
    name: &str,
    pt: PatchType,
    body: &[u8],
    sub: Sub,
    field_manager: Option<&str>,
) -> Result<(Value, bool), ApiError> {
    let parse_err = |e: &dyn std::fmt::Display| {
        ApiError::bad_request(format!(
            "error decoding patch for {} \"{name}\": {e}",
            ctx.def.key()
        ))
    };
    let current = st.get(&ctx.def.key(), &ctx.ns, name);
    if pt == PatchType::Apply {
        if field_manager.is_none_or(str::is_empty) {
            return Err(ApiError::invalid(
                &Target {
                    group: "meta.k8s.io",
                    plural: "patchoptions",
                    kind: "PatchOptions",
                    name: "",
                },
                &[Cause {
                    reason: "FieldValueRequired",
                    field: "fieldManager".into(),
                    message: "Required value: is required for apply patch".into(),
                }],
            ));
        }
        let applied: Value = serde_yaml::from_slice(body).map_err(|e| parse_err(&e))?;
        let Some(cur) = current else {
            if sub == Sub::Status {
                return Err(ApiError::not_found(&ctx.target(name)));
            }
            let mut obj = applied;
            obj["metadata"]["name"] = Value::String(name.to_string());
            return create(st, ctx, obj, false).map(|o| (o, true));
        };
        let mut doc = output(&ctx.def, &ctx.version, &cur);
        json_patch::merge(&mut doc, &applied);
        return update(st, ctx, name, doc, sub).map(|o| (o, false));
    }
    let Some(cur) = current else {
        return Err(ApiError::not_found(&ctx.target(name)));
    };
    let mut doc = output(&ctx.def, &ctx.version, &cur);
    match pt {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(body).map_err(|e| parse_err(&e))?;
            json_patch::patch(&mut doc, &ops).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        PatchType::Merge | PatchType::Strategic => {
            let p: Value = serde_json::from_slice(body).map_err(|e| parse_err(&e))?;
            json_patch::merge(&mut doc, &p);
            if pt == PatchType::Strategic {
                strip_directives(&mut doc);
            }
        }
        PatchType::Apply => unreachable!("handled above"),
    }
    update(st, ctx, name, doc, sub).map(|o| (o, false))
}

/// DELETE: sets deletionTimestamp while finalizers remain, else removes the object.
/// `precondition_rv` is DeleteOptions.preconditions.resourceVersion.
pub fn delete(
    st: &mut State,
    ctx: &Ctx,
    name: &str,
    precondition_rv: Option<&str>,
) -> Result<Value, ApiError> {
    let key = ctx.def.key();
    let Some(old) = st.get(&key, &ctx.ns, name) else {
        return Err(ApiError::not_found(&ctx.target(name)));
    };
    if let Some(rv) = precondition_rv
        && Some(rv) != old["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::conflict(&ctx.target(name)));
    }
    if ctx.dry_run {
        return Ok(Value::clone(&old));
    }
    let has_finalizers = old["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    if has_finalizers {
        if old["metadata"].get("deletionTimestamp").is_some() {
            return Ok(Value::clone(&old));
        }
        let mut new = Value::clone(&old);
        new["metadata"]["deletionTimestamp"] = Value::String(now());
        new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        return Ok(Value::clone(&st.commit(&key, EventType::Modified, new)));
    }
    match ctx.def.special {
        Special::Crd => {
            if let Ok(d) = from_crd(&old) {
                st.drop_resource(&d.key());
            }
        }
        Special::Namespace => {
            let namespaced: Vec<String> = st
                .defs
                .values()
                .filter(|d| d.namespaced)
                .map(|d| d.key())
                .collect();
            for k in namespaced {
                for obj in st.list(&k, Some(name)) {
                    st.commit(&k, EventType::Deleted, Value::clone(&obj));
                }
            }
        }
        _ => {}
    }
    Ok(Value::clone(&st.commit(
        &key,
        EventType::Deleted,
        Value::clone(&old),
    )))
}
