//! kube-rs (the client the agent and controller use) against kube-emu: watcher event order,
//! 410 Expired recovery by relisting, streaming lists, the status subresource, label and field
//! selectors (lists and watches), optimistic concurrency, finalizers, and failure injection.

mod common;
use common::{Emu, crds_text};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use std::time::Duration;

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": v}})).unwrap()
}

async fn next<S: futures::Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Unpin>(
    s: &mut S,
) -> Event<ConfigMap> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("watcher event within 10s")
        .expect("stream open")
        .expect("watcher ok")
}

fn describe(e: &Event<ConfigMap>) -> String {
    let name_v = |c: &ConfigMap| {
        format!(
            "{}={}",
            c.metadata.name.clone().unwrap_or_default(),
            c.data
                .as_ref()
                .and_then(|d| d.get("v"))
                .cloned()
                .unwrap_or_default()
        )
    };
    match e {
        Event::Apply(c) => format!("apply {}", name_v(c)),
        Event::Delete(c) => format!("delete {}", name_v(c)),
        Event::Init => "init".into(),
        Event::InitApply(c) => format!("initapply {}", name_v(c)),
        Event::InitDone => "initdone".into(),
    }
}

async fn collect_until_initdone<
    S: futures::Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Unpin,
>(
    s: &mut S,
) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let e = describe(&next(s).await);
        let done = e == "initdone";
        seen.push(e);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn reflector_sees_added_modified_deleted_in_order() {
    let emu = Emu::start(&[]);
    let api: Api<ConfigMap> = Api::namespaced(emu.client().await, "default");
    api.create(&PostParams::default(), &cm("before", "0"))
        .await
        .unwrap();
    let (reader, writer) = reflector::store();
    let mut w = reflector::reflector(
        writer,
        watcher::watcher(api.clone(), watcher::Config::default()),
    )
    .boxed();
    assert_eq!(
        collect_until_initdone(&mut w).await,
        ["init", "initapply before=0", "initdone"]
    );
    api.create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    api.patch(
        "before",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "3"}})),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(describe(&next(&mut w).await));
    }
    assert_eq!(
        got,
        ["apply a=1", "apply a=2", "delete a=2", "apply before=3"]
    );
    let state: Vec<String> = reader
        .state()
        .iter()
        .map(|c| describe(&Event::Apply((**c).clone())))
        .collect();
    assert_eq!(state, ["apply before=3"]);
}

#[tokio::test]
async fn watch_from_expired_resource_version_gets_410_and_watcher_relists() {
    let emu = Emu::start(&[]);
    let api: Api<ConfigMap> = Api::namespaced(emu.client().await, "default");
    let old_rv = api
        .create(&PostParams::default(), &cm("x", "1"))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut w = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    assert_eq!(
        collect_until_initdone(&mut w).await,
        ["init", "initapply x=1", "initdone"]
    );
    // The watcher is not polled: its watch from the list's resourceVersion starts only after the
    // history is compacted past it.
    api.create(&PostParams::default(), &cm("during", "2"))
        .await
        .unwrap();
    emu.admin("/emu/compact", "");
    let raw = api
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed()
        .next()
        .await
        .unwrap()
        .unwrap();
    match raw {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    let first = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, Err(watcher::Error::WatchError(ref e)) if e.code == 410),
        "{first:?}"
    );
    let relisted = collect_until_initdone(&mut w).await;
    assert_eq!(
        relisted,
        ["init", "initapply during=2", "initapply x=1", "initdone"]
    );
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_then_changes() {
    let emu = Emu::start(&[]);
    let api: Api<ConfigMap> = Api::namespaced(emu.client().await, "default");
    api.create(&PostParams::default(), &cm("s", "1"))
        .await
        .unwrap();
    let mut w = watcher::watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    assert_eq!(
        collect_until_initdone(&mut w).await,
        ["init", "initapply s=1", "initdone"]
    );
    api.delete("s", &DeleteParams::default()).await.unwrap();
    assert_eq!(describe(&next(&mut w).await), "delete s=1");
}

fn egress_api(client: kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("crd.antrea.io", "v1beta1", "Egress"),
        "egresses",
    );
    Api::all_with(client, &ar)
}

async fn install_crds(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let text = crds_text();
    for doc in kube_emu::snapshot::parse(&text).unwrap() {
        crds.create(
            &PostParams::default(),
            &serde_json::from_value(doc).unwrap(),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn status_subresource_separates_spec_and_status_and_generation_follows_spec() {
    let emu = Emu::start(&[]);
    let client = emu.client().await;
    install_crds(&client).await;
    let api = egress_api(client);
    let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress", "metadata": {"name": "e1"},
        "spec": {"appliedTo": {}, "egressIP": "10.0.0.1"}, "status": {"egressNode": "ignored-on-create"}})).unwrap();
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(
        created.data.get("status"),
        None,
        "status is dropped on create"
    );
    assert_eq!(created.metadata.generation, Some(1));
    let st = api.patch_status("e1", &PatchParams::default(), &Patch::Merge(json!({"status": {"egressNode": "n1", "egressIP": "10.0.0.1"}, "spec": {"egressIP": "10.9.9.9"}}))).await.unwrap();
    assert_eq!(st.data["status"]["egressNode"], "n1");
    assert_eq!(
        st.data["spec"]["egressIP"], "10.0.0.1",
        "spec changes through /status are ignored"
    );
    assert_eq!(
        st.metadata.generation,
        Some(1),
        "status writes keep generation"
    );
    let main = api
        .patch(
            "e1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"egressNode": "n2"}, "spec": {"egressIP": "10.0.0.2"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        main.data["status"]["egressNode"], "n1",
        "status changes through the main resource are ignored"
    );
    assert_eq!(main.data["spec"]["egressIP"], "10.0.0.2");
    assert_eq!(
        main.metadata.generation,
        Some(2),
        "spec change bumps generation"
    );
    let same = api
        .patch(
            "e1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"egressIP": "10.0.0.2"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version, main.metadata.resource_version,
        "a no-op patch writes nothing"
    );
    let err = api
        .patch(
            "e1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"egressIP": "not-an-ip"}})),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            assert!(s.message.contains("spec.egressIP"), "{}", s.message);
        }
        other => panic!("expected 422, got {other:?}"),
    }
    let applied = api.patch("e1", &PatchParams::apply("test").force(), &Patch::Apply(json!({"apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress", "metadata": {"name": "e1"}, "spec": {"appliedTo": {}, "egressIP": "10.0.0.3"}}))).await.unwrap();
    assert_eq!(
        (
            applied.data["spec"]["egressIP"].as_str(),
            applied.metadata.generation
        ),
        (Some("10.0.0.3"), Some(3))
    );
}

fn pod(name: &str, labels: serde_json::Value, node: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})).unwrap()
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists_and_watches() {
    let emu = Emu::start(&[]);
    let api: Api<Pod> = Api::namespaced(emu.client().await, "default");
    api.create(
        &PostParams::default(),
        &pod("web-a", json!({"app": "web", "tier": "front"}), "n1"),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &pod("web-b", json!({"app": "web"}), "n2"),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &pod("db", json!({"app": "db"}), "n1"),
    )
    .await
    .unwrap();
    let names = |l: kube::core::ObjectList<Pod>| {
        l.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app in (web),tier"))
                .await
                .unwrap()
        ),
        ["web-a"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app!=web"))
                .await
                .unwrap()
        ),
        ["db"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("!tier"))
                .await
                .unwrap()
        ),
        ["db", "web-b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("spec.nodeName=n1"))
                .await
                .unwrap()
        ),
        ["db", "web-a"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("spec.nodeName=n1,metadata.name!=db"))
                .await
                .unwrap()
        ),
        ["web-a"]
    );
    let err = api
        .list(&ListParams::default().fields("spec.hostname=x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 400),
        "{err:?}"
    );
    // A watch with a selector sees an object that stops matching as DELETED.
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().labels("app=web"), &rv)
        .await
        .unwrap()
        .boxed();
    api.patch(
        "web-b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Deleted(p) => got.push(format!("deleted {}", p.metadata.name.unwrap())),
            WatchEvent::Added(p) => got.push(format!("added {}", p.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, ["deleted web-b", "added db"]);
}

#[tokio::test]
async fn update_with_stale_resource_version_is_409_conflict() {
    let emu = Emu::start(&[]);
    let api: Api<ConfigMap> = Api::namespaced(emu.client().await, "default");
    let v1 = api
        .create(&PostParams::default(), &cm("c", "1"))
        .await
        .unwrap();
    let mut a = v1.clone();
    a.data = Some([("v".to_string(), "2".to_string())].into());
    api.replace("c", &PostParams::default(), &a).await.unwrap();
    let mut b = v1;
    b.data = Some([("v".to_string(), "3".to_string())].into());
    match api
        .replace("c", &PostParams::default(), &b)
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("expected 409, got {other:?}"),
    }
    assert_eq!(api.get("c").await.unwrap().data.unwrap()["v"], "2");
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let emu = Emu::start(&[]);
    let api: Api<ConfigMap> = Api::namespaced(emu.client().await, "default");
    let mut c = cm("f", "1");
    c.metadata.finalizers = Some(vec!["test/hold".into()]);
    api.create(&PostParams::default(), &c).await.unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let held = api.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(matches!(api.get("f").await.unwrap_err(), kube::Error::Api(s) if s.code == 404));
}

#[tokio::test]
async fn injected_faults_fail_requests_and_close_watches() {
    let emu = Emu::start(&[]);
    let api: Api<ConfigMap> = Api::namespaced(emu.client().await, "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    emu.admin("/emu/fail", r#"{"closeWatches":true}"#);
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("watch closed promptly");
    assert!(end.is_none(), "{end:?}");
    emu.admin("/emu/fail", r#"{"error500ForSeconds":30}"#);
    assert!(
        matches!(api.list(&ListParams::default()).await.unwrap_err(), kube::Error::Api(s) if s.code == 500)
    );
    emu.admin(
        "/emu/fail",
        r#"{"error500ForSeconds":0,"stallForSeconds":1}"#,
    );
    let t = std::time::Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "stalled request answered after {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn namespaces_get_metadata_name_label_and_snapshot_objects_load() {
    let snap = std::env::temp_dir().join(format!("kube-emu-snap-{}.yaml", std::process::id()));
    std::fs::write(&snap, format!("{}\n---\napiVersion: crd.antrea.io/v1beta1\nkind: Egress\nmetadata: {{name: snap}}\nspec: {{appliedTo: {{}}, egressIP: 10.1.1.1}}\nstatus: {{egressNode: n7}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: extra}}\n", crds_text())).unwrap();
    let emu = Emu::start(&["--snapshot", snap.to_str().unwrap()]);
    std::fs::remove_file(&snap).unwrap();
    let client = emu.client().await;
    let eg = egress_api(client.clone()).get("snap").await.unwrap();
    assert_eq!(
        eg.data["status"]["egressNode"], "n7",
        "snapshot keeps status"
    );
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for name in ["default", "kube-system", "extra"] {
        let labels = ns.get(name).await.unwrap().metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/metadata.name"], name);
    }
    Api::<ConfigMap>::namespaced(client, "extra")
        .get("c")
        .await
        .unwrap();
}

#[tokio::test]
async fn services_get_cluster_ips_from_the_service_cidr() {
    use k8s_openapi::api::core::v1::Service;
    let emu = Emu::start(&["--service-cidr", "10.100.0.0/16"]);
    let api: Api<Service> = Api::namespaced(emu.client().await, "default");
    let ip = |s: Service| s.spec.unwrap().cluster_ip.unwrap();
    assert_eq!(ip(api.get("kubernetes").await.unwrap()), "10.100.0.1");
    let svc = |name: &str, cluster_ip: Option<&str>| -> Service {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"clusterIP": cluster_ip, "ports": [{"port": 80}]}})).unwrap()
    };
    assert_eq!(
        ip(api
            .create(&PostParams::default(), &svc("a", None))
            .await
            .unwrap()),
        "10.100.0.2"
    );
    assert_eq!(
        ip(api
            .create(&PostParams::default(), &svc("b", Some("10.100.7.7")))
            .await
            .unwrap()),
        "10.100.7.7"
    );
    match api
        .create(&PostParams::default(), &svc("c", Some("192.168.0.1")))
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422);
            assert!(
                s.message.contains("spec.clusterIPs")
                    && s.message
                        .contains("The range of valid IPs is 10.100.0.0/16"),
                "{}",
                s.message
            );
        }
        other => panic!("expected 422, got {other:?}"),
    }
}

#[tokio::test]
async fn secret_string_data_is_stored_base64_encoded_in_data() {
    use k8s_openapi::api::core::v1::Secret;
    let emu = Emu::start(&[]);
    let api: Api<Secret> = Api::namespaced(emu.client().await, "kube-system");
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "keys"}, "stringData": {"k": "secret"}}),
    )
    .unwrap();
    let got = api.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(got.string_data, None);
    assert_eq!(got.data.unwrap()["k"].0, b"secret");
}

#[tokio::test]
async fn watches_send_bookmarks_and_end_after_timeout_seconds() {
    let emu = Emu::start(&["--bookmark-interval", "0.2"]);
    let api: Api<ConfigMap> = Api::namespaced(emu.client().await, "default");
    let rv = api
        .create(&PostParams::default(), &cm("b", "1"))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(2), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &cm("b2", "1"))
        .await
        .unwrap();
    let mut kinds = Vec::new();
    let started = std::time::Instant::now();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("watch ends by itself")
    {
        match ev.unwrap() {
            WatchEvent::Added(c) => kinds.push(format!("added {}", c.metadata.name.unwrap())),
            WatchEvent::Bookmark(b) => {
                assert!(
                    b.metadata.resource_version.parse::<u64>().unwrap()
                        > rv.parse::<u64>().unwrap()
                );
                if kinds.last().is_none_or(|k| k != "bookmark") {
                    kinds.push("bookmark".into());
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(kinds, ["added b2", "bookmark"]);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "timeoutSeconds=2 ended the watch too early"
    );
}

#[tokio::test]
async fn recorder_events_are_visible_through_both_event_apis() {
    use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
    use k8s_openapi::api::events::v1::Event as EventV1;
    use kube::runtime::events::{Event as RecEvent, EventType, Recorder, Reporter};
    let emu = Emu::start(&[]);
    let client = emu.client().await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "ovs-egress-agent".into(),
            instance: Some("node1".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("crd.antrea.io/v1beta1".into()),
        kind: Some("Egress".into()),
        name: Some("eg1".into()),
        ..Default::default()
    };
    let ev = RecEvent {
        type_: EventType::Normal,
        reason: "IPAssigned".into(),
        note: Some("Assigned Egress eg1 with IP 10.0.0.1 on Node node1".into()),
        action: "NodeAssignment".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let v1: Vec<EventV1> = Api::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(v1.len(), 1);
    assert_eq!(v1[0].series.as_ref().map(|s| s.count), Some(2));
    let core = Api::<CoreEvent>::namespaced(client, "default")
        .list(&ListParams::default().fields("involvedObject.name=eg1,involvedObject.kind=Egress"))
        .await
        .unwrap()
        .items;
    assert_eq!(core.len(), 1);
    assert_eq!(
        (core[0].reason.as_deref(), core[0].message.as_deref()),
        (Some("IPAssigned"), ev.note.as_deref())
    );
    assert_eq!(
        core[0].reporting_component.as_deref(),
        Some("ovs-egress-agent")
    );
    let out = emu.kubectl_ok(&["get", "events", "-n", "default"]);
    assert!(out.contains("IPAssigned"), "{out}");
}

#[tokio::test]
async fn lists_paginate_with_limit_and_continue_and_json_patch_applies() {
    let emu = Emu::start(&[]);
    let api: Api<ConfigMap> = Api::namespaced(emu.client().await, "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("p{i}"), "0"))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = api.list(&lp).await.unwrap();
        assert!(page.items.len() <= 2);
        names.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"]);
    let ops: json_patch::Patch = serde_json::from_value(json!([{"op": "test", "path": "/data/v", "value": "0"}, {"op": "replace", "path": "/data/v", "value": "9"}])).unwrap();
    let got = api
        .patch("p3", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(got.data.unwrap()["v"], "9");
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/v", "value": "0"}])).unwrap();
    let err = api
        .patch("p3", &PatchParams::default(), &Patch::<()>::Json(failing))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );
}
