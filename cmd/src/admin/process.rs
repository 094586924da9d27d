//! The process's own resource use, read from `/proc/self` at scrape time:
//! the standard `process_*` metrics every Prometheus client library
//! exports under these names (dashboards expect them).

use std::time::{SystemTime, UNIX_EPOCH};

/// What `/proc/self` says now; a field is `None` where it cannot be read
/// (not Linux, a restricted `/proc`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessStats {
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// Reads [`ProcessStats`] of this process.
pub fn read() -> ProcessStats {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15, starttime 22.
    let after = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>());
    let field = |n: usize| -> Option<u64> { after.as_ref()?.get(n - 3)?.parse().ok() };
    let cpu_seconds = match (field(14), field(15)) {
        (Some(u), Some(s)) => Some((u + s) as f64 / USER_HZ),
        _ => None,
    };
    let start_time_seconds = match (field(22), boot_time()) {
        (Some(start), Some(boot)) => Some(boot + start as f64 / USER_HZ),
        _ => None,
    };
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    ProcessStats {
        rss_bytes: rss_bytes(),
        cpu_seconds,
        open_fds,
        max_fds: max_fds(),
        start_time_seconds,
    }
}

/// `USER_HZ`, the unit of /proc's CPU times: 100 on every Linux
/// architecture (the kernel converts to it for user space), so no
/// `sysconf` call (and no `unsafe`) is needed.
const USER_HZ: f64 = 100.0;

/// Resident memory from /proc/self/status (`VmRSS: N kB`).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    line["btime ".len()..].trim().parse().ok()
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Seconds since the Unix epoch now (for tests comparing start times).
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_cpu_fds_and_started_before_now() {
        let stats = read();
        assert!(stats.rss_bytes.expect("rss") > 0);
        assert!(stats.cpu_seconds.expect("cpu") >= 0.0);
        assert!(stats.open_fds.expect("fds") >= 3);
        assert!(stats.max_fds.expect("limit") > 0);
        let started = stats.start_time_seconds.expect("start");
        assert!(
            started <= now_seconds() + 1.0 && started > 1.0e9,
            "{started}"
        );
    }
}
