//! Open vSwitch adapters: the OVSDB client, bridge set-up and the OpenFlow flow programmer.

pub mod ofctl;
