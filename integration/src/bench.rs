//! Small helpers shared by the benchmarks in `integration/benches/` (knobs from the
//! environment), kept here so each benchmark reads the same way.

use anyhow::{Context, Result};

/// The number in environment variable `name`, or `default` when it is unset; an error naming
/// the variable when it is not a number.
pub fn env_or(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}
