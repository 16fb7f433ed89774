//! Typed `transact` operations (RFC 7047 §5.2: insert, select, update, mutate, delete, wait),
//! their conditions and mutations, and decoding of the result array so that a failure names the
//! operation's index, kind and table.

use serde_json::{Map, Value as Json, json};

use super::error::OvsdbError;
use super::value::{Row, Uuid, Value};

/// Condition functions (`where` clauses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
    Includes,
    Excludes,
}

impl Function {
    fn as_str(self) -> &'static str {
        match self {
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Ge => ">=",
            Function::Gt => ">",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub column: String,
    pub function: Function,
    pub value: Value,
}

impl Condition {
    pub fn new(column: &str, function: Function, value: impl Into<Value>) -> Condition {
        Condition {
            column: column.to_owned(),
            function,
            value: value.into(),
        }
    }

    pub fn eq(column: &str, value: impl Into<Value>) -> Condition {
        Condition::new(column, Function::Eq, value)
    }

    /// `column includes value` (set/map containment, e.g. one `external_ids` pair).
    pub fn includes(column: &str, value: impl Into<Value>) -> Condition {
        Condition::new(column, Function::Includes, value)
    }

    fn to_json(&self) -> Json {
        json!([self.column, self.function.as_str(), self.value.to_json()])
    }
}

/// Mutators of a `mutate` operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutator {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    /// Set union / map insertion (existing keys keep their value).
    Insert,
    /// Set difference / map deletion (by key set or by key-value map).
    Delete,
}

impl Mutator {
    fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Mutation {
    pub column: String,
    pub mutator: Mutator,
    pub value: Value,
}

impl Mutation {
    pub fn new(column: &str, mutator: Mutator, value: impl Into<Value>) -> Mutation {
        Mutation {
            column: column.to_owned(),
            mutator,
            value: value.into(),
        }
    }

    pub fn insert(column: &str, value: impl Into<Value>) -> Mutation {
        Mutation::new(column, Mutator::Insert, value)
    }

    pub fn delete(column: &str, value: impl Into<Value>) -> Mutation {
        Mutation::new(column, Mutator::Delete, value)
    }

    fn to_json(&self) -> Json {
        json!([self.column, self.mutator.as_str(), self.value.to_json()])
    }
}

/// `wait` until the selected rows are (`Equal`) or are not (`NotEqual`) exactly the given rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitUntil {
    Equal,
    NotEqual,
}

/// One operation of a transaction. Build it with the constructors and chain the modifiers;
/// modifiers that do not apply to the kind (e.g. `named` on a select) are ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    kind: Kind,
    table: String,
    conditions: Vec<Condition>,
    row: Row,
    uuid_name: Option<String>,
    columns: Option<Vec<String>>,
    mutations: Vec<Mutation>,
    until: WaitUntil,
    rows: Vec<Row>,
    timeout_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Insert,
    Select,
    Update,
    Mutate,
    Delete,
    Wait,
}

impl Operation {
    fn new(kind: Kind, table: &str) -> Operation {
        Operation {
            kind,
            table: table.to_owned(),
            conditions: Vec::new(),
            row: Row::new(),
            uuid_name: None,
            columns: None,
            mutations: Vec::new(),
            until: WaitUntil::Equal,
            rows: Vec::new(),
            timeout_ms: None,
        }
    }

    /// Insert `row`; add `.named(..)` to reference it from later operations.
    pub fn insert(table: &str, row: Row) -> Operation {
        Operation {
            row,
            ..Operation::new(Kind::Insert, table)
        }
    }

    /// Select rows matching the conditions (all rows without any); `.columns(..)` narrows.
    pub fn select(table: &str) -> Operation {
        Operation::new(Kind::Select, table)
    }

    /// Set the columns of `row` in every matching row.
    pub fn update(table: &str, row: Row) -> Operation {
        Operation {
            row,
            ..Operation::new(Kind::Update, table)
        }
    }

    pub fn mutate(table: &str, mutations: Vec<Mutation>) -> Operation {
        Operation {
            mutations,
            ..Operation::new(Kind::Mutate, table)
        }
    }

    pub fn delete(table: &str) -> Operation {
        Operation::new(Kind::Delete, table)
    }

    /// Wait (up to `timeout_ms`, 0 = fail at once, `None` = forever) until the `columns` of the
    /// matching rows are / are not exactly `rows`; the basis of optimistic concurrency.
    pub fn wait(
        table: &str,
        columns: &[&str],
        until: WaitUntil,
        rows: Vec<Row>,
        timeout_ms: Option<u64>,
    ) -> Operation {
        Operation {
            columns: Some(columns.iter().map(|c| (*c).to_owned()).collect()),
            until,
            rows,
            timeout_ms,
            ..Operation::new(Kind::Wait, table)
        }
    }

    /// Adds a `where` condition (conditions are ANDed).
    pub fn filter(mut self, condition: Condition) -> Operation {
        self.conditions.push(condition);
        self
    }

    /// Shorthand for `.filter(Condition::eq(column, value))`.
    pub fn where_eq(self, column: &str, value: impl Into<Value>) -> Operation {
        self.filter(Condition::eq(column, value))
    }

    /// The `uuid-name` of an insert, referenced as `Atom::named(name)` in the same transaction.
    pub fn named(mut self, name: &str) -> Operation {
        self.uuid_name = Some(name.to_owned());
        self
    }

    /// Columns returned by a select.
    pub fn columns(mut self, columns: &[&str]) -> Operation {
        self.columns = Some(columns.iter().map(|c| (*c).to_owned()).collect());
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The operation name as on the wire (`insert`, `select`, ...).
    pub fn op_name(&self) -> &'static str {
        match self.kind {
            Kind::Insert => "insert",
            Kind::Select => "select",
            Kind::Update => "update",
            Kind::Mutate => "mutate",
            Kind::Delete => "delete",
            Kind::Wait => "wait",
        }
    }

    /// True for operations that can change the database.
    pub fn is_write(&self) -> bool {
        matches!(
            self.kind,
            Kind::Insert | Kind::Update | Kind::Mutate | Kind::Delete
        )
    }

    pub fn to_json(&self) -> Json {
        let mut o = Map::new();
        o.insert("op".into(), json!(self.op_name()));
        o.insert("table".into(), json!(self.table));
        let conditions = || Json::Array(self.conditions.iter().map(Condition::to_json).collect());
        match self.kind {
            Kind::Insert => {
                o.insert("row".into(), self.row.to_json());
                if let Some(n) = &self.uuid_name {
                    o.insert("uuid-name".into(), json!(n));
                }
            }
            Kind::Select => {
                o.insert("where".into(), conditions());
                if let Some(c) = &self.columns {
                    o.insert("columns".into(), json!(c));
                }
            }
            Kind::Update => {
                o.insert("where".into(), conditions());
                o.insert("row".into(), self.row.to_json());
            }
            Kind::Mutate => {
                o.insert("where".into(), conditions());
                let m = self.mutations.iter().map(Mutation::to_json).collect();
                o.insert("mutations".into(), Json::Array(m));
            }
            Kind::Delete => {
                o.insert("where".into(), conditions());
            }
            Kind::Wait => {
                o.insert("where".into(), conditions());
                o.insert(
                    "columns".into(),
                    json!(self.columns.clone().unwrap_or_default()),
                );
                let until = match self.until {
                    WaitUntil::Equal => "==",
                    WaitUntil::NotEqual => "!=",
                };
                o.insert("until".into(), json!(until));
                o.insert(
                    "rows".into(),
                    Json::Array(self.rows.iter().map(Row::to_json).collect()),
                );
                if let Some(t) = self.timeout_ms {
                    o.insert("timeout".into(), json!(t));
                }
            }
        }
        Json::Object(o)
    }
}

/// The result of one successful operation: `uuid` for insert, `rows` for select, `count` for
/// update/mutate/delete; wait has none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpResult {
    pub uuid: Option<Uuid>,
    pub rows: Option<Vec<Row>>,
    pub count: Option<u64>,
}

impl OpResult {
    /// The selected rows (empty for non-select operations).
    pub fn rows(&self) -> &[Row] {
        self.rows.as_deref().unwrap_or_default()
    }
}

fn error_text(r: &Map<String, Json>) -> (String, Option<String>) {
    let text = |k: &str| r.get(k).and_then(Json::as_str).map(str::to_owned);
    let error = text("error").unwrap_or_else(|| r["error"].to_string());
    (error, text("details"))
}

/// Decodes the result array of `transact(ops)`: the first error becomes
/// [`OvsdbError::OpFailed`] (or [`OvsdbError::CommitFailed`] when it follows the last operation).
pub fn decode_results(ops: &[Operation], reply: &Json) -> Result<Vec<OpResult>, OvsdbError> {
    let items = reply.as_array().ok_or_else(|| {
        OvsdbError::unexpected("transact reply", format!("not an array: {reply}"))
    })?;
    for (index, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            continue; // null: not executed because an earlier operation failed
        };
        if obj.contains_key("error") {
            let (error, details) = error_text(obj);
            return Err(match ops.get(index) {
                Some(op) => OvsdbError::OpFailed {
                    index,
                    op: op.op_name(),
                    table: op.table.clone(),
                    error,
                    details,
                },
                None => OvsdbError::CommitFailed { error, details },
            });
        }
    }
    if items.len() < ops.len() {
        return Err(OvsdbError::unexpected(
            "transact reply",
            format!("{} results for {} operations", items.len(), ops.len()),
        ));
    }
    ops.iter()
        .zip(items)
        .map(|(op, item)| decode_one(op, item))
        .collect()
}

fn decode_one(op: &Operation, item: &Json) -> Result<OpResult, OvsdbError> {
    let mut r = OpResult::default();
    if let Some(u) = item.get("uuid") {
        let uuid = super::value::Atom::from_json(u).and_then(|a| a.as_uuid().cloned());
        r.uuid = Some(uuid.ok_or_else(|| OvsdbError::decode(&op.table, "uuid", u))?);
    }
    if let Some(rows) = item.get("rows") {
        let rows = rows
            .as_array()
            .ok_or_else(|| OvsdbError::decode(&op.table, "rows", rows))?;
        r.rows = Some(
            rows.iter()
                .map(|row| Row::from_json(&op.table, row))
                .collect::<Result<_, _>>()?,
        );
    }
    r.count = item.get("count").and_then(Json::as_u64);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Atom;

    #[test]
    fn operations_render_rfc7047_json() {
        let ins = Operation::insert("Port", Row::new().with("name", "p0")).named("port");
        assert_eq!(
            ins.to_json(),
            json!({"op": "insert", "table": "Port", "row": {"name": "p0"}, "uuid-name": "port"})
        );
        let mutate = Operation::mutate(
            "Bridge",
            vec![Mutation::insert("ports", Value::set([Atom::named("port")]))],
        )
        .where_eq("name", "br-int");
        assert_eq!(
            mutate.to_json(),
            json!({"op": "mutate", "table": "Bridge", "where": [["name", "==", "br-int"]],
                   "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]]})
        );
        let wait = Operation::wait("Bridge", &["name"], WaitUntil::NotEqual, vec![], Some(0));
        assert_eq!(
            wait.to_json(),
            json!({"op": "wait", "table": "Bridge", "where": [], "columns": ["name"],
                   "until": "!=", "rows": [], "timeout": 0})
        );
        let sel = Operation::select("Interface")
            .filter(Condition::includes(
                "external_ids",
                Value::map([("k", "v")]),
            ))
            .columns(&["name"]);
        assert_eq!(
            sel.to_json(),
            json!({"op": "select", "table": "Interface", "columns": ["name"],
                   "where": [["external_ids", "includes", ["map", [["k", "v"]]]]]})
        );
    }

    #[test]
    fn failed_operation_error_names_index_kind_and_table() {
        let ops = [
            Operation::select("Bridge"),
            Operation::insert("Port", Row::new()),
        ];
        let reply =
            json!([{"rows": []}, {"error": "constraint violation", "details": "name missing"}]);
        let err = decode_results(&ops, &reply).unwrap_err().to_string();
        assert!(
            err.contains("operation 1 (insert on Port)")
                && err.contains("constraint violation")
                && err.contains("name missing"),
            "{err}"
        );
        let commit = json!([{"rows": []}, {"uuid": ["uuid", "0f8a3e2c-1b2d-4c5e-8f90-a1b2c3d4e5f6"]},
                            {"error": "referential integrity violation"}]);
        let err = decode_results(&ops, &commit).unwrap_err().to_string();
        assert!(
            err.contains("commit failed: referential integrity"),
            "{err}"
        );
    }

    #[test]
    fn results_decode_uuid_rows_and_count() {
        let ops = [
            Operation::insert("Bridge", Row::new()),
            Operation::select("Bridge"),
            Operation::delete("Bridge"),
        ];
        let reply = json!([{"uuid": ["uuid", "0f8a3e2c-1b2d-4c5e-8f90-a1b2c3d4e5f6"]},
                           {"rows": [{"name": "br-int"}]}, {"count": 2}]);
        let r = decode_results(&ops, &reply).unwrap();
        assert_eq!(
            r[0].uuid.as_ref().map(Uuid::as_str),
            Some("0f8a3e2c-1b2d-4c5e-8f90-a1b2c3d4e5f6")
        );
        assert_eq!(r[1].rows()[0].str("Bridge", "name").unwrap(), "br-int");
        assert_eq!(r[2].count, Some(2));
    }
}
