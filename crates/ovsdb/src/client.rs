//! The OVSDB client the agent uses: one session at a time on the unix socket, re-established in
//! the background with exponential backoff whenever it is lost. Monitors survive reconnects:
//! after each reconnect every live monitor is registered again and its subscriber receives a
//! full [`MonitorEvent::Snapshot`]. Requests are never retried silently (a transaction may have
//! committed before the connection dropped); while disconnected they fail at once with
//! [`OvsdbError::NotConnected`] naming the socket.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::sync::{mpsc, watch};

use super::error::OvsdbError;
use super::monitor::{MonitorEvent, MonitorSpec};
use super::ops::{OpResult, Operation, decode_results};
use super::session::Session;

/// The database ovs-vswitchd uses.
pub const OPEN_VSWITCH_DB: &str = "Open_vSwitch";

#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub database: String,
    /// Upper bound for any single request (a `wait` operation counts against it too).
    pub request_timeout: Duration,
    /// First reconnect delay; doubled after every failed attempt up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            database: OPEN_VSWITCH_DB.to_owned(),
            request_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// Connection state, observable through [`Client::state`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Not connected; `last_error` says why the latest attempt or session failed.
    Connecting { last_error: Option<String> },
    /// Connected; `generation` counts successful connections (1 for the first).
    Connected { generation: u64 },
}

struct MonitorReg {
    id: String,
    spec: Json,
    events: mpsc::UnboundedSender<MonitorEvent>,
}

struct Inner {
    socket: PathBuf,
    opts: ClientOptions,
    session: Mutex<Option<Arc<Session>>>,
    /// Held across (re-)registration so a new monitor is never missed by a reconnect.
    monitors: tokio::sync::Mutex<Vec<MonitorReg>>,
    next_monitor: AtomicU64,
    state: watch::Sender<ConnState>,
}

impl Inner {
    fn current(&self) -> Option<Arc<Session>> {
        // Poisoning cannot leave an Option half-written; keep using it.
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_current(&self, s: Option<Arc<Session>>) {
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }
}

/// A cloneable handle; the background connection task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    _stop: Arc<watch::Sender<()>>,
}

/// Receives the events of one monitor; dropping it ends the subscription. The stream ends
/// (`recv` returns `None`) when the client is dropped or the server rejects the monitor.
pub struct MonitorStream {
    rx: mpsc::UnboundedReceiver<MonitorEvent>,
}

impl MonitorStream {
    /// The next event; `None` once the client is gone.
    pub async fn recv(&mut self) -> Option<MonitorEvent> {
        self.rx.recv().await
    }
}

impl Client {
    /// Connects once; fails with [`OvsdbError::Connect`] naming `socket` if that fails.
    /// Afterwards lost connections are re-established in the background.
    pub async fn connect(socket: &Path, opts: ClientOptions) -> Result<Client, OvsdbError> {
        let first = Arc::new(Session::connect(socket).await?);
        Ok(Client::spawn(socket, opts, Some(first)))
    }

    /// Starts without waiting: connection attempts (with backoff) run in the background, so
    /// the caller can report not-ready via [`Client::state`] while OVS is down.
    pub fn start(socket: &Path, opts: ClientOptions) -> Client {
        Client::spawn(socket, opts, None)
    }

    /// `first`, if given, is a fresh session with no monitors yet: it becomes current at once.
    fn spawn(socket: &Path, opts: ClientOptions, first: Option<Arc<Session>>) -> Client {
        let state = match first {
            Some(_) => ConnState::Connected { generation: 1 },
            None => ConnState::Connecting { last_error: None },
        };
        let (state, _) = watch::channel(state);
        let inner = Arc::new(Inner {
            socket: socket.to_owned(),
            opts,
            session: Mutex::new(first.clone()),
            monitors: tokio::sync::Mutex::new(Vec::new()),
            next_monitor: AtomicU64::new(1),
            state,
        });
        let (stop, stop_rx) = watch::channel(());
        tokio::spawn(supervise(inner.clone(), first, stop_rx));
        Client {
            inner,
            _stop: Arc::new(stop),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.inner.socket
    }

    /// Watches the connection state (readiness reporting, tests).
    pub fn state(&self) -> watch::Receiver<ConnState> {
        self.inner.state.subscribe()
    }

    /// Waits until connected (or `timeout`), returning the connection generation.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<u64, OvsdbError> {
        let mut rx = self.state();
        let wait = rx.wait_for(|s| matches!(s, ConnState::Connected { .. }));
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(s)) => match &*s {
                ConnState::Connected { generation } => Ok(*generation),
                ConnState::Connecting { .. } => {
                    unreachable!("wait_for returned a non-matching state")
                }
            },
            _ => Err(self.not_connected()),
        }
    }

    fn not_connected(&self) -> OvsdbError {
        OvsdbError::NotConnected {
            socket: self.inner.socket.clone(),
        }
    }

    fn session(&self) -> Result<Arc<Session>, OvsdbError> {
        self.inner.current().ok_or_else(|| self.not_connected())
    }

    /// Sends a raw JSON-RPC request (e.g. `list_dbs`, `get_schema`) and returns its result.
    pub async fn request(&self, method: &str, params: Json) -> Result<Json, OvsdbError> {
        let s = self.session()?;
        s.request(method, params, self.inner.opts.request_timeout)
            .await
    }

    /// Round trip of an `echo` request (liveness check).
    pub async fn echo(&self) -> Result<(), OvsdbError> {
        let r = self.request("echo", json!(["ping"])).await?;
        if r != json!(["ping"]) {
            return Err(OvsdbError::unexpected("echo reply", r.to_string()));
        }
        Ok(())
    }

    /// Runs `ops` as one atomic transaction. The first failing operation is reported with its
    /// index, kind and table; on success there is one [`OpResult`] per operation.
    pub async fn transact(&self, ops: &[Operation]) -> Result<Vec<OpResult>, OvsdbError> {
        let mut params = Vec::with_capacity(ops.len() + 1);
        params.push(json!(self.inner.opts.database));
        params.extend(ops.iter().map(Operation::to_json));
        let reply = self.request("transact", Json::Array(params)).await?;
        decode_results(ops, &reply)
    }

    /// Starts a monitor. If connected, the monitor request is sent now (and its error, e.g. an
    /// unknown table, returned); otherwise it is registered and starts on the next connection.
    /// Either way the stream begins with a [`MonitorEvent::Snapshot`].
    pub async fn monitor(&self, spec: &MonitorSpec) -> Result<MonitorStream, OvsdbError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let n = self.inner.next_monitor.fetch_add(1, Ordering::Relaxed);
        let reg = MonitorReg {
            id: format!("oe-monitor-{n}"),
            spec: spec.to_json(),
            events: tx,
        };
        let mut monitors = self.inner.monitors.lock().await;
        if let Some(s) = self.inner.current() {
            match register(&self.inner, &s, &reg).await {
                // Lost the connection meanwhile: the reconnect registers it.
                Ok(()) | Err(OvsdbError::Disconnected { .. } | OvsdbError::Timeout { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        monitors.push(reg);
        Ok(MonitorStream { rx })
    }
}

async fn register(inner: &Inner, s: &Session, reg: &MonitorReg) -> Result<(), OvsdbError> {
    let (db, timeout) = (&inner.opts.database, inner.opts.request_timeout);
    s.monitor(db, &reg.id, reg.spec.clone(), reg.events.clone(), timeout)
        .await
}

/// Owns the connection: waits for the session to end, tells subscribers, reconnects with
/// backoff (re-registering monitors), repeats. Stops when every `Client` handle is gone.
async fn supervise(
    inner: Arc<Inner>,
    mut active: Option<Arc<Session>>,
    mut stop: watch::Receiver<()>,
) {
    let mut backoff = inner.opts.backoff_min;
    let mut generation = u64::from(active.is_some());
    loop {
        let s = match active.take() {
            Some(s) => s,
            None => {
                let attempt = tokio::select! {
                    a = connect_and_activate(&inner) => a,
                    _ = stop.changed() => return,
                };
                match attempt {
                    Ok(s) => {
                        generation += 1;
                        backoff = inner.opts.backoff_min;
                        inner
                            .state
                            .send_replace(ConnState::Connected { generation });
                        tracing::info!(socket = %inner.socket.display(), generation, "OVSDB connected");
                        s
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "OVSDB not connected");
                        inner.state.send_replace(ConnState::Connecting {
                            last_error: Some(e.to_string()),
                        });
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.changed() => return,
                        }
                        backoff = (backoff * 2).min(inner.opts.backoff_max);
                        continue;
                    }
                }
            }
        };
        let reason = tokio::select! {
            r = s.closed() => r,
            _ = stop.changed() => return,
        };
        inner.set_current(None);
        drop(s);
        let reason = format!("connection to {} lost: {reason}", inner.socket.display());
        tracing::warn!(error = %reason, "OVSDB disconnected; reconnecting");
        inner.state.send_replace(ConnState::Connecting {
            last_error: Some(reason.clone()),
        });
        for reg in inner.monitors.lock().await.iter() {
            let _ = reg.events.send(MonitorEvent::Disconnected(reason.clone()));
        }
    }
}

async fn connect_and_activate(inner: &Inner) -> Result<Arc<Session>, OvsdbError> {
    let s = Arc::new(Session::connect(&inner.socket).await?);
    activate(inner, &s).await?;
    Ok(s)
}

/// Registers every live monitor on a fresh session (each subscriber gets a new snapshot) and
/// makes the session current, under the monitor lock.
async fn activate(inner: &Inner, s: &Arc<Session>) -> Result<(), OvsdbError> {
    let mut monitors = inner.monitors.lock().await;
    monitors.retain(|m| !m.events.is_closed());
    let mut rejected = Vec::new();
    for (i, reg) in monitors.iter().enumerate() {
        match register(inner, s, reg).await {
            Ok(()) => {}
            // The server refuses this monitor (e.g. unknown table); retrying cannot help.
            Err(e @ (OvsdbError::Rpc { .. } | OvsdbError::Decode { .. })) => {
                tracing::error!(monitor = %reg.id, error = %e, "OVSDB monitor rejected; ending its stream");
                rejected.push(i);
            }
            Err(e) => return Err(e),
        }
    }
    for i in rejected.into_iter().rev() {
        monitors.remove(i); // dropping the sender ends the subscriber's stream
    }
    inner.set_current(Some(s.clone()));
    Ok(())
}
