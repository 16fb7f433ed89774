//! A hand-written OVSDB (RFC 7047) client on tokio + serde_json over the unix socket: typed
//! values and operations, atomic transactions, monitors that survive reconnects, echo replies.
//! (The published `ovsdb` 0.0.6 and `ovsdb-client` 0.0.1 crates fail basic use: no monitor, or a
//! codec that breaks when a reply and an update arrive in one read.) It only speaks the
//! protocol; what to put in the database is decided by its callers (`ovs::bridge`, the agent).

pub mod bridge;
mod client;
mod error;
mod framing;
mod monitor;
mod ops;
mod session;
mod value;

pub use client::{Client, ClientOptions, ConnState, MonitorStream, OPEN_VSWITCH_DB};
pub use error::OvsdbError;
pub use monitor::{MonitorEvent, MonitorSpec, RowUpdate, TableCache, TableUpdates};
pub use ops::{Condition, Function, Mutation, Mutator, OpResult, Operation, WaitUntil};
pub use value::{Atom, Row, Uuid, Value};
