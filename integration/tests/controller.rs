//! `ovs-egress controller` as a process against the real API server: allocation into `spec.egressIP`, the
//! `IPAllocated` condition, pool usage, conflicts, missing and deleted pools, restart
//! stability, leader election between replicas, the `Egress` feature gate, and the HTTPS
//! validating webhook.

#[path = "controller/harness.rs"]
mod harness;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::*;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use tokio_rustls::rustls;

#[tokio::test]
async fn egresses_get_the_lowest_free_pool_ips_with_allocated_condition_and_usage() {
    let cluster = Cluster::start().await;
    let controller = cluster.controller("only", None, &[]);
    controller.wait_ready().await;
    cluster.wait_leader("only").await;
    create_pool(&cluster, pool("pool", &[("10.10.0.11", "10.10.0.20")])).await;
    wait_usage(&cluster, "pool", 10, 0).await;

    create_egress(&cluster, egress("first", "pool", None)).await;
    let created = Instant::now();
    wait_allocated(&cluster, "first", "10.10.0.11", 1.0).await;
    eprintln!("first Egress allocated in {:?}", created.elapsed());
    wait_usage(&cluster, "pool", 10, 1).await;

    create_egress(&cluster, egress("second", "pool", None)).await;
    wait_allocated(&cluster, "second", "10.10.0.12", 1.0).await;
    wait_usage(&cluster, "pool", 10, 2).await;

    // Deleting an Egress releases its IP.
    cluster
        .egresses()
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    wait_usage(&cluster, "pool", 10, 1).await;
}

#[tokio::test]
async fn older_egress_keeps_a_contested_ip_and_the_newer_one_gets_an_allocation_error() {
    let cluster = Cluster::start().await;
    let controller = cluster.controller("only", None, &[]);
    controller.wait_ready().await;
    cluster.wait_leader("only").await;
    create_pool(&cluster, pool("pool", &[("10.10.0.0/28", "")])).await;
    // Names sort against age, so the winner cannot come from the name tie-break.
    create_egress(&cluster, egress("z-older", "pool", Some("10.10.0.5"))).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create_egress(&cluster, egress("a-newer", "pool", Some("10.10.0.5"))).await;

    wait_allocated(&cluster, "z-older", "10.10.0.5", 10.0).await;
    let message = wait_allocation_error(&cluster, "a-newer").await;
    assert!(
        message.starts_with("Cannot allocate EgressIP from ExternalIPPool: ")
            && message.contains("10.10.0.5")
            && message.contains("already allocated to Egress z-older"),
        "{message}"
    );
    // The loser keeps its spec IP (the user wrote it) and is not counted.
    assert_eq!(
        allocation(&cluster, "a-newer").await.0.as_deref(),
        Some("10.10.0.5")
    );
    wait_usage(&cluster, "pool", 14, 1).await;
}

#[tokio::test]
async fn egress_naming_a_missing_pool_gets_an_allocation_error_naming_the_pool() {
    let cluster = Cluster::start().await;
    let controller = cluster.controller("only", None, &[]);
    controller.wait_ready().await;
    cluster.wait_leader("only").await;
    create_egress(&cluster, egress("web", "no-such-pool", None)).await;
    let message = wait_allocation_error(&cluster, "web").await;
    assert_eq!(
        message,
        "Cannot allocate EgressIP from ExternalIPPool: ExternalIPPool no-such-pool does not exist"
    );
    assert_eq!(allocation(&cluster, "web").await.0, None);
}

#[tokio::test]
async fn a_pool_overlapping_an_older_one_is_refused_in_its_status_and_never_hands_out_its_ips() {
    let cluster = Cluster::start().await;
    let controller = cluster.controller("only", None, &[]);
    controller.wait_ready().await;
    cluster.wait_leader("only").await;
    // No webhook here: the overlapping pool is stored, as with the webhook bypassed.
    create_pool(&cluster, pool("older", &[("10.10.0.0/28", "")])).await;
    create_egress(&cluster, egress("a", "older", None)).await;
    wait_allocated(&cluster, "a", "10.10.0.1", 10.0).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create_pool(&cluster, pool("newer", &[("10.10.0.1", "10.10.0.3")])).await;
    create_egress(&cluster, egress("b", "newer", None)).await;

    let message = wait_allocation_error(&cluster, "b").await;
    assert!(
        message.contains("ExternalIPPool newer is refused")
            && message.contains("overlaps ExternalIPPool older"),
        "{message}"
    );
    assert_eq!(allocation(&cluster, "b").await.0, None);
    let condition = eventually("the refused pool says so in its status", 10.0, || async {
        let pool = cluster.pools().get("newer").await.ok()?;
        pool.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Allocatable")
    })
    .await;
    assert_eq!(condition.status, "False");
    assert_eq!(condition.reason.as_deref(), Some("OverlapsPool"));
    assert!(
        condition
            .message
            .as_deref()
            .is_some_and(|m| m.contains("[10.10.0.1-10.10.0.3] overlaps ExternalIPPool older")),
        "{condition:?}"
    );

    // Once the older pool is gone, the newer one is used and its condition removed; the IP
    // Egress a still names until the controller clears it is not handed out.
    cluster
        .pools()
        .delete("older", &DeleteParams::default())
        .await
        .unwrap();
    wait_allocated(&cluster, "b", "10.10.0.2", 10.0).await;
    eventually("the condition is removed", 10.0, || async {
        let pool = cluster.pools().get("newer").await.ok()?;
        let status = pool.status.unwrap_or_default();
        status
            .conditions
            .iter()
            .all(|c| c.type_ != "Allocatable")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_the_pool_clears_spec_egress_ip_and_recreating_it_allocates_again() {
    let cluster = Cluster::start().await;
    let controller = cluster.controller("only", None, &[]);
    controller.wait_ready().await;
    cluster.wait_leader("only").await;
    create_pool(&cluster, pool("pool", &[("10.10.0.0/30", "")])).await;
    create_egress(&cluster, egress("web", "pool", None)).await;
    wait_allocated(&cluster, "web", "10.10.0.1", 10.0).await;

    cluster
        .pools()
        .delete("pool", &DeleteParams::default())
        .await
        .unwrap();
    let message = wait_allocation_error(&cluster, "web").await;
    assert!(
        message.contains("ExternalIPPool pool does not exist"),
        "{message}"
    );
    eventually("spec.egressIP is cleared", 10.0, || async {
        allocation(&cluster, "web").await.0.is_none().then_some(())
    })
    .await;

    create_pool(&cluster, pool("pool", &[("10.10.1.0/30", "")])).await;
    wait_allocated(&cluster, "web", "10.10.1.1", 10.0).await;
}

#[tokio::test]
async fn restart_restores_existing_ips_before_allocating_new_ones() {
    let cluster = Cluster::start().await;
    create_pool(&cluster, pool("pool", &[("10.10.0.11", "10.10.0.20")])).await;
    {
        let controller = cluster.controller("first-run", None, &[]);
        controller.wait_ready().await;
        for name in ["e1", "e2", "e3"] {
            create_egress(&cluster, egress(name, "pool", None)).await;
        }
        wait_allocated(&cluster, "e1", "10.10.0.11", 10.0).await;
        wait_allocated(&cluster, "e2", "10.10.0.12", 10.0).await;
        wait_allocated(&cluster, "e3", "10.10.0.13", 10.0).await;
    } // killed
    // While no controller runs: .11 is freed, an Egress without IP is created, then a newer
    // one claiming .11 statically. Restoring first keeps .11 with its claimant.
    cluster
        .egresses()
        .delete("e1", &DeleteParams::default())
        .await
        .unwrap();
    create_egress(&cluster, egress("a-new-without-ip", "pool", None)).await;
    create_egress(&cluster, egress("b-new-static", "pool", Some("10.10.0.11"))).await;

    let controller = cluster.controller("second-run", None, &[]);
    controller.wait_ready().await;
    wait_allocated(&cluster, "a-new-without-ip", "10.10.0.14", 10.0).await;
    wait_allocated(&cluster, "b-new-static", "10.10.0.11", 10.0).await;
    wait_allocated(&cluster, "e2", "10.10.0.12", 1.0).await;
    wait_allocated(&cluster, "e3", "10.10.0.13", 1.0).await;
    wait_usage(&cluster, "pool", 10, 4).await;
}

#[tokio::test]
async fn only_the_lease_holder_writes_and_an_expired_lease_is_taken_over() {
    let cluster = Cluster::start().await;
    let leases = cluster.leases();
    let foreign = Lease {
        metadata: ObjectMeta {
            name: Some("ovs-egress-controller".to_string()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("someone-else".to_string()),
            lease_duration_seconds: Some(2),
            renew_time: Some(MicroTime(Timestamp::now())),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    leases
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    // Keep the foreign Lease fresh until told to stop.
    let stop = Arc::new(tokio::sync::Notify::new());
    let renewer = {
        let (leases, stop) = (leases.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let mut lease = leases.get("ovs-egress-controller").await.unwrap();
                if let Some(spec) = lease.spec.as_mut() {
                    spec.renew_time = Some(MicroTime(Timestamp::now()));
                }
                leases
                    .replace("ovs-egress-controller", &PostParams::default(), &lease)
                    .await
                    .unwrap();
                tokio::select! {
                    () = stop.notified() => return,
                    () = tokio::time::sleep(Duration::from_millis(300)) => {}
                }
            }
        })
    };
    let controller = cluster.controller("follower", None, &[]);
    controller.wait_ready().await;
    create_pool(&cluster, pool("pool", &[("10.10.0.0/30", "")])).await;
    create_egress(&cluster, egress("web", "pool", None)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ip, condition) = allocation(&cluster, "web").await;
    assert_eq!((ip, condition), (None, None), "a non-leader wrote");
    assert!(cluster.pools().get("pool").await.unwrap().status.is_none());

    stop.notify_one();
    renewer.await.unwrap();
    wait_allocated(&cluster, "web", "10.10.0.1", 10.0).await;
    let lease = leases
        .get("ovs-egress-controller")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("follower"));
    assert_eq!(lease.lease_transitions, Some(1));
}

#[tokio::test]
async fn killing_the_leader_hands_reconciliation_to_the_other_replica() {
    let cluster = Cluster::start().await;
    create_pool(&cluster, pool("pool", &[("10.10.0.0/29", "")])).await;
    let first = cluster.controller("replica-a", None, &[]);
    cluster.wait_leader("replica-a").await;
    let second = cluster.controller("replica-b", None, &[]);
    second.wait_ready().await;
    create_egress(&cluster, egress("one", "pool", None)).await;
    wait_allocated(&cluster, "one", "10.10.0.1", 10.0).await;
    assert_eq!(
        holder(&cluster.leases()).await.as_deref(),
        Some("replica-a")
    );
    assert!(
        !second.logs().contains("patching spec.egressIP"),
        "the follower wrote:\n{}",
        second.logs()
    );

    drop(first); // SIGKILL: the Lease is not released
    create_egress(&cluster, egress("two", "pool", None)).await;
    wait_allocated(&cluster, "two", "10.10.0.2", 15.0).await;
    assert_eq!(
        holder(&cluster.leases()).await.as_deref(),
        Some("replica-b")
    );
}

#[tokio::test]
async fn sigterm_releases_the_lease_so_the_other_replica_takes_over_before_it_expires() {
    let cluster = Cluster::start().await;
    let slow = ["--lease-duration-seconds", "60"];
    let first = cluster.controller("replica-a", None, &slow);
    cluster.wait_leader("replica-a").await;
    let second = cluster.controller("replica-b", None, &slow);
    second.wait_ready().await;
    let status = Command::new("kill")
        .args(["-TERM", &first.process.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Far less than the 60 s the Lease would take to expire.
    eventually("replica-b holds the Lease", 10.0, || async {
        holder(&cluster.leases()).await.filter(|h| h == "replica-b")
    })
    .await;
    assert!(
        first.logs().contains("released the leader Lease"),
        "{}",
        first.logs()
    );
}

#[tokio::test]
async fn egress_feature_gate_off_writes_nothing() {
    let cluster = Cluster::start().await;
    let controller = cluster.controller("gated", Some("featureGates:\n  Egress: false\n"), &[]);
    controller.wait_ready().await;
    create_pool(&cluster, pool("pool", &[("10.10.0.0/30", "")])).await;
    create_egress(&cluster, egress("web", "pool", None)).await;
    create_egress(&cluster, egress("missing", "nope", None)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for egress in list_egresses(&cluster).await {
        assert_eq!((egress.spec.egress_ip, egress.status), (None, None));
    }
    assert!(cluster.pools().get("pool").await.unwrap().status.is_none());
    assert!(holder(&cluster.leases()).await.is_none());
    assert!(
        controller
            .logs()
            .contains("feature gate Egress is disabled")
    );
}

#[tokio::test]
async fn controller_refuses_a_config_file_with_an_unknown_key() {
    let cluster = Cluster::start().await;
    let mut controller = cluster.controller("typo", Some("featureGate:\n  Egress: false\n"), &[]);
    let status = controller.process.0.wait().unwrap();
    assert!(!status.success());
    let logs = controller.logs();
    assert!(
        logs.contains("unknown field `featureGate`") && logs.contains("typo.conf"),
        "{logs}"
    );
}

#[tokio::test]
async fn webhook_over_https_denies_overlapping_pools_and_out_of_range_ips() {
    let cluster = Cluster::start().await;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (cluster.dir.0.join("tls.crt"), cluster.dir.0.join("tls.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let webhook = free_port();
    let controller = cluster.controller(
        "hooked",
        None,
        &[
            "--webhook-listen",
            &webhook.to_string(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
        ],
    );
    controller.wait_ready().await;
    create_pool(&cluster, pool("existing", &[("10.10.0.0/24", "")])).await;
    wait_usage(&cluster, "existing", 254, 0).await; // the controller has seen the pool

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let review = |path: &'static str, object: serde_json::Value| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(webhook).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let stream = connector.connect(name, tcp).await.unwrap();
            let kind = object["kind"].as_str().unwrap().to_string();
            let body = serde_json::json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "4f1c1c64-0000-4000-8000-000000000001",
                    "kind": {"group": "crd.antrea.io", "version": "v1beta1", "kind": kind},
                    "resource": {"group": "crd.antrea.io", "version": "v1beta1", "resource": "x"},
                    "name": object["metadata"]["name"],
                    "operation": "CREATE",
                    "userInfo": {},
                    "object": object,
                }
            });
            let (status, body) = http(stream, "POST", path, &body.to_string()).await.unwrap();
            assert_eq!(status, 200, "{body}");
            let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
            let response = reply["response"].clone();
            assert_eq!(response["uid"], "4f1c1c64-0000-4000-8000-000000000001");
            (
                response["allowed"].as_bool().unwrap(),
                response["status"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        }
    };

    let overlapping = serde_json::to_value(pool("newcomer", &[("10.10.0.128/25", "")])).unwrap();
    let (allowed, message) = review("/validate/externalippool", overlapping).await;
    assert!(!allowed);
    assert_eq!(
        message,
        "ExternalIPPool newcomer: spec.ipRanges[0]: range [10.10.0.128/25] overlaps with range [10.10.0.0/24] of ExternalIPPool existing"
    );
    let disjoint = serde_json::to_value(pool("newcomer", &[("10.10.1.0/24", "")])).unwrap();
    assert_eq!(
        review("/validate/externalippool", disjoint).await,
        (true, String::new())
    );

    let outside = serde_json::to_value(egress("web", "existing", Some("10.10.9.9"))).unwrap();
    let (allowed, message) = review("/validate/egress", outside).await;
    assert!(!allowed);
    assert_eq!(
        message,
        "Egress web: spec.egressIP: IP 10.10.9.9 is not within the IP range"
    );
    let inside = serde_json::to_value(egress("web", "existing", Some("10.10.0.9"))).unwrap();
    assert_eq!(
        review("/validate/egress", inside).await,
        (true, String::new())
    );

    let livez = tokio::net::TcpStream::connect(controller.health)
        .await
        .unwrap();
    assert_eq!(http(livez, "GET", "/livez", "").await.unwrap().0, 200);
}
