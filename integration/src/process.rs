//! Stopping processes this run started, by PID only (never by name). Daemons started with
//! `--detach` are not our children, so we poll `/proc` instead of `waitpid`; a zombie counts as
//! gone. Before signalling, the process name is checked when known, so a recycled PID is never
//! hit.

use std::time::{Duration, Instant};

/// True if `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: "pid (comm) S ...".
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn name_matches(pid: i32, expected: Option<&str>) -> bool {
    match expected {
        None => true,
        Some(name) => std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim_end() == name),
    }
}

fn wait_gone(pids: &[i32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pids.iter().all(|p| !is_alive(*p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to every live `(pid, expected name)` at once, waits up to `grace`, then
/// SIGKILLs the survivors and waits up to 2 s more. A zero `grace` kills at once.
/// Returns true when all are gone.
pub fn stop_all(pids: &[(i32, Option<&str>)], grace: Duration) -> bool {
    let targets: Vec<i32> = pids
        .iter()
        .filter(|(pid, name)| *pid > 0 && is_alive(*pid) && name_matches(*pid, *name))
        .map(|(pid, _)| *pid)
        .collect();
    if !grace.is_zero() {
        for pid in &targets {
            // SAFETY: kill(2) has no memory effects; the PID was checked to be ours above.
            unsafe { libc::kill(*pid, libc::SIGTERM) };
        }
        if wait_gone(&targets, grace) {
            return true;
        }
    }
    for pid in targets.iter().filter(|p| is_alive(**p)) {
        // SAFETY: as above.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    wait_gone(&targets, Duration::from_secs(2))
}

/// SIGTERM then SIGKILL one process (see [`stop_all`]) with a 2 s grace period.
pub fn kill_and_wait(pid: i32, expected_name: Option<&str>) -> bool {
    stop_all(&[(pid, expected_name)], Duration::from_secs(2))
}

/// A child process of ours, killed (SIGKILL through its own handle) and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// Records the PID in `path`, so `scripts/clean-testbed.sh` can stop the process if this
    /// run is killed before it can clean up.
    pub fn write_pid_file(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use anyhow::Context;
        std::fs::write(path, format!("{}\n", self.0.id()))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// SIGTERM, then SIGKILL after `grace`; waits until it is gone.
    pub fn stop(&mut self, grace: Duration) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            stop_all(&[(pid, None)], grace);
        }
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes one line to stderr for clean-up code (Drop): unlike `eprintln!` it never panics, so a
/// closed stderr (e.g. `demo | head`) cannot turn an unwinding clean-up into an abort that
/// leaves namespaces and processes behind.
pub fn note(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
