//! The metrics every circle records into, in the Prometheus data model
//! (through `prometheus-client`).
//!
//! Place in the graph: `telemetry` → `client` (for the fixed set of failure
//! kinds). `worker` records task outcomes and timings into a [`TaskMetrics`],
//! `server_ws` rejected upgrades and bytes into a [`ServerMetrics`]; `cmd`
//! builds the one [`Metrics`] of the process, registers it with the registry
//! its admin endpoint serves, and adds what it samples at scrape time itself
//! (queue lengths, connections, OurDB sizes, the process).
//!
//! Recording costs no lock shared between circles: a circle's handles are
//! resolved once, when the circle starts ([`Metrics::tasks`],
//! [`Metrics::server`]); a counter is then one atomic add and a histogram
//! takes only its own series' lock. Every label value comes from a fixed set
//! (the circle names of circles.json, [`client::FailureKind::KNOWN`],
//! [`Rejection`]), never from a task id or a message.
//!
//! `prometheus-client` writes label values as it is given them, unescaped.
//! A circle's name is free text (`The "A" Team`, `C:\temp`), so every label
//! value taken from a name goes through [`escape_label_value`], here through
//! [`LabelText`] and in `cmd`'s scrape-time collector directly: one `"` left
//! as it is would make the whole scrape unparseable.
//!
//! ```
//! let mut registry = prometheus_client::registry::Registry::default();
//! let metrics = telemetry::Metrics::new(&mut registry);
//! let alpha = metrics.tasks("Alpha");
//! alpha.completed();
//! alpha.failed(&client::FailureKind::Runtime);
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
//! assert!(text.contains(r#"circles_tasks_finished_total{circle="Alpha",outcome="completed",kind="none"} 1"#));
//! ```

use std::sync::Arc;
use std::time::Duration;

use client::FailureKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod label;

pub use label::{LabelText, escape_label_value};

/// The kind label of a completed task.
pub const NO_KIND: &str = "none";
/// The kind label of a failure kind outside [`FailureKind::KNOWN`].
pub const OTHER_KIND: &str = "other";

/// Upper bounds of the time histograms, in seconds: 0.5 ms doubling to
/// about 33 s (17 buckets, then `+Inf`).
fn time_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// A histogram family whose series get [`time_buckets`].
type TimeFamily = Family<CircleLabel, Histogram, fn() -> Histogram>;

/// Labels of a per-circle series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CircleLabel {
    /// The circle's name, as in circles.json.
    pub circle: LabelText,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    circle: LabelText,
    outcome: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectedLabels {
    circle: LabelText,
    reason: String,
}

/// Why a WebSocket upgrade was refused: the `reason` label of
/// `circles_ws_upgrades_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A foreign `Origin` (403).
    Origin,
    /// No valid token for a circle with principals (401).
    Unauthorized,
    /// Too many failed upgrades from the address (429).
    RateLimited,
    /// The circle's connection limit was reached (503).
    TooManyConnections,
    /// The server is shutting down (503).
    ShuttingDown,
}

impl Rejection {
    /// Every reason, in label order.
    pub const ALL: [Rejection; 5] = [
        Rejection::Origin,
        Rejection::Unauthorized,
        Rejection::RateLimited,
        Rejection::TooManyConnections,
        Rejection::ShuttingDown,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Origin => "origin",
            Rejection::Unauthorized => "unauthorized",
            Rejection::RateLimited => "rate_limited",
            Rejection::TooManyConnections => "too_many_connections",
            Rejection::ShuttingDown => "shutting_down",
        }
    }
}

/// The recorded metrics of the process: one per process, cloned freely
/// (every family is shared).
#[derive(Debug, Clone)]
pub struct Metrics {
    finished: Family<FinishedLabels, Counter>,
    queue_wait: TimeFamily,
    run_time: TimeFamily,
    end_to_end: TimeFamily,
    rejected: Family<RejectedLabels, Counter>,
    bytes_in: Family<CircleLabel, Counter>,
    bytes_out: Family<CircleLabel, Counter>,
}

impl Metrics {
    /// The metrics, registered with `registry`.
    pub fn new(registry: &mut Registry) -> Metrics {
        let time = || TimeFamily::new_with_constructor(time_buckets as fn() -> Histogram);
        let metrics = Metrics {
            finished: Family::default(),
            queue_wait: time(),
            run_time: time(),
            end_to_end: time(),
            rejected: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
        };
        registry.register(
            "circles_tasks_finished",
            "Tasks this process's workers ended, by outcome (completed, failed) and \
             failure kind (none for completed)",
            metrics.finished.clone(),
        );
        registry.register(
            "circles_task_queue_wait_seconds",
            "Time from a task's submission (createdAt) to its claim by the worker",
            metrics.queue_wait.clone(),
        );
        registry.register(
            "circles_task_run_seconds",
            "Time the engine spent running a task's script",
            metrics.run_time.clone(),
        );
        registry.register(
            "circles_task_end_to_end_seconds",
            "Time from a task's submission (createdAt) to its result being written",
            metrics.end_to_end.clone(),
        );
        registry.register(
            "circles_ws_upgrades_rejected",
            "WebSocket upgrades refused, by reason",
            metrics.rejected.clone(),
        );
        registry.register(
            "circles_ws_received_bytes",
            "Bytes of WebSocket text messages received",
            metrics.bytes_in.clone(),
        );
        registry.register(
            "circles_ws_sent_bytes",
            "Bytes of WebSocket replies sent",
            metrics.bytes_out.clone(),
        );
        metrics
    }

    /// The task handles of circle `circle`; every series it records into
    /// exists (at 0) from now on. Call once per circle start, not per task.
    pub fn tasks(&self, circle: &str) -> TaskMetrics {
        let finished = |outcome: &str, kind: &str| {
            self.finished.get_or_create_owned(&FinishedLabels {
                circle: LabelText::new(circle),
                outcome: outcome.to_owned(),
                kind: kind.to_owned(),
            })
        };
        let failed: Vec<Counter> = FailureKind::KNOWN
            .iter()
            .map(|k| finished("failed", k.as_str()))
            .chain(std::iter::once(finished("failed", OTHER_KIND)))
            .collect();
        let label = CircleLabel {
            circle: LabelText::new(circle),
        };
        TaskMetrics {
            completed: finished("completed", NO_KIND),
            failed: failed.into(),
            queue_wait: self.queue_wait.get_or_create_owned(&label),
            run_time: self.run_time.get_or_create_owned(&label),
            end_to_end: self.end_to_end.get_or_create_owned(&label),
        }
    }

    /// Removes every series of circle `circle` (a circle a reload removed
    /// or renamed): a series of a name no circle has any more would stay in
    /// every scrape, and renames would add series without end. A circle of
    /// that name started later gets its series afresh, at 0.
    pub fn forget(&self, circle: &str) {
        let label = CircleLabel {
            circle: LabelText::new(circle),
        };
        let kinds = FailureKind::KNOWN
            .iter()
            .map(|k| ("failed", k.as_str()))
            .chain([("failed", OTHER_KIND), ("completed", NO_KIND)]);
        for (outcome, kind) in kinds {
            self.finished.remove(&FinishedLabels {
                circle: LabelText::new(circle),
                outcome: outcome.to_owned(),
                kind: kind.to_owned(),
            });
        }
        for reason in Rejection::ALL {
            self.rejected.remove(&RejectedLabels {
                circle: LabelText::new(circle),
                reason: reason.as_str().to_owned(),
            });
        }
        for family in [&self.queue_wait, &self.run_time, &self.end_to_end] {
            family.remove(&label);
        }
        for family in [&self.bytes_in, &self.bytes_out] {
            family.remove(&label);
        }
    }

    /// The server handles of circle `circle` (see [`Metrics::tasks`]).
    pub fn server(&self, circle: &str) -> ServerMetrics {
        let rejected: Vec<Counter> = Rejection::ALL
            .iter()
            .map(|r| {
                self.rejected.get_or_create_owned(&RejectedLabels {
                    circle: LabelText::new(circle),
                    reason: r.as_str().to_owned(),
                })
            })
            .collect();
        let label = CircleLabel {
            circle: LabelText::new(circle),
        };
        ServerMetrics {
            rejected: rejected.into(),
            bytes_in: self.bytes_in.get_or_create_owned(&label),
            bytes_out: self.bytes_out.get_or_create_owned(&label),
        }
    }
}

/// One circle's task metrics, recorded by its worker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TaskMetrics {
    completed: Counter,
    /// One counter per [`FailureKind::KNOWN`] entry, then `other`.
    failed: Arc<[Counter]>,
    queue_wait: Histogram,
    run_time: Histogram,
    end_to_end: Histogram,
}

impl TaskMetrics {
    /// Counts a task that completed.
    pub fn completed(&self) {
        self.completed.inc();
    }

    /// Counts a task that ended in error with `kind`.
    pub fn failed(&self, kind: &FailureKind) {
        self.failed_many(kind, 1);
    }

    /// Counts `n` tasks that ended in error with `kind` (a reaper ends a
    /// dead worker's tasks together).
    pub fn failed_many(&self, kind: &FailureKind, n: u64) {
        let at = FailureKind::KNOWN
            .iter()
            .position(|k| k == kind)
            .unwrap_or(FailureKind::KNOWN.len());
        if let Some(counter) = self.failed.get(at) {
            counter.inc_by(n);
        }
    }

    /// Records how long a task waited in the queue before its claim.
    pub fn queue_wait(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    /// Records how long the engine ran a task's script.
    pub fn run_time(&self, ran: Duration) {
        self.run_time.observe(ran.as_secs_f64());
    }

    /// Records the time from a task's submission to its result.
    pub fn end_to_end(&self, took: Duration) {
        self.end_to_end.observe(took.as_secs_f64());
    }

    /// The end-to-end times recorded so far: their sum in seconds and their
    /// count (the browser console's latency chart).
    pub fn end_to_end_totals(&self) -> (f64, u64) {
        (self.end_to_end.sum(), self.end_to_end.count())
    }
}

/// One circle's WebSocket metrics, recorded by its server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    /// One counter per [`Rejection::ALL`] entry.
    rejected: Arc<[Counter]>,
    bytes_in: Counter,
    bytes_out: Counter,
}

impl ServerMetrics {
    /// Counts an upgrade refused for `reason`.
    pub fn rejected(&self, reason: Rejection) {
        let at = Rejection::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("every rejection is in Rejection::ALL");
        if let Some(counter) = self.rejected.get(at) {
            counter.inc();
        }
    }

    /// Counts a text message of `bytes` received.
    pub fn received(&self, bytes: usize) {
        self.bytes_in.inc_by(bytes as u64);
    }

    /// Counts a reply of `bytes` sent.
    pub fn sent(&self, bytes: usize) {
        self.bytes_out.inc_by(bytes as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).expect("encodes");
        text
    }

    #[test]
    fn every_kind_and_reason_of_a_circle_exists_at_zero_once_it_starts() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let _tasks = metrics.tasks("Alpha");
        let _server = metrics.server("Alpha");
        let text = scrape(&registry);
        for kind in FailureKind::KNOWN {
            let series = format!(
                "circles_tasks_finished_total{{circle=\"Alpha\",outcome=\"failed\",kind=\"{}\"}} 0",
                kind.as_str()
            );
            assert!(text.contains(&series), "{series} in\n{text}");
        }
        for reason in Rejection::ALL {
            let series = format!(
                "circles_ws_upgrades_rejected_total{{circle=\"Alpha\",reason=\"{}\"}} 0",
                reason.as_str()
            );
            assert!(text.contains(&series), "{series} in\n{text}");
        }
    }

    #[test]
    fn a_forgotten_circle_has_no_series_left_and_the_others_keep_theirs() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        for circle in ["Gone", "Kept"] {
            let tasks = metrics.tasks(circle);
            tasks.completed();
            tasks.failed(&FailureKind::Timeout);
            tasks.run_time(Duration::from_millis(2));
            let server = metrics.server(circle);
            server.received(10);
            server.rejected(Rejection::Origin);
        }
        metrics.forget("Gone");
        let text = scrape(&registry);
        assert!(!text.contains(r#"circle="Gone""#), "{text}");
        for series in [
            r#"circles_tasks_finished_total{circle="Kept",outcome="completed",kind="none"} 1"#,
            r#"circles_ws_upgrades_rejected_total{circle="Kept",reason="origin"} 1"#,
            r#"circles_task_run_seconds_count{circle="Kept"} 1"#,
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
        // Started again, it counts from 0.
        let _tasks = metrics.tasks("Gone");
        let text = scrape(&registry);
        assert!(
            text.contains(
                r#"circles_tasks_finished_total{circle="Gone",outcome="completed",kind="none"} 0"#
            ),
            "{text}"
        );
    }

    #[test]
    fn a_kind_outside_the_fixed_set_counts_as_other_never_as_its_own_label() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let tasks = metrics.tasks("A");
        tasks.failed(&FailureKind::from_wire("quota-exceeded-123"));
        tasks.failed(&FailureKind::Timeout);
        let text = scrape(&registry);
        assert!(!text.contains("quota"), "{text}");
        assert!(
            text.contains(r#"outcome="failed",kind="other"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"outcome="failed",kind="timeout"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn a_circle_named_with_a_quote_a_backslash_and_a_line_feed_gets_escaped_series() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let name = "The \"A\" Team\nC:\\temp";
        metrics.tasks(name).completed();
        metrics.server(name).received(7);
        let text = scrape(&registry);
        for series in [
            r#"circles_tasks_finished_total{circle="The \"A\" Team\nC:\\temp",outcome="completed",kind="none"} 1"#,
            r#"circles_ws_received_bytes_total{circle="The \"A\" Team\nC:\\temp"} 7"#,
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
        // Every sample is one line: the name's line feed is inside no line.
        assert!(!text.lines().any(|l| l.starts_with("C:")), "{text}");
        metrics.forget(name);
        assert!(!scrape(&registry).contains("Team"));
    }

    #[test]
    fn two_starts_of_one_circle_share_its_series() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.tasks("A").completed();
        metrics.tasks("A").completed();
        metrics.server("A").received(10);
        metrics.server("A").rejected(Rejection::Origin);
        let text = scrape(&registry);
        assert!(text.contains(r#"kind="none"} 2"#), "{text}");
        assert!(
            text.contains(r#"circles_ws_received_bytes_total{circle="A"} 10"#),
            "{text}"
        );
        assert!(text.contains(r#"reason="origin"} 1"#), "{text}");
    }
}
