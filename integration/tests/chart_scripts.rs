//! The entrypoint scripts the chart's Pods run (`images/scripts/`), run for real on this
//! machine: `install-cni` against the real API server (waiting for the Node's podCIDR, then
//! installing a plugin the runtime can call and a network configuration the plugin accepts),
//! and `start-ovs` / `ovs-health` with a private Open vSwitch inside a network namespace the
//! test creates (root): `flow-restore-wait` set before ovs-vswitchd starts, the database kept
//! across a restart, both daemons stopped on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ovs_egress_cni::config::NetConf;
use ovs_egress_integration::apiserver::ApiServer;
use ovs_egress_integration::chart::{
    HelmHome, NAMESPACE, RELEASE, chart_dir, documents, kubectl, object,
};
use ovs_egress_integration::netns::Netns;
use serde_json::Value;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../images/scripts")
        .join(name)
}

#[test]
fn every_container_command_of_the_chart_is_in_the_image() {
    let helm = HelmHome::new("commands").unwrap();
    let docs = documents(&helm.template(None, &[]).unwrap()).unwrap();
    let mut commands = Vec::new();
    for (kind, name) in [("DaemonSet", "agent"), ("Deployment", "controller")] {
        let spec =
            &object(&docs, kind, &format!("{RELEASE}-{name}")).unwrap()["spec"]["template"]["spec"];
        for list in ["initContainers", "containers"] {
            for c in spec[list].as_array().into_iter().flatten() {
                commands.push(c["command"][0].as_str().unwrap().to_string());
                if let Some(probe) = c["livenessProbe"]["exec"]["command"][0].as_str() {
                    commands.push(probe.to_string());
                }
            }
        }
    }
    commands.sort();
    commands.dedup();
    assert_eq!(
        commands,
        ["install-cni", "ovs-egress", "ovs-health", "start-ovs"]
    );
    for c in commands.iter().filter(|c| *c != "ovs-egress") {
        let path = script(c);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert!(mode & 0o111 != 0, "{} is not executable", path.display());
    }
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_cni_waits_for_the_pod_cidr_and_installs_a_working_plugin() {
    let helm = HelmHome::new("install-cni").unwrap();
    let server = ApiServer::start(helm.path()).unwrap();
    let k = server.kubeconfig.as_path();
    let kubeconfig = k.display().to_string();
    let chart = chart_dir().display().to_string();
    helm.ok(&[
        "install",
        RELEASE,
        &chart,
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        &kubeconfig,
    ])
    .unwrap();
    kubectl(
        k,
        &["apply", "-f", "-"],
        Some(r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}"#),
    )
    .unwrap();

    // What the kubelet mounts into the Pod: the agent's ServiceAccount token and the cluster CA.
    let dir = helm.path();
    let sa = dir.join("serviceaccount");
    std::fs::create_dir_all(&sa).unwrap();
    let token = kubectl(
        k,
        &[
            "create",
            "token",
            &format!("{RELEASE}-agent"),
            "-n",
            NAMESPACE,
        ],
        None,
    )
    .unwrap();
    std::fs::write(sa.join("token"), token.trim()).unwrap();
    std::fs::write(sa.join("ca.crt"), server.ca_pem().unwrap()).unwrap();
    let config = kubectl(
        k,
        &[
            "get",
            "configmap",
            &format!("{RELEASE}-config"),
            "-n",
            NAMESPACE,
            "-o",
            "json",
        ],
        None,
    )
    .unwrap();
    let config: Value = serde_json::from_str(&config).unwrap();
    let template = dir.join("ovs-egress-cni.conflist");
    std::fs::write(
        &template,
        config["data"]["ovs-egress-cni.conflist"].as_str().unwrap(),
    )
    .unwrap();
    let (bin_dir, conf_dir) = (dir.join("host/opt/cni/bin"), dir.join("host/etc/cni/net.d"));

    let mut child = Command::new(script("install-cni"))
        .env("NODE_NAME", "node-a")
        .env("CNI_CONFLIST_TEMPLATE", &template)
        .env("HOST_CNI_BIN_DIR", &bin_dir)
        .env("HOST_CNI_CONF_DIR", &conf_dir)
        .env(
            "OVS_EGRESS_CNI_BINARY",
            ovs_egress_integration::bins::binary("ovs-egress-cni").unwrap(),
        )
        .env("SERVICE_ACCOUNT_DIR", &sa)
        .env("KUBERNETES_API_URL", &server.url)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The Node has no podCIDR yet: the script waits for it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "install-cni did not wait for the podCIDR"
    );
    let conflist = conf_dir.join("10-ovs-egress.conflist");
    assert!(!conflist.exists());
    kubectl(
        k,
        &[
            "patch",
            "node",
            "node-a",
            "-p",
            r#"{"spec": {"podCIDR": "10.244.7.0/24"}}"#,
        ],
        None,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "install-cni did not finish within 30 s of the podCIDR:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "install-cni failed:\n{log}");
    assert!(log.contains("podCIDR 10.244.7.0/24"), "{log}");

    // The configuration, as the runtime hands it to the plugin, is accepted with the podCIDR.
    let list: Value = serde_json::from_str(&std::fs::read_to_string(&conflist).unwrap()).unwrap();
    let mut plugin = list["plugins"][0].clone();
    plugin["name"] = list["name"].clone();
    plugin["cniVersion"] = list["cniVersion"].clone();
    assert_eq!(plugin["type"], "ovs-egress");
    let conf = NetConf::parse(plugin.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(conf.pod_cidr.to_string(), "10.244.7.0/24");

    // The runtime runs `<binDir>/<type>` without arguments: it answers as the plugin.
    let mut version = Command::new(bin_dir.join("ovs-egress"))
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = version.stdin.take().unwrap();
        stdin.write_all(br#"{"cniVersion": "1.0.0"}"#).unwrap();
    }
    let out = version.wait_with_output().unwrap();
    assert!(out.status.success());
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer["supportedVersions"],
        serde_json::json!(["1.0.0"]),
        "{answer}"
    );
}

/// `start-ovs` in `ns` with its run, database and log directories under `dir`.
fn start_ovs(ns: &Netns, dir: &Path) -> std::process::Child {
    ns.command(script("start-ovs").to_str().unwrap())
        .env("OVS_RUNDIR", dir.join("run"))
        .env("OVS_DBDIR", dir.join("db"))
        .env("OVS_LOGDIR", dir.join("log"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls `ovs-health` in `ns` until it succeeds (30 s at most: the machine may be busy).
fn wait_healthy(ns: &Netns, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = ns
            .command(script("ovs-health").to_str().unwrap())
            .env("OVS_RUNDIR", dir.join("run"))
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ovs-health never succeeded; the logs are in {}",
            dir.join("log").display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn vsctl(dir: &Path, args: &[&str]) -> String {
    let db = format!("--db=unix:{}", dir.join("run/db.sock").display());
    let out = Command::new("ovs-vsctl")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ovs-vsctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// SIGTERM to the script; it must exit 0 within 15 s with both daemons gone.
fn stop(mut child: std::process::Child, dir: &Path) {
    let pids: Vec<i32> = ["ovsdb-server", "ovs-vswitchd"]
        .iter()
        .map(|d| {
            std::fs::read_to_string(dir.join(format!("run/{d}.pid")))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "start-ovs did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(status.success(), "start-ovs exited with {status}:\n{log}");
    for pid in pids {
        assert!(
            !running(pid),
            "OVS daemon {pid} still runs after start-ovs stopped ({:?}):\n{log}",
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
        );
    }
}

/// Whether `pid` runs (exists and is not a zombie: a daemon that detached from the script is
/// reaped by whichever process adopted it).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name in parentheses, which may hold spaces.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

#[test]
fn start_ovs_sets_flow_restore_wait_keeps_the_database_and_stops_on_sigterm() {
    let ns = Netns::new("ovs").unwrap();
    let dir = Dir(std::env::temp_dir().join(format!("{}-start-ovs", ns.name())));
    std::fs::create_dir_all(&dir.0).unwrap();

    let child = start_ovs(&ns, &dir.0);
    wait_healthy(&ns, &dir.0);
    assert_eq!(
        vsctl(
            &dir.0,
            &["get", "Open_vSwitch", ".", "other_config:flow-restore-wait"]
        ),
        "\"true\""
    );
    // What the agent does once its flows are in: add the bridge, clear the flag.
    vsctl(
        &dir.0,
        &[
            "add-br",
            "br-t",
            "--",
            "set",
            "Bridge",
            "br-t",
            "datapath_type=netdev",
        ],
    );
    vsctl(
        &dir.0,
        &[
            "remove",
            "Open_vSwitch",
            ".",
            "other_config",
            "flow-restore-wait",
        ],
    );
    stop(child, &dir.0);

    // A restarted container finds its bridge and waits for the agent again.
    let child = start_ovs(&ns, &dir.0);
    wait_healthy(&ns, &dir.0);
    assert_eq!(vsctl(&dir.0, &["list-br"]), "br-t");
    assert_eq!(
        vsctl(
            &dir.0,
            &["get", "Open_vSwitch", ".", "other_config:flow-restore-wait"]
        ),
        "\"true\""
    );
    stop(child, &dir.0);
}

#[test]
fn start_ovs_fails_when_a_daemon_dies_and_stops_the_other() {
    let ns = Netns::new("ovsdie").unwrap();
    let dir = Dir(std::env::temp_dir().join(format!("{}-start-ovs", ns.name())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let mut child = start_ovs(&ns, &dir.0);
    wait_healthy(&ns, &dir.0);
    let pid = |daemon: &str| -> i32 {
        std::fs::read_to_string(dir.0.join(format!("run/{daemon}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (vswitchd, ovsdb) = (pid("ovs-vswitchd"), pid("ovsdb-server"));
    // SAFETY: kill(2) on the ovs-vswitchd this test's script started.
    unsafe { libc::kill(vswitchd, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "start-ovs still runs 20 s after ovs-vswitchd died"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(
        !status.success(),
        "start-ovs must fail (the kubelet restarts it):\n{log}"
    );
    assert!(log.contains("ovs-vswitchd is gone"), "{log}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(ovsdb) {
        assert!(
            Instant::now() < deadline,
            "ovsdb-server still runs after start-ovs failed:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
