//! OVSDB data in its RFC 7047 §5.1 JSON notation: atoms (string, integer, real, boolean, uuid,
//! named-uuid), sets and maps, and rows. The wire form carries no schema, so decoding is
//! structural (a one-element set arrives as a bare atom); the accessors therefore accept both
//! forms and name the column they were asked for when the shape is wrong.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Value as Json, json};

use super::error::OvsdbError;

/// A row UUID as the server prints it (lowercase 8-4-4-4-12 hex).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid(String);

impl Uuid {
    /// Accepts the canonical 36-character form only.
    pub fn parse(s: &str) -> Option<Uuid> {
        let ok = s.len() == 36
            && s.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            });
        ok.then(|| Uuid(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One OVSDB atom.
#[derive(Clone, Debug, PartialEq)]
pub enum Atom {
    String(String),
    Integer(i64),
    Real(f64),
    Boolean(bool),
    Uuid(Uuid),
    /// A reference to a row inserted earlier in the same transaction (`uuid-name` of an insert).
    NamedUuid(String),
}

impl Atom {
    pub fn string(s: impl Into<String>) -> Atom {
        Atom::String(s.into())
    }

    pub fn named(name: impl Into<String>) -> Atom {
        Atom::NamedUuid(name.into())
    }

    pub fn to_json(&self) -> Json {
        match self {
            Atom::String(s) => json!(s),
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => json!(r),
            Atom::Boolean(b) => json!(b),
            Atom::Uuid(u) => json!(["uuid", u.as_str()]),
            Atom::NamedUuid(n) => json!(["named-uuid", n]),
        }
    }

    /// Decodes an atom; `None` if `j` is not one (e.g. a set or map).
    pub fn from_json(j: &Json) -> Option<Atom> {
        Some(match j {
            Json::String(s) => Atom::String(s.clone()),
            Json::Bool(b) => Atom::Boolean(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Atom::Integer(i),
                None => Atom::Real(n.as_f64()?),
            },
            Json::Array(a) => match (a.first()?.as_str()?, a.get(1)?.as_str()?, a.len()) {
                ("uuid", u, 2) => Atom::Uuid(Uuid::parse(u)?),
                ("named-uuid", n, 2) => Atom::NamedUuid(n.to_owned()),
                _ => return None,
            },
            _ => return None,
        })
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_uuid(&self) -> Option<&Uuid> {
        match self {
            Atom::Uuid(u) => Some(u),
            _ => None,
        }
    }
}

impl From<&str> for Atom {
    fn from(s: &str) -> Atom {
        Atom::String(s.to_owned())
    }
}
impl From<String> for Atom {
    fn from(s: String) -> Atom {
        Atom::String(s)
    }
}
impl From<i64> for Atom {
    fn from(i: i64) -> Atom {
        Atom::Integer(i)
    }
}
impl From<f64> for Atom {
    fn from(r: f64) -> Atom {
        Atom::Real(r)
    }
}
impl From<bool> for Atom {
    fn from(b: bool) -> Atom {
        Atom::Boolean(b)
    }
}
impl From<Uuid> for Atom {
    fn from(u: Uuid) -> Atom {
        Atom::Uuid(u)
    }
}

/// A column value: an atom, a set of atoms or a map between atoms.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Atom(Atom),
    Set(Vec<Atom>),
    Map(Vec<(Atom, Atom)>),
}

impl Value {
    /// The empty set (also how an optional column is cleared).
    pub fn empty_set() -> Value {
        Value::Set(Vec::new())
    }

    pub fn set<A: Into<Atom>>(atoms: impl IntoIterator<Item = A>) -> Value {
        Value::Set(atoms.into_iter().map(Into::into).collect())
    }

    pub fn map<K: Into<Atom>, V: Into<Atom>>(pairs: impl IntoIterator<Item = (K, V)>) -> Value {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    pub fn to_json(&self) -> Json {
        match self {
            Value::Atom(a) => a.to_json(),
            Value::Set(s) => json!(["set", s.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Value::Map(m) => json!([
                "map",
                m.iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    /// Decodes a value; `None` if `j` is not valid OVSDB notation.
    pub fn from_json(j: &Json) -> Option<Value> {
        if let Some(a) = Atom::from_json(j) {
            return Some(Value::Atom(a));
        }
        let arr = j.as_array()?;
        match (arr.first()?.as_str()?, arr.get(1)?.as_array()?, arr.len()) {
            ("set", items, 2) => items
                .iter()
                .map(Atom::from_json)
                .collect::<Option<_>>()
                .map(Value::Set),
            ("map", pairs, 2) => pairs
                .iter()
                .map(|p| match p.as_array()?.as_slice() {
                    [k, v] => Some((Atom::from_json(k)?, Atom::from_json(v)?)),
                    _ => None,
                })
                .collect::<Option<_>>()
                .map(Value::Map),
            _ => None,
        }
    }

    /// The atoms of a set (a bare atom is a one-element set); `None` for a map.
    pub fn as_set(&self) -> Option<&[Atom]> {
        match self {
            Value::Atom(a) => Some(std::slice::from_ref(a)),
            Value::Set(s) => Some(s),
            Value::Map(_) => None,
        }
    }

    /// The single atom of an atom or one-element set; `None` for an empty set (unset optional).
    pub fn as_atom(&self) -> Option<&Atom> {
        match self.as_set()? {
            [a] => Some(a),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Atom, Atom)]> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }
}

impl<A: Into<Atom>> From<A> for Value {
    fn from(a: A) -> Value {
        Value::Atom(a.into())
    }
}

/// Column name → value, as sent in `insert`/`update` and received from `select`/monitors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row(pub BTreeMap<String, Value>);

impl Row {
    pub fn new() -> Row {
        Row::default()
    }

    /// Adds or replaces a column (builder style).
    pub fn with(mut self, column: &str, value: impl Into<Value>) -> Row {
        self.0.insert(column.to_owned(), value.into());
        self
    }

    pub fn get(&self, column: &str) -> Option<&Value> {
        self.0.get(column)
    }

    pub fn to_json(&self) -> Json {
        Json::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }

    /// Decodes a row of `table`; the error names the table and the offending column.
    pub fn from_json(table: &str, j: &Json) -> Result<Row, OvsdbError> {
        let obj = j
            .as_object()
            .ok_or_else(|| OvsdbError::decode(table, "row", j))?;
        obj.iter()
            .map(|(col, v)| {
                Value::from_json(v)
                    .map(|v| (col.clone(), v))
                    .ok_or_else(|| OvsdbError::decode(table, col, v))
            })
            .collect::<Result<_, _>>()
            .map(Row)
    }

    fn column(&self, table: &str, column: &str) -> Result<&Value, OvsdbError> {
        self.get(column).ok_or_else(|| OvsdbError::MissingColumn {
            table: table.to_owned(),
            column: column.to_owned(),
        })
    }

    /// A string column (`table` is only used in the error).
    pub fn str(&self, table: &str, column: &str) -> Result<&str, OvsdbError> {
        let v = self.column(table, column)?;
        v.as_atom()
            .and_then(Atom::as_str)
            .ok_or_else(|| OvsdbError::decode(table, column, &v.to_json()))
    }

    /// An optional (0..1) column: `None` when it is the empty set.
    pub fn optional(&self, table: &str, column: &str) -> Result<Option<&Atom>, OvsdbError> {
        let v = self.column(table, column)?;
        match v.as_set() {
            Some([]) => Ok(None),
            Some([a]) => Ok(Some(a)),
            _ => Err(OvsdbError::decode(table, column, &v.to_json())),
        }
    }

    /// A string→string map column (e.g. `external_ids`, `options`, `other_config`).
    pub fn string_map(
        &self,
        table: &str,
        column: &str,
    ) -> Result<BTreeMap<String, String>, OvsdbError> {
        let v = self.column(table, column)?;
        let bad = || OvsdbError::decode(table, column, &v.to_json());
        v.as_map()
            .ok_or_else(bad)?
            .iter()
            .map(|(k, val)| match (k.as_str(), val.as_str()) {
                (Some(k), Some(val)) => Ok((k.to_owned(), val.to_owned())),
                _ => Err(bad()),
            })
            .collect()
    }

    /// The UUIDs of a set-of-references column (e.g. `Bridge.ports`).
    pub fn uuids(&self, table: &str, column: &str) -> Result<Vec<Uuid>, OvsdbError> {
        let v = self.column(table, column)?;
        let bad = || OvsdbError::decode(table, column, &v.to_json());
        v.as_set()
            .ok_or_else(bad)?
            .iter()
            .map(|a| a.as_uuid().cloned().ok_or_else(bad))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoms_sets_and_maps_round_trip_through_rfc7047_json() {
        let u = Uuid::parse("0f8a3e2c-1b2d-4c5e-8f90-a1b2c3d4e5f6").unwrap();
        let values = [
            Value::from("br-int"),
            Value::from(42i64),
            Value::from(1.5f64),
            Value::from(true),
            Value::from(u.clone()),
            Value::from(Atom::named("row1")),
            Value::set([Atom::from(u), Atom::named("p")]),
            Value::empty_set(),
            Value::map([("iface-id", "pod-a"), ("ip", "10.0.0.2")]),
        ];
        for v in values {
            assert_eq!(
                Value::from_json(&v.to_json()).as_ref(),
                Some(&v),
                "{}",
                v.to_json()
            );
        }
        assert_eq!(
            Value::map([("k", 1i64)]).to_json(),
            json!(["map", [["k", 1]]])
        );
        assert_eq!(
            Value::from(Atom::named("gw")).to_json(),
            json!(["named-uuid", "gw"])
        );
    }

    #[test]
    fn malformed_values_are_rejected_not_guessed() {
        for j in [
            json!(["uuid", "not-a-uuid"]),
            json!(["set", "x"]),
            json!(["map", [["k"]]]),
            json!(["map", [[["set", []], "v"]]]),
            json!({"a": 1}),
            json!(null),
        ] {
            assert_eq!(Value::from_json(&j), None, "{j}");
        }
    }

    #[test]
    fn row_accessors_accept_bare_atoms_as_sets_and_name_the_column_on_mismatch() {
        let row = Row::from_json(
            "Interface",
            &json!({"name": "gw0", "ofport": ["set", []], "external_ids": ["map", [["a", "b"]]],
                    "mac_in_use": "02:00:00:00:00:01"}),
        )
        .unwrap();
        assert_eq!(row.str("Interface", "name").unwrap(), "gw0");
        assert_eq!(row.optional("Interface", "ofport").unwrap(), None);
        assert_eq!(
            row.string_map("Interface", "external_ids").unwrap(),
            BTreeMap::from([("a".to_owned(), "b".to_owned())])
        );
        let err = row.string_map("Interface", "name").unwrap_err().to_string();
        assert!(err.contains("Interface") && err.contains("name"), "{err}");
        let err = row.str("Interface", "mtu").unwrap_err().to_string();
        assert!(err.contains("Interface") && err.contains("mtu"), "{err}");
    }
}
