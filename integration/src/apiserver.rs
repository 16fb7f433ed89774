//! The Kubernetes API of the test bed: a real kube-apiserver with embedded etcd
//! ([`ApiServer`], the `ovs-egress-apiserver` binary built from `integration/apiserver`), a
//! child process on loopback with an admin kubeconfig, and our CRDs applied. `KUBECONFIG` pointing at a user's cluster is not handled here: the test
//! bed needs Nodes it can create, so it always brings its own API.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};

use crate::process::ChildGuard;

/// How long the API server may take from start to `/readyz` ok before the start fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `ovs-egress-apiserver` (etcd + kube-apiserver, one process) with its state in
/// `dir`: certificates, etcd's data, `admin.kubeconfig`, its log `apiserver.log`. It can be
/// stopped and started again on the same address with the same data, paused (`SIGSTOP`), and
/// asked to compact etcd. Dropping it stops the process (the directory is the caller's).
pub struct ApiServer {
    process: Option<ChildGuard>,
    dir: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// Admin credentials (client certificate of group `system:masters`).
    pub kubeconfig: PathBuf,
    /// Where kube-apiserver and etcd log (appended to across restarts).
    pub log: PathBuf,
    /// The PID file [`Self::start`] keeps current, for `scripts/clean-testbed.sh`.
    pid_file: PathBuf,
    ready_timeout: Duration,
    args: Vec<String>,
}

impl ApiServer {
    /// Starts the server with its state in `dir/apiserver` (created), its PID in
    /// `dir/apiserver.pid`; returns once `/readyz` answers ok, or fails after
    /// [`READY_TIMEOUT`] naming the log.
    pub fn start(dir: &Path) -> Result<ApiServer> {
        Self::start_with(dir, READY_TIMEOUT, &[])
    }

    /// [`Self::start`] with another readiness deadline and extra kube-apiserver flags (e.g.
    /// `--watch-cache=false`: watches then read etcd, so a compaction makes them answer 410
    /// Gone at once; with the cache they are served from its history of recent events).
    pub fn start_with(dir: &Path, ready_timeout: Duration, args: &[&str]) -> Result<ApiServer> {
        let state = dir.join("apiserver");
        std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
        let mut server = ApiServer {
            process: None,
            kubeconfig: state.join("admin.kubeconfig"),
            log: dir.join("apiserver.log"),
            pid_file: dir.join("apiserver.pid"),
            dir: state,
            url: String::new(),
            ready_timeout,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let binary = crate::bins::go_tool("ovs-egress-apiserver")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = Command::new(&binary);
        command
            .arg("--dir")
            .arg(&self.dir)
            .arg(format!(
                "--ready-timeout={}ms",
                self.ready_timeout.as_millis()
            ))
            .args(self.args.iter().map(|a| format!("--apiserver-arg={a}")))
            .stdout(Stdio::piped())
            .stderr(log);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe; it makes the kernel kill the
        // server when the thread that started it dies, so a killed test leaves no server behind.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("ovs-egress-apiserver stdout")?;
        let process = ChildGuard(child);
        process.write_pid_file(&self.pid_file)?;
        // The server enforces READY_TIMEOUT itself and exits; its first line says ready.
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let Some(url) = line.trim().strip_prefix("ovs-egress-apiserver ready ") else {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "the API server ({}) did not become ready within {:?} ({:.1} s passed); the last \
                 lines of {}:\n{}",
                binary.display(),
                self.ready_timeout,
                started.elapsed().as_secs_f64(),
                self.log.display(),
                tail.join("\n")
            );
        };
        self.url = url.to_string();
        self.process = Some(process);
        Ok(())
    }

    /// The directory of its certificates and etcd's data.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// The PID of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.0.id())
    }

    /// `127.0.0.1:PORT` of the server (for a TCP relay).
    pub fn authority(&self) -> &str {
        self.url.trim_start_matches("https://")
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> Result<String> {
        let path = self.dir.join("pki").join("ca.crt");
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// A client with the admin credentials.
    pub async fn client(&self) -> Result<kube::Client> {
        client(&self.kubeconfig).await
    }

    fn signal(&self, signal: libc::c_int) -> Result<()> {
        let process = self.process.as_ref().context("the API server is stopped")?;
        let pid = i32::try_from(process.0.id())?;
        // SAFETY: kill(2) on our own child, which has not been reaped (we hold its handle).
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!(
                "signalling the API server: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Freezes the server (`SIGSTOP`): connections are accepted by the kernel, nothing answers.
    pub fn pause(&self) -> Result<()> {
        self.signal(libc::SIGSTOP)
    }

    /// Lets a paused server go on (`SIGCONT`).
    pub fn resume(&self) -> Result<()> {
        self.signal(libc::SIGCONT)
    }

    /// Compacts etcd at its current revision (`SIGUSR1`) and waits (5 s at most) until the
    /// server logged it: a list or watch from an older resourceVersion then answers 410 Gone.
    pub fn compact(&self) -> Result<()> {
        let done = |log: &str| log.matches("compacted etcd at revision").count();
        let before = done(&std::fs::read_to_string(&self.log).unwrap_or_default());
        self.signal(libc::SIGUSR1)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if done(&std::fs::read_to_string(&self.log).unwrap_or_default()) > before {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "etcd was not compacted within 5 s; see {}",
            self.log.display()
        )
    }

    /// Stops the server (`SIGTERM`, `SIGKILL` after 10 s), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = self.resume_if(&process);
            process.stop(Duration::from_secs(10));
        }
    }

    fn resume_if(&self, process: &ChildGuard) -> Option<()> {
        let pid = i32::try_from(process.0.id()).ok()?;
        // SAFETY: as in `signal`; a stopped process would not act on SIGTERM.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        Some(())
    }

    /// Starts the server again on the same address with the same certificates and etcd data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Creates the Egress and ExternalIPPool CRDs (as shipped in the chart).
pub async fn apply_crds(client: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [
        ovs_egress_core::api::egress_crd(),
        ovs_egress_core::api::external_ip_pool_crd(),
    ] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.create(&PostParams::default(), &crd)
            .await
            .with_context(|| format!("creating CRD {name}"))?;
    }
    Ok(())
}

/// [`apply_crds`], then waits until a real API server serves them (`Established`, 30 s at most).
pub async fn apply_crds_and_wait(client: &kube::Client) -> Result<()> {
    apply_crds(client).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [
        ovs_egress_core::api::egress_crd(),
        ovs_egress_core::api::external_ip_pool_crd(),
    ] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let established = kube::runtime::conditions::is_crd_established();
        let wait = kube::runtime::wait::await_condition(crds.clone(), &name, established);
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .with_context(|| format!("CRD {name} not established after 30 s"))??;
    }
    Ok(())
}
