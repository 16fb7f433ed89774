//! The pure core of ovs-egress: every decision, as functions of a snapshot of the cluster.
//!
//! `api` (the CRD types and their validation), `model` (the `ClusterView` every decision is
//! made from), `ipam` (pool allocation), `placement` (which Node holds each pool IP), `plan`
//! (one Node's `NodePlan`), `pipeline` (the OpenFlow pipeline as typed data), `snat` (the
//! iptables rules as text) and `render` (the offline renderer built on all of them).
//!
//! This crate never does I/O: no sockets, processes, files or clocks, and no async runtime.
//! Its `Cargo.toml` is the proof: it depends on no such crate. The adapters (`ovs-egress-ovsdb`,
//! `ovs-egress-host`, `ovs-egress-kube`) and the processes make the world match its answers.

pub mod api;
pub mod ipam;
pub mod model;
pub mod pipeline;
pub mod placement;
pub mod plan;
pub mod render;
pub mod snat;
