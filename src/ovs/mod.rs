//! The Open vSwitch adapter: talks to OVSDB (bridge and port set-up, interface monitoring) and
//! programs OpenFlow. It only makes OVS match what the pure core decided; it decides nothing.

pub mod bridge;
pub mod ofctl;
pub mod ovsdb;
pub mod tnl_neigh;
