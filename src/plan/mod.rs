//! ClusterView → NodePlan: everything one Node must program and report. Pure, deterministic,
//! independent of input order.
