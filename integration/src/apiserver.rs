//! The Kubernetes API of the test bed: the `kube-emu` emulator as a child process on loopback,
//! with its kubeconfig and our CRDs applied. `KUBECONFIG` pointing at a real cluster is not
//! handled here: the test bed needs Nodes it can create, so it always brings its own API.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};

use crate::process::ChildGuard;

/// A running kube-emu. Dropping it kills the process.
pub struct KubeEmu {
    _process: ChildGuard,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub kubeconfig: PathBuf,
}

impl KubeEmu {
    /// Starts kube-emu on a free loopback port, writing its kubeconfig to `dir/kubeconfig`.
    pub fn start(dir: &Path) -> Result<KubeEmu> {
        let kubeconfig = dir.join("kubeconfig");
        let mut child = Command::new(crate::bins::binary("kube-emu")?)
            .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting kube-emu")?;
        let stdout = child.stdout.take().context("kube-emu stdout")?;
        let process = ChildGuard(child);
        process.write_pid_file(&dir.join("kube-emu.pid"))?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading kube-emu's first line")?;
        let Some(url) = line.trim().strip_prefix("kube-emu listening on ") else {
            bail!("kube-emu said {line:?}");
        };
        Ok(KubeEmu {
            url: url.to_string(),
            _process: process,
            kubeconfig,
        })
    }

    /// A client for this API server.
    pub async fn client(&self) -> Result<kube::Client> {
        client(&self.kubeconfig).await
    }

    /// `host:port` of the server.
    pub fn authority(&self) -> &str {
        self.url.trim_start_matches("http://")
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
        ovs_egress::api::egress_crd(),
        ovs_egress::api::external_ip_pool_crd(),
    ] {
        crds.create(&PostParams::default(), &crd)
            .await
            .context("creating a CRD")?;
    }
    Ok(())
}
