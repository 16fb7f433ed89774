//! ovs-egress: gives Kubernetes Pods a stable, chosen source IP for traffic leaving the cluster,
//! implementing the `crd.antrea.io` `Egress` and `ExternalIPPool` APIs on Open vSwitch.
//!
//! The pure core (`api`, `ipam`, `placement`, `plan`) holds every decision; the adapters
//! (`ovs`, `host`, `kube`) only make the world match a `NodePlan`.

pub mod agent;
pub mod api;
pub mod cni;
pub mod config;
pub mod controller;
pub mod datapath;
pub mod host;
pub mod inputs;
pub mod ipam;
pub mod kube;
pub mod membership;
pub mod metrics;
pub mod model;
pub mod ovs;
pub mod pipeline;
pub mod placement;
pub mod plan;
pub mod render;
