//! `/livez` and `/readyz` on a plain-HTTP port for the kubelet's probes. Liveness says the
//! process serves requests; readiness says its caches are synced. It never blocks on the API
//! server: the answer is read from a flag the process maintains.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::sync::watch;

/// Serve the probes on `addr` until the process ends; `ready` is the readiness flag.
pub async fn serve(addr: SocketAddr, ready: watch::Receiver<bool>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "health endpoints /livez and /readyz listening");
    let app = Router::new()
        .route("/livez", get(|| async { (StatusCode::OK, "ok") }))
        .route("/readyz", get(readyz))
        .with_state(ready);
    axum::serve(listener, app).await
}

async fn readyz(State(ready): State<watch::Receiver<bool>>) -> (StatusCode, &'static str) {
    if *ready.borrow() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}
