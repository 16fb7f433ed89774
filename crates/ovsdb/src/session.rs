//! One JSON-RPC session on the OVSDB unix socket. A reader task decodes messages, answers the
//! server's `echo` (ovsdb-server drops clients that ignore its inactivity probe), routes replies
//! to their waiting requests and `update` notifications to their monitors; a writer task owns
//! the write half so that neither side can block the other. The session ends at the first I/O
//! or protocol error; reconnecting is the client's job, never this module's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::error::OvsdbError;
use super::monitor::{MonitorEvent, decode_table_updates};

type Reply = Result<Json, OvsdbError>;

enum Waiter {
    Reply(oneshot::Sender<Reply>),
    /// A `monitor` request: on success the reader delivers the snapshot and installs the route
    /// before it reads the next message, so no update can overtake the snapshot.
    Monitor {
        monitor_id: String,
        events: mpsc::UnboundedSender<MonitorEvent>,
        done: oneshot::Sender<Result<(), OvsdbError>>,
    },
}

struct Pending {
    method: String,
    waiter: Waiter,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    monitors: HashMap<String, mpsc::UnboundedSender<MonitorEvent>>,
    /// Why the session ended; set once.
    closed: Option<String>,
}

struct Shared {
    socket: PathBuf,
    state: Mutex<State>,
    closed_tx: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another task panicked mid-update of plain maps; the maps
        // stay structurally valid, so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self, reason: String) {
        let pending = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(reason.clone());
            st.monitors.clear();
            std::mem::take(&mut st.pending)
        };
        for (_, p) in pending {
            let err = || OvsdbError::Disconnected {
                socket: self.socket.clone(),
                method: p.method.clone(),
                reason: reason.clone(),
            };
            match p.waiter {
                Waiter::Reply(tx) => drop(tx.send(Err(err()))),
                Waiter::Monitor { done, .. } => drop(done.send(Err(err()))),
            }
        }
        self.closed_tx.send_replace(true);
    }
}

/// A connected session. Dropping it closes the connection.
pub struct Session {
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Vec<u8>>,
    next_id: AtomicU64,
    closed_rx: watch::Receiver<bool>,
}

impl Session {
    pub async fn connect(socket: &Path) -> Result<Session, OvsdbError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| OvsdbError::Connect {
                socket: socket.to_owned(),
                source,
            })?;
        let (rd, wr) = stream.into_split();
        let (closed_tx, closed_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            socket: socket.to_owned(),
            state: Mutex::new(State::default()),
            closed_tx,
        });
        let (out, out_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(shared.clone(), wr, out_rx));
        tokio::spawn(read_loop(shared.clone(), rd, out.clone()));
        Ok(Session {
            shared,
            out,
            next_id: AtomicU64::new(1),
            closed_rx,
        })
    }

    /// Resolves when the session has ended, with the reason.
    pub async fn closed(&self) -> String {
        let mut rx = self.closed_rx.clone();
        // The sender lives in `shared`, which we hold, so wait_for cannot fail.
        let _ = rx.wait_for(|c| *c).await;
        self.shared.lock().closed.clone().unwrap_or_default()
    }

    fn send(&self, method: &str, params: Json, waiter: Waiter) -> Result<u64, OvsdbError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = self.shared.lock();
            if let Some(reason) = &st.closed {
                return Err(OvsdbError::Disconnected {
                    socket: self.shared.socket.clone(),
                    method: method.to_owned(),
                    reason: reason.clone(),
                });
            }
            let method = method.to_owned();
            st.pending.insert(id, Pending { method, waiter });
        }
        let msg = json!({"id": id, "method": method, "params": params});
        // If the writer is gone the reader closes the session and fails the waiter.
        let _ = self.out.send(msg.to_string().into_bytes());
        Ok(id)
    }

    async fn wait<T>(
        &self,
        id: u64,
        method: &str,
        rx: oneshot::Receiver<Result<T, OvsdbError>>,
        timeout: Duration,
    ) -> Result<T, OvsdbError> {
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(OvsdbError::Disconnected {
                socket: self.shared.socket.clone(),
                method: method.to_owned(),
                reason: "session dropped".into(),
            }),
            Err(_) => {
                self.shared.lock().pending.remove(&id);
                Err(OvsdbError::Timeout {
                    method: method.to_owned(),
                    timeout,
                })
            }
        }
    }

    /// Sends a request and waits for its `result` (an `error` reply becomes [`OvsdbError::Rpc`]).
    pub async fn request(
        &self,
        method: &str,
        params: Json,
        timeout: Duration,
    ) -> Result<Json, OvsdbError> {
        let (tx, rx) = oneshot::channel();
        let id = self.send(method, params, Waiter::Reply(tx))?;
        self.wait(id, method, rx, timeout).await
    }

    /// Starts monitor `monitor_id`: the initial contents arrive on `events` as a
    /// [`MonitorEvent::Snapshot`], followed by every [`MonitorEvent::Update`].
    pub async fn monitor(
        &self,
        database: &str,
        monitor_id: &str,
        requests: Json,
        events: mpsc::UnboundedSender<MonitorEvent>,
        timeout: Duration,
    ) -> Result<(), OvsdbError> {
        let (done, rx) = oneshot::channel();
        let waiter = Waiter::Monitor {
            monitor_id: monitor_id.to_owned(),
            events,
            done,
        };
        let params = json!([database, monitor_id, requests]);
        let id = self.send("monitor", params, waiter)?;
        self.wait(id, "monitor", rx, timeout).await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.close("client closed the session".into());
    }
}

async fn write_loop(
    shared: Arc<Shared>,
    mut wr: tokio::net::unix::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let mut closed = shared.closed_tx.subscribe();
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = closed.wait_for(|c| *c) => None,
        };
        let Some(msg) = msg else { break };
        if let Err(e) = wr.write_all(&msg).await {
            shared.close(format!("write failed: {e}"));
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop(
    shared: Arc<Shared>,
    mut rd: tokio::net::unix::OwnedReadHalf,
    out: mpsc::UnboundedSender<Vec<u8>>,
) {
    let mut decoder = super::framing::FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut closed = shared.closed_tx.subscribe();
    let reason = loop {
        let n = tokio::select! {
            r = rd.read(&mut buf) => r,
            _ = closed.wait_for(|c| *c) => return,
        };
        let n = match n {
            Ok(0) => break "server closed the connection".to_owned(),
            Ok(n) => n,
            Err(e) => break format!("read failed: {e}"),
        };
        let msgs = match decoder.push(&buf[..n]) {
            Ok(m) => m,
            Err(e) => break format!("protocol error: {e}"),
        };
        if let Some(e) = msgs
            .into_iter()
            .find_map(|m| dispatch(&shared, &out, m).err())
        {
            break format!("protocol error: {e}");
        }
    };
    shared.close(reason);
}

/// Handles one incoming message; an error is a protocol violation that ends the session.
fn dispatch(
    shared: &Shared,
    out: &mpsc::UnboundedSender<Vec<u8>>,
    msg: Json,
) -> Result<(), String> {
    if let Some(method) = msg.get("method").and_then(Json::as_str) {
        let params = msg.get("params").cloned().unwrap_or(Json::Null);
        let id = msg.get("id").cloned().unwrap_or(Json::Null);
        return match method {
            "echo" => {
                let reply = json!({"id": id, "result": params, "error": null});
                let _ = out.send(reply.to_string().into_bytes());
                Ok(())
            }
            "update" => route_update(shared, &params),
            _ if id.is_null() => Ok(()), // notifications we do not use (e.g. "locked")
            other => {
                let err = format!("unknown method {other}");
                let reply = json!({"id": id, "result": null, "error": err});
                let _ = out.send(reply.to_string().into_bytes());
                Ok(())
            }
        };
    }
    let Some(id) = msg.get("id").and_then(Json::as_u64) else {
        return Err(format!("message without method or numeric id: {msg}"));
    };
    let Some(pending) = shared.lock().pending.remove(&id) else {
        return Ok(()); // the request timed out and was given up
    };
    let error = msg.get("error").filter(|e| !e.is_null()).cloned();
    let result = msg.get("result").cloned().unwrap_or(Json::Null);
    match (pending.waiter, error) {
        (Waiter::Reply(tx), None) => drop(tx.send(Ok(result))),
        (Waiter::Reply(tx), Some(error)) => drop(tx.send(Err(OvsdbError::Rpc {
            method: pending.method,
            error,
        }))),
        (Waiter::Monitor { done, .. }, Some(error)) => drop(done.send(Err(OvsdbError::Rpc {
            method: pending.method,
            error,
        }))),
        (
            Waiter::Monitor {
                monitor_id,
                events,
                done,
            },
            None,
        ) => {
            let outcome = decode_table_updates(&result).map(|snapshot| {
                let _ = events.send(MonitorEvent::Snapshot(snapshot));
                shared.lock().monitors.insert(monitor_id, events);
            });
            let _ = done.send(outcome);
        }
    }
    Ok(())
}

fn route_update(shared: &Shared, params: &Json) -> Result<(), String> {
    let (Some(id), Some(updates)) = (params.get(0), params.get(1)) else {
        return Err(format!(
            "update without monitor id and table updates: {params}"
        ));
    };
    let key = id
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| id.to_string());
    let updates = decode_table_updates(updates).map_err(|e| e.to_string())?;
    let mut st = shared.lock();
    if let Some(tx) = st.monitors.get(&key)
        && tx.send(MonitorEvent::Update(updates)).is_err()
    {
        st.monitors.remove(&key); // the subscriber went away
    }
    Ok(())
}
