//! Prometheus metrics of the agent and the controller: the families (`agent`, `controller`,
//! `process`), their registries, and `/metrics` as an axum route on the process's existing
//! health server. Every family is named `ovs_egress_<subsystem>_<what>_<unit>` and has HELP
//! text; labels are bounded (egress IPs, Egress and pool names, tables, reasons; never Pods).
//!
//! Updates are atomics on process-wide families (`agent::metrics()`, `controller::metrics()`):
//! the code that observes something bumps a counter or a histogram and moves on. Values derived
//! from a whole plan (IPs held, Pods per Egress, ...) are computed by pure functions at scrape
//! time from the last snapshot handed over (an `Arc` swap), so the apply path never formats or
//! allocates for metrics. A scrape never waits on OVS, iptables or the API server: it answers
//! with what the process knows, even while starting or while OVS is down.
//!
//! prometheus-client writes OpenMetrics text; Prometheus asks for it in its `Accept` header and
//! gets it. Other clients (curl, `promtool check metrics`) get the classic text format 0.0.4,
//! converted by [`to_prometheus_text`]. This module must never block on I/O while encoding.

pub mod agent;
pub mod controller;
pub mod process;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

/// Every family's name starts with this (and `_`).
pub const PREFIX: &str = "ovs_egress";
/// The content type of OpenMetrics text 1.0.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which exposition format a client asked for in its `Accept` header: OpenMetrics only when it
/// names `application/openmetrics-text` (Prometheus does), else the classic text format.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut params = part.split(';').map(str::trim);
            let media = params.next().unwrap_or("");
            let refused = params.any(|p| p.replace(' ', "") == "q=0");
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// OpenMetrics text (as prometheus-client writes it) → Prometheus text format 0.0.4: counter
/// families carry their `_total` suffix in `# HELP`/`# TYPE` (0.0.4 names a family by its
/// sample name), and the `# UNIT` and `# EOF` lines, which 0.0.4 has not, are dropped. Samples
/// are unchanged.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if line.starts_with("# HELP ") {
            // Written once its TYPE line says whether the family is a counter.
            if let Some(pending) = help.replace(line) {
                push_line(&mut out, pending);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let counter = kind == "counter" && !name.ends_with("_total");
            if let Some(pending) = help.take() {
                match pending
                    .strip_prefix("# HELP ")
                    .and_then(|h| h.strip_prefix(name))
                {
                    Some(text) if counter => {
                        out.push_str("# HELP ");
                        out.push_str(name);
                        out.push_str("_total");
                        push_line(&mut out, text);
                    }
                    _ => push_line(&mut out, pending),
                }
            }
            if counter {
                out.push_str("# TYPE ");
                out.push_str(name);
                push_line(&mut out, "_total counter");
            } else {
                push_line(&mut out, line);
            }
            continue;
        }
        if let Some(pending) = help.take() {
            push_line(&mut out, pending);
        }
        push_line(&mut out, line);
    }
    if let Some(pending) = help {
        push_line(&mut out, pending);
    }
    out
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line);
    out.push('\n');
}

/// The exposition of `registry` in the format `accept` asks for, with its content type.
pub fn exposition(
    registry: &Registry,
    accept: Option<&str>,
) -> Result<(&'static str, String), std::fmt::Error> {
    let mut text = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    if wants_openmetrics(accept) {
        Ok((OPENMETRICS_CONTENT_TYPE, text))
    } else {
        Ok((TEXT_CONTENT_TYPE, to_prometheus_text(&text)))
    }
}

/// `GET /metrics` serving `registry`.
pub fn route(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(registry)
}

async fn scrape(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    match exposition(&registry, accept) {
        Ok((content_type, body)) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed").into_response(),
    }
}

/// A registry with the families both processes export (build info, process metrics).
pub fn base_registry() -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    process::register(&mut registry);
    registry
}

#[cfg(test)]
mod tests;
