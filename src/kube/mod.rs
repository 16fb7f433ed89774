//! Kubernetes plumbing shared by the processes: leader election and health probes. Holds no
//! decisions about Egresses; those live in the pure core.

pub mod health;
pub mod lease;
