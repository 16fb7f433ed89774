//! kube-emu as a library: the in-memory Kubernetes API server behind the `kube-emu` binary
//! (see `main.rs` for usage). Tests and benchmarks start the binary; the library exists so its
//! parts can be unit-tested. Nothing in the ovs-egress crate may depend on it.

pub mod admission;
pub mod discovery;
pub mod events;
pub mod faults;
pub mod openapi;
pub mod ops;
pub mod protobuf;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod table;
pub mod watch;
