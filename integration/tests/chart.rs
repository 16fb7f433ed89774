//! The Helm chart `charts/ovs-egress`, checked with the pinned `helm` (built by
//! `scripts/build-helm.sh`; a missing helm fails every test, naming what is missing): it lints,
//! renders what the golden files under `charts/ovs-egress/tests/` hold (regenerate with
//! `UPDATE_GOLDEN=1` and review the diff), refuses bad values naming the value, renders config
//! files that ovs-egress's own parsers accept with the values given, RBAC rules that are the
//! lists the real-API-server tests prove, a webhook certificate a TLS client accepts for the
//! controller's Service, and objects the real API server accepts.

use std::path::{Path, PathBuf};

use ovs_egress::agent::config::{AgentConfig, DatapathType};
use ovs_egress::config::ControllerConfig;
use ovs_egress_cni::config::NetConf;
use ovs_egress_integration::chart::{
    CASES, HelmHome, NAMESPACE, RELEASE, chart_dir, documents, mask_generated, object,
};
use serde_json::Value;

fn home(tag: &str) -> HelmHome {
    HelmHome::new(tag).unwrap()
}

#[test]
fn helm_lint_passes_with_every_test_values_file() {
    let helm = home("lint");
    let chart = chart_dir().display().to_string();
    for (case, values) in CASES {
        let mut args = vec!["lint", "--strict", &chart];
        let file;
        if let Some(values) = values {
            file = chart_dir().join("tests").join(values).display().to_string();
            args.extend(["--values", &file]);
        }
        let out = helm.ok(&args).unwrap_or_else(|e| panic!("{case}: {e:#}"));
        assert!(out.contains("0 chart(s) failed"), "{case}: {out}");
    }
}

#[test]
fn rendered_chart_matches_the_golden_files() {
    let helm = home("golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut drifted = Vec::new();
    for (case, values) in CASES {
        let rendered = mask_generated(&helm.template(*values, &[]).unwrap());
        let path = chart_dir()
            .join("tests")
            .join(format!("{case}.golden.yaml"));
        if update {
            std::fs::write(&path, &rendered).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_default();
        if golden != rendered {
            drifted.push(path.display().to_string());
        }
    }
    assert!(
        drifted.is_empty(),
        "the chart renders differently from {drifted:?}: regenerate with \
         `UPDATE_GOLDEN=1 cargo test -p ovs-egress-integration --test chart golden` and review the diff"
    );
}

#[test]
fn rendering_twice_generates_new_secrets_only_where_masked() {
    let helm = home("twice");
    let (a, b) = (
        helm.template(None, &[]).unwrap(),
        helm.template(None, &[]).unwrap(),
    );
    assert_ne!(a, b, "a fresh install generates a new key and CA");
    assert_eq!(mask_generated(&a), mask_generated(&b));
}

/// `helm template` with `set` must fail with an error containing every one of `expected`.
fn refused(helm: &HelmHome, set: &[&str], expected: &[&str]) {
    let error = helm.template_error(None, set).unwrap();
    for text in expected {
        assert!(error.contains(text), "{set:?}: {text:?} not in:\n{error}");
    }
}

#[test]
fn bad_values_fail_naming_the_value() {
    let helm = home("bad");
    refused(
        &helm,
        &["trafficEncapMode=noEncap"],
        &["trafficEncapMode", "noEncap", "Egress"],
    );
    refused(&helm, &["tunnelType=vxlan"], &["/tunnelType", "geneve"]);
    refused(
        &helm,
        &["egress.maxEgressIPsPerNode=300"],
        &["/egress/maxEgressIPsPerNode", "300", "255"],
    );
    refused(
        &helm,
        &["featureGates.Egres=true"],
        &["/featureGates", "Egres"],
    );
    refused(
        &helm,
        &["egress.exceptCIDRs={10.0.0.0/8,10.1.0.0/33}"],
        &["/egress/exceptCIDRs/1", "10.1.0.0/33"],
    );
    refused(&helm, &["serviceCIDR=10.96.0.0"], &["/serviceCIDR"]);
    refused(&helm, &["ovs.datapathType=dpdk"], &["/ovs/datapathType"]);
    refused(&helm, &["egres.exceptCIDRs={}"], &["egres"]);
    refused(&helm, &["agent.clusterPort=70000"], &["/agent/clusterPort"]);
    // Without the Egress feature any traffic mode is accepted, as the agent accepts it.
    helm.template(
        None,
        &["featureGates.Egress=false", "trafficEncapMode=noEncap"],
    )
    .unwrap();
}

/// The config files of the ConfigMap rendered for `values`.
fn config_files(helm: &HelmHome, values: Option<&str>) -> (Vec<Value>, Value) {
    let docs = documents(&helm.template(values, &[]).unwrap()).unwrap();
    let data = object(&docs, "ConfigMap", &format!("{RELEASE}-config")).unwrap()["data"].clone();
    (docs, data)
}

fn text<'a>(data: &'a Value, key: &str) -> &'a str {
    data[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in the ConfigMap"))
}

/// The conflist's plugin configuration as the runtime hands it to the plugin (name and
/// cniVersion of the list injected), with `cidr` as the Node's podCIDR.
fn plugin_conf(conflist: &str, cidr: &str) -> NetConf {
    let list: Value = serde_json::from_str(&conflist.replace("__POD_CIDR__", cidr)).unwrap();
    assert_eq!(list["plugins"].as_array().map(Vec::len), Some(1));
    let mut plugin = list["plugins"][0].clone();
    plugin["name"] = list["name"].clone();
    plugin["cniVersion"] = list["cniVersion"].clone();
    NetConf::parse(plugin.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e:?}"))
}

#[test]
fn every_rendered_config_file_parses_with_the_real_parsers() {
    let helm = home("config");
    for (case, values) in CASES {
        let (_, data) = config_files(&helm, *values);
        let agent = AgentConfig::parse(
            Path::new("agent.conf"),
            text(&data, "ovs-egress-agent.conf"),
        )
        .unwrap_or_else(|e| panic!("{case}: {e}"));
        let controller = ControllerConfig::parse(
            Path::new("controller.conf"),
            text(&data, "ovs-egress-controller.conf"),
        )
        .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(agent.feature_gates, controller.feature_gates, "{case}");
        let cni = plugin_conf(text(&data, "ovs-egress-cni.conflist"), "10.244.1.0/24");
        assert_eq!(cni.ovs_bridge, agent.ovs_bridge, "{case}");
    }
}

#[test]
fn default_values_render_the_agents_defaults() {
    let helm = home("defaults");
    let (_, data) = config_files(&helm, None);
    let agent = AgentConfig::parse(Path::new("a"), text(&data, "ovs-egress-agent.conf")).unwrap();
    assert_eq!(agent, AgentConfig::default());
    let controller =
        ControllerConfig::parse(Path::new("c"), text(&data, "ovs-egress-controller.conf")).unwrap();
    assert_eq!(controller, ControllerConfig::default());
    let cni = plugin_conf(text(&data, "ovs-egress-cni.conflist"), "10.244.1.0/24");
    assert_eq!(cni.mtu, 1450);
    assert_eq!(
        cni.ovs_db_socket,
        PathBuf::from("/var/run/ovs-egress/openvswitch/db.sock"),
        "the deployed OVS's socket on the host"
    );
    assert_eq!(cni.state_dir, PathBuf::from("/var/lib/cni/ovs-egress"));
    assert_eq!(cni.flows_ready_timeout.as_millis(), 5000);
}

#[test]
fn custom_values_reach_the_config_files() {
    let helm = home("custom");
    let (docs, data) = config_files(&helm, Some("custom.values.yaml"));
    let agent = AgentConfig::parse(Path::new("a"), text(&data, "ovs-egress-agent.conf")).unwrap();
    assert_eq!(agent.ovs_bridge, "br-egress");
    assert_eq!(agent.ovs_datapath_type, DatapathType::Netdev);
    assert_eq!(agent.host_gateway, "gw0");
    assert_eq!(agent.tunnel_port, 6090);
    assert!(agent.tunnel_csum);
    assert_eq!(
        agent.service_cidr.map(|c| c.to_string()).as_deref(),
        Some("10.96.0.0/12")
    );
    assert_eq!(agent.transport_interface.as_deref(), Some("eth1"));
    assert_eq!(agent.egress_device.as_deref(), Some("egress0"));
    assert_eq!(
        agent
            .egress
            .except_cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["192.168.0.0/16", "fd00::/8"]
    );
    assert_eq!(agent.egress.max_egress_ips_per_node, 10);
    assert!(agent.egress.snat_fully_random_ports);
    assert_eq!(agent.cluster_port, 7946);
    let cni = plugin_conf(text(&data, "ovs-egress-cni.conflist"), "10.244.1.0/24");
    assert_eq!(cni.mtu, 1400);
    assert_eq!(
        cni.ovs_db_socket,
        PathBuf::from("/var/run/openvswitch/db.sock"),
        "ovs.deploy false: the host's own OVS"
    );
    assert_eq!(cni.flows_ready_timeout.as_millis(), 0);

    let agents = object(&docs, "DaemonSet", &format!("{RELEASE}-agent")).unwrap();
    let containers = agents["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["agent"], "no OVS container with ovs.deploy false");
    let controller = object(&docs, "Deployment", &format!("{RELEASE}-controller")).unwrap();
    assert_eq!(controller["spec"]["replicas"], 3);
}

#[test]
fn agent_pods_get_only_the_capabilities_they_need() {
    let helm = home("caps");
    let docs = documents(&helm.template(None, &[]).unwrap()).unwrap();
    let agents = object(&docs, "DaemonSet", &format!("{RELEASE}-agent")).unwrap();
    let spec = &agents["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(
        spec["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    let caps = |name: &str| {
        let c = spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}"));
        assert_ne!(c["securityContext"]["privileged"], true, "{name}");
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"],
            serde_json::json!(["ALL"])
        );
        c["securityContext"]["capabilities"]["add"].clone()
    };
    assert_eq!(caps("agent"), serde_json::json!(["NET_ADMIN", "NET_RAW"]));
    assert_eq!(
        caps("ovs"),
        serde_json::json!(["NET_ADMIN", "NET_RAW", "SYS_NICE", "IPC_LOCK"])
    );
}

#[test]
fn rendered_cluster_roles_are_the_rules_the_api_server_tests_prove() {
    use k8s_openapi::api::rbac::v1::PolicyRule;
    let helm = home("rbac");
    let docs = documents(&helm.template(None, &[]).unwrap()).unwrap();
    let rules_dir = chart_dir().join("files/rbac");
    for (role, file) in [
        ("agent", "agent-rules.yaml"),
        ("controller", "controller-rules.yaml"),
    ] {
        let mut expected: Vec<PolicyRule> =
            serde_yaml::from_str(&std::fs::read_to_string(rules_dir.join(file)).unwrap()).unwrap();
        // The chart's Secret is named after the release.
        for rule in &mut expected {
            for name in rule.resource_names.iter_mut().flatten() {
                if name == "ovs-egress-membership-keys" {
                    *name = format!("{RELEASE}-membership-keys");
                }
            }
        }
        let name = format!("{RELEASE}-{role}");
        let rendered: Vec<PolicyRule> =
            serde_json::from_value(object(&docs, "ClusterRole", &name).unwrap()["rules"].clone())
                .unwrap();
        assert_eq!(rendered, expected, "{name}");
        let binding = object(&docs, "ClusterRoleBinding", &name).unwrap();
        assert_eq!(binding["roleRef"]["name"], name.as_str());
        assert_eq!(binding["subjects"][0]["name"], name.as_str());
        assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE);
        object(&docs, "ServiceAccount", &name).unwrap();
    }
}

#[test]
fn membership_key_secret_holds_one_32_byte_key() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let helm = home("membership");
    let docs = documents(&helm.template(None, &[]).unwrap()).unwrap();
    let secret = object(&docs, "Secret", &format!("{RELEASE}-membership-keys")).unwrap();
    let keys = b64
        .decode(secret["data"]["keys"].as_str().unwrap())
        .unwrap();
    let keys = String::from_utf8(keys).unwrap();
    let lines: Vec<&str> = keys.lines().collect();
    assert_eq!(lines.len(), 1, "{keys:?}");
    assert_eq!(b64.decode(lines[0]).unwrap().len(), 32);
}

#[tokio::test]
async fn generated_webhook_certificate_is_trusted_for_the_controller_service() {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let helm = home("tls");
    let docs = documents(&helm.template(None, &[]).unwrap()).unwrap();
    let secret = object(&docs, "Secret", &format!("{RELEASE}-webhook-tls")).unwrap();
    let decode = |key: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"][key].as_str().unwrap())
            .unwrap()
    };
    let config = object(
        &docs,
        "ValidatingWebhookConfiguration",
        &format!("{RELEASE}-crdvalidator"),
    )
    .unwrap();
    for hook in config["webhooks"].as_array().unwrap() {
        assert_eq!(hook["clientConfig"]["caBundle"], secret["data"]["ca.crt"]);
        assert_eq!(
            hook["clientConfig"]["service"]["name"],
            format!("{RELEASE}-controller")
        );
    }
    // The controller loads the pair as it would from the mounted Secret ...
    let dir = home("tls-files");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, decode("tls.crt")).unwrap();
    std::fs::write(&key, decode("tls.key")).unwrap();
    let server = ovs_egress::controller::webhook::tls_config(&cert, &key).unwrap();

    // ... and a client trusting only the caBundle accepts it for the Service's DNS name.
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let ca = decode("ca.crt");
    for der in rustls_pki_types_from_pem(&ca) {
        roots.add(der).unwrap();
    }
    let client = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
    let serve = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        tls.write_all(b"ok").await.unwrap();
        tls.shutdown().await.unwrap();
    });
    let name = format!("{RELEASE}-controller.{NAMESPACE}.svc");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
        .connect(name.clone().try_into().unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS to {name}: {e}"));
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "ok");
    serve.await.unwrap();
}

/// The DER certificates of a PEM text.
fn rustls_pki_types_from_pem(
    pem: &[u8],
) -> Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    tokio_rustls::rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_object_is_accepted_by_the_real_api_server() {
    use ovs_egress_integration::apiserver::{ApiServer, apply_crds_and_wait};
    use ovs_egress_integration::chart::{kubectl, list};
    let helm = home("dry-run");
    let server = ApiServer::start(helm.path()).unwrap();
    apply_crds_and_wait(&server.client().await.unwrap())
        .await
        .unwrap();
    for (case, values) in CASES {
        let docs = documents(&helm.template(*values, &[]).unwrap()).unwrap();
        // cert-manager's API is not served by a bare API server: its objects are checked by
        // the golden file only.
        let docs: Vec<Value> = docs
            .into_iter()
            .filter(|d| d["apiVersion"] != "cert-manager.io/v1")
            .collect();
        let out = kubectl(
            &server.kubeconfig,
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&list(&docs)),
        )
        .unwrap_or_else(|e| panic!("{case}: {e:#}"));
        assert_eq!(
            out.matches("(server dry run)").count(),
            docs.len(),
            "{case}: every object accepted:\n{out}"
        );
    }
}

/// `kubectl get KIND NAME -o json` (namespaced in [`NAMESPACE`]); `None` when not found.
fn get(kubeconfig: &Path, kind: &str, name: &str) -> Option<Value> {
    use ovs_egress_integration::chart::kubectl;
    let out = kubectl(
        kubeconfig,
        &[
            "get",
            kind,
            name,
            "-n",
            NAMESPACE,
            "-o",
            "json",
            "--ignore-not-found",
        ],
        None,
    )
    .unwrap();
    (!out.trim().is_empty()).then(|| serde_json::from_str(&out).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_upgrade_and_uninstall_on_the_real_api_server() {
    use ovs_egress_integration::apiserver::ApiServer;
    let helm = home("install");
    let server = ApiServer::start(helm.path()).unwrap();
    let kubeconfig = server.kubeconfig.display().to_string();
    let chart = chart_dir().display().to_string();
    let k = server.kubeconfig.as_path();
    let helm_ok = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--namespace", NAMESPACE, "--kubeconfig", &kubeconfig]);
        helm.ok(&all).unwrap_or_else(|e| panic!("{e:#}"))
    };

    helm_ok(&["install", RELEASE, &chart]);
    for crd in ["egresses.crd.antrea.io", "externalippools.crd.antrea.io"] {
        assert!(get(k, "crd", crd).is_some(), "helm installed CRD {crd}");
    }
    let agent_conf = |k: &Path| {
        let config = get(k, "configmap", &format!("{RELEASE}-config")).unwrap();
        AgentConfig::parse(
            Path::new("agent.conf"),
            config["data"]["ovs-egress-agent.conf"].as_str().unwrap(),
        )
        .unwrap()
    };
    assert!(agent_conf(k).egress.except_cidrs.is_empty());
    let membership = |k: &Path| {
        get(k, "secret", &format!("{RELEASE}-membership-keys")).unwrap()["data"]["keys"].clone()
    };
    let webhook_tls =
        |k: &Path| get(k, "secret", &format!("{RELEASE}-webhook-tls")).unwrap()["data"].clone();
    let ca_bundles = |k: &Path| {
        let config = get(
            k,
            "validatingwebhookconfiguration",
            &format!("{RELEASE}-crdvalidator"),
        )
        .unwrap();
        config["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["clientConfig"]["caBundle"].clone())
            .collect::<Vec<_>>()
    };
    let pod_checksum = |k: &Path| {
        get(k, "daemonset", &format!("{RELEASE}-agent")).unwrap()["spec"]["template"]["metadata"]
            ["annotations"]["checksum/config"]
            .clone()
    };
    let (key, tls, bundles, checksum) = (
        membership(k),
        webhook_tls(k),
        ca_bundles(k),
        pod_checksum(k),
    );
    assert!(key.is_string() && tls["ca.crt"].is_string());
    assert_eq!(
        bundles,
        vec![tls["ca.crt"].clone(); 2],
        "the webhook trusts the Secret's CA"
    );
    for (kind, name) in [
        ("deployment", "controller"),
        ("service", "controller"),
        ("poddisruptionbudget", "controller"),
        ("serviceaccount", "agent"),
        ("serviceaccount", "controller"),
        ("clusterrole", "agent"),
        ("clusterrolebinding", "controller"),
    ] {
        assert!(
            get(k, kind, &format!("{RELEASE}-{name}")).is_some(),
            "{kind} {name}"
        );
    }

    // An upgrade with another except CIDR reaches the agents' config (and restarts them);
    // the webhook's CA and the membership key stay as they are.
    helm_ok(&[
        "upgrade",
        RELEASE,
        &chart,
        "--set",
        "egress.exceptCIDRs={10.0.0.0/8,fd00::/8}",
    ]);
    assert_eq!(
        agent_conf(k)
            .egress
            .except_cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.0.0.0/8", "fd00::/8"]
    );
    assert_ne!(pod_checksum(k), checksum, "the agent Pods roll");
    assert_eq!(
        membership(k),
        key,
        "the membership key survives the upgrade"
    );
    assert_eq!(
        webhook_tls(k),
        tls,
        "the webhook's CA and certificate survive the upgrade"
    );
    assert_eq!(ca_bundles(k), bundles);

    helm_ok(&["uninstall", RELEASE]);
    for (kind, name) in [
        ("configmap", "config"),
        ("secret", "membership-keys"),
        ("secret", "webhook-tls"),
        ("daemonset", "agent"),
        ("deployment", "controller"),
        ("service", "controller"),
        ("poddisruptionbudget", "controller"),
        ("serviceaccount", "agent"),
        ("clusterrole", "agent"),
        ("clusterrole", "controller"),
        ("clusterrolebinding", "agent"),
        ("validatingwebhookconfiguration", "crdvalidator"),
    ] {
        assert!(
            get(k, kind, &format!("{RELEASE}-{name}")).is_none(),
            "{kind} {RELEASE}-{name} is left after uninstall"
        );
    }
    for crd in ["egresses.crd.antrea.io", "externalippools.crd.antrea.io"] {
        assert!(get(k, "crd", crd).is_some(), "helm keeps CRD {crd}");
    }
}

#[test]
fn chart_version_and_app_version_are_the_crates() {
    let chart: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart["apiVersion"], "v2");
    // The integration crate shares the workspace's version with ovs-egress.
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
}

/// The flags of `ovs-egress agent` and `ovs-egress controller`, as the binary parses them.
#[derive(clap::Parser)]
struct AgentFlags {
    #[command(flatten)]
    args: ovs_egress::agent::config::AgentArgs,
}

#[derive(clap::Parser)]
struct ControllerFlags {
    #[command(flatten)]
    args: ovs_egress::config::ControllerArgs,
}

/// The container `name` of the Pod template of workload `kind`/`name`.
fn container<'a>(docs: &'a [Value], kind: &str, workload: &str, name: &str) -> &'a Value {
    object(docs, kind, workload).unwrap()["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {kind} {workload}"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The directory where container `c` mounts volume `volume`.
fn mount_path(c: &Value, volume: &str) -> PathBuf {
    let mounts = c["volumeMounts"].as_array().unwrap();
    let mount = mounts.iter().find(|m| m["name"] == volume);
    PathBuf::from(
        mount.unwrap_or_else(|| panic!("no mount of {volume}"))["mountPath"]
            .as_str()
            .unwrap(),
    )
}

#[test]
fn rendered_command_lines_parse_with_the_binarys_flags_and_name_mounted_files() {
    use clap::Parser;
    let helm = home("flags");
    for (case, values) in CASES {
        let docs = documents(&helm.template(*values, &[]).unwrap()).unwrap();
        let agent = container(&docs, "DaemonSet", &format!("{RELEASE}-agent"), "agent");
        assert_eq!(strings(&agent["command"]), ["ovs-egress", "agent"]);
        // NODE_NAME comes from the Pod's spec.nodeName (env); given here as its flag.
        let mut argv = vec!["agent".to_string(), "--node-name=node-a".to_string()];
        argv.extend(strings(&agent["args"]));
        let flags = AgentFlags::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("{case}: agent {argv:?}: {e}"))
            .args;
        let config = flags.config.unwrap();
        assert_eq!(
            config.parent().unwrap(),
            mount_path(agent, "config"),
            "{case}"
        );
        assert_eq!(config.file_name().unwrap(), "ovs-egress-agent.conf");
        assert_eq!(flags.ovs_rundir, mount_path(agent, "ovs-run"), "{case}");
        assert_eq!(
            i64::from(flags.health_listen.port()),
            agent["ports"][0]["containerPort"].as_i64().unwrap(),
            "{case}: the probes' port"
        );

        let controller = container(
            &docs,
            "Deployment",
            &format!("{RELEASE}-controller"),
            "controller",
        );
        assert_eq!(
            strings(&controller["command"]),
            ["ovs-egress", "controller"]
        );
        let mut argv = vec!["controller".to_string()];
        argv.extend(strings(&controller["args"]));
        let flags = ControllerFlags::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("{case}: controller {argv:?}: {e}"))
            .args;
        assert!(flags.in_cluster);
        assert_eq!(flags.lease_name, format!("{RELEASE}-controller"));
        let config = flags.config.unwrap();
        assert_eq!(
            config.parent().unwrap(),
            mount_path(controller, "config"),
            "{case}"
        );
        assert_eq!(config.file_name().unwrap(), "ovs-egress-controller.conf");
        match (&flags.tls_cert_file, &flags.tls_key_file) {
            (Some(cert), Some(key)) => {
                let dir = mount_path(controller, "webhook-tls");
                assert_eq!(cert, &dir.join("tls.crt"), "{case}");
                assert_eq!(key, &dir.join("tls.key"), "{case}");
            }
            _ => assert_eq!(*case, "egress-off", "only without the webhook: no TLS"),
        }
    }
}

#[test]
fn another_release_name_names_every_reference_consistently() {
    let helm = home("release");
    let docs = documents(&helm.template_as("net", None, &[]).unwrap()).unwrap();
    let secret = "net-membership-keys";
    object(&docs, "Secret", secret).unwrap();
    let config = object(&docs, "ConfigMap", "net-ovs-egress-config").unwrap();
    let agent = AgentConfig::parse(
        Path::new("a"),
        config["data"]["ovs-egress-agent.conf"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            agent.membership.key_secret.namespace.as_str(),
            agent.membership.key_secret.name.as_str()
        ),
        (NAMESPACE, secret),
        "the agents read the Secret the chart generates and their role allows"
    );
    let role = object(&docs, "ClusterRole", "net-ovs-egress-agent").unwrap();
    assert!(
        role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resourceNames"] == serde_json::json!([secret])),
        "the agents may read {secret}: {role}"
    );
    for (kind, name) in [("DaemonSet", "agent"), ("Deployment", "controller")] {
        let workload = object(&docs, kind, &format!("net-ovs-egress-{name}")).unwrap();
        let spec = &workload["spec"]["template"]["spec"];
        assert_eq!(spec["serviceAccountName"], format!("net-ovs-egress-{name}"));
        object(&docs, "ServiceAccount", &format!("net-ovs-egress-{name}")).unwrap();
        let volumes = spec["volumes"].as_array().unwrap();
        for volume in volumes {
            if let Some(map) = volume["configMap"]["name"].as_str() {
                object(&docs, "ConfigMap", map).unwrap();
            }
            if let Some(secret) = volume["secret"]["secretName"].as_str() {
                object(&docs, "Secret", secret).unwrap();
            }
        }
    }
    let service = object(&docs, "Service", "net-ovs-egress-controller").unwrap();
    let config = object(
        &docs,
        "ValidatingWebhookConfiguration",
        "net-ovs-egress-crdvalidator",
    )
    .unwrap();
    for hook in config["webhooks"].as_array().unwrap() {
        assert_eq!(
            hook["clientConfig"]["service"]["name"],
            service["metadata"]["name"]
        );
    }
}
