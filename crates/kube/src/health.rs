//! `/livez` and `/readyz` on a plain-HTTP port for the kubelet's probes, beside the routes the
//! process adds on the same port (`/metrics`; the agent's `/plan`). Liveness says the process
//! serves requests; readiness is a flag the process maintains (caches synced, and for the
//! agent: plan applied and datapath ready). It never blocks on the API server; any other path
//! is 404.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::sync::watch;

/// Serve the probes and `routes` on `addr` until the process ends; `ready` is the readiness
/// flag.
pub async fn serve(
    addr: SocketAddr,
    ready: watch::Receiver<bool>,
    routes: Router,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "health endpoints /livez and /readyz and /metrics listening");
    let app = Router::new()
        .route("/livez", get(|| async { (StatusCode::OK, "ok") }))
        .route("/readyz", get(readyz))
        .with_state(ready)
        .merge(routes);
    axum::serve(listener, app).await
}

/// For a process whose feature gate is off: log that it does nothing, report ready, and only
/// serve the probes and `routes`.
pub async fn serve_disabled(addr: SocketAddr, process: &str, routes: Router) -> anyhow::Result<()> {
    use anyhow::Context;
    tracing::warn!("feature gate Egress is disabled: the {process} does nothing for Egress");
    let (_ready_tx, ready) = watch::channel(true);
    serve(addr, ready, routes)
        .await
        .with_context(|| format!("serving health on {addr}"))
}

async fn readyz(State(ready): State<watch::Receiver<bool>>) -> (StatusCode, &'static str) {
    if *ready.borrow() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Keeps `out` equal to the conjunction of `inputs` (a closed input keeps its last value)
/// until every input is closed, logging each change.
pub async fn all_of(mut open: Vec<watch::Receiver<bool>>, out: watch::Sender<bool>) {
    let mut closed_ready = true;
    loop {
        let now = closed_ready && open.iter_mut().all(|i| *i.borrow_and_update());
        if out.send_if_modified(|r| std::mem::replace(r, now) != now) {
            tracing::info!(ready = now, "readiness changed");
        }
        if open.is_empty() {
            return;
        }
        let changes = open.iter_mut().map(|i| Box::pin(i.changed()));
        let (result, index, _) = futures::future::select_all(changes).await;
        if result.is_err() {
            closed_ready &= *open.remove(index).borrow();
        }
    }
}
