//! The real API server of the test bed (`ovs-egress-apiserver`: kube-apiserver and etcd from
//! one Kubernetes release, built from `integration/apiserver`): it becomes ready within its
//! deadline or fails saying so, serves our CRDs to the kubectl of the same release, keeps its
//! objects and tokens across a restart, answers 410 Gone after a compaction, and leaves no
//! process behind.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use ovs_egress_core::api::v1beta1;
use ovs_egress_integration::apiserver::{ApiServer, READY_TIMEOUT, apply_crds_and_wait, client};
use ovs_egress_integration::identity::AGENT;
use ovs_egress_integration::netns::unique_token;
use ovs_egress_integration::process::is_alive;
use serde_json::json;

/// A private directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("{}-apiserver-test", unique_token()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(ovs_egress_integration::bins::go_tool("kubectl").unwrap())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_ready_serves_the_crds_to_kubectl_of_its_release_and_leaves_no_process_behind() {
    let dir = TempDir::new();
    let started = Instant::now();
    let server = ApiServer::start(&dir.0).unwrap();
    eprintln!(
        "API server start to ready: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let pid = i32::try_from(server.pid().unwrap()).unwrap();
    let admin = server.client().await.unwrap();
    apply_crds_and_wait(&admin).await.unwrap();

    let out = kubectl(&server.kubeconfig, &["version", "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    let version: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        version["clientVersion"]["gitVersion"], version["serverVersion"]["gitVersion"],
        "{version}"
    );
    let out = kubectl(&server.kubeconfig, &["get", "egress,eip"]);
    assert!(out.status.success(), "{out:?}");

    drop(server);
    assert!(!is_alive(pid), "the API server {pid} is still running");
}

#[test]
fn a_server_not_ready_in_time_fails_naming_the_deadline_and_its_log() {
    let dir = TempDir::new();
    let error = match ApiServer::start_with(&dir.0, Duration::from_millis(1), &[]) {
        Ok(_) => panic!("the API server became ready within 1 ms"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("did not become ready within 1ms") && error.contains("apiserver.log"),
        "{error}"
    );
    assert!(error.contains("not ready within 1ms"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_same_data_keeps_objects_address_and_tokens() {
    let dir = TempDir::new();
    let mut server = ApiServer::start(&dir.0).unwrap();
    let admin = server.client().await.unwrap();
    apply_crds_and_wait(&admin).await.unwrap();
    AGENT.install(&admin).await.unwrap();
    let agent_kubeconfig = dir.0.join("agent.kubeconfig");
    AGENT
        .write_kubeconfig(
            &admin,
            &agent_kubeconfig,
            &server.url,
            &server.ca_pem().unwrap(),
        )
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let object = serde_json::from_value(json!({"metadata": {"name": "kept"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    let url = server.url.clone();

    let started = Instant::now();
    server.restart().unwrap();
    eprintln!(
        "API server restart to ready: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(server.url, url);
    let admin = server.client().await.unwrap();
    assert!(
        Api::<Namespace>::all(admin)
            .get_opt("kept")
            .await
            .unwrap()
            .is_some()
    );
    let agent = client(&agent_kubeconfig).await.unwrap();
    Api::<v1beta1::Egress>::all(agent)
        .list(&ListParams::default())
        .await
        .expect("the agent's token from before the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_compaction_a_watch_from_an_older_resource_version_is_answered_410_gone() {
    let dir = TempDir::new();
    // Without the watch cache (which serves recent history itself) the watch reads etcd.
    let args = ["--watch-cache=false"];
    let server = ApiServer::start_with(&dir.0, READY_TIMEOUT, &args).unwrap();
    let admin = server.client().await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(admin, "default");
    let object: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "m"}, "data": {"n": "0"}})).unwrap();
    let created = maps.create(&PostParams::default(), &object).await.unwrap();
    let old = created.metadata.resource_version.unwrap();
    for n in 1..5 {
        let mut map = maps.get("m").await.unwrap();
        map.data = Some([("n".to_string(), n.to_string())].into());
        maps.replace("m", &PostParams::default(), &map)
            .await
            .unwrap();
    }
    server.compact().unwrap();

    use futures::StreamExt;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = maps
            .watch(&WatchParams::default().timeout(5), &old)
            .await
            .unwrap()
            .boxed();
        match stream.next().await {
            Some(Ok(WatchEvent::Error(e))) if e.code == 410 => return,
            other if Instant::now() > deadline => {
                panic!("no 410 Gone for a watch from {old} after compaction; got {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
