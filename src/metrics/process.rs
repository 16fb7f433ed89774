//! Families both processes export: `ovs_egress_build_info` (version, git commit) and the
//! process's CPU time, resident memory and open file descriptors, read from `/proc/self` at
//! scrape time. Read by hand on purpose: three numbers from two files and a directory do not
//! justify a `/proc` parsing crate and its dependencies. Parsing is pure (tested below); a file
//! that cannot be read leaves its family out of the scrape rather than failing it.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binary was built from: `OVS_EGRESS_GIT_COMMIT`, set by `build.rs` from
/// git (or given in the build's environment), else "unknown".
pub fn git_commit() -> &'static str {
    match option_env!("OVS_EGRESS_GIT_COMMIT") {
        Some(commit) if !commit.is_empty() => commit,
        _ => "unknown",
    }
}

/// Register the build info and process collectors.
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(BuildInfo));
    registry.register_collector(Box::new(ProcessCollector));
}

#[derive(Debug)]
struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let one = ConstGauge::new(1i64);
        let mut metric = encoder.encode_descriptor(
            "build_info",
            "Always 1; the labels tell the version and the git commit of this binary.",
            None,
            one.metric_type(),
        )?;
        let labels = [("version", VERSION), ("git_commit", git_commit())];
        one.encode(metric.encode_family(&labels)?)
    }
}

/// CPU, memory and descriptors of this process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
}

/// `utime + stime` (fields 14 and 15 of `/proc/self/stat`, in clock ticks) as seconds, with
/// the resident set size from `/proc/self/statm` (second field, in pages).
pub fn parse_stats(
    stat: &str,
    statm: &str,
    ticks_per_second: u64,
    page_size: u64,
) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may contain spaces: fields after it
    // start behind the last ')'. Field 3 (state) is then the first.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks_per_second.max(1) as f64,
        resident_bytes: pages * page_size,
    })
}

fn sysconf(name: libc::c_int, fallback: u64) -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no memory effects.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value)
        .ok()
        .filter(|v| *v > 0)
        .unwrap_or(fallback)
}

fn read_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    parse_stats(
        &stat,
        &statm,
        sysconf(libc::_SC_CLK_TCK, 100),
        sysconf(libc::_SC_PAGESIZE, 4096),
    )
}

fn open_fds() -> Option<u64> {
    // The directory handle read_dir holds is one of the entries; it is not counted.
    let count = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(count.saturating_sub(1))
}

#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        if let Some(stats) = read_stats() {
            let cpu = ConstCounter::new(stats.cpu_seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time this process has used.",
                Some(&Unit::Seconds),
                cpu.metric_type(),
            )?;
            cpu.encode(metric)?;
            let rss = ConstGauge::new(stats.resident_bytes);
            let metric = encoder.encode_descriptor(
                "process_resident_memory",
                "Resident set size of this process.",
                Some(&Unit::Bytes),
                rss.metric_type(),
            )?;
            rss.encode(metric)?;
        }
        if let Some(fds) = open_fds() {
            let fds = ConstGauge::new(fds);
            let metric = encoder.encode_descriptor(
                "process_open_fds",
                "File descriptors this process has open.",
                None,
                fds.metric_type(),
            )?;
            fds.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_and_rss_are_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (agent (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 \
                    1000 123456 789 18446744073709551615";
        let statm = "5000 789 300 10 0 400 0";
        let stats = parse_stats(stat, statm, 100, 4096).unwrap();
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(stats.resident_bytes, 789 * 4096);
    }

    #[test]
    fn a_truncated_stat_line_gives_nothing_rather_than_a_wrong_value() {
        assert_eq!(parse_stats("1 (a) S 1 2", "1 2", 100, 4096), None);
        assert_eq!(parse_stats("no parenthesis", "1 2", 100, 4096), None);
    }

    #[test]
    fn this_process_reports_cpu_memory_and_descriptors() {
        let stats = read_stats().expect("/proc/self is readable");
        assert!(stats.resident_bytes > 0);
        assert!(open_fds().expect("/proc/self/fd is readable") >= 3);
    }
}
