//! Test bed for the controller tests: the real API server (kube-apiserver + etcd) and `ovs-egress controller`
//! replicas as real processes (binaries built by cargo, located through cargo's JSON output so
//! a clean clone works), each stopped by PID when dropped, plus polling and HTTP helpers.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, PostParams};
use ovs_egress_core::api::{EgressCondition, IpRange, v1beta1};
use ovs_egress_integration::apiserver::{ApiServer, apply_crds_and_wait};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The path of binary `bin` of this build, built once per test process.
pub fn cargo_bin(bin: &str) -> PathBuf {
    ovs_egress_integration::bins::binary(bin).expect("locating a binary of this build")
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A private directory per test, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "oe{}-{tag}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("creating the test directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub use ovs_egress_integration::process::ChildGuard as Process;

/// The API server with the controller's CRDs applied; processes use its admin kubeconfig.
pub struct Cluster {
    _api: ApiServer,
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
    pub dir: TempDir,
}

impl Cluster {
    pub async fn start() -> Self {
        let dir = TempDir::new("ctl");
        let api = ApiServer::start(&dir.0).expect("starting the API server");
        let client = api.client().await.expect("a client for the API server");
        apply_crds_and_wait(&client)
            .await
            .expect("creating the CRDs");
        Self {
            kubeconfig: api.kubeconfig.clone(),
            _api: api,
            client,
            dir,
        }
    }

    pub fn egresses(&self) -> Api<v1beta1::Egress> {
        Api::all(self.client.clone())
    }

    pub fn pools(&self) -> Api<v1beta1::ExternalIPPool> {
        Api::all(self.client.clone())
    }

    pub fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Start a controller replica with identity `identity`, extra flags and, if given, this
    /// config file content.
    pub fn controller(&self, identity: &str, config: Option<&str>, extra: &[&str]) -> Controller {
        let health = free_port();
        let log = self.dir.0.join(format!("{identity}.log"));
        let mut command = Command::new(cargo_bin("ovs-egress"));
        command
            .arg("controller")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--lease-namespace", "default", "--identity", identity])
            .args(["--lease-renew-seconds", "0.4"])
            .args(["--health-listen", &health.to_string()])
            .args(extra)
            .stderr(std::fs::File::create(&log).expect("creating the controller log"));
        if !extra.contains(&"--lease-duration-seconds") {
            command.args(["--lease-duration-seconds", "2"]);
        }
        if let Some(text) = config {
            let path = self.dir.0.join(format!("{identity}.conf"));
            std::fs::write(&path, text).expect("writing the controller config");
            command.arg("--config").arg(path);
        }
        Controller {
            process: Process(command.spawn().expect("starting ovs-egress controller")),
            health,
            log,
        }
    }

    /// Wait until `identity` holds the leader Lease.
    pub async fn wait_leader(&self, identity: &str) {
        let leases = self.leases();
        eventually(&format!("{identity} holds the Lease"), 10.0, || async {
            holder(&leases).await.filter(|h| h == identity)
        })
        .await;
    }
}

pub async fn holder(leases: &Api<Lease>) -> Option<String> {
    let lease = leases.get_opt("ovs-egress-controller").await.ok()??;
    lease.spec?.holder_identity
}

pub struct Controller {
    pub process: Process,
    pub health: SocketAddr,
    pub log: PathBuf,
}

impl Controller {
    /// Wait until `/readyz` answers 200; panics with the controller's log otherwise.
    pub async fn wait_ready(&self) {
        let ready = eventually("the controller is ready", 60.0, || async {
            let stream = tokio::net::TcpStream::connect(self.health).await.ok()?;
            let (status, _) = http(stream, "GET", "/readyz", "").await.ok()?;
            (status == 200).then_some(())
        });
        if tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .is_err()
        {
            panic!(
                "the controller is not ready after 10 s; its log:\n{}",
                self.logs()
            );
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A free TCP port on loopback (bound and released; the controller binds it right after).
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("finding a free port")
}

/// Poll `check` every 50 ms until it yields a value; panic naming `what` after `seconds`.
pub async fn eventually<T, F, Fut>(what: &str, seconds: f64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {seconds} s waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP/1.1 request over `stream`; returns (status, body).
pub async fn http<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn pool(name: &str, ranges: &[(&str, &str)]) -> v1beta1::ExternalIPPool {
    let ranges = ranges
        .iter()
        .map(|(start, end)| match end.is_empty() {
            true => IpRange {
                cidr: Some(start.to_string()),
                ..Default::default()
            },
            false => IpRange {
                start: Some(start.to_string()),
                end: Some(end.to_string()),
                ..Default::default()
            },
        })
        .collect();
    v1beta1::ExternalIPPool::new(
        name,
        v1beta1::ExternalIPPoolSpec {
            ip_ranges: ranges,
            node_selector: Default::default(),
        },
    )
}

pub fn egress(name: &str, pool: &str, ip: Option<&str>) -> v1beta1::Egress {
    let mut egress: v1beta1::Egress = serde_json::from_value(serde_json::json!({
        "apiVersion": "crd.antrea.io/v1beta1",
        "kind": "Egress",
        "metadata": {"name": name},
        "spec": {"appliedTo": {"podSelector": {"matchLabels": {"app": "web"}}}},
    }))
    .unwrap();
    egress.spec.external_ip_pool = Some(pool.to_string());
    egress.spec.egress_ip = ip.map(str::to_string);
    egress
}

pub async fn create_pool(cluster: &Cluster, pool: v1beta1::ExternalIPPool) {
    cluster
        .pools()
        .create(&PostParams::default(), &pool)
        .await
        .expect("creating an ExternalIPPool");
}

pub async fn create_egress(cluster: &Cluster, egress: v1beta1::Egress) {
    cluster
        .egresses()
        .create(&PostParams::default(), &egress)
        .await
        .expect("creating an Egress");
}

/// The Egress's `spec.egressIP` and `IPAllocated` condition.
pub async fn allocation(
    cluster: &Cluster,
    name: &str,
) -> (Option<String>, Option<EgressCondition>) {
    let egress = cluster
        .egresses()
        .get(name)
        .await
        .expect("reading an Egress");
    let condition = egress
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "IPAllocated"));
    (egress.spec.egress_ip, condition)
}

/// Wait until the Egress has `spec.egressIP == ip` and IPAllocated True/Allocated.
pub async fn wait_allocated(cluster: &Cluster, name: &str, ip: &str, seconds: f64) {
    eventually(
        &format!("Egress {name} is allocated {ip}"),
        seconds,
        || async {
            let (spec_ip, condition) = allocation(cluster, name).await;
            let condition = condition?;
            let ok = spec_ip.as_deref() == Some(ip)
                && condition.status == "True"
                && condition.reason.as_deref() == Some("Allocated")
                && condition.message.as_deref() == Some("EgressIP is successfully allocated");
            ok.then_some(())
        },
    )
    .await;
}

/// Wait until the Egress has IPAllocated False/AllocationError; returns the message.
pub async fn wait_allocation_error(cluster: &Cluster, name: &str) -> String {
    eventually(
        &format!("Egress {name} has an AllocationError"),
        10.0,
        || async {
            let condition = allocation(cluster, name).await.1?;
            (condition.status == "False" && condition.reason.as_deref() == Some("AllocationError"))
                .then(|| condition.message.unwrap_or_default())
        },
    )
    .await
}

/// Wait until the pool's `status.usage` is (total, used).
pub async fn wait_usage(cluster: &Cluster, name: &str, total: i64, used: i64) {
    eventually(
        &format!("ExternalIPPool {name} usage is {used}/{total}"),
        10.0,
        || async {
            let pool = cluster.pools().get(name).await.ok()?;
            let usage = pool.status?.usage?;
            (usage.total == total && usage.used == used).then_some(())
        },
    )
    .await;
}

/// Let the list call settle (used where nothing must happen).
pub async fn list_egresses(cluster: &Cluster) -> Vec<v1beta1::Egress> {
    cluster
        .egresses()
        .list(&ListParams::default())
        .await
        .expect("listing Egresses")
        .items
}
