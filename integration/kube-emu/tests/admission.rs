//! Validating admission webhooks through kube-emu, with a tiny HTTPS webhook in the test that
//! denies objects labelled `deny`: the denial reaches kube-rs and kubectl in the real API
//! server's words, allowed objects are stored, failurePolicy decides when the webhook is down or
//! too slow, rules and selectors decide whether it is called, and the AdmissionReview carries
//! what a real server sends.

mod common;
use common::Emu;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_rustls::rustls;

const DENIAL: &str = "objects labelled deny are not allowed";
const HOOK: &str = "deny.test.kube-emu.io";

/// The in-test webhook: records every review it gets; `/deny` denies creating or updating
/// objects labelled `deny=true` (message only, as kube-rs' `deny` does) or `deny=forbidden` (code 403 with a
/// reason) and always warns; `/slow` answers after 3 s.
struct Webhook {
    base: String,
    ca_bundle: String,
    reviews: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(path: &str, review: &Value) -> Value {
    let request = &review["request"];
    let object = if request["object"].is_null() {
        &request["oldObject"]
    } else {
        &request["object"]
    };
    let mut response = json!({
        "uid": request["uid"],
        "allowed": true,
        "warnings": [format!("test webhook saw {} {}", request["operation"].as_str().unwrap(), request["name"].as_str().unwrap())],
    });
    if path == "/deny" && request["operation"] != "DELETE" {
        match object["metadata"]["labels"]["deny"].as_str() {
            Some("true") => {
                response["allowed"] = json!(false);
                response["status"] = json!({"message": DENIAL});
            }
            Some("forbidden") => {
                response["allowed"] = json!(false);
                response["status"] = json!({"code": 403, "reason": "Forbidden", "message": DENIAL});
            }
            _ => {}
        }
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

impl Webhook {
    async fn start() -> Webhook {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let key = rustls_pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key.into())
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let reviews = Arc::new(Mutex::new(Vec::new()));
        let seen = reviews.clone();
        let task = tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                use http_body_util::BodyExt;
                                let path = req.uri().path().to_string();
                                let query = req.uri().query().unwrap_or_default().to_string();
                                let body = req.into_body().collect().await?.to_bytes();
                                let mut review: Value = serde_json::from_slice(&body).unwrap();
                                review["query"] = json!(query);
                                seen.lock().unwrap().push(review.clone());
                                if path == "/slow" {
                                    tokio::time::sleep(Duration::from_secs(3)).await;
                                }
                                let out = serde_json::to_vec(&answer(&path, &review)).unwrap();
                                Ok::<_, hyper::Error>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(out)),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Webhook {
            base,
            ca_bundle: base64_pem(&certified.cert.pem()),
            reviews,
            task,
        }
    }

    fn reviews(&self) -> Vec<Value> {
        self.reviews.lock().unwrap().clone()
    }
}

fn base64_pem(pem: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(pem)
}

/// A configuration with one webhook for ConfigMaps (CREATE and UPDATE unless `rule` says
/// otherwise); `extra` is merged into the webhook.
fn config(name: &str, url: &str, ca_bundle: &str, rule: Value, extra: Value) -> Value {
    let mut rules = json!({"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "operations": ["CREATE", "UPDATE"]});
    json_patch::merge(&mut rules, &rule);
    let mut hook = json!({
        "name": HOOK,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "clientConfig": {"url": url, "caBundle": ca_bundle},
        "rules": [rules],
    });
    json_patch::merge(&mut hook, &extra);
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {"name": name}, "webhooks": [hook]})
}

async fn register(emu: &Emu, config: Value) -> Api<ValidatingWebhookConfiguration> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(emu.client().await);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(config).unwrap(),
    )
    .await
    .expect("registering the webhook configuration");
    api
}

fn cm(name: &str, deny: Option<&str>) -> ConfigMap {
    let labels = deny.map_or(json!({}), |d| json!({"deny": d}));
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_create_gets_the_real_server_wording_and_allowed_objects_are_stored() {
    let (emu, hook) = (Emu::start(&[]), Webhook::start().await);
    let url = format!("{}/deny", hook.base);
    register(
        &emu,
        config("deny", &url, &hook.ca_bundle, json!({}), json!({})),
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(emu.client().await, "default");

    let denied = api_error(
        cms.create(&PostParams::default(), &cm("bad", Some("true")))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (denied.code, denied.reason.as_str(), denied.message.as_str()),
        (
            400,
            "",
            "admission webhook \"deny.test.kube-emu.io\" denied the request: objects labelled deny are not allowed"
        )
    );
    let forbidden = api_error(
        cms.create(&PostParams::default(), &cm("worse", Some("forbidden")))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (forbidden.code, forbidden.reason.as_str()),
        (403, "Forbidden")
    );
    for name in ["bad", "worse"] {
        assert!(cms.get_opt(name).await.unwrap().is_none(), "{name} stored");
    }

    let stored = cms
        .create(&PostParams::default(), &cm("good", None))
        .await
        .expect("an allowed object is stored");
    let reviews = hook.reviews();
    assert_eq!(reviews.len(), 3, "{reviews:#?}");
    let r = &reviews[2];
    assert_eq!(r["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(r["query"], "timeout=10s");
    let req = &r["request"];
    let kind = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    let resource = json!({"group": "", "version": "v1", "resource": "configmaps"});
    assert_eq!(
        (
            &req["kind"],
            &req["requestKind"],
            &req["resource"],
            &req["requestResource"]
        ),
        (&kind, &kind, &resource, &resource)
    );
    assert_eq!(
        (&req["name"], &req["namespace"], &req["operation"]),
        (&json!("good"), &json!("default"), &json!("CREATE"))
    );
    assert_eq!(req["userInfo"]["username"], "kube-emu-admin");
    assert_eq!(req["oldObject"], Value::Null);
    assert_eq!(req["dryRun"], false);
    assert_eq!(req["options"]["kind"], "CreateOptions");
    // The webhook judged exactly the object that was stored.
    assert_eq!(req["object"]["metadata"]["uid"], json!(stored.metadata.uid));
    assert_eq!(req["object"]["data"]["k"], "v");
    let uids: std::collections::HashSet<_> = reviews
        .iter()
        .map(|r| r["request"]["uid"].clone())
        .collect();
    assert_eq!(uids.len(), 3, "every review has its own uid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_sends_the_old_object_and_a_denied_update_changes_nothing() {
    let (emu, hook) = (Emu::start(&[]), Webhook::start().await);
    let cms: Api<ConfigMap> = Api::namespaced(emu.client().await, "default");
    cms.create(&PostParams::default(), &cm("app", None))
        .await
        .unwrap();
    let url = format!("{}/deny", hook.base);
    register(
        &emu,
        config("deny", &url, &hook.ca_bundle, json!({}), json!({})),
    )
    .await;

    let patch = json!({"metadata": {"labels": {"deny": "true"}}, "data": {"k": "changed"}});
    let denied = api_error(
        cms.patch("app", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_err(),
    );
    assert!(denied.message.ends_with(DENIAL), "{}", denied.message);
    assert_eq!(cms.get("app").await.unwrap().data.unwrap()["k"], "v");

    let ok = json!({"data": {"k": "changed"}});
    cms.patch("app", &PatchParams::default(), &Patch::Merge(&ok))
        .await
        .expect("an allowed update is stored");
    assert_eq!(cms.get("app").await.unwrap().data.unwrap()["k"], "changed");
    let last = hook.reviews().pop().unwrap();
    let req = &last["request"];
    assert_eq!(
        (&req["operation"], &req["options"]["kind"]),
        (&json!("UPDATE"), &json!("UpdateOptions"))
    );
    assert_eq!(
        (&req["oldObject"]["data"]["k"], &req["object"]["data"]["k"]),
        (&json!("v"), &json!("changed"))
    );

    // Dry-run writes are judged too (with dryRun: true) and store nothing.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    cms.create(&dry, &cm("dry", None)).await.unwrap();
    assert_eq!(hook.reviews().pop().unwrap()["request"]["dryRun"], true);
    assert!(cms.get_opt("dry").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_policy_fail_rejects_and_ignore_admits_when_the_webhook_is_unreachable() {
    let emu = Emu::start(&[]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("https://{closed}/deny");
    let configs = register(&emu, config("down", &url, "", json!({}), json!({}))).await;
    let cms: Api<ConfigMap> = Api::namespaced(emu.client().await, "default");

    let failed = api_error(
        cms.create(&PostParams::default(), &cm("a", None))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (failed.code, failed.reason.as_str()),
        (500, "InternalError")
    );
    let prefix = format!(
        "Internal error occurred: failed calling webhook \"{HOOK}\": failed to call webhook: Post \"{url}?timeout=10s\": dial tcp {closed}: "
    );
    assert!(failed.message.starts_with(&prefix), "{}", failed.message);
    assert!(cms.get_opt("a").await.unwrap().is_none());

    let ignore = json!({"webhooks": [{"name": HOOK, "failurePolicy": "Ignore", "admissionReviewVersions": ["v1"], "sideEffects": "None", "clientConfig": {"url": url}, "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "operations": ["CREATE"]}]}]});
    configs
        .patch("down", &PatchParams::default(), &Patch::Merge(&ignore))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("a", None))
        .await
        .expect("failurePolicy Ignore admits when the webhook is down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_slower_than_timeout_seconds_fails_the_write_and_service_references_are_refused_clearly()
 {
    let (emu, hook) = (Emu::start(&[]), Webhook::start().await);
    let url = format!("{}/slow", hook.base);
    register(
        &emu,
        config(
            "slow",
            &url,
            &hook.ca_bundle,
            json!({}),
            json!({"timeoutSeconds": 1}),
        ),
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(emu.client().await, "default");
    let failed = api_error(
        cms.create(&PostParams::default(), &cm("a", None))
            .await
            .unwrap_err(),
    );
    assert!(
        failed.message.ends_with(&format!(
            "Post \"{url}?timeout=1s\": context deadline exceeded"
        )),
        "{}",
        failed.message
    );
    assert_eq!(hook.reviews()[0]["query"], "timeout=1s");

    let svc = config(
        "svc",
        "https://unused",
        "",
        json!({"resources": ["secrets"]}),
        json!({"clientConfig": {"url": null, "service": {"namespace": "kube-system", "name": "hook"}}}),
    );
    register(&emu, svc).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(emu.client().await, "default");
    let s = serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap();
    let failed = api_error(
        secrets
            .create(&PostParams::default(), &s)
            .await
            .unwrap_err(),
    );
    assert_eq!(failed.code, 500);
    assert!(failed.message.contains("kube-emu calls webhooks by clientConfig.url only; clientConfig.service kube-system/hook is not supported"), "{}", failed.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_whose_rules_or_selectors_do_not_match_are_not_called() {
    let (emu, hook) = (Emu::start(&[]), Webhook::start().await);
    let url = format!("{}/deny", hook.base);
    let (ca, none) = (&hook.ca_bundle, json!({}));
    register(
        &emu,
        config(
            "other-resource",
            &url,
            ca,
            json!({"resources": ["secrets"]}),
            none.clone(),
        ),
    )
    .await;
    register(
        &emu,
        config(
            "other-group",
            &url,
            ca,
            json!({"apiGroups": ["apps"]}),
            none.clone(),
        ),
    )
    .await;
    register(
        &emu,
        config(
            "delete-only",
            &url,
            ca,
            json!({"operations": ["DELETE"]}),
            none.clone(),
        ),
    )
    .await;
    register(
        &emu,
        config(
            "status-only",
            &url,
            ca,
            json!({"resources": ["configmaps/status"]}),
            none.clone(),
        ),
    )
    .await;
    register(
        &emu,
        config(
            "cluster-only",
            &url,
            ca,
            json!({"scope": "Cluster"}),
            none.clone(),
        ),
    )
    .await;
    let labelled = json!({"objectSelector": {"matchLabels": {"checked": "yes"}}});
    register(
        &emu,
        config("object-selector", &url, ca, json!({}), labelled),
    )
    .await;
    let ns = json!({"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["kube-system"]}]}});
    register(&emu, config("namespace-selector", &url, ca, json!({}), ns)).await;
    let cms: Api<ConfigMap> = Api::namespaced(emu.client().await, "default");

    cms.create(&PostParams::default(), &cm("bad", Some("true")))
        .await
        .expect("no webhook matches, so nothing denies");
    assert_eq!(hook.reviews().len(), 0, "{:#?}", hook.reviews());

    // The same webhooks do match when their rule or selector does.
    let mut checked = cm("checked", Some("true"));
    checked
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("checked".into(), "yes".into());
    let denied = api_error(
        cms.create(&PostParams::default(), &checked)
            .await
            .unwrap_err(),
    );
    assert!(denied.message.ends_with(DENIAL), "{}", denied.message);
    cms.delete("bad", &DeleteParams::default()).await.unwrap();
    let reviews = hook.reviews();
    let ops: Vec<_> = reviews
        .iter()
        .map(|r| r["request"]["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["CREATE", "DELETE"]);
    assert_eq!(
        (
            &reviews[1]["request"]["object"],
            &reviews[1]["request"]["oldObject"]["metadata"]["name"]
        ),
        (&Value::Null, &json!("bad"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_of_a_denied_object_prints_the_denial_and_the_warning() {
    let (emu, hook) = (Emu::start(&[]), Webhook::start().await);
    let url = format!("{}/deny", hook.base);
    let file = emu.dir.join("webhook.json");
    std::fs::write(
        &file,
        config("deny", &url, &hook.ca_bundle, json!({}), json!({})).to_string(),
    )
    .unwrap();
    let file = file.to_str().unwrap().to_string();
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        emu.kubectl(&args)
    };
    let (ok, _, err) = tokio::task::block_in_place(|| run(vec!["apply".into(), "-f".into(), file]));
    assert!(ok, "{err}");
    let out =
        tokio::task::block_in_place(|| emu.kubectl_ok(&["get", "validatingwebhookconfigurations"]));
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().take(2).eq(["deny", "1"])),
        "{out}"
    );

    let manifest = emu.dir.join("bad.yaml");
    std::fs::write(&manifest, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  labels:\n    deny: \"true\"\ndata:\n  k: v\n").unwrap();
    let manifest = manifest.to_str().unwrap().to_string();
    let (ok, _, err) =
        tokio::task::block_in_place(|| run(vec!["create".into(), "-f".into(), manifest.clone()]));
    assert!(!ok);
    assert!(
        err.contains("Warning: test webhook saw CREATE bad"),
        "{err}"
    );
    assert!(
        err.contains(&format!("Error from server: error when creating \"{manifest}\": admission webhook \"{HOOK}\" denied the request: {DENIAL}")),
        "{err}"
    );
    let (ok, out, err) = tokio::task::block_in_place(|| {
        run(vec![
            "create".into(),
            "configmap".into(),
            "good".into(),
            "--from-literal=k=v".into(),
        ])
    });
    assert!(ok, "{err}");
    assert!(out.contains("configmap/good created"), "{out}");
    assert!(
        err.contains("Warning: test webhook saw CREATE good"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configurations_are_rejected_naming_the_field_and_defaults_are_filled_in() {
    let emu = Emu::start(&[]);
    let api: Api<ValidatingWebhookConfiguration> = Api::all(emu.client().await);
    let bad = config(
        "bad",
        "http://127.0.0.1:1/x",
        "",
        json!({}),
        json!({"sideEffects": null}),
    );
    let e = api_error(
        api.create(
            &PostParams::default(),
            &serde_json::from_value(bad).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        "ValidatingWebhookConfiguration.admissionregistration.k8s.io \"bad\" is invalid: [webhooks[0].sideEffects: Unsupported value: \"\": supported values: \"None\", \"NoneOnDryRun\", webhooks[0].clientConfig.url: Invalid value: \"http://127.0.0.1:1/x\": 'https' is the only allowed URL scheme]"
    );
    let good = config("good", "https://127.0.0.1:1/x", "", json!({}), json!({}));
    let stored = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(good).unwrap(),
        )
        .await
        .unwrap();
    let hook = &stored.webhooks.unwrap()[0];
    assert_eq!(
        (
            hook.failure_policy.as_deref(),
            hook.timeout_seconds,
            hook.match_policy.as_deref()
        ),
        (Some("Fail"), Some(10), Some("Equivalent"))
    );
    assert_eq!(hook.rules.as_ref().unwrap()[0].scope.as_deref(), Some("*"));
}
