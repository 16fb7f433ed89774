//! Benchmarks of the pure core (run with `cargo bench --bench core`).
fn main() {}
