//! Monitors (RFC 7047 §4.1.5–4.1.6): what to watch, the table updates the server sends, the
//! events a subscriber sees (a full snapshot first and again after every reconnect, then
//! incremental updates) and a small replica that applies them.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json, json};

use super::error::OvsdbError;
use super::value::{Row, Uuid};

/// The tables (and columns; none = all) a monitor watches. Initial rows, inserts, deletes and
/// modifications are all selected.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MonitorSpec {
    tables: BTreeMap<String, Vec<String>>,
}

impl MonitorSpec {
    pub fn new() -> MonitorSpec {
        MonitorSpec::default()
    }

    /// Watches `table`, limited to `columns` (empty slice: every column).
    pub fn table(mut self, table: &str, columns: &[&str]) -> MonitorSpec {
        let cols = columns.iter().map(|c| (*c).to_owned()).collect();
        self.tables.insert(table.to_owned(), cols);
        self
    }

    pub fn to_json(&self) -> Json {
        let mut o = Map::new();
        for (table, cols) in &self.tables {
            let mut req = Map::new();
            if !cols.is_empty() {
                req.insert("columns".into(), json!(cols));
            }
            o.insert(table.clone(), Json::Object(req));
        }
        Json::Object(o)
    }
}

/// One row's change. `old` holds the previous values of the changed columns (modify) or the
/// whole row (delete); `new` holds all monitored columns after the change (absent on delete).
#[derive(Clone, Debug, PartialEq)]
pub struct RowUpdate {
    pub old: Option<Row>,
    pub new: Option<Row>,
}

/// Table name → row UUID → change.
pub type TableUpdates = BTreeMap<String, BTreeMap<Uuid, RowUpdate>>;

/// Decodes `<table-updates>`; errors name the table.
pub fn decode_table_updates(j: &Json) -> Result<TableUpdates, OvsdbError> {
    let tables = j
        .as_object()
        .ok_or_else(|| OvsdbError::unexpected("monitor update", format!("not an object: {j}")))?;
    let mut out = TableUpdates::new();
    for (table, rows) in tables {
        let rows = rows
            .as_object()
            .ok_or_else(|| OvsdbError::decode(table, "<table-update>", rows))?;
        let t = out.entry(table.clone()).or_default();
        for (uuid, change) in rows {
            let uuid = Uuid::parse(uuid)
                .ok_or_else(|| OvsdbError::decode(table, "<row uuid>", &json!(uuid)))?;
            let part = |k: &str| change.get(k).map(|r| Row::from_json(table, r)).transpose();
            t.insert(
                uuid,
                RowUpdate {
                    old: part("old")?,
                    new: part("new")?,
                },
            );
        }
    }
    Ok(out)
}

/// What a monitor subscriber receives.
#[derive(Clone, Debug, PartialEq)]
pub enum MonitorEvent {
    /// The complete current contents of the monitored tables: once when the monitor starts and
    /// again after every reconnect. Replace any state built so far; do not merge.
    Snapshot(TableUpdates),
    /// Changes since the previous event.
    Update(TableUpdates),
    /// The connection was lost (the reason is given); a `Snapshot` follows on reconnect.
    Disconnected(String),
}

/// A replica of the monitored tables built from [`MonitorEvent`]s.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableCache {
    pub tables: BTreeMap<String, BTreeMap<Uuid, Row>>,
}

impl TableCache {
    pub fn new() -> TableCache {
        TableCache::default()
    }

    /// Applies an event. A snapshot replaces everything; a disconnect keeps the last known
    /// state (it is stale until the next snapshot).
    pub fn apply(&mut self, event: &MonitorEvent) {
        let updates = match event {
            MonitorEvent::Snapshot(u) => {
                self.tables.clear();
                u
            }
            MonitorEvent::Update(u) => u,
            MonitorEvent::Disconnected(_) => return,
        };
        for (table, rows) in updates {
            let t = self.tables.entry(table.clone()).or_default();
            for (uuid, change) in rows {
                match &change.new {
                    Some(row) => {
                        let entry = t.entry(uuid.clone()).or_default();
                        entry
                            .0
                            .extend(row.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                    None => {
                        t.remove(uuid);
                    }
                }
            }
        }
    }

    /// The rows of `table` (empty if it is not monitored or has none).
    pub fn rows(&self, table: &str) -> impl Iterator<Item = (&Uuid, &Row)> {
        self.tables.get(table).into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "0f8a3e2c-1b2d-4c5e-8f90-a1b2c3d4e5f6";
    const U2: &str = "1f8a3e2c-1b2d-4c5e-8f90-a1b2c3d4e5f6";

    #[test]
    fn spec_renders_columns_only_when_limited() {
        let spec = MonitorSpec::new()
            .table("Interface", &["name", "ofport"])
            .table("Bridge", &[]);
        assert_eq!(
            spec.to_json(),
            json!({"Bridge": {}, "Interface": {"columns": ["name", "ofport"]}})
        );
    }

    #[test]
    fn cache_follows_snapshot_insert_modify_delete_and_snapshot_replaces_state() {
        let mut c = TableCache::new();
        let snap =
            decode_table_updates(&json!({"Interface": {U1: {"new": {"name": "a", "ofport": 1}}}}))
                .unwrap();
        c.apply(&MonitorEvent::Snapshot(snap.clone()));
        let ins = json!({"Interface": {U2: {"new": {"name": "b", "ofport": 2}}}});
        c.apply(&MonitorEvent::Update(decode_table_updates(&ins).unwrap()));
        let modify =
            json!({"Interface": {U1: {"old": {"ofport": 1}, "new": {"name": "a", "ofport": 5}}}});
        c.apply(&MonitorEvent::Update(
            decode_table_updates(&modify).unwrap(),
        ));
        let u1 = Uuid::parse(U1).unwrap();
        let u2 = Uuid::parse(U2).unwrap();
        assert_eq!(c.tables["Interface"][&u1].get("ofport"), Some(&5i64.into()));
        assert_eq!(c.rows("Interface").count(), 2);
        let del = json!({"Interface": {U2: {"old": {"name": "b", "ofport": 2}}}});
        c.apply(&MonitorEvent::Update(decode_table_updates(&del).unwrap()));
        assert!(!c.tables["Interface"].contains_key(&u2));
        c.apply(&MonitorEvent::Disconnected("gone".into()));
        assert_eq!(c.rows("Interface").count(), 1);
        c.apply(&MonitorEvent::Snapshot(TableUpdates::new()));
        assert_eq!(c.rows("Interface").count(), 0);
    }

    #[test]
    fn malformed_update_names_the_table() {
        let err = decode_table_updates(&json!({"Port": {"nope": {"new": {}}}})).unwrap_err();
        assert!(err.to_string().contains("Port"), "{err}");
    }
}
