//! Who the box's ovs-egress processes are on the real API server: one ServiceAccount each for
//! the agents and the controller (in `kube-system`), bound to ClusterRoles whose rules are the
//! lists the Helm chart ships (`charts/ovs-egress/files/rbac/*-rules.yaml`, compiled in, so the
//! box and the chart cannot disagree), and kubeconfigs carrying a token from the TokenRequest
//! API, as a kubelet would mount one into a Pod. Never grants anything beyond those lists.

use std::path::Path;

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use kube::api::{Api, PostParams};
use serde_json::json;

/// The Namespace of the ServiceAccounts (as in Antrea's manifests).
pub const NAMESPACE: &str = "kube-system";

/// One identity: a ServiceAccount and the ClusterRole (same name) it is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub name: &'static str,
    rules: &'static str,
}

/// Every `ovs-egress agent`.
pub const AGENT: Identity = Identity {
    name: "ovs-egress-agent",
    rules: include_str!("../../charts/ovs-egress/files/rbac/agent-rules.yaml"),
};

/// `ovs-egress controller`.
pub const CONTROLLER: Identity = Identity {
    name: "ovs-egress-controller",
    rules: include_str!("../../charts/ovs-egress/files/rbac/controller-rules.yaml"),
};

impl Identity {
    /// The user name the API server sees (`--as` of `kubectl auth can-i`).
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{NAMESPACE}:{}", self.name)
    }

    /// The ClusterRole's rules, as the chart ships them.
    pub fn rules(&self) -> Result<Vec<PolicyRule>> {
        serde_yaml::from_str(self.rules).with_context(|| format!("the rules of {}", self.name))
    }

    /// Creates the ServiceAccount, the ClusterRole and the ClusterRoleBinding.
    pub async fn install(&self, admin: &kube::Client) -> Result<()> {
        let pp = PostParams::default();
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), NAMESPACE);
        let account = serde_json::from_value(json!({"metadata": {"name": self.name}}))?;
        accounts
            .create(&pp, &account)
            .await
            .with_context(|| format!("creating ServiceAccount {NAMESPACE}/{}", self.name))?;
        let role = ClusterRole {
            metadata: serde_json::from_value(json!({"name": self.name}))?,
            rules: Some(self.rules()?),
            ..ClusterRole::default()
        };
        Api::<ClusterRole>::all(admin.clone())
            .create(&pp, &role)
            .await
            .with_context(|| format!("creating ClusterRole {}", self.name))?;
        let binding = serde_json::from_value(json!({
            "metadata": {"name": self.name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                "name": self.name},
            "subjects": [{"kind": "ServiceAccount", "name": self.name, "namespace": NAMESPACE}],
        }))?;
        Api::<ClusterRoleBinding>::all(admin.clone())
            .create(&pp, &binding)
            .await
            .with_context(|| format!("creating ClusterRoleBinding {}", self.name))?;
        Ok(())
    }

    /// A new token of the ServiceAccount (TokenRequest, valid 24 h).
    pub async fn token(&self, admin: &kube::Client) -> Result<String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), NAMESPACE);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(24 * 3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let answer = accounts
            .create_token_request(self.name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("requesting a token for {}", self.username()))?;
        answer
            .status
            .map(|s| s.token)
            .with_context(|| format!("the token request for {} has no status", self.name))
    }

    /// Writes a kubeconfig for `server` (trusting `ca_pem`) with a new token of this identity.
    pub async fn write_kubeconfig(
        &self,
        admin: &kube::Client,
        path: &Path,
        server: &str,
        ca_pem: &str,
    ) -> Result<()> {
        use base64::Engine;
        let token = self.token(admin).await?;
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let config = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "box", "cluster": {"server": server,
                "certificate-authority-data": ca}}],
            "users": [{"name": self.name, "user": {"token": token}}],
            "contexts": [{"name": self.name, "context": {"cluster": "box", "user": self.name}}],
            "current-context": self.name,
        });
        std::fs::write(path, serde_json::to_string_pretty(&config)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}
