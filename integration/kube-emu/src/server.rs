//! HTTP glue: accepts connections (hyper, HTTP/1.1), routes Kubernetes API paths to discovery,
//! `ops` and `watch`, encodes answers (JSON object, list, Table, Status) and serves the admin
//! endpoints under `/emu/`. No request semantics live here beyond parameter parsing.

use crate::admission::{self, Operation, Write};
use crate::discovery;
use crate::faults::Faults;
use crate::openapi;
use crate::ops::{self, Ctx, PatchType, Sub, output};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::Store;
use crate::table;
use crate::watch::{self, WatchParams};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type Resp = Response<UnsyncBoxBody<Bytes, Infallible>>;

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of change events kept for watches (older resourceVersions get 410 Expired).
    pub history: usize,
    /// Interval between BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
}

/// Everything a request handler needs.
pub struct App {
    pub store: Store,
    pub faults: Faults,
    pub cfg: Config,
    /// `http://host:port`, set once the listener is bound.
    pub url: OnceLock<String>,
}

impl App {
    pub fn new(cfg: Config) -> Arc<Self> {
        Arc::new(App {
            store: Store::new(cfg.history),
            faults: Faults::default(),
            cfg,
            url: OnceLock::new(),
        })
    }
}

/// Serves connections until the process ends.
pub async fn serve(listener: TcpListener, app: Arc<App>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle(&app, req).await) }
            });
            // Connection errors (client went away) end only that connection.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

struct ChanBody(mpsc::Receiver<Bytes>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn bytes_resp(code: u16, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn json_resp(code: u16, v: &Value) -> Resp {
    bytes_resp(code, Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
}

fn err_resp(e: &ApiError) -> Resp {
    json_resp(e.code, &e.to_status())
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(v)) => {
                out.push(v);
                i += 2;
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> &'a str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn handle(app: &App, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().trim_end_matches('/').to_string();
    if let Some(admin) = path.strip_prefix("/emu/") {
        return match admin_route(app, admin, req).await {
            Ok(v) => json_resp(200, &v),
            Err(e) => err_resp(&e),
        };
    }
    if let Err(e) = app.faults.gate().await {
        return err_resp(&e);
    }
    let url = app.url.get().cloned().unwrap_or_default();
    let st = || app.store.lock();
    let found = |v: Option<Value>| {
        v.map_or_else(
            || err_resp(&ApiError::no_route(&path)),
            |v| json_resp(200, &v),
        )
    };
    match path.as_str() {
        "/version" => return json_resp(200, &discovery::version()),
        "/api" => return json_resp(200, &discovery::core_versions(&url)),
        "/apis" => return json_resp(200, &discovery::group_list(&st())),
        "/healthz" | "/livez" | "/readyz" => return bytes_resp(200, Bytes::from_static(b"ok")),
        "/openapi/v3" => return json_resp(200, &openapi::index(&st())),
        _ => {}
    }
    if let Some(gv) = path.strip_prefix("/openapi/v3/") {
        return found(openapi::group_version(&st(), gv));
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g] => return found(discovery::group(&st(), g)),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return err_resp(&ApiError::no_route(&path)),
    };
    if rest.is_empty() {
        return found(discovery::resource_list(&st(), group, version));
    }
    match resource(app, req, group, version, rest).await {
        Ok(r) => r,
        Err(e) => err_resp(&e),
    }
}

async fn admin_route(app: &App, admin: &str, req: Request<Incoming>) -> Result<Value, ApiError> {
    let method = req.method().clone();
    let body = read_body(req).await?;
    match (method, admin) {
        (Method::POST, "fail") => {
            let v: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(&body).map_err(|e| {
                    ApiError::bad_request(format!("/emu/fail: body is not JSON: {e}"))
                })?
            };
            app.faults.apply(&v)
        }
        (Method::POST, "compact") => {
            let mut st = app.store.lock();
            st.compact();
            Ok(json!({"compactedTo": st.rv().to_string()}))
        }
        _ => Err(ApiError::no_route(&format!("/emu/{admin}"))),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    req.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("reading request body: {e}")))
}

fn parse_object(ct: &str, body: &[u8]) -> Result<Value, ApiError> {
    let ct = ct.split(';').next().unwrap_or_default().trim();
    match ct {
        "" | "application/json" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}"))),
        "application/vnd.kubernetes.protobuf" => {
            crate::protobuf::decode(body).map_err(|e| ApiError::new(415, "UnsupportedMediaType", e))
        }
        other => Err(ApiError::unsupported_media(other)),
    }
}

/// `[namespaces/<ns>/]<plural>[/<name>[/<sub>]]`.
struct Route<'a> {
    ns: Option<&'a str>,
    plural: &'a str,
    name: Option<&'a str>,
    sub: Option<&'a str>,
}

fn route<'a>(rest: &[&'a str]) -> Option<Route<'a>> {
    match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !matches!(*plural, "status" | "finalize") || !tail.is_empty() =>
        {
            match tail {
                [] => Some(Route {
                    ns: Some(ns),
                    plural,
                    name: None,
                    sub: None,
                }),
                [name] => Some(Route {
                    ns: Some(ns),
                    plural,
                    name: Some(name),
                    sub: None,
                }),
                [name, sub] => Some(Route {
                    ns: Some(ns),
                    plural,
                    name: Some(name),
                    sub: Some(sub),
                }),
                _ => None,
            }
        }
        [plural] => Some(Route {
            ns: None,
            plural,
            name: None,
            sub: None,
        }),
        [plural, name] => Some(Route {
            ns: None,
            plural,
            name: Some(name),
            sub: None,
        }),
        [plural, name, sub] => Some(Route {
            ns: None,
            plural,
            name: Some(name),
            sub: Some(sub),
        }),
        _ => None,
    }
}

fn field_selector(
    def: &crate::resources::ResourceDef,
    q: &HashMap<String, String>,
) -> Result<FieldSelector, ApiError> {
    let raw = q.get("fieldSelector").map_or("", String::as_str);
    if def.special == crate::resources::Special::EventsV1 {
        return FieldSelector::parse(
            &crate::events::selector_to_core(raw),
            &def.selectable_fields,
        );
    }
    FieldSelector::parse(raw, &def.selectable_fields)
}

fn rv_param(q: &HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            ApiError::new(
                410,
                "Expired",
                format!("resourceVersion {s} is not a valid resource version"),
            )
        }),
    }
}

async fn resource(
    app: &App,
    req: Request<Incoming>,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_string();
    let r = route(rest).ok_or_else(|| ApiError::no_route(&path))?;
    let def = app
        .store
        .lock()
        .find(group, version, r.plural)
        .ok_or_else(|| ApiError::no_route(&path))?;
    if (r.ns.is_some() && !def.namespaced) || (def.namespaced && r.ns.is_none() && r.name.is_some())
    {
        return Err(ApiError::no_route(&path));
    }
    let sub = match r.sub {
        None => Sub::Main,
        Some("status") if def.version(version).is_some_and(|v| v.status_subresource) => Sub::Status,
        Some(_) => return Err(ApiError::no_route(&path)),
    };
    let q = query(&req);
    let ctx = Ctx {
        def: def.clone(),
        version: version.to_string(),
        ns: r.ns.unwrap_or_default().to_string(),
        dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
        strict: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
    };
    let as_table = table::wants_table(header(&req, "accept"));
    let include_object = q.get("includeObject").is_some_and(|v| v == "Object");
    let ct = header(&req, "content-type").to_string();
    let method = req.method().clone();
    let out = |v: &Value| output(&def, version, v);
    match (method, r.name) {
        (Method::GET, None) => {
            let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))?;
            let fields = field_selector(&def, &q)?;
            let watching = q.get("watch").is_some_and(|v| v == "true" || v == "1");
            if watching {
                let p = WatchParams {
                    since: rv_param(&q)?,
                    labels,
                    fields,
                    bookmarks: q.get("allowWatchBookmarks").is_some_and(|v| v == "true"),
                    send_initial_events: q.get("sendInitialEvents").is_some_and(|v| v == "true"),
                    timeout: q
                        .get("timeoutSeconds")
                        .and_then(|s| s.parse().ok())
                        .map(Duration::from_secs),
                    as_table,
                };
                watch::check_streaming(&p, q.get("resourceVersionMatch").map(String::as_str))?;
                let rx = watch::start(
                    &app.store,
                    ctx,
                    p,
                    app.cfg.bookmark_interval,
                    app.faults.close_signal(),
                );
                let mut resp = Response::new(ChanBody(rx).boxed_unsync());
                resp.headers_mut().insert(
                    "content-type",
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                return Ok(resp);
            }
            let limit: Option<usize> = q
                .get("limit")
                .and_then(|s| s.parse().ok())
                .filter(|l| *l > 0);
            Ok(list(
                app,
                &ctx,
                &labels,
                &fields,
                limit,
                q.get("continue").map(String::as_str),
                as_table,
                include_object,
            ))
        }
        (Method::GET, Some(name)) => {
            let obj = app
                .store
                .lock()
                .get(&def.key(), &ctx.ns, name)
                .ok_or_else(|| ApiError::not_found(&ctx.target(name)))?;
            if as_table {
                return Ok(json_resp(
                    200,
                    &table::table(&def, version, &[&obj], None, include_object),
                ));
            }
            Ok(json_resp(200, &out(&obj)))
        }
        (Method::POST, None) => {
            let body = read_body(req).await?;
            let obj = parse_object(&ct, &body)?;
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            let r = Write {
                ctx: &ctx,
                sub: Sub::Main,
                name,
                operation: Operation::Create,
                field_manager: q.get("fieldManager").map(String::as_str),
            };
            let outcome = admission::write(&app.store, r, |st, c| {
                ops::create(st, c, obj.clone(), false).map(|o| (o, true))
            })
            .await;
            Ok(admitted(outcome, |o| json_resp(201, &out(&o.0))))
        }
        (Method::PUT, Some(name)) => {
            let body = read_body(req).await?;
            let obj = parse_object(&ct, &body)?;
            let r = Write {
                ctx: &ctx,
                sub,
                name,
                operation: Operation::Update,
                field_manager: q.get("fieldManager").map(String::as_str),
            };
            let outcome = admission::write(&app.store, r, |st, c| {
                ops::update(st, c, name, obj.clone(), sub).map(|o| (o, false))
            })
            .await;
            Ok(admitted(outcome, |o| json_resp(200, &out(&o.0))))
        }
        (Method::PATCH, Some(name)) => {
            let pt = PatchType::from_content_type(&ct)
                .ok_or_else(|| ApiError::unsupported_media(&ct))?;
            let body = read_body(req).await?;
            let fm = q.get("fieldManager").map(String::as_str);
            let r = Write {
                ctx: &ctx,
                sub,
                name,
                operation: Operation::Update,
                field_manager: fm,
            };
            let outcome = admission::write(&app.store, r, |st, c| {
                ops::patch(st, c, name, pt, &body, sub, fm)
            })
            .await;
            Ok(admitted(outcome, |(obj, created)| {
                json_resp(if created { 201 } else { 200 }, &out(&obj))
            }))
        }
        (Method::DELETE, Some(name)) => {
            let body = read_body(req).await?;
            let opts: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(&body).unwrap_or_else(|_| json!({}))
            };
            let ctx = Ctx {
                dry_run: ctx.dry_run
                    || opts["dryRun"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == "All")),
                ..ctx
            };
            let pre = opts["preconditions"]["resourceVersion"].as_str();
            let outcome = admission::write(&app.store, deletion(&ctx, name), |st, c| {
                ops::delete(st, c, name, pre).map(|o| (o, false))
            })
            .await;
            Ok(admitted(outcome, |o| json_resp(200, &out(&o.0))))
        }
        (Method::DELETE, None) => {
            let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))?;
            let fields = field_selector(&def, &q)?;
            let ns = (!ctx.ns.is_empty()).then_some(ctx.ns.as_str());
            let victims: Vec<String> = app
                .store
                .lock()
                .list(&def.key(), ns)
                .iter()
                .filter(|o| labels.matches(o) && fields.matches(o))
                .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            let (mut items, mut warnings) = (Vec::new(), Vec::new());
            for n in &victims {
                let outcome = admission::write(&app.store, deletion(&ctx, n), |st, c| {
                    ops::delete(st, c, n, None).map(|o| (o, false))
                })
                .await;
                warnings.extend(outcome.warnings);
                match outcome.result {
                    Ok((o, _)) => items.push(out(&o)),
                    Err(e) => return Ok(with_warnings(err_resp(&e), &warnings)),
                }
            }
            let rv = app.store.lock().rv();
            let list = json!({"kind": format!("{}List", def.kind), "apiVersion": def.api_version(version), "metadata": {"resourceVersion": rv.to_string()}, "items": items});
            Ok(with_warnings(json_resp(200, &list), &warnings))
        }
        (m, _) => Err(ApiError::method_not_allowed(&format!("{m} {path}"))),
    }
}

/// The admission request of a DELETE of `name`.
fn deletion<'a>(ctx: &'a Ctx, name: &'a str) -> Write<'a> {
    Write {
        ctx,
        sub: Sub::Main,
        name,
        operation: Operation::Delete,
        field_manager: None,
    }
}

/// The response to an admitted write: `ok` on success, the Status otherwise, with the
/// webhooks' warnings either way.
fn admitted(outcome: admission::Outcome, ok: impl FnOnce((Value, bool)) -> Resp) -> Resp {
    let resp = match outcome.result {
        Ok(v) => ok(v),
        Err(e) => err_resp(&e),
    };
    with_warnings(resp, &outcome.warnings)
}

/// Adds `Warning: 299 - "text"` headers (RFC 7234 warn-code 299, as kube-apiserver sends them).
fn with_warnings(mut resp: Resp, warnings: &[String]) -> Resp {
    for w in warnings {
        let quoted = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("299 - \"{quoted}\"")) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

#[allow(clippy::too_many_arguments)]
fn list(
    app: &App,
    ctx: &Ctx,
    labels: &LabelSelector,
    fields: &FieldSelector,
    limit: Option<usize>,
    cont: Option<&str>,
    as_table: bool,
    include_object: bool,
) -> Resp {
    let (objs, rv) = {
        let st = app.store.lock();
        let ns = (!ctx.ns.is_empty()).then_some(ctx.ns.as_str());
        (st.list(&ctx.def.key(), ns), st.rv())
    };
    let after = cont
        .and_then(|c| c.split_once('/'))
        .map(|(a, b)| (decode(a), decode(b)));
    let mut selected = objs
        .into_iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .filter(|o| match &after {
            Some((ans, aname)) => {
                let k = (
                    o["metadata"]["namespace"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default(),
                );
                k > (ans.as_str(), aname.as_str())
            }
            None => true,
        });
    let page: Vec<_> = match limit {
        Some(l) => selected.by_ref().take(l).collect(),
        None => selected.by_ref().collect(),
    };
    let remaining = selected.count();
    let api_version = ctx.def.api_version(&ctx.version);
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if remaining > 0
        && let Some(last) = page.last()
    {
        let enc = |s: &str| s.replace('%', "%25").replace('/', "%2F");
        meta["continue"] = json!(format!(
            "{}/{}",
            enc(last["metadata"]["namespace"].as_str().unwrap_or_default()),
            enc(last["metadata"]["name"].as_str().unwrap_or_default())
        ));
        meta["remainingItemCount"] = json!(remaining);
    }
    if as_table {
        let items: Vec<&Value> = page.iter().map(|o| &***o).collect();
        let mut t = table::table(&ctx.def, &ctx.version, &items, Some(rv), include_object);
        t["metadata"] = meta;
        return json_resp(200, &t);
    }
    // Hand-assembled so that 10,000 stored objects are serialized once, without copies.
    let mut buf = Vec::with_capacity(64 + page.len() * 1024);
    buf.extend_from_slice(format!("{{\"kind\":\"{}List\",\"apiVersion\":\"{api_version}\",\"metadata\":{meta},\"items\":[", ctx.def.kind).as_bytes());
    for (i, o) in page.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        // Writing a Value into a Vec cannot fail.
        if o["apiVersion"].as_str() == Some(api_version.as_str()) {
            buf.extend_from_slice(&o.json());
        } else {
            let _ = serde_json::to_writer(&mut buf, &output(&ctx.def, &ctx.version, o));
        }
    }
    buf.extend_from_slice(b"]}");
    bytes_resp(200, Bytes::from(buf))
}
