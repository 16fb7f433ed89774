//! The OpenFlow side of the Open vSwitch adapter: programs the pipeline's flows (`ofctl`) and
//! OVS's tunnel neighbours (`tnl_neigh`). It only makes OVS match what the pure core decided;
//! it decides nothing. (OVSDB, the bridge and its ports are in `ovs-egress-ovsdb`, which the CNI
//! plugin shares.)

pub mod ofctl;
pub mod tnl_neigh;
