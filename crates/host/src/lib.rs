//! Host-side adapters of the egress Node: iptables SNAT by mark, egress IPs on a device,
//! gratuitous ARP / unsolicited NA, and the set of IPs configured on this Node.
//!
//! Every adapter acts on the network namespace of the calling thread (the agent runs in the
//! Node's namespace; tests call them from a thread that entered a namespace they created). They
//! take plain inputs (IPs, marks, device names) and never decide anything: which IP gets which
//! mark, and which IPs this Node holds, is the plan's business.

pub mod addresses;
pub mod advertise;
pub mod iptables;
pub mod local_ips;
pub mod routes;
