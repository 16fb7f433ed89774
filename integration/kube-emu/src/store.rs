//! In-memory object storage: one global resourceVersion counter (as etcd's revision), objects per
//! resource, a bounded history of change events for watches, and a broadcast of new events.
//! Every mutation goes through `State::commit`, under one lock, so lists, history and watch
//! subscriptions always agree. It knows nothing about HTTP or request semantics.

use crate::resources::{ResourceDef, builtins};
use crate::status::ApiError;
use bytes::Bytes;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A stored object and its JSON encoding, built once when first needed (lists, watch lines), so
/// serving an unchanged object again costs a copy, not a serialization.
#[derive(Debug)]
pub struct Stored {
    value: Value,
    json: OnceLock<Bytes>,
}

impl Stored {
    pub fn json(&self) -> Bytes {
        // Serializing a Value into a Vec cannot fail (no I/O, string keys only).
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&self.value).unwrap_or_default()))
            .clone()
    }
}

impl std::ops::Deref for Stored {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.value
    }
}

/// Shared handle to a stored object.
pub type Obj = Arc<Stored>;

/// One change, kept in the history and broadcast to watchers.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub type_: EventType,
    /// Storage key of the resource (`ResourceDef::key`).
    pub key: Arc<str>,
    pub object: Obj,
    /// The object before a MODIFIED change (watch selectors turn transitions into ADDED/DELETED).
    pub old: Option<Obj>,
    /// The serialized `{"type":..,"object":..}\n` line, built once for all watchers.
    frame: OnceLock<Bytes>,
}

impl Event {
    /// The watch line for this event as stored (same type, stored apiVersion).
    pub fn frame(&self) -> Bytes {
        self.frame
            .get_or_init(|| watch_line_raw(self.type_.as_str(), &self.object.json()))
            .clone()
    }
}

/// `{"type":T,"object":O}\n` from an already encoded object.
pub fn watch_line_raw(type_: &str, object: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(object.len() + 32);
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(type_.as_bytes());
    buf.extend_from_slice(b"\",\"object\":");
    buf.extend_from_slice(object);
    buf.extend_from_slice(b"}\n");
    Bytes::from(buf)
}

/// `{"type":T,"object":O}\n`.
pub fn watch_line(type_: &str, object: &Value) -> Bytes {
    let mut buf = Vec::with_capacity(512);
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(type_.as_bytes());
    buf.extend_from_slice(b"\",\"object\":");
    // Serializing a Value into a Vec cannot fail (no I/O, string keys only).
    let _ = serde_json::to_writer(&mut buf, object);
    buf.extend_from_slice(b"}\n");
    Bytes::from(buf)
}

type ObjKey = (String, String);

/// Receives every event committed after subscribing.
pub type Subscription = broadcast::Receiver<Arc<Event>>;

pub struct State {
    pub defs: BTreeMap<String, Arc<ResourceDef>>,
    objects: HashMap<String, BTreeMap<ObjKey, Obj>>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    history_cap: usize,
    /// Watches from a resourceVersion below this get 410 Expired.
    compacted: u64,
    tx: broadcast::Sender<Arc<Event>>,
    /// Counter for uids (unique per process).
    uid_seq: u64,
    /// The Service ClusterIP range (`--service-cidr`): network address and prefix length.
    pub service_cidr: (std::net::Ipv4Addr, u8),
}

/// Shared handle to the state.
pub struct Store {
    state: Mutex<State>,
}

impl Store {
    pub fn new(history_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(16384);
        let mut defs = BTreeMap::new();
        for d in builtins() {
            defs.insert(d.id(), Arc::new(d));
        }
        Store {
            state: Mutex::new(State {
                defs,
                objects: HashMap::new(),
                rv: 1,
                history: VecDeque::new(),
                history_cap: history_cap.max(1),
                compacted: 1,
                tx,
                uid_seq: 0,
                service_cidr: (std::net::Ipv4Addr::new(10, 96, 0, 0), 12),
            }),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a handler panicked mid-mutation; the data is still the last
        // committed state (commit never panics halfway), so keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// Finds a served resource by group, version and plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        let key = if group.is_empty() {
            plural.to_string()
        } else {
            format!("{plural}.{group}")
        };
        self.defs
            .get(&key)
            .filter(|d| d.version(version).is_some())
            .cloned()
    }

    /// Finds a resource by `apiVersion` and `kind` (snapshot loading).
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<(Arc<ResourceDef>, String)> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.defs
            .values()
            .find(|d| d.group == group && d.kind == kind && d.version(version).is_some())
            .map(|d| (d.clone(), version.to_string()))
    }

    pub fn next_uid(&mut self) -> String {
        self.uid_seq += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let a = (nanos as u64) ^ (std::process::id() as u64).rotate_left(32);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            (a & 0xfff) as u16,
            (self.uid_seq >> 48) & 0xfff,
            self.uid_seq & 0xffff_ffff_ffff
        )
    }

    pub fn get(&self, key: &str, ns: &str, name: &str) -> Option<Obj> {
        self.objects
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects of a resource, optionally in one namespace, ordered by namespace then name.
    pub fn list(&self, key: &str, ns: Option<&str>) -> Vec<Obj> {
        let Some(m) = self.objects.get(key) else {
            return Vec::new();
        };
        match ns {
            Some(ns) => m
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => m.values().cloned().collect(),
        }
    }

    /// Stores (or removes, for Deleted) an object with a fresh resourceVersion and records the event.
    pub fn commit(&mut self, key: &str, type_: EventType, mut obj: Value) -> Obj {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let obj = Arc::new(Stored {
            value: obj,
            json: OnceLock::new(),
        });
        let map = self.objects.entry(key.to_string()).or_default();
        let old = if type_ == EventType::Deleted {
            map.remove(&(ns, name))
        } else {
            map.insert((ns, name), obj.clone())
        };
        let ev = Arc::new(Event {
            rv: self.rv,
            type_,
            key: Arc::from(key),
            object: obj.clone(),
            old: if type_ == EventType::Modified {
                old
            } else {
                None
            },
            frame: OnceLock::new(),
        });
        if self.history.len() >= self.history_cap
            && let Some(dropped) = self.history.pop_front()
        {
            self.compacted = dropped.rv;
        }
        self.history.push_back(ev.clone());
        // No receivers is fine: nobody watches yet.
        let _ = self.tx.send(ev);
        obj
    }

    /// Drops all history: every watch from an older resourceVersion will get 410 Expired.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// Events of `key` after `since`, plus a subscription for later ones (no gap, no duplicate).
    pub fn watch_from(&self, since: u64) -> Result<(Vec<Arc<Event>>, Subscription), ApiError> {
        if since < self.compacted {
            return Err(ApiError::expired(since, self.compacted));
        }
        let past = self
            .history
            .iter()
            .filter(|e| e.rv > since)
            .cloned()
            .collect();
        Ok((past, self.tx.subscribe()))
    }

    /// A subscription starting now (for watches that begin with the current state).
    pub fn subscribe(&self) -> Subscription {
        self.tx.subscribe()
    }

    /// Removes a resource definition and all its objects (CRD deletion).
    pub fn drop_resource(&mut self, key: &str) {
        self.defs.remove(key);
        for obj in self.list(key, None) {
            self.commit(key, EventType::Deleted, Value::clone(&obj));
        }
    }
}
