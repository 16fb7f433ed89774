//! Watch streams: newline-delimited `{"type","object"}` events after a resourceVersion, initial
//! ADDED events for watches without one, BOOKMARKs, `timeoutSeconds`, selector transitions
//! (an object that stops matching is DELETED for that watcher), streaming lists
//! (`sendInitialEvents`), 410 Expired as an ERROR event, and forced closes from `faults`.
//! A slow watcher that falls behind the broadcast buffer is closed, never blocks writers.

use crate::ops::{Ctx, output};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Event, EventType, Store, watch_line};
use crate::table::table;
use bytes::Bytes;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

pub struct WatchParams {
    /// None for "" / "0": start with the current state.
    pub since: Option<u64>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Option<Duration>,
    pub as_table: bool,
}

struct Watcher {
    ctx: Ctx,
    p: WatchParams,
    key: String,
    api_version: String,
}

impl Watcher {
    fn matches(&self, obj: &Value) -> bool {
        (self.ctx.ns.is_empty()
            || obj["metadata"]["namespace"].as_str() == Some(self.ctx.ns.as_str()))
            && self.p.labels.matches(obj)
            && self.p.fields.matches(obj)
    }

    fn line(&self, type_: &str, obj: &Value) -> Bytes {
        if self.p.as_table {
            watch_line(
                type_,
                &table(&self.ctx.def, &self.ctx.version, &[obj], None, false),
            )
        } else {
            watch_line(type_, &output(&self.ctx.def, &self.ctx.version, obj))
        }
    }

    fn render(&self, ev: &Event) -> Option<Bytes> {
        if *ev.key != *self.key {
            return None;
        }
        let now = self.matches(&ev.object);
        let type_ = match ev.type_ {
            EventType::Modified => {
                match (ev.old.as_deref().is_some_and(|o| self.matches(o)), now) {
                    (true, true) => EventType::Modified,
                    (false, true) => EventType::Added,
                    (true, false) => EventType::Deleted,
                    (false, false) => return None,
                }
            }
            t if now => t,
            _ => return None,
        };
        let same_version = ev.object["apiVersion"].as_str() == Some(self.api_version.as_str());
        if type_ == ev.type_ && same_version && !self.p.as_table {
            Some(ev.frame())
        } else {
            Some(self.line(type_.as_str(), &ev.object))
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        watch_line(
            "BOOKMARK",
            &json!({"kind": self.ctx.def.kind, "apiVersion": self.api_version, "metadata": meta}),
        )
    }
}

/// Starts a watch; returns the receiving end of its byte stream.
pub fn start(
    store: &Store,
    ctx: Ctx,
    p: WatchParams,
    bookmark_every: Duration,
    mut close: watch::Receiver<u64>,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let w = Watcher {
        key: ctx.def.key(),
        api_version: ctx.def.api_version(&ctx.version),
        ctx,
        p,
    };
    let mut first: Vec<Bytes> = Vec::new();
    let (sub, start_rv) = {
        let st = store.lock();
        let start_rv = st.rv();
        match w.p.since.filter(|_| !w.p.send_initial_events) {
            Some(since) => match st.watch_from(since) {
                Ok((past, sub)) => {
                    first.extend(past.iter().filter_map(|e| w.render(e)));
                    (Some(sub), start_rv)
                }
                Err(e) => {
                    first.push(watch_line("ERROR", &e.to_status()));
                    (None, start_rv)
                }
            },
            None => {
                let ns = (!w.ctx.ns.is_empty()).then_some(w.ctx.ns.as_str());
                for o in st.list(&w.key, ns).iter().filter(|o| w.matches(o)) {
                    first.push(w.line("ADDED", o));
                }
                if w.p.send_initial_events {
                    first.push(w.bookmark(start_rv, true));
                }
                (Some(st.subscribe()), start_rv)
            }
        }
    };
    close.mark_unchanged();
    tokio::spawn(async move {
        for b in first {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let Some(mut sub) = sub else { return };
        let mut last_rv = start_rv;
        let mut tick = tokio::time::interval(bookmark_every);
        tick.reset();
        let deadline =
            tokio::time::sleep(w.p.timeout.unwrap_or(Duration::from_secs(365 * 24 * 3600)));
        tokio::pin!(deadline);
        loop {
            let out = tokio::select! {
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        last_rv = last_rv.max(ev.rv);
                        w.render(&ev)
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick(), if w.p.bookmarks => Some(w.bookmark(last_rv, false)),
                _ = &mut deadline => return,
                _ = close.changed() => return,
            };
            if let Some(b) = out
                && tx.send(b).await.is_err()
            {
                return;
            }
        }
    });
    rx
}

/// Validates the watch-list parameters the way a server with WatchList enabled does.
pub fn check_streaming(p: &WatchParams, rv_match: Option<&str>) -> Result<(), ApiError> {
    if p.send_initial_events && (rv_match != Some("NotOlderThan") || !p.bookmarks) {
        return Err(ApiError::new(
            422,
            "Invalid",
            "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents requires setting resourceVersionMatch=NotOlderThan and allowWatchBookmarks=true",
        ));
    }
    Ok(())
}
