//! The controller's configuration: the config file (like Antrea's `antrea-controller.conf`,
//! only `featureGates` for now) and the command-line flags of `ovs-egress controller`.
//!
//! Unknown keys and unknown feature gates are rejected with an error naming the file, so a typo
//! never silently turns a feature off. Nothing here talks to the cluster.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `featureGates` of the controller config file. Egress is on by default, as in Antrea ≥ 1.6.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureGates {
    #[serde(rename = "Egress", default = "enabled")]
    pub egress: bool,
}

impl Default for FeatureGates {
    fn default() -> Self {
        Self { egress: true }
    }
}

fn enabled() -> bool {
    true
}

/// The controller config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControllerConfig {
    #[serde(default)]
    pub feature_gates: FeatureGates,
}

/// Why the config file cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading controller config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("controller config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
}

impl ControllerConfig {
    /// Parse the YAML text of `path` (an empty file means all defaults).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Read and parse the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }
}

/// How a process retries its watches of the API server (the agent's and the controller's flag).
#[derive(Clone, Debug, clap::Args)]
pub struct ApiRetryArgs {
    /// Cap, in milliseconds, of the wait before a failed watch of the API server is tried again
    /// (it starts at 100 ms and doubles; each wait gets a random jitter of up to itself). The
    /// default brings the process back within about a second of an API outage's end; large
    /// clusters may raise it to spread the reconnections of many processes.
    #[arg(
        long,
        env = "OVS_EGRESS_API_RETRY_MAX_DELAY_MS",
        default_value_t = ovs_egress_kube::reflect::DEFAULT_RETRY_MAX_MS,
        value_parser = clap::value_parser!(u64).range(100..=60_000)
    )]
    pub api_retry_max_delay_ms: u64,
}

impl Default for ApiRetryArgs {
    fn default() -> Self {
        Self {
            api_retry_max_delay_ms: ovs_egress_kube::reflect::DEFAULT_RETRY_MAX_MS,
        }
    }
}

impl ApiRetryArgs {
    /// The cap of the retry wait.
    pub fn max_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.api_retry_max_delay_ms)
    }
}

/// Flags of `ovs-egress controller`.
#[derive(Clone, Debug, clap::Args)]
pub struct ControllerArgs {
    /// Controller config file (`featureGates: {Egress: true}`); defaults apply without it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kubeconfig to use; without it (and without --in-cluster) the client is inferred as
    /// kubectl does: $KUBECONFIG, ~/.kube/config, then the in-cluster service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Use the Pod's service account (in-cluster configuration).
    #[arg(long, conflicts_with = "kubeconfig")]
    pub in_cluster: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "ovs-egress-controller")]
    pub lease_name: String,
    /// Holder identity in the Lease; defaults to `<hostname>-<pid>`.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a Lease stays valid without renewal before another replica takes it over.
    #[arg(long, default_value_t = 15.0)]
    pub lease_duration_seconds: f64,
    /// Seconds between renewals (and between attempts to acquire the Lease).
    #[arg(long, default_value_t = 5.0)]
    pub lease_renew_seconds: f64,
    #[command(flatten)]
    pub api_retry: ApiRetryArgs,
    /// Address of the validating webhook (HTTPS); served only with --tls-cert-file and --tls-key-file.
    #[arg(long, default_value = "0.0.0.0:9443")]
    pub webhook_listen: SocketAddr,
    /// PEM certificate chain of the webhook server.
    #[arg(long, requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the webhook server.
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Address of the plain-HTTP health endpoints `/livez` and `/readyz`.
    #[arg(long, default_value = "0.0.0.0:10348")]
    pub health_listen: SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ControllerConfig, String> {
        ControllerConfig::parse(Path::new("/etc/ovs-egress/controller.conf"), text)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn egress_gate_defaults_to_on_and_can_be_turned_off() {
        assert!(parse("").unwrap().feature_gates.egress);
        assert!(parse("featureGates: {}\n").unwrap().feature_gates.egress);
        assert!(
            parse("featureGates: {Egress: true}\n")
                .unwrap()
                .feature_gates
                .egress
        );
        assert!(
            !parse("featureGates:\n  Egress: false\n")
                .unwrap()
                .feature_gates
                .egress
        );
    }

    #[test]
    fn unknown_top_level_key_is_rejected_naming_the_file_and_the_key() {
        let error = parse("featureGate: {Egress: false}\n").unwrap_err();
        assert!(
            error.starts_with("controller config /etc/ovs-egress/controller.conf:"),
            "{error}"
        );
        assert!(error.contains("unknown field `featureGate`"), "{error}");
    }

    #[test]
    fn unknown_feature_gate_is_rejected_naming_it() {
        let error = parse("featureGates: {Egres: false}\n").unwrap_err();
        assert!(error.contains("unknown field `Egres`"), "{error}");
    }

    #[test]
    fn gate_value_must_be_a_boolean() {
        let error = parse("featureGates: {Egress: maybe}\n").unwrap_err();
        assert!(error.contains("Egress"), "{error}");
    }
}
