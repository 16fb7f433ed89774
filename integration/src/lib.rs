//! The test bed shared by the datapath and end-to-end tests: Nodes are network namespaces with
//! their own OVS, Pods are namespaces wired by our CNI plugin, the underlay is a bridge in its own
//! namespace. Everything it creates carries a per-run prefix and is removed on drop.

pub mod apiserver;
pub mod bench;
pub mod bins;
pub mod chart;
pub mod cluster;
pub mod cmd;
pub mod cni;
pub mod datapath;
pub mod ext_server;
pub mod identity;
pub mod malformed;
pub mod netns;
pub mod node;
pub mod ovs_instance;
pub mod process;
pub mod prometheus;
pub mod relay;
pub mod traffic;
pub mod underlay;
pub mod user_guide;
pub mod webhook;

pub use netns::Netns;
pub use node::Node;
pub use ovs_instance::OvsInstance;
pub use underlay::Underlay;
