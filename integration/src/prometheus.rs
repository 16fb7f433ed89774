//! Prometheus for the tests, from Debian's `prometheus` package (`scripts/install-deps.sh`):
//! `promtool check metrics` on an exposition, and a real Prometheus server on the box's
//! loopback, in its own temporary directory, scraping the targets it is given every 500 ms,
//! queried through its HTTP API. Missing tools fail loudly (CI is root and installs them).
//! The server is stopped (by PID) and its directory removed on drop.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::process::ChildGuard;

/// Runs `promtool check metrics` on `exposition`; an error carries promtool's complaints.
pub fn promtool_check(exposition: &str) -> Result<()> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(
            "promtool not found: install Debian's prometheus package (scripts/install-deps.sh)",
        )?;
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(exposition.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "promtool check metrics failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// One scrape target: its address and the `node` label it gets (`controller` for the
/// controller).
pub struct Target {
    pub addr: SocketAddr,
    pub node: String,
}

/// A running Prometheus server.
pub struct Prometheus {
    child: ChildGuard,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts a server in `dir` (created; removed on drop) scraping `targets`; returns once it
    /// is ready.
    pub async fn start(dir: PathBuf, targets: &[Target]) -> Result<Prometheus> {
        std::fs::create_dir_all(&dir)?;
        let mut config = String::from(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n  \
             evaluation_interval: 1s\nscrape_configs:\n- job_name: ovs-egress\n  static_configs:\n",
        );
        for t in targets {
            config.push_str(&format!(
                "  - targets: ['{}']\n    labels: {{node: '{}'}}\n",
                t.addr, t.node
            ));
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context(
                "prometheus not found: install Debian's prometheus package \
                 (scripts/install-deps.sh)",
            )?;
        let server = Prometheus {
            child: ChildGuard(child),
            addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.get("/-/ready").is_err() {
            if Instant::now() > deadline {
                bail!(
                    "Prometheus not ready after 30 s; its log:\n{}",
                    server.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(server)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Result<String> {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5"])
            .arg(format!("http://{}{path}", self.addr))
            .output()?;
        if !out.status.success() {
            bail!("GET {path}: curl {}", out.status);
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// An instant query: every sample as (its labels, its value).
    pub fn query(&self, promql: &str) -> Result<Vec<(serde_json::Map<String, Value>, f64)>> {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5", "--data-urlencode"])
            .arg(format!("query={promql}"))
            .arg(format!("http://{}/api/v1/query", self.addr))
            .output()?;
        if !out.status.success() {
            bail!("query {promql}: curl {}", out.status);
        }
        let answer: Value = serde_json::from_slice(&out.stdout)?;
        if answer["status"] != "success" {
            bail!("query {promql}: {answer}");
        }
        let mut samples = Vec::new();
        for r in answer["data"]["result"].as_array().context("no result")? {
            let labels = r["metric"].as_object().cloned().unwrap_or_default();
            let value: f64 = r["value"][1]
                .as_str()
                .context("sample value")?
                .parse()
                .context("sample value")?;
            samples.push((labels, value));
        }
        Ok(samples)
    }

    /// Polls `promql` until `done` holds for its samples, at most `timeout`; the error shows
    /// the last samples.
    pub async fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        done: impl Fn(&[(serde_json::Map<String, Value>, f64)]) -> bool,
    ) -> Result<Vec<(serde_json::Map<String, Value>, f64)>> {
        let deadline = Instant::now() + timeout;
        loop {
            let samples = self.query(promql);
            match &samples {
                Ok(s) if done(s) => return samples,
                _ if Instant::now() > deadline => {
                    bail!("{promql}: not as expected after {timeout:?}; last: {samples:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.stop(Duration::from_secs(2));
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
