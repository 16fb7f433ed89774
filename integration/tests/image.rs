//! The image `scripts/build-image.sh` builds (root; ignored unless asked for, since building
//! the image means a release build and a debootstrap: run
//! `scripts/build-image.sh && cargo test -p ovs-egress-integration --test image -- --ignored`):
//! its root filesystem, unpacked from the OCI archive, holds what the chart's containers run,
//! and the entrypoints work from it: `start-ovs` and `ovs-health` chrooted into it inside a test
//! Node (its own Open vSwitch, flow-restore-wait set), `install-cni` chrooted into it against
//! the real API server, installing a plugin the runtime can call.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ovs_egress_integration::apiserver::ApiServer;
use ovs_egress_integration::chart::{HelmHome, NAMESPACE, RELEASE, chart_dir, kubectl};
use ovs_egress_integration::netns::{Netns, unique_token};
use serde_json::Value;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The image's root filesystem, unpacked from its OCI archive into a new directory.
fn unpack_image() -> Dir {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../target/image/ovs-egress-{}.oci.tar",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(
        archive.exists(),
        "{} is missing: build it with scripts/build-image.sh",
        archive.display()
    );
    let dir = Dir(std::env::temp_dir().join(format!("{}-image", unique_token())));
    let layout = dir.0.join("layout");
    let rootfs = dir.0.join("rootfs");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::create_dir_all(&rootfs).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout));
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        run(Command::new("tar")
            .arg("-xf")
            .arg(blob(layer["digest"].as_str().unwrap()))
            .arg("-C")
            .arg(&rootfs));
    }
    dir
}

/// `sh -c SCRIPT` in a private mount namespace where `root` has /proc, /sys and /dev, then
/// `chroot root`: the script runs `CHROOT cmd...` (a shell function) for commands of the image.
fn in_image(ns: Option<&Netns>, root: &Path, script: &str) -> Command {
    let setup = format!(
        "set -e; r='{r}'; mount --bind /proc \"$r/proc\"; mount --rbind /sys \"$r/sys\"; \
         mount --rbind /dev \"$r/dev\"; CHROOT() {{ chroot \"$r\" \"$@\"; }}; {script}",
        r = root.display()
    );
    let args = ["--mount", "--fork", "sh", "-c", &setup];
    match ns {
        Some(ns) => {
            let mut c = ns.command("unshare");
            c.args(args);
            c
        }
        None => {
            let mut c = Command::new("unshare");
            c.args(args);
            c
        }
    }
}

#[test]
#[ignore = "needs the image (scripts/build-image.sh) and root"]
fn image_holds_what_the_chart_runs() {
    let image = unpack_image();
    let root = image.0.join("rootfs");
    for tool in [
        "usr/local/bin/ovs-egress",
        "usr/local/bin/ovs-egress-cni",
        "usr/local/bin/install-cni",
        "usr/local/bin/start-ovs",
        "usr/local/bin/ovs-health",
        "usr/sbin/ovs-vswitchd",
        "usr/sbin/ovsdb-server",
        "usr/bin/ovs-ofctl",
        "usr/bin/ovs-appctl",
        "usr/bin/ovs-vsctl",
        "usr/sbin/iptables-restore",
        "usr/sbin/ip6tables-restore",
        "usr/bin/curl",
        "usr/share/openvswitch/vswitch.ovsschema",
    ] {
        assert!(root.join(tool).exists(), "the image lacks /{tool}");
    }
    let version = run(Command::new("chroot")
        .arg(&root)
        .args(["ovs-egress", "--version"]));
    assert_eq!(
        version.trim(),
        format!("ovs-egress {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
#[ignore = "needs the image (scripts/build-image.sh) and root"]
fn start_ovs_runs_open_vswitch_from_the_image_in_a_node() {
    let image = unpack_image();
    let root = image.0.join("rootfs");
    let ns = Netns::new("img-ovs").unwrap();
    let mut ovs = in_image(Some(&ns), &root, "exec chroot \"$r\" start-ovs")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Through /run itself: the image's /var/run links to /run (absolute).
    let db = format!(
        "--db=unix:{}",
        root.join("run/openvswitch/db.sock").display()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let healthy = in_image(Some(&ns), &root, "CHROOT ovs-health")
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        if healthy {
            break;
        }
        assert!(
            ovs.try_wait().unwrap().is_none(),
            "start-ovs exited before it was healthy"
        );
        assert!(Instant::now() < deadline, "ovs-health never succeeded");
        std::thread::sleep(Duration::from_millis(200));
    }
    let wait = run(Command::new("ovs-vsctl").args([
        &db,
        "get",
        "Open_vSwitch",
        ".",
        "other_config:flow-restore-wait",
    ]));
    assert_eq!(wait.trim(), "\"true\"");
    // The kubelet's SIGTERM goes to start-ovs itself (unshare does not forward signals): found
    // among the processes of the test's own namespace.
    for pid in ns.pids().unwrap() {
        if std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            c.split('\0')
                .nth(1)
                .is_some_and(|a| a.ends_with("/start-ovs"))
        }) {
            // SAFETY: kill(2) on the start-ovs this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = ovs.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "start-ovs did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "start-ovs exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the image (scripts/build-image.sh) and root"]
async fn install_cni_from_the_image_installs_a_plugin_the_runtime_can_call() {
    let image = unpack_image();
    let root = image.0.join("rootfs");
    let helm = HelmHome::new("image").unwrap();
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
        Some(
            r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"},
                "spec": {"podCIDR": "10.244.9.0/24"}}"#,
        ),
    )
    .unwrap();
    // What the kubelet mounts into the init container.
    // The image's /var/run is an absolute link to /run: written through its target, never
    // through the link (which, outside the chroot, would point at this machine's /run).
    let sa = root.join("run/secrets/kubernetes.io/serviceaccount");
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
    let config: Value = serde_json::from_str(
        &kubectl(
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
        .unwrap(),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("etc/ovs-egress")).unwrap();
    std::fs::write(
        root.join("etc/ovs-egress/ovs-egress-cni.conflist"),
        config["data"]["ovs-egress-cni.conflist"].as_str().unwrap(),
    )
    .unwrap();

    let script = format!(
        "CHROOT env NODE_NAME=node-a KUBERNETES_API_URL={} install-cni",
        server.url
    );
    run(&mut in_image(None, &root, &script));
    let conflist: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("host/etc/cni/net.d/10-ovs-egress.conflist")).unwrap(),
    )
    .unwrap();
    assert_eq!(conflist["plugins"][0]["podCIDR"], "10.244.9.0/24");
    let mut version = Command::new(root.join("host/opt/cni/bin/ovs-egress"))
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
    assert_eq!(answer["supportedVersions"], serde_json::json!(["1.0.0"]));
}
