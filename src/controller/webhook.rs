//! The validating webhook: AdmissionReview v1 over HTTPS at `/validate/egress` and
//! `/validate/externalippool`, answering with `api::validation`'s verdict and messages. The
//! rules live in the pure core; this module only decodes, calls them with the pools the
//! reflector knows, and encodes. DELETE is always allowed, as in Antrea.
//!
//! TLS material is read once at start from the mounted files; handshakes run one at a time
//! with a 5 s limit, which is plenty for an API server's webhook calls.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::runtime::reflector::Store;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

use crate::api::{v1beta1, validation};
use crate::model::ExternalIpPool;

/// Why the webhook cannot start; names the file or address.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("reading TLS certificate {path}: {message}")]
    Cert { path: String, message: String },
    #[error("reading TLS key {path}: {message}")]
    Key { path: String, message: String },
    #[error("building the TLS configuration from {cert} and {key}: {source}")]
    Tls {
        cert: String,
        key: String,
        source: rustls::Error,
    },
    #[error("binding the webhook address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The rustls server configuration for the PEM files `cert` (chain) and `key`.
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, WebhookError> {
    let (cert_name, key_name) = (cert.display().to_string(), key.display().to_string());
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| WebhookError::Cert {
            path: cert_name.clone(),
            message: e.to_string(),
        })?;
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| WebhookError::Key {
        path: key_name.clone(),
        message: e.to_string(),
    })?;
    let tls_error = |source| WebhookError::Tls {
        cert: cert_name.clone(),
        key: key_name.clone(),
        source,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serve the webhook over HTTPS on `addr` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    tls: rustls::ServerConfig,
    pools: Store<DynamicObject>,
) -> Result<(), WebhookError> {
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| WebhookError::Bind { addr, source })?;
    tracing::info!(%addr, "validating webhook listening (HTTPS)");
    let listener = TlsListener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(tls)),
    };
    let app = Router::new()
        .route("/validate/egress", post(egress))
        .route("/validate/externalippool", post(external_ip_pool))
        .with_state(pools);
    // axum::serve only returns on an accept loop failure, which TlsListener never reports.
    let _ = axum::serve(listener, app).await;
    Ok(())
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, peer) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "webhook: accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(stream)).await {
                Ok(Ok(tls)) => return (tls, peer),
                Ok(Err(error)) => tracing::debug!(%peer, %error, "webhook: TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "webhook: TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

type Review = AdmissionReview<DynamicObject>;

async fn egress(
    State(pools): State<Store<DynamicObject>>,
    Json(review): Json<Review>,
) -> Json<Review> {
    Json(answer(review, &pools, "Egress", |request, pools| {
        let new: v1beta1::Egress = decode(request.object.as_ref(), "object")?;
        let old: Option<v1beta1::Egress> = match &request.old_object {
            Some(old) => Some(decode(Some(old), "oldObject")?),
            None => None,
        };
        validation::validate_egress(&new, old.as_ref(), pools).map_err(join)
    }))
}

async fn external_ip_pool(
    State(pools): State<Store<DynamicObject>>,
    Json(review): Json<Review>,
) -> Json<Review> {
    Json(answer(
        review,
        &pools,
        "ExternalIPPool",
        |request, pools| {
            let new: v1beta1::ExternalIPPool = decode(request.object.as_ref(), "object")?;
            let old: Option<v1beta1::ExternalIPPool> = match &request.old_object {
                Some(old) => Some(decode(Some(old), "oldObject")?),
                None => None,
            };
            let old = old.as_ref().map(ExternalIpPool::from);
            validation::validate_pool(&(&new).into(), old.as_ref(), pools).map_err(join)
        },
    ))
}

/// Decode the review, run `validate` for CREATE and UPDATE, and wrap the verdict; counts the
/// review (by `kind` and result) and its latency.
fn answer(
    review: Review,
    pools: &Store<DynamicObject>,
    kind: &'static str,
    validate: impl Fn(&AdmissionRequest<DynamicObject>, &[ExternalIpPool]) -> Result<(), String>,
) -> Review {
    let started = std::time::Instant::now();
    let (result, review) = verdict(review, pools, validate);
    crate::metrics::controller::metrics().observe_review(
        kind,
        result,
        started.elapsed().as_secs_f64(),
    );
    review
}

/// The answer to `review` and how it came out: `allowed`, `denied` or `invalid`.
fn verdict(
    review: Review,
    pools: &Store<DynamicObject>,
    validate: impl Fn(&AdmissionRequest<DynamicObject>, &[ExternalIpPool]) -> Result<(), String>,
) -> (&'static str, Review) {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(error) => return ("invalid", AdmissionResponse::invalid(error).into_review()),
    };
    let response = AdmissionResponse::from(&request);
    if matches!(request.operation, Operation::Delete | Operation::Connect) {
        return ("allowed", response.into_review());
    }
    let known = crate::kube::reflect::typed_objects::<v1beta1::ExternalIPPool>(
        &pools.state(),
        "ExternalIPPool",
    );
    let known: Vec<ExternalIpPool> = known.iter().map(Into::into).collect();
    let verdict = validate(&request, &known);
    tracing::info!(
        kind = %request.kind.kind,
        name = %request.name,
        operation = ?request.operation,
        allowed = verdict.is_ok(),
        reason = verdict.as_ref().err().map(String::as_str).unwrap_or(""),
        "admission review"
    );
    match verdict {
        Ok(()) => ("allowed", response.into_review()),
        Err(message) => ("denied", response.deny(message).into_review()),
    }
}

fn decode<T: DeserializeOwned>(object: Option<&DynamicObject>, field: &str) -> Result<T, String> {
    let object = object.ok_or_else(|| format!("request.{field} is missing"))?;
    let value = serde_json::to_value(object).map_err(|e| format!("request.{field}: {e}"))?;
    serde_json::from_value(value).map_err(|e| format!("request.{field} is malformed: {e}"))
}

fn join(errors: Vec<validation::ValidationError>) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::ApiResource;
    use kube::runtime::reflector;
    use serde_json::json;

    fn review(operation: &str, object: serde_json::Value) -> Review {
        serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u1",
                "kind": {"group": "crd.antrea.io", "version": "v1beta1", "kind": "Egress"},
                "resource": {"group": "crd.antrea.io", "version": "v1beta1", "resource": "egresses"},
                "name": "web",
                "operation": operation,
                "userInfo": {},
                "object": object,
            }
        }))
        .unwrap()
    }

    fn verdict(review: Review) -> (bool, String) {
        let store = reflector::store::Writer::<DynamicObject>::new(ApiResource::erase::<
            v1beta1::ExternalIPPool,
        >(&()))
        .as_reader();
        let response = answer(review, &store, "Egress", |request, pools| {
            let new: v1beta1::Egress = decode(request.object.as_ref(), "object")?;
            validation::validate_egress(&new, None, pools).map_err(join)
        })
        .response
        .unwrap();
        (response.allowed, response.result.message)
    }

    #[test]
    fn delete_is_allowed_without_looking_at_the_object() {
        assert!(verdict(review("DELETE", serde_json::Value::Null)).0);
    }

    #[test]
    fn malformed_object_is_denied_naming_the_request_field() {
        let object = json!({"apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
            "metadata": {"name": "web"}, "spec": {"appliedTo": 7}});
        let (allowed, message) = verdict(review("CREATE", object));
        assert!(!allowed);
        assert!(
            message.starts_with("request.object is malformed:"),
            "{message}"
        );
    }

    #[test]
    fn egress_naming_an_unknown_pool_with_an_ip_is_denied_with_the_rule() {
        let object = json!({"apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
            "metadata": {"name": "web"},
            "spec": {"appliedTo": {}, "egressIP": "10.0.0.1", "externalIPPool": "nope"}});
        assert_eq!(
            verdict(review("CREATE", object)),
            (
                false,
                "Egress web: spec.externalIPPool: ExternalIPPool nope does not exist".to_string()
            )
        );
    }
}
