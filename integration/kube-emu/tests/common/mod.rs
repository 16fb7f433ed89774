//! Starts the kube-emu binary on 127.0.0.1:0 with a private kubeconfig, and stops it (by PID,
//! through `Child::kill`) and removes its directory when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Emu {
    child: Child,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub url: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The directory of the CRDs ovs-egress ships (generated from its Rust types), so the emulator
/// is tested with exactly the CRDs users apply.
pub fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../charts/ovs-egress/crds")
}

/// The shipped CRDs as one multi-document YAML text.
pub fn crds_text() -> String {
    let mut files: Vec<_> = std::fs::read_dir(crds_dir())
        .expect("charts/ovs-egress/crds is readable")
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

impl Emu {
    pub fn start(extra: &[&str]) -> Emu {
        let dir = std::env::temp_dir().join(format!(
            "kube-emu-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("creating the test directory");
        let kubeconfig = dir.join("kubeconfig");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kube-emu"))
            .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting kube-emu");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("reading kube-emu's first line");
        let url = line
            .trim()
            .strip_prefix("kube-emu listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Emu {
            child,
            dir,
            kubeconfig,
            url,
        }
    }

    /// Runs kubectl against this server; returns (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.dir.join("kube-cache"))
            .args(args)
            .output()
            .expect("kubectl must be installed (kubectl 1.32) for these tests");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs kubectl and panics with its stderr when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl(args);
        assert!(ok, "kubectl {args:?} failed: {err}");
        out
    }

    /// A kube-rs client for this server.
    pub async fn client(&self) -> kube::Client {
        let kc =
            kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("reading the kubeconfig");
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }

    /// POSTs JSON to an admin endpoint (`/emu/fail`, `/emu/compact`) with curl-free plain HTTP.
    pub fn admin(&self, path: &str, body: &str) -> String {
        use std::io::{Read, Write};
        let addr = self.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).expect("connecting to kube-emu");
        write!(s, "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).expect("writing admin request");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("reading admin response");
        assert!(
            resp.starts_with("HTTP/1.1 200"),
            "admin {path} failed: {resp}"
        );
        resp
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
