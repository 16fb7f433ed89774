//! Least privilege, proven on the real API server: the ClusterRoles the chart ships
//! (`charts/ovs-egress/files/rbac/`), bound to the agent's and the controller's
//! ServiceAccounts as the cluster-in-a-box binds them, allow each identity exactly what it
//! needs and nothing more, asked with `kubectl auth can-i --as=system:serviceaccount:…` (and
//! once with the agent's own token). The whole user-guide scenario runs with these credentials
//! in the end-to-end tests and the demo.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use ovs_egress_integration::apiserver::{ApiServer, apply_crds_and_wait, client};
use ovs_egress_integration::identity::{AGENT, CONTROLLER, Identity, NAMESPACE};
use ovs_egress_integration::netns::unique_token;

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `kubectl auth can-i VERB RESOURCE[/NAME] [--subresource S] -n NS --as USER` for
/// `RESOURCE[/NAME][#S]`: true for "yes", false for "no".
fn can_i(kubeconfig: &Path, who: &Identity, verb: &str, resource: &str, ns: &str) -> bool {
    let (resource, subresource) = match resource.split_once('#') {
        Some((r, s)) => (r, Some(s)),
        None => (resource, None),
    };
    let mut command =
        std::process::Command::new(ovs_egress_integration::bins::go_tool("kubectl").unwrap());
    command.arg("--kubeconfig").arg(kubeconfig).args([
        "auth",
        "can-i",
        verb,
        resource,
        "-n",
        ns,
        "--as",
        &who.username(),
    ]);
    if let Some(sub) = subresource {
        command.args(["--subresource", sub]);
    }
    let out = command.output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match answer.as_str() {
        "yes" => true,
        "no" => false,
        _ => panic!(
            "kubectl auth can-i {verb} {resource} said {answer:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// (verb, resource[/name][#subresource], namespace)
type Ask = (&'static str, &'static str, &'static str);

fn check(kubeconfig: &Path, who: &Identity, allowed: &[Ask], denied: &[Ask]) {
    let mut wrong = Vec::new();
    for &(verb, resource, ns) in allowed {
        if !can_i(kubeconfig, who, verb, resource, ns) {
            wrong.push(format!("cannot {verb} {resource} in {ns}"));
        }
    }
    for &(verb, resource, ns) in denied {
        if can_i(kubeconfig, who, verb, resource, ns) {
            wrong.push(format!("CAN {verb} {resource} in {ns}"));
        }
    }
    assert!(wrong.is_empty(), "{}: {wrong:#?}", who.name);
}

const EGRESSES: &str = "egresses.crd.antrea.io";
const POOLS: &str = "externalippools.crd.antrea.io";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_identity_can_do_exactly_what_it_needs_and_nothing_more() {
    let dir = TempDir(std::env::temp_dir().join(format!("{}-rbac", unique_token())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let server = ApiServer::start(&dir.0).unwrap();
    let admin = server.client().await.unwrap();
    apply_crds_and_wait(&admin).await.unwrap();
    for identity in [AGENT, CONTROLLER] {
        identity.install(&admin).await.unwrap();
    }
    let kc = &server.kubeconfig;
    let read = |resource: &'static str| -> [Ask; 3] {
        [
            ("get", resource, "default"),
            ("list", resource, "default"),
            ("watch", resource, "default"),
        ]
    };

    let mut agent_allowed: Vec<Ask> = Vec::new();
    for resource in [EGRESSES, POOLS, "nodes", "namespaces", "pods"] {
        agent_allowed.extend(read(resource));
    }
    agent_allowed.extend([
        ("update", "egresses.crd.antrea.io#status", "default"),
        ("patch", "egresses.crd.antrea.io#status", "default"),
        ("create", "events.events.k8s.io", "default"),
        ("patch", "events.events.k8s.io", "default"),
        ("get", "secrets/ovs-egress-membership-keys", NAMESPACE),
        ("watch", "secrets/ovs-egress-membership-keys", NAMESPACE),
    ]);
    let agent_denied: &[Ask] = &[
        ("get", "secrets", NAMESPACE),
        ("list", "secrets", NAMESPACE),
        ("get", "secrets/other", NAMESPACE),
        ("update", "secrets/ovs-egress-membership-keys", NAMESPACE),
        ("create", "pods", "default"),
        ("patch", "pods", "default"),
        ("delete", "pods", "default"),
        ("patch", "pods#status", "default"),
        ("create", "nodes", "default"),
        ("patch", "nodes", "default"),
        ("update", "nodes#status", "default"),
        ("delete", "nodes", "default"),
        ("patch", "namespaces", "default"),
        ("create", EGRESSES, "default"),
        ("patch", EGRESSES, "default"),
        ("delete", EGRESSES, "default"),
        ("patch", POOLS, "default"),
        ("update", "externalippools.crd.antrea.io#status", "default"),
        ("create", "leases.coordination.k8s.io", NAMESPACE),
        ("get", "configmaps", NAMESPACE),
        ("create", "serviceaccounts/token", NAMESPACE),
        (
            "create",
            "clusterrolebindings.rbac.authorization.k8s.io",
            "default",
        ),
        ("create", "events", "default"),
        ("delete", "events.events.k8s.io", "default"),
    ];
    check(kc, &AGENT, &agent_allowed, agent_denied);

    let mut controller_allowed: Vec<Ask> = Vec::new();
    controller_allowed.extend(read(EGRESSES));
    controller_allowed.extend(read(POOLS));
    controller_allowed.extend([
        ("patch", EGRESSES, "default"),
        ("get", "egresses.crd.antrea.io#status", "default"),
        ("update", "egresses.crd.antrea.io#status", "default"),
        ("patch", "externalippools.crd.antrea.io#status", "default"),
        ("get", "leases.coordination.k8s.io", NAMESPACE),
        ("create", "leases.coordination.k8s.io", NAMESPACE),
        ("update", "leases.coordination.k8s.io", NAMESPACE),
    ]);
    let controller_denied: &[Ask] = &[
        ("get", "secrets", NAMESPACE),
        ("get", "secrets/ovs-egress-membership-keys", NAMESPACE),
        ("create", EGRESSES, "default"),
        ("delete", EGRESSES, "default"),
        ("create", POOLS, "default"),
        ("patch", POOLS, "default"),
        ("delete", POOLS, "default"),
        ("delete", "leases.coordination.k8s.io", NAMESPACE),
        ("list", "pods", "default"),
        ("patch", "pods", "default"),
        ("patch", "nodes", "default"),
        ("update", "nodes#status", "default"),
        ("create", "events.events.k8s.io", "default"),
        ("get", "configmaps", NAMESPACE),
        ("create", "serviceaccounts/token", NAMESPACE),
    ];
    check(kc, &CONTROLLER, &controller_allowed, controller_denied);

    // The same boundary with the agent's own token, not impersonation.
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
    let agent = client(&agent_kubeconfig).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(agent, NAMESPACE);
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("the agent listed Secrets: {other:?}"),
    }
}
