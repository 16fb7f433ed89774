//! The validating webhook: AdmissionReview v1 over HTTPS at `/validate/egress` and
//! `/validate/externalippool`, answering with `api::validation`'s verdict and messages. The
//! rules live in the pure core; this module only decodes, calls them with the pools the
//! reflector knows, and encodes. DELETE is always allowed, as in Antrea.
//!
//! Anyone who can reach the port can open connections, so no client may hold up another: every
//! connection (its TLS handshake included) runs in its own task, at most [`Limits::handshakes`]
//! handshakes and [`Limits::connections`] connections at once, each handshake, request and idle
//! period bounded in time. Validation runs on the blocking pool, never on the async workers.
//! TLS material is read once at start from the mounted files.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::runtime::reflector::Store;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use ovs_egress_core::api::{v1beta1, validation};
use ovs_egress_core::model::ExternalIpPool;

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

/// How much one client may hold of the webhook, in connections and in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// TLS handshakes in progress at once; further connections wait in the kernel's backlog.
    pub handshakes: usize,
    /// Open connections at once (handshaking or not).
    pub connections: usize,
    /// Time from accepting the TCP connection to the end of the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time to read a request's headers, and to answer it once they are read.
    pub request_timeout: Duration,
    /// Time a connection may stay without reading or writing a byte.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    /// Far above what an API server needs (it reuses a few connections and answers in
    /// milliseconds), far below what would let idle sockets starve it: the API server's own
    /// webhook timeout is 10 s by default and at most 30 s.
    fn default() -> Self {
        Self {
            handshakes: 256,
            connections: 1024,
            handshake_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
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
    serve_on(tcp, tls, pools, Limits::default()).await;
    Ok(())
}

/// Serve the webhook on a bound listener with the given limits; never returns.
pub async fn serve_on(
    tcp: TcpListener,
    tls: rustls::ServerConfig,
    pools: Store<DynamicObject>,
    limits: Limits,
) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let app = Router::new()
        .route("/validate/egress", post(egress))
        .route("/validate/externalippool", post(external_ip_pool))
        .with_state(pools);
    let handshakes = Arc::new(Semaphore::new(limits.handshakes.max(1)));
    let connections = Arc::new(Semaphore::new(limits.connections.max(1)));
    loop {
        // Waiting for a slot before accepting leaves further clients in the kernel's backlog
        // until a slot frees, which the time limits guarantee.
        let (Ok(connection), Ok(handshake)) = (
            connections.clone().acquire_owned().await,
            handshakes.clone().acquire_owned().await,
        ) else {
            return; // the semaphores are never closed
        };
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "webhook: accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(connection_task(
            stream,
            peer,
            acceptor.clone(),
            app.clone(),
            limits,
            (connection, handshake),
        ));
    }
}

/// One connection from accept to close: the TLS handshake, then HTTP/1.1 requests.
async fn connection_task(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    limits: Limits,
    (_connection, handshake): (OwnedSemaphorePermit, OwnedSemaphorePermit),
) {
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "webhook: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "webhook: TLS handshake timed out");
            return;
        }
    };
    drop(handshake);
    let request_timeout = limits.request_timeout;
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let mut app = app.clone();
        async move {
            let call = tower_service::Service::call(&mut app, request);
            Ok::<_, Infallible>(match tokio::time::timeout(request_timeout, call).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    tracing::debug!(%peer, "webhook: request timed out");
                    timed_out()
                }
            })
        }
    });
    let io = TokioIo::new(IdleTimeout::new(tls, limits.idle_timeout));
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .serve_connection(io, service)
        .await;
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "webhook: connection ended");
    }
}

fn timed_out() -> Response<Body> {
    (StatusCode::SERVICE_UNAVAILABLE, "the request took too long").into_response()
}

/// A stream that fails with `TimedOut` once it has neither read nor written a byte for `idle`.
struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// After progress, push the deadline back; while pending, fail once it has passed.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.deadline.as_mut().reset(Instant::now() + self.idle);
                Poll::Ready(result)
            }
            Poll::Pending => {
                ready!(self.deadline.as_mut().poll(cx));
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "webhook connection idle for too long",
                )))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.check(cx, poll)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.check(cx, poll)
    }
}

type Review = AdmissionReview<DynamicObject>;

async fn egress(
    State(pools): State<Store<DynamicObject>>,
    Json(review): Json<Review>,
) -> Result<Json<Review>, StatusCode> {
    off_workers(move || {
        answer(review, &pools, "Egress", |request, pools| {
            let new: v1beta1::Egress = decode(request.object.as_ref(), "object")?;
            let old: Option<v1beta1::Egress> = match &request.old_object {
                Some(old) => Some(decode(Some(old), "oldObject")?),
                None => None,
            };
            validation::validate_egress(&new, old.as_ref(), pools).map_err(join)
        })
    })
    .await
}

async fn external_ip_pool(
    State(pools): State<Store<DynamicObject>>,
    Json(review): Json<Review>,
) -> Result<Json<Review>, StatusCode> {
    off_workers(move || {
        answer(review, &pools, "ExternalIPPool", |request, pools| {
            let new: v1beta1::ExternalIPPool = decode(request.object.as_ref(), "object")?;
            let old: Option<v1beta1::ExternalIPPool> = match &request.old_object {
                Some(old) => Some(decode(Some(old), "oldObject")?),
                None => None,
            };
            let old = old.as_ref().map(ExternalIpPool::from);
            validation::validate_pool(&(&new).into(), old.as_ref(), pools).map_err(join)
        })
    })
    .await
}

/// Run `answer` on the blocking pool: decoding and validating a large object must not keep an
/// async worker (and with it the probes and other connections) busy.
async fn off_workers(
    answer: impl FnOnce() -> Review + Send + 'static,
) -> Result<Json<Review>, StatusCode> {
    tokio::task::spawn_blocking(answer)
        .await
        .map(Json)
        .map_err(|error| {
            tracing::error!(%error, "webhook: validation task failed");
            StatusCode::INTERNAL_SERVER_ERROR
        })
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
    let known = ovs_egress_kube::reflect::typed_objects::<v1beta1::ExternalIPPool>(
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

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            prop::sample::select(
                &[
                    "10.0.0.1",
                    "::1",
                    "0.0.0.0/0",
                    "p",
                    "Egress",
                    "crd.antrea.io/v1beta1",
                    "",
                    "10.0.0.9",
                    "fast",
                    "100M",
                ][..]
            )
            .prop_map(serde_json::Value::from),
            "\\PC{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            let keys = prop::sample::select(
                &[
                    "apiVersion",
                    "kind",
                    "metadata",
                    "name",
                    "spec",
                    "appliedTo",
                    "egressIP",
                    "externalIPPool",
                    "egressIPs",
                    "bandwidth",
                    "rate",
                    "burst",
                    "ipRanges",
                    "cidr",
                    "start",
                    "end",
                    "nodeSelector",
                    "podSelector",
                    "matchExpressions",
                ][..],
            );
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(keys, inner, 0..5).prop_map(|m| {
                    serde_json::Value::Object(
                        m.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                    )
                }),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10_000))]

        /// Whatever object an AdmissionReview carries, both handlers' validation answers it
        /// (allowed or denied, same uid) and never panics.
        #[test]
        fn any_admission_review_object_is_answered_without_panicking(
            object in json_value(), spec in json_value(), update in proptest::prelude::any::<bool>(),
        ) {
            let mut object = object;
            if let serde_json::Value::Object(map) = &mut object {
                map.insert("spec".to_string(), spec);
            }
            let operation = if update { "UPDATE" } else { "CREATE" };
            let store = reflector::store::Writer::<DynamicObject>::new(ApiResource::erase::<
                v1beta1::ExternalIPPool,
            >(&()))
            .as_reader();
            for pool in [false, true] {
                let Ok(review): Result<Review, _> = serde_json::from_value(json!({
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": {
                        "uid": "u1",
                        "kind": {"group": "crd.antrea.io", "version": "v1beta1", "kind": "Egress"},
                        "resource": {"group": "crd.antrea.io", "version": "v1beta1", "resource": "egresses"},
                        "name": "x", "operation": operation, "userInfo": {},
                        "object": object, "oldObject": object,
                    }
                })) else {
                    continue; // not a review the HTTP layer would accept either
                };
                let answered = if pool {
                    answer(review, &store, "ExternalIPPool", |request, pools| {
                        let new: v1beta1::ExternalIPPool = decode(request.object.as_ref(), "object")?;
                        validation::validate_pool(&(&new).into(), None, pools).map_err(join)
                    })
                } else {
                    answer(review, &store, "Egress", |request, pools| {
                        let new: v1beta1::Egress = decode(request.object.as_ref(), "object")?;
                        validation::validate_egress(&new, None, pools).map_err(join)
                    })
                };
                let response = answered.response.expect("every review gets a response");
                proptest::prop_assert_eq!(response.uid, "u1");
            }
        }
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
