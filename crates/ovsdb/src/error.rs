//! Errors of the OVSDB client. Each names what it concerns: the socket path for transport
//! problems, the RPC method, or the operation index, kind and table of a failed transaction.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value as Json;

#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    #[error("cannot connect to OVSDB at {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("not connected to OVSDB at {} (reconnecting)", socket.display())]
    NotConnected { socket: PathBuf },
    #[error("connection to OVSDB at {} lost during {method}: {reason}", socket.display())]
    Disconnected {
        socket: PathBuf,
        method: String,
        reason: String,
    },
    #[error("OVSDB at {} broke the protocol: {detail}", socket.display())]
    Protocol { socket: PathBuf, detail: String },
    #[error("OVSDB {method} got no reply within {timeout:?}")]
    Timeout { method: String, timeout: Duration },
    #[error("OVSDB {method} failed: {error}")]
    Rpc { method: String, error: Json },
    #[error(
        "OVSDB transact: operation {index} ({op} on {table}) failed: {error}{}",
        details_suffix(details)
    )]
    OpFailed {
        index: usize,
        op: &'static str,
        table: String,
        error: String,
        details: Option<String>,
    },
    #[error("OVSDB transact: commit failed: {error}{}", details_suffix(details))]
    CommitFailed {
        error: String,
        details: Option<String>,
    },
    #[error("OVSDB {table}.{column}: unexpected value {value}")]
    Decode {
        table: String,
        column: String,
        value: String,
    },
    #[error("OVSDB {table} row has no column {column} (not selected or monitored?)")]
    MissingColumn { table: String, column: String },
    #[error("OVSDB {what}: {detail}")]
    Unexpected { what: String, detail: String },
}

fn details_suffix(details: &Option<String>) -> String {
    details
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

impl OvsdbError {
    pub(crate) fn decode(table: &str, column: &str, value: &Json) -> OvsdbError {
        let mut value = value.to_string();
        if value.len() > 200 {
            let cut = (0..=200)
                .rev()
                .find(|i| value.is_char_boundary(*i))
                .unwrap_or(0);
            value.truncate(cut);
            value.push('…');
        }
        OvsdbError::Decode {
            table: table.to_owned(),
            column: column.to_owned(),
            value,
        }
    }

    pub(crate) fn unexpected(what: impl Into<String>, detail: impl Into<String>) -> OvsdbError {
        OvsdbError::Unexpected {
            what: what.into(),
            detail: detail.into(),
        }
    }
}
