//! Kubernetes plumbing shared by the processes: leader election, health probes, reflectors,
//! core-object conversion into the model, and the agent's status writer and event recorder.
//! Holds no decisions about Egresses; those live in the pure core.

pub mod convert;
pub mod events;
pub mod health;
pub mod lease;
pub mod reflect;
pub mod status;
