//! ovs-egress: gives Kubernetes Pods a stable, chosen source IP for traffic leaving the cluster,
//! implementing the `crd.antrea.io` `Egress` and `ExternalIPPool` APIs on Open vSwitch.
//!
//! This crate wires the processes: the agent, the controller and the subcommands. Every decision
//! is in `ovs-egress-core`; the adapters (`ovs-egress-ovsdb`, `ovs-egress-host`,
//! `ovs-egress-kube`, and `ovs` here for OpenFlow) only make the world match a `NodePlan`.

pub mod agent;
pub mod config;
pub mod controller;
pub mod datapath;
pub mod membership;
pub mod metrics;
pub mod ovs;
pub mod render_cmd;
