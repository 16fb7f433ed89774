//! The controller's validating webhook in a test cluster: TLS material for
//! `ovs-egress controller --tls-cert-file/--tls-key-file` (a throw-away CA and a server
//! certificate it signs) and the `ValidatingWebhookConfiguration` that makes the API server
//! call the controller's `/validate/egress` and `/validate/externalippool` before it
//! stores an Egress or ExternalIPPool. It never touches anything outside the given directory.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::{Value, json};

/// Name of the configuration [`configuration`] builds (as Antrea's chart names it).
pub const CONFIGURATION_NAME: &str = "crdvalidator.antrea.io";

/// TLS files written by [`write_tls`].
#[derive(Debug, Clone)]
pub struct WebhookTls {
    /// Server certificate (PEM) for `--tls-cert-file`.
    pub cert_file: PathBuf,
    /// Server private key (PEM, PKCS#8) for `--tls-key-file`.
    pub key_file: PathBuf,
    /// The CA certificate (PEM, also written as `ca.crt`): the configuration's `caBundle`.
    pub ca_pem: String,
}

/// Creates a self-signed CA and a server certificate for `ip` (and `localhost`) signed by it,
/// and writes `ca.crt`, `tls.crt` and `tls.key` into `dir`.
pub fn write_tls(dir: &Path, ip: IpAddr) -> anyhow::Result<WebhookTls> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ovs-egress test webhook CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let mut server = CertificateParams::new(vec![ip.to_string(), "localhost".to_string()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "ovs-egress-controller");
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let tls = WebhookTls {
        cert_file: dir.join("tls.crt"),
        key_file: dir.join("tls.key"),
        ca_pem: ca_cert.pem(),
    };
    for (path, text) in [
        (dir.join("ca.crt"), tls.ca_pem.clone()),
        (tls.cert_file.clone(), server_cert.pem()),
        (tls.key_file.clone(), server_key.serialize_pem()),
    ] {
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(tls)
}

/// The `ValidatingWebhookConfiguration` (admissionregistration.k8s.io/v1) for a controller
/// serving its webhook at `https://{addr}`, trusting `ca_pem`: Egresses and ExternalIPPools of
/// crd.antrea.io (both served versions) on CREATE and UPDATE, failurePolicy Fail, 5 s timeout,
/// as in Antrea's chart (DELETE is never validated).
pub fn configuration(addr: SocketAddr, ca_pem: &str) -> Value {
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let hook = |name: &str, path: &str, plural: &str| {
        json!({
            "name": name,
            "clientConfig": {"url": format!("https://{addr}{path}"), "caBundle": ca_bundle},
            "rules": [{
                "apiGroups": ["crd.antrea.io"],
                "apiVersions": ["v1alpha2", "v1beta1"],
                "resources": [plural],
                "operations": ["CREATE", "UPDATE"],
                "scope": "Cluster",
            }],
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
        })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION_NAME},
        "webhooks": [
            hook("egressvalidator.antrea.io", "/validate/egress", "egresses"),
            hook("externalippoolvalidator.antrea.io", "/validate/externalippool", "externalippools"),
        ],
    })
}
