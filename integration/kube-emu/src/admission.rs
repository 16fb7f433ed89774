//! Validating admission webhooks, as kube-apiserver calls them: every write (create, update,
//! patch, delete, also dry-run) of a resource that a stored `ValidatingWebhookConfiguration`
//! (admissionregistration.k8s.io/v1) selects is sent as an AdmissionReview v1 to each matching
//! webhook's `clientConfig.url` over HTTPS (verified with `caBundle`, or the system roots when it
//! is empty) before it is persisted. A denial reaches the client as the real server words it
//! (`admission webhook "NAME" denied the request: MESSAGE`, the webhook's code or 400); a
//! failed call obeys `failurePolicy`; warnings become `Warning:` headers.
//!
//! Supported: rules (operations, apiGroups, apiVersions, resources with subresources, scope,
//! `*`), failurePolicy, timeoutSeconds, namespaceSelector, objectSelector. Not supported:
//! `clientConfig.service` (no Service networking here: the call fails with a message saying so),
//! matchPolicy and matchConditions (requests are matched as sent), mutating webhooks,
//! authentication (`userInfo` is always the emulator's admin).
//!
//! The store lock is never held while a webhook is called: the write is first computed as a
//! dry-run, the webhooks judge that result, and the write is then applied only if the object
//! did not change meanwhile (otherwise admission runs again, as the real server retries).

use crate::ops::{self, Ctx, Sub, output};
use crate::resources::ResourceDef;
use crate::selectors::LabelSelector;
use crate::status::{ApiError, Cause};
use crate::store::{Obj, State, Store};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

const GROUP: &str = "admissionregistration.k8s.io";
const CONFIGS: &str = "validatingwebhookconfigurations.admissionregistration.k8s.io";
/// How often a write is admitted again when its object changes while the webhooks run.
const ATTEMPTS: usize = 5;

/// The verb of a write as admission names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
    fn options_kind(self) -> &'static str {
        match self {
            Operation::Create => "CreateOptions",
            Operation::Update => "UpdateOptions",
            Operation::Delete => "DeleteOptions",
        }
    }
}

/// One write as the client asked for it.
pub struct Write<'a> {
    pub ctx: &'a Ctx,
    pub sub: Sub,
    /// The name from the URL or the body; empty when the server generates it.
    pub name: &'a str,
    /// The verb (PATCH is Update; it becomes Create when the patch creates the object).
    pub operation: Operation,
    /// `fieldManager` of the request, passed on in the options.
    pub field_manager: Option<&'a str>,
}

/// The result of a write and the warnings the webhooks gave (also when they denied it).
pub struct Outcome {
    /// The stored (or, under dry-run, would-be) object and whether it was created.
    pub result: Result<(Value, bool), ApiError>,
    pub warnings: Vec<String>,
}

impl Outcome {
    fn plain(result: Result<(Value, bool), ApiError>) -> Self {
        Outcome {
            result,
            warnings: Vec::new(),
        }
    }
}

/// Runs a write through the validating webhooks. `run` performs it on the state; it is called
/// with a dry-run context first when some webhook may apply, then for real.
pub async fn write(
    store: &Store,
    req: Write<'_>,
    run: impl Fn(&mut State, &Ctx) -> Result<(Value, bool), ApiError>,
) -> Outcome {
    let ctx = req.ctx;
    let key = ctx.def.key();
    for _ in 0..ATTEMPTS {
        let (calls, old, preview) = {
            let mut st = store.lock();
            let configs = if ctx.def.group == GROUP {
                Vec::new()
            } else {
                st.list(CONFIGS, None)
            };
            if configs.is_empty() {
                return Outcome::plain(run(&mut st, ctx));
            }
            let old = (!req.name.is_empty())
                .then(|| st.get(&key, &ctx.ns, req.name))
                .flatten();
            let dry = Ctx {
                dry_run: true,
                ..ctx.clone()
            };
            let preview = match run(&mut st, &dry) {
                Ok(p) => p,
                Err(e) => return Outcome::plain(Err(e)),
            };
            let attrs = Attributes::new(&req, &preview, old.as_ref(), &st);
            let matching: Vec<Hook> = configs
                .iter()
                .flat_map(hooks)
                .filter(|h| h.selects(&attrs))
                .collect();
            if matching.is_empty() {
                let result = if ctx.dry_run {
                    Ok(preview)
                } else {
                    run(&mut st, ctx)
                };
                return Outcome::plain(result);
            }
            let calls: Vec<(Hook, String, Bytes)> = matching
                .into_iter()
                .map(|h| {
                    let uid = st.next_uid();
                    let body = attrs.review(&uid);
                    (h, uid, body)
                })
                .collect();
            (calls, old, preview)
        };
        let answers = futures::future::join_all(
            calls
                .iter()
                .map(|(hook, uid, body)| hook.call(uid, body.clone())),
        )
        .await;
        let mut warnings = Vec::new();
        let mut verdict = Ok(());
        for ((hook, _, _), answer) in calls.iter().zip(answers) {
            match answer {
                Ok(response) => {
                    warnings.extend(
                        response["warnings"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|w| w.as_str().map(str::to_string)),
                    );
                    if response["allowed"] != true && verdict.is_ok() {
                        verdict = Err(denial(&hook.name, &response["status"]));
                    }
                }
                Err(reason) if hook.ignore => {
                    eprintln!("kube-emu: failed calling webhook, failing open {reason}");
                }
                Err(reason) => {
                    if verdict.is_ok() {
                        verdict = Err(ApiError {
                            details: Some(json!({"causes": [{"message": reason}]})),
                            ..ApiError::internal(format!("Internal error occurred: {reason}"))
                        });
                    }
                }
            }
        }
        if let Err(e) = verdict {
            return Outcome {
                result: Err(e),
                warnings,
            };
        }
        if ctx.dry_run {
            return Outcome {
                result: Ok(preview),
                warnings,
            };
        }
        let mut st = store.lock();
        let result = match &old {
            // A creation: store exactly what the webhooks judged (same uid, name, timestamps).
            None => ops::store_created(&mut st, ctx, preview.0).map(|o| (o, true)),
            Some(old) => {
                let now = st.get(&key, &ctx.ns, req.name);
                if now.as_ref().map(|o| &o["metadata"]["resourceVersion"])
                    != Some(&old["metadata"]["resourceVersion"])
                {
                    continue;
                }
                run(&mut st, ctx)
            }
        };
        return Outcome { result, warnings };
    }
    Outcome::plain(Err(ApiError::conflict(&ctx.target(req.name))))
}

/// The Status a denial is answered with (kube-apiserver's `webhookerrors.ToStatusErr`): the
/// webhook's status with a code of at least 400 and its message prefixed with the webhook name.
fn denial(webhook: &str, status: &Value) -> ApiError {
    let denied_by = format!("admission webhook \"{webhook}\" denied the request");
    let (message, reason) = (
        status["message"].as_str().unwrap_or_default(),
        status["reason"].as_str().unwrap_or_default(),
    );
    let message = match (message, reason) {
        ("", "") => format!("{denied_by} without explanation"),
        ("", r) => format!("{denied_by}: {r}"),
        (m, _) => format!("{denied_by}: {m}"),
    };
    let code = status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c >= 400)
        .unwrap_or(400);
    ApiError {
        details: status.get("details").cloned(),
        ..ApiError::new(code, reason.to_string(), message)
    }
}

/// What a webhook is told about the write.
struct Attributes {
    operation: Operation,
    def: Arc<ResourceDef>,
    version: String,
    sub: Sub,
    name: String,
    ns: String,
    object: Option<Value>,
    old: Option<Value>,
    dry_run: bool,
    options: Value,
    /// The Namespace the namespaceSelector looks at: the request's namespace, or the object
    /// itself when it is a Namespace; None for other cluster-scoped objects.
    namespace: Option<Value>,
}

impl Attributes {
    fn new(req: &Write, preview: &(Value, bool), old: Option<&Obj>, st: &State) -> Self {
        let ctx = req.ctx;
        let operation = if preview.1 {
            Operation::Create
        } else {
            req.operation
        };
        let served = |o: &Value| output(&ctx.def, &ctx.version, o);
        let object = (operation != Operation::Delete).then(|| served(&preview.0));
        let old = if operation == Operation::Create {
            None
        } else {
            old.map(|o| served(o))
        };
        let name = preview.0["metadata"]["name"]
            .as_str()
            .unwrap_or(req.name)
            .to_string();
        let mut options = json!({"kind": operation.options_kind(), "apiVersion": "meta.k8s.io/v1"});
        if ctx.dry_run {
            options["dryRun"] = json!(["All"]);
        }
        if let Some(fm) = req.field_manager.filter(|f| !f.is_empty())
            && operation != Operation::Delete
        {
            options["fieldManager"] = json!(fm);
        }
        let namespace = if ctx.def.group.is_empty() && ctx.def.plural == "namespaces" {
            object.clone().or_else(|| old.clone())
        } else if ctx.ns.is_empty() {
            None
        } else {
            st.get("namespaces", "", &ctx.ns).map(|n| Value::clone(&n))
        };
        Attributes {
            operation,
            def: ctx.def.clone(),
            version: ctx.version.clone(),
            sub: req.sub,
            name,
            ns: ctx.ns.clone(),
            object,
            old,
            dry_run: ctx.dry_run,
            options,
            namespace,
        }
    }

    fn subresource(&self) -> &'static str {
        match self.sub {
            Sub::Main => "",
            Sub::Status => "status",
        }
    }

    /// The AdmissionReview v1 request body.
    fn review(&self, uid: &str) -> Bytes {
        let d = &self.def;
        let kind = json!({"group": d.group, "version": self.version, "kind": d.kind});
        let resource = json!({"group": d.group, "version": self.version, "resource": d.plural});
        let mut request = json!({
            "uid": uid,
            "kind": kind, "resource": resource,
            "requestKind": kind, "requestResource": resource,
            "name": self.name,
            "operation": self.operation.as_str(),
            "userInfo": {"username": "kube-emu-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": self.object, "oldObject": self.old,
            "dryRun": self.dry_run,
            "options": self.options,
        });
        if !self.ns.is_empty() {
            request["namespace"] = json!(self.ns);
        }
        if !self.subresource().is_empty() {
            request["subResource"] = json!(self.subresource());
            request["requestSubResource"] = json!(self.subresource());
        }
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
        // Serializing a Value into a Vec cannot fail (no I/O, string keys only).
        Bytes::from(serde_json::to_vec(&review).unwrap_or_default())
    }
}

/// One webhook of a stored configuration.
struct Hook {
    name: String,
    rules: Vec<Value>,
    /// (url, caBundle) or why it cannot be called.
    client: Result<(String, String), String>,
    ignore: bool,
    timeout: Duration,
    namespace_selector: LabelSelector,
    object_selector: LabelSelector,
}

/// The webhooks of a configuration (defaulted and validated when it was stored).
fn hooks(config: &Obj) -> Vec<Hook> {
    // Selectors were validated on write, so parsing them again cannot fail.
    let selector = |v: &Value| LabelSelector::from_struct(v).unwrap_or_default();
    config["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let cc = &h["clientConfig"];
            let client = match (cc["url"].as_str(), cc.get("service")) {
                (Some(url), _) => Ok((
                    url.to_string(),
                    cc["caBundle"].as_str().unwrap_or_default().to_string(),
                )),
                (None, Some(svc)) => Err(format!(
                    "kube-emu calls webhooks by clientConfig.url only; clientConfig.service {}/{} is not supported",
                    svc["namespace"].as_str().unwrap_or_default(),
                    svc["name"].as_str().unwrap_or_default()
                )),
                (None, None) => Err("clientConfig has neither url nor service".to_string()),
            };
            Hook {
                name: h["name"].as_str().unwrap_or_default().to_string(),
                rules: h["rules"].as_array().cloned().unwrap_or_default(),
                client,
                ignore: h["failurePolicy"] == "Ignore",
                timeout: Duration::from_secs(h["timeoutSeconds"].as_u64().unwrap_or(10)),
                namespace_selector: selector(&h["namespaceSelector"]),
                object_selector: selector(&h["objectSelector"]),
            }
        })
        .collect()
}

impl Hook {
    /// Whether this webhook must judge the write (rules, then namespace and object selectors).
    fn selects(&self, a: &Attributes) -> bool {
        let namespace_ok = if a.ns.is_empty() && a.namespace.is_none() {
            true // cluster-scoped, not a Namespace: never exempted
        } else {
            let ns = a.namespace.clone().unwrap_or(Value::Null);
            self.namespace_selector.matches(&ns)
        };
        let object_ok = self.object_selector.is_empty()
            || [&a.object, &a.old]
                .into_iter()
                .flatten()
                .any(|o| self.object_selector.matches(o));
        self.rules.iter().any(|r| rule_matches(r, a)) && namespace_ok && object_ok
    }

    /// POSTs the review; the error is the reason kube-apiserver would give
    /// (`failed calling webhook "NAME": ...`).
    async fn call(&self, uid: &str, body: Bytes) -> Result<Value, String> {
        let failed = |why: String| format!("failed calling webhook \"{}\": {why}", self.name);
        let (url, ca_bundle) = self.client.as_ref().map_err(|e| failed(e.clone()))?;
        let sep = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{sep}timeout={}s", self.timeout.as_secs());
        let post = |why: String| failed(format!("failed to call webhook: Post \"{url}\": {why}"));
        let review = tokio::time::timeout(self.timeout, post_json(&url, ca_bundle, body))
            .await
            .map_err(|_| post("context deadline exceeded".into()))?
            .map_err(post)?;
        verify(uid, &review)
            .map_err(|e| failed(format!("received invalid webhook response: {e}")))?;
        Ok(review["response"].clone())
    }
}

/// kube-apiserver's rule matcher: operation, group, version, resource[/subresource], scope.
fn rule_matches(rule: &Value, a: &Attributes) -> bool {
    let has = |field: &str, want: &str| {
        rule[field]
            .as_array()
            .is_some_and(|xs| xs.iter().any(|x| x == "*" || x == want))
    };
    let resource = rule["resources"].as_array().is_some_and(|rs| {
        rs.iter().filter_map(Value::as_str).any(|r| {
            let (res, sub) = r.split_once('/').unwrap_or((r, ""));
            (res == "*" || res == a.def.plural) && (sub == "*" || sub == a.subresource())
        })
    });
    let scope = match rule["scope"].as_str().unwrap_or("*") {
        "Cluster" => a.ns.is_empty(),
        "Namespaced" => !a.ns.is_empty(),
        _ => true,
    };
    has("operations", a.operation.as_str())
        && has("apiGroups", &a.def.group)
        && has("apiVersions", &a.version)
        && resource
        && scope
}

/// The response checks of kube-apiserver's `VerifyAdmissionResponse` for v1.
fn verify(uid: &str, review: &Value) -> Result<(), String> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    if review["apiVersion"] != "admission.k8s.io/v1" {
        return Err(format!(
            "expected webhook response of admission.k8s.io/v1, got {}",
            text(&review["apiVersion"])
        ));
    }
    if review["kind"] != "AdmissionReview" {
        return Err(format!(
            "expected webhook response of kind AdmissionReview, got {:?}",
            text(&review["kind"])
        ));
    }
    let response = &review["response"];
    if !response.is_object() {
        return Err("webhook response was absent".into());
    }
    if response["uid"] != uid {
        return Err(format!(
            "expected response.uid={uid:?}, got {:?}",
            text(&response["uid"])
        ));
    }
    Ok(())
}

/// The TLS client for one webhook: trusts the PEM certificates of `ca_bundle` (base64, as in
/// the API object), or the system roots when it is empty, as kube-apiserver does.
fn connector(ca_bundle: &str) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    if ca_bundle.is_empty() {
        for cert in rustls_native_certs::load_native_certs().certs {
            // An unusable system certificate only narrows what is trusted.
            let _ = roots.add(cert);
        }
    } else {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(ca_bundle)
            .map_err(|e| format!("clientConfig.caBundle is not base64: {e}"))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("clientConfig.caBundle: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("clientConfig.caBundle: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// POSTs JSON to an `https://host[:port][/path][?query]` URL and decodes the JSON answer.
async fn post_json(url: &str, ca_bundle: &str, body: Bytes) -> Result<Value, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| "only https URLs are supported".to_string())?;
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("invalid port in {authority:?}"))?,
        ),
        _ => (authority, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name =
        ServerName::try_from(host.to_string()).map_err(|e| format!("host {host:?}: {e}"))?;
    let tls = connector(ca_bundle)?;
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("dial tcp {authority}: {e}"))?;
    let stream = tls
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    // The connection task ends when the response is read or the peer goes away.
    tokio::spawn(conn);
    let request = hyper::Request::post(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .header("accept", "application/json, */*")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        return Err(format!(
            "an error on the server ({:?}) has prevented the request from succeeding (status {})",
            text.chars().take(200).collect::<String>(),
            status.as_u16()
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("decoding the response body: {e}"))
}

/// Defaults a ValidatingWebhookConfiguration as the real server does (failurePolicy Fail,
/// matchPolicy Equivalent, timeoutSeconds 10, empty selectors, rule scope `*`) and validates
/// what kube-emu relies on, with the real server's field messages.
pub fn default_and_validate(obj: &mut Value) -> Result<(), Vec<Cause>> {
    let mut causes = Vec::new();
    let mut names = std::collections::HashSet::new();
    let Some(webhooks) = obj["webhooks"].as_array_mut() else {
        return Ok(());
    };
    for (i, h) in webhooks.iter_mut().enumerate() {
        let mut bad = |reason: &'static str, field: &str, message: String| {
            causes.push(Cause {
                reason,
                field: format!("webhooks[{i}].{field}"),
                message,
            })
        };
        for (field, default) in [
            ("failurePolicy", json!("Fail")),
            ("matchPolicy", json!("Equivalent")),
            ("timeoutSeconds", json!(10)),
            ("namespaceSelector", json!({})),
            ("objectSelector", json!({})),
        ] {
            if h.get(field).is_none_or(Value::is_null) {
                h[field] = default;
            }
        }
        for rule in h["rules"].as_array_mut().into_iter().flatten() {
            if rule.get("scope").is_none_or(Value::is_null) {
                rule["scope"] = json!("*");
            }
        }
        let name = h["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            bad("FieldValueRequired", "name", "Required value".into());
        } else if name.split('.').filter(|s| !s.is_empty()).count() < 3 {
            bad(
                "FieldValueInvalid",
                "name",
                format!(
                    "Invalid value: {name:?}: should be a domain with at least three segments separated by dots"
                ),
            );
        } else if !names.insert(name.to_string()) {
            bad(
                "FieldValueDuplicate",
                "name",
                format!("Duplicate value: {name:?}"),
            );
        }
        let versions = h["admissionReviewVersions"].as_array();
        if versions.is_none_or(Vec::is_empty) {
            bad(
                "FieldValueRequired",
                "admissionReviewVersions",
                "Required value: must specify one of v1, v1beta1".into(),
            );
        } else if !versions.is_some_and(|v| v.iter().any(|x| x == "v1")) {
            bad(
                "FieldValueInvalid",
                "admissionReviewVersions",
                "Invalid value: kube-emu sends AdmissionReview v1 only: include \"v1\"".into(),
            );
        }
        match h["sideEffects"].as_str() {
            Some("None" | "NoneOnDryRun") => {}
            None => bad(
                "FieldValueRequired",
                "sideEffects",
                "Required value: must specify one of None, NoneOnDryRun".into(),
            ),
            Some(other) => bad(
                "FieldValueNotSupported",
                "sideEffects",
                format!(
                    "Unsupported value: {other:?}: supported values: \"None\", \"NoneOnDryRun\""
                ),
            ),
        }
        match h["failurePolicy"].as_str() {
            Some("Fail" | "Ignore") => {}
            _ => bad(
                "FieldValueNotSupported",
                "failurePolicy",
                format!(
                    "Unsupported value: {}: supported values: \"Fail\", \"Ignore\"",
                    h["failurePolicy"]
                ),
            ),
        }
        if !h["timeoutSeconds"]
            .as_i64()
            .is_some_and(|t| (1..=30).contains(&t))
        {
            bad(
                "FieldValueInvalid",
                "timeoutSeconds",
                format!(
                    "Invalid value: {}: the timeout value must be between 1 and 30 seconds",
                    h["timeoutSeconds"]
                ),
            );
        }
        let cc = &h["clientConfig"];
        match (cc.get("url"), cc.get("service")) {
            (Some(url), None) => {
                let url = url.as_str().unwrap_or_default();
                if !url.starts_with("https://") {
                    bad(
                        "FieldValueInvalid",
                        "clientConfig.url",
                        format!("Invalid value: {url:?}: 'https' is the only allowed URL scheme"),
                    );
                } else if url.len() == "https://".len() {
                    bad(
                        "FieldValueInvalid",
                        "clientConfig.url",
                        format!("Invalid value: {url:?}: host must be specified"),
                    );
                }
            }
            (None, Some(_)) => {}
            _ => bad(
                "FieldValueRequired",
                "clientConfig",
                "Required value: exactly one of url or service is required".into(),
            ),
        }
        for field in ["namespaceSelector", "objectSelector"] {
            if let Err(e) = LabelSelector::from_struct(&h[field]) {
                let (path, message) = e.split_once(": ").unwrap_or(("", &e));
                bad(
                    "FieldValueInvalid",
                    &format!("{field}.{path}"),
                    message.to_string(),
                );
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(causes)
    }
}
