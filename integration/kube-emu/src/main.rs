//! kube-emu: an in-memory Kubernetes API server for tests (see the crate description).
fn main() {}
