//! The controller's validating webhook registered in the API server, end to end: the real
//! kube-apiserver calls `ovs-egress controller` over HTTPS (TLS from
//! `ovs_egress_integration::webhook`, the `caBundle` verified) before it stores an
//! ExternalIPPool or Egress, so invalid objects that the CRD schema accepts are
//! rejected with the controller's message, through the kube client and through `kubectl apply`,
//! and valid ones are stored.

#[path = "controller/harness.rs"]
#[allow(dead_code)] // the controller tests' process helpers; this test needs only some of them
mod harness;

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use harness::*;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, PostParams};
use ovs_egress_integration::webhook;

fn kubectl(cluster: &Cluster, args: &[&str]) -> (bool, String) {
    let out = Command::new(ovs_egress_integration::bins::go_tool("kubectl").unwrap())
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("KUBECACHEDIR", cluster.dir.0.join("kube-cache"))
        .args(args)
        .output()
        .expect("running kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn api_message(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_pools_and_egresses_are_rejected_by_the_registered_controller_webhook() {
    let cluster = Cluster::start().await;
    let tls = webhook::write_tls(&cluster.dir.0, IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
    let addr = free_port();
    let controller = cluster.controller(
        "hooked",
        None,
        &[
            "--webhook-listen",
            &addr.to_string(),
            "--tls-cert-file",
            tls.cert_file.to_str().unwrap(),
            "--tls-key-file",
            tls.key_file.to_str().unwrap(),
        ],
    );
    controller.wait_ready().await;
    eventually("the webhook listens", 10.0, || async {
        tokio::net::TcpStream::connect(addr).await.ok()
    })
    .await;
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(cluster.client.clone());
    let config = serde_json::from_value(webhook::configuration(addr, &tls.ca_pem)).unwrap();
    configs
        .create(&PostParams::default(), &config)
        .await
        .expect("registering the controller's webhook");

    // start > end passes the CRD schema; only the webhook rejects it.
    let backwards = pool("backwards", &[("10.10.0.20", "10.10.0.11")]);
    let (code, message) = api_message(
        cluster
            .pools()
            .create(&PostParams::default(), &backwards)
            .await
            .unwrap_err(),
    );
    let expected = "admission webhook \"externalippoolvalidator.antrea.io\" denied the request: \
                    ExternalIPPool backwards: spec.ipRanges[0]: range start 10.10.0.20 should not be greater than range end 10.10.0.11";
    assert_eq!(
        (code, message.as_str()),
        (400, expected),
        "{}",
        controller.logs()
    );
    assert!(
        cluster
            .pools()
            .get_opt("backwards")
            .await
            .unwrap()
            .is_none()
    );

    let manifest = cluster.dir.0.join("backwards.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: crd.antrea.io/v1beta1\nkind: ExternalIPPool\nmetadata:\n  name: backwards\nspec:\n  ipRanges:\n  - start: 10.10.0.20\n    end: 10.10.0.11\n  nodeSelector: {}\n",
    )
    .unwrap();
    let manifest = manifest.to_str().unwrap();
    let (ok, out) = tokio::task::block_in_place(|| kubectl(&cluster, &["apply", "-f", manifest]));
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "Error from server: error when creating \"{manifest}\": {expected}"
        )),
        "{out}"
    );

    let good = cluster.dir.0.join("good.yaml");
    std::fs::write(
        &good,
        "apiVersion: crd.antrea.io/v1beta1\nkind: ExternalIPPool\nmetadata:\n  name: good\nspec:\n  ipRanges:\n  - start: 10.10.0.11\n    end: 10.10.0.20\n  nodeSelector: {}\n",
    )
    .unwrap();
    let (ok, out) =
        tokio::task::block_in_place(|| kubectl(&cluster, &["apply", "-f", good.to_str().unwrap()]));
    assert!(ok, "{out}");
    assert!(
        out.contains("externalippool.crd.antrea.io/good created"),
        "{out}"
    );
    wait_usage(&cluster, "good", 10, 0).await; // the controller (and its webhook) know the pool

    // An overlapping pool and an Egress outside its pool are rejected through the kube client;
    // a valid Egress is stored.
    let overlapping = pool("overlapping", &[("10.10.0.0/24", "")]);
    let (_, message) = api_message(
        cluster
            .pools()
            .create(&PostParams::default(), &overlapping)
            .await
            .unwrap_err(),
    );
    assert!(
        message.ends_with("overlaps with range [10.10.0.11-10.10.0.20] of ExternalIPPool good"),
        "{message}"
    );
    let outside = egress("web", "good", Some("10.10.0.99"));
    let (_, message) = api_message(
        cluster
            .egresses()
            .create(&PostParams::default(), &outside)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        message,
        "admission webhook \"egressvalidator.antrea.io\" denied the request: \
         Egress web: spec.egressIP: IP 10.10.0.99 is not within the IP range"
    );
    cluster
        .egresses()
        .create(
            &PostParams::default(),
            &egress("web", "good", Some("10.10.0.12")),
        )
        .await
        .expect("a valid Egress is admitted");
}
