//! The figures of a run, rendered as a markdown table or JSON.

use std::fmt::Write as _;
use std::path::PathBuf;

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Median latency, ms.
    P50,
    /// 99th percentile latency, ms.
    P99,
    /// Successful replies per second.
    Throughput,
}

impl Metric {
    /// The name shown in the table.
    pub fn name(self) -> &'static str {
        match self {
            Metric::P50 => "p50 ms",
            Metric::P99 => "p99 ms",
            Metric::Throughput => "req/s",
        }
    }

    fn format(self, value: f64) -> String {
        if !value.is_finite() {
            return "—".to_string();
        }
        match self {
            Metric::P50 | Metric::P99 => format!("{value:.3}"),
            Metric::Throughput => format!("{value:.0}"),
        }
    }
}

/// One figure with its floor and its baseline.
#[derive(Debug, Clone)]
pub struct Row {
    /// The load's name.
    pub load: &'static str,
    /// Circles the load is spread over.
    pub circles: usize,
    /// Connections, one request in flight each.
    pub conns: usize,
    /// `sync` or `flush`.
    pub durability: &'static str,
    /// What `value` is.
    pub metric: Metric,
    /// The figure of the binary under test.
    pub value: f64,
    /// The floor: for latency the least the path can take, for req/s the
    /// most `conns` connections could do at the floor's latency, or the
    /// circles' workers at one script and one round trip each, if fewer.
    pub floor: f64,
    /// The same figure of the baseline binary.
    pub baseline: Option<f64>,
    /// Failed calls (both binaries).
    pub errors: u64,
    /// How busy the machine and Redis were during the load of the binary
    /// under test (closed-loop loads only).
    pub saturation: Option<crate::meter::Saturation>,
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// `nproc` and the CPU model.
    pub machine: String,
    /// When, UTC.
    pub date: String,
    /// Median Redis `PING` round trip, ms.
    pub ping_ms: f64,
    /// The binary under test.
    pub binary: PathBuf,
    /// The options the binary under test ran with beyond the load's own.
    pub extra: Vec<String>,
    /// The baseline binary.
    pub baseline: Option<PathBuf>,
    /// The figures.
    pub rows: Vec<Row>,
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "—".to_string()
    }
}

impl Report {
    /// The table, markdown-friendly, with the machine, the date and how the floor is made.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "loadgen — {} — {}", self.date, self.machine);
        let _ = write!(out, "binary: {}", self.binary.display());
        if !self.extra.is_empty() {
            let _ = write!(out, " {}", self.extra.join(" "));
        }
        let _ = writeln!(out);
        if let Some(base) = &self.baseline {
            let _ = writeln!(out, "baseline: {}", base.display());
        }
        let _ = writeln!(
            out,
            "floor = WebSocket echo (same client, same connections) + {} Redis round trips \
             (PING p50 {:.3} ms) + engine run time (median run_time_ms of the replies); for \
             req/s rows an upper bound of what the path allows: the least of connections / the floor \
             latency of one connection alone, the echo server's req/s with the same \
             connections, and circles / run time, a circle's worker running one script at a \
             time. CPU busy: \
             the share of all cores busy during the load; Redis core: the share of one core \
             redis-server used; client core: the share of one core the load generator's \
             clients used; limit: which of the three was at 90 % or more (client: the \
             figure is bounded by the clients, not by what they measure).\n",
            crate::REDIS_ROUND_TRIPS,
            self.ping_ms
        );
        let base = self.baseline.is_some();
        let mut header =
            "| load | circles | conns | durability | metric | value | floor | value/floor |"
                .to_string();
        let mut rule = "|---|---:|---:|---|---|---:|---:|---:|".to_string();
        if base {
            header.push_str(" baseline | new/baseline |");
            rule.push_str("---:|---:|");
        }
        header.push_str(" errors | CPU busy | Redis core | client core | limit |");
        rule.push_str("---:|---:|---:|---:|---|");
        let _ = writeln!(out, "{header}\n{rule}");
        for r in &self.rows {
            let _ = write!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.load,
                r.circles,
                r.conns,
                r.durability,
                r.metric.name(),
                r.metric.format(r.value),
                r.metric.format(r.floor),
                ratio(r.value, r.floor)
            );
            if base {
                match r.baseline {
                    Some(b) => {
                        let _ = write!(out, " {} | {} |", r.metric.format(b), ratio(r.value, b));
                    }
                    None => out.push_str(" n/a | n/a |"),
                }
            }
            let _ = write!(out, " {} |", r.errors);
            let _ = match r.saturation {
                Some(s) => writeln!(
                    out,
                    " {:.1} % | {:.1} % | {:.1} % | {} |",
                    s.machine * 100.0,
                    s.redis * 100.0,
                    s.client * 100.0,
                    s.limit()
                ),
                None => writeln!(out, " | | | |"),
            };
        }
        out
    }

    /// The same figures as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "load": r.load, "circles": r.circles, "conns": r.conns,
                    "durability": r.durability, "metric": r.metric.name(), "value": r.value,
                    "floor": r.floor, "baseline": r.baseline, "errors": r.errors,
                    "cpu_busy": r.saturation.map(|s| s.machine),
                    "redis_core": r.saturation.map(|s| s.redis),
                    "client_core": r.saturation.map(|s| s.client),
                    "limit": r.saturation.map(|s| s.limit()),
                })
            })
            .collect();
        serde_json::json!({
            "date": self.date, "machine": self.machine, "redis_ping_ms": self.ping_ms,
            "redis_round_trips": crate::REDIS_ROUND_TRIPS,
            "binary": self.binary, "options": self.extra, "baseline": self.baseline, "rows": rows,
        })
    }
}

/// `nproc`, the CPU model from /proc/cpuinfo and, when the kernel has one,
/// its cpuidle driver: on a KVM guest with the `haltpoll` driver and
/// `guest_halt_poll_ns` 0 every idle core halts, and waking it again
/// costs tens of µs on every hop of a sequential request.
pub fn machine() -> String {
    let idle = |path: &str| std::fs::read_to_string(path).ok();
    let driver = idle("/sys/devices/system/cpu/cpuidle/current_driver");
    let poll = idle("/sys/module/haltpoll/parameters/guest_halt_poll_ns");
    match cpuidle(driver.as_deref(), poll.as_deref()) {
        Some(idle) => format!("{}, {idle}", cpus_and_model()),
        None => cpus_and_model(),
    }
}

/// How idle cores wait, from the cpuidle driver's name and haltpoll's
/// `guest_halt_poll_ns`: `None` when the kernel names no driver.
fn cpuidle(driver: Option<&str>, poll_ns: Option<&str>) -> Option<String> {
    let driver = driver
        .map(str::trim)
        .filter(|d| !d.is_empty() && *d != "none")?;
    if driver != "haltpoll" {
        return Some(format!("cpuidle {driver}"));
    }
    Some(match poll_ns.and_then(|ns| ns.trim().parse::<u64>().ok()) {
        Some(0) => "cpuidle haltpoll with guest halt polling off".to_string(),
        Some(ns) if ns % 1000 == 0 => format!("cpuidle haltpoll polling up to {} µs", ns / 1000),
        Some(ns) => format!("cpuidle haltpoll polling up to {ns} ns"),
        None => "cpuidle haltpoll".to_string(),
    })
}

/// `nproc` and the CPU model from /proc/cpuinfo.
fn cpus_and_model() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    format!("nproc {cpus}, {model}")
}

/// The current time, UTC, to the minute.
pub fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(baseline: Option<f64>) -> Report {
        Report {
            machine: "nproc 2, Test CPU".into(),
            date: "2026-01-01 00:00 UTC".into(),
            ping_ms: 0.05,
            binary: "new".into(),
            extra: Vec::new(),
            baseline: baseline.map(|_| "old".into()),
            rows: vec![Row {
                load: "`40 + 2`",
                circles: 1,
                conns: 64,
                durability: "sync",
                metric: Metric::Throughput,
                value: 5000.0,
                floor: 10000.0,
                baseline,
                errors: 0,
                saturation: Some(crate::meter::Saturation {
                    machine: 0.95,
                    redis: 0.4,
                    client: 0.6,
                }),
            }],
        }
    }

    #[test]
    fn the_table_shows_the_ratio_to_the_floor_and_to_the_baseline_only_with_one() {
        let alone = report(None).render();
        assert!(alone.contains("nproc 2, Test CPU"), "{alone}");
        assert!(
            alone.contains(
                "| `40 + 2` | 1 | 64 | sync | req/s | 5000 | 10000 | 0.50 | 0 | 95.0 % | 40.0 % | 60.0 % | CPU |"
            ),
            "{alone}"
        );
        assert!(!alone.contains("baseline |"), "{alone}");
        let both = report(Some(2500.0)).render();
        assert!(both.contains("| 0.50 | 2500 | 2.00 | 0 |"), "{both}");
        assert_eq!(report(None).to_json()["rows"][0]["floor"], 10000.0);
        assert_eq!(report(None).to_json()["rows"][0]["limit"], "CPU");
    }

    #[test]
    fn a_share_shown_as_90_0_percent_is_named_the_limit() {
        // 89.96 % of both cores busy is printed "90.0 %": the legend says the
        // limit is what was "at 90 % or more", so the row must name it.
        let mut near = report(None);
        near.rows[0].saturation = Some(crate::meter::Saturation {
            machine: 0.8996,
            redis: 0.4,
            client: 0.6,
        });
        let shown = near.render();
        assert!(shown.contains("| 90.0 % | 40.0 % | 60.0 % |"), "{shown}");
        assert!(
            shown.contains("| 90.0 % | 40.0 % | 60.0 % | CPU |"),
            "{shown}"
        );
        assert_eq!(near.to_json()["rows"][0]["limit"], "CPU");
    }

    #[test]
    fn the_machine_names_how_idle_cores_wait() {
        assert_eq!(
            cpuidle(Some("haltpoll\n"), Some("0\n")).as_deref(),
            Some("cpuidle haltpoll with guest halt polling off")
        );
        assert_eq!(
            cpuidle(Some("haltpoll"), Some("200000")).as_deref(),
            Some("cpuidle haltpoll polling up to 200 µs")
        );
        assert_eq!(
            cpuidle(Some("haltpoll"), Some("500")).as_deref(),
            Some("cpuidle haltpoll polling up to 500 ns")
        );
        assert_eq!(
            cpuidle(Some("haltpoll"), None).as_deref(),
            Some("cpuidle haltpoll")
        );
        assert_eq!(
            cpuidle(Some("intel_idle\n"), None).as_deref(),
            Some("cpuidle intel_idle")
        );
        assert_eq!(cpuidle(Some("none\n"), None), None);
        assert_eq!(cpuidle(None, Some("0")), None);
        assert!(machine().starts_with("nproc "), "{}", machine());
    }

    #[test]
    fn the_options_of_the_binary_under_test_are_named_with_it() {
        assert!(report(None).render().contains("binary: new\n"));
        let mut tuned = report(Some(2500.0));
        tuned.extra = vec!["--claim-batch=16".into(), "--durability=flush".into()];
        let shown = tuned.render();
        assert!(
            shown.contains("binary: new --claim-batch=16 --durability=flush\nbaseline: old\n"),
            "{shown}"
        );
        assert_eq!(
            tuned.to_json()["options"],
            serde_json::json!(["--claim-batch=16", "--durability=flush"])
        );
    }
}
