//! Kubernetes plumbing shared by the processes: leader election, health probes, reflectors, the
//! reconcile loop's rhythm, core-object conversion into the model, the conflict-retrying Egress
//! status writer, and the agent's event recorder.
//! Holds no decisions about Egresses; those live in the pure core.

pub mod convert;
pub mod events;
pub mod health;
pub mod lease;
pub mod passes;
pub mod reflect;
pub mod status;

use std::path::Path;

use anyhow::Context;

/// The Kubernetes client of a process: from `kubeconfig` when given, from the Pod's service
/// account with `in_cluster`, else inferred as kubectl does (`KUBECONFIG`, then in-cluster).
pub async fn client(kubeconfig: Option<&Path>, in_cluster: bool) -> anyhow::Result<::kube::Client> {
    let config = if let Some(path) = kubeconfig {
        let kubeconfig = ::kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        ::kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .with_context(|| format!("using kubeconfig {}", path.display()))?
    } else if in_cluster {
        ::kube::Config::incluster().context("in-cluster configuration")?
    } else {
        ::kube::Config::infer()
            .await
            .context("inferring the Kubernetes client configuration")?
    };
    ::kube::Client::try_from(config).context("building the Kubernetes client")
}
