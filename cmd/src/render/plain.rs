//! Plain output for pipes and files: the header at once, the table once every
//! circle has settled (up, or visibly failing), then one line per change of a
//! circle's worker or server state or restart count. Counter changes (queue
//! length, processed) do not print lines; use `--output json` to follow them.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use super::table::{build, state_text};
use super::{Renderer, clock, header_line};
use crate::reload::LastReload;
use crate::status::{Header, Row, Snapshot};

/// The table is printed after this even if some circle is still starting.
const SETTLE_DEADLINE: Duration = Duration::from_secs(15);

/// Plain renderer.
pub struct Plain<W: Write + Send> {
    out: W,
    header_done: bool,
    table_done: bool,
    /// Each row's name and state as last printed, by id.
    seen: HashMap<u32, (String, String)>,
    phase: &'static str,
    redis_restarts: u32,
    started: Instant,
    /// The `seq` of the last reload reported.
    reload: Option<u64>,
}

impl<W: Write + Send> Plain<W> {
    /// Writes to `out` (stdout in the binary).
    pub fn new(out: W) -> Self {
        Plain {
            out,
            header_done: false,
            table_done: false,
            seen: HashMap::new(),
            phase: "running",
            redis_restarts: 0,
            started: Instant::now(),
            reload: None,
        }
    }

    fn write(&mut self, text: &str) {
        // A closed pipe must not stop the orchestrator; the table is advisory.
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }
}

/// The line that reports a reload.
fn reload_line(r: &LastReload) -> String {
    match (super::reload_error_line(r), &r.summary) {
        (Some(line), _) => line,
        (None, Some(summary)) => format!("reload applied: {summary}"),
        (None, None) => "reload applied".to_string(),
    }
}

fn describe(row: &Row) -> String {
    format!(
        "worker {}, server {}, restarts {}",
        state_text(row.worker, &row.worker_detail, None),
        state_text(row.server, &row.server_detail, None),
        row.restarts
    )
}

impl<W: Write + Send> Renderer for Plain<W> {
    fn frame(&mut self, header: &Header, snap: &Snapshot) {
        if !self.header_done {
            let line = format!("{}\n", header_line(header, snap));
            self.write(&line);
            self.header_done = true;
        }
        if !self.table_done {
            // Settled, and the counters read once: the first read comes
            // after this process's first gateway beat, so Gateways counts it.
            let settled = snap.polled && snap.circles.iter().all(Row::settled);
            if !settled && self.started.elapsed() < SETTLE_DEADLINE {
                return;
            }
            let table = build(&snap.circles, false);
            self.write(&format!("{table}\n"));
            let up = snap.circles.iter().filter(|r| r.up()).count();
            let line = format!(
                "{} {up} of {} circles serving; Ctrl-C or SIGTERM stops\n",
                clock(),
                snap.circles.len()
            );
            self.write(&line);
            for row in &snap.circles {
                self.seen.insert(row.id, (row.name.clone(), describe(row)));
            }
            self.table_done = true;
        } else {
            let mut lines = String::new();
            for row in &snap.circles {
                let now = (row.name.clone(), describe(row));
                if self.seen.get(&row.id) != Some(&now) {
                    lines.push_str(&format!(
                        "{} {} (id {}): {}\n",
                        clock(),
                        row.name,
                        row.id,
                        now.1
                    ));
                    self.seen.insert(row.id, now);
                }
            }
            // A row a reload took away (a removed circle, or one that had
            // not started and is out of the file) says so too.
            let mut gone: Vec<(u32, String)> = (self.seen.iter())
                .filter(|(id, _)| !snap.circles.iter().any(|r| r.id == **id))
                .map(|(id, (name, _))| (*id, name.clone()))
                .collect();
            gone.sort_unstable();
            for (id, name) in gone {
                self.seen.remove(&id);
                lines.push_str(&format!("{} {name} (id {id}): no longer shown\n", clock()));
            }
            if !lines.is_empty() {
                self.write(&lines);
            }
        }
        if snap.redis_restarts != self.redis_restarts {
            self.redis_restarts = snap.redis_restarts;
            let line = format!(
                "{} the managed redis-server died and was restarted ({} times so far)\n",
                clock(),
                snap.redis_restarts
            );
            self.write(&line);
        }
        let reload = snap.reload.as_ref().map(|r| r.seq);
        if reload != self.reload {
            self.reload = reload;
            if let Some(line) = snap.reload.as_ref().map(reload_line) {
                self.write(&format!("{} {line}\n", clock()));
            }
        }
        if snap.phase != self.phase {
            self.phase = snap.phase;
            let line = format!("{} {}\n", clock(), snap.phase);
            self.write(&line);
        }
    }

    fn finish(&mut self, header: &Header, snap: &Snapshot) {
        self.table_done = true;
        self.frame(header, snap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(worker: &'static str) -> Snapshot {
        Snapshot {
            redis_url: "redis://127.0.0.1:1".into(),
            redis_managed: false,
            redis_restarts: 0,
            data_dir: "/tmp/d".into(),
            admin: None,
            phase: "running",
            uptime_secs: 0,
            circles: vec![Row {
                worker,
                ..Row::sample("Alpha", 1, "alpha")
            }],
            reload: None,
            polled: true,
        }
    }

    fn header() -> Header {
        Header {
            redis_url: "redis://127.0.0.1:1".into(),
            redis_managed: true,
            data_dir: "/tmp/d".into(),
            log_file: None,
            admin: None,
            redis_restarts: Default::default(),
            started: Instant::now(),
            reload: Default::default(),
        }
    }

    #[test]
    fn table_waits_for_every_circle_then_changes_print_one_line_each() {
        let mut buf = Vec::new();
        {
            let mut p = Plain::new(&mut buf);
            p.frame(&header(), &snap("starting"));
            p.frame(&header(), &snap("running"));
            p.frame(&header(), &snap("running"));
            p.frame(&header(), &snap("reconnecting"));
        }
        let text = String::from_utf8(buf).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("redis redis://127.0.0.1:1 (managed"),
            "{text}"
        );
        assert_eq!(text.matches("Circle Name").count(), 1, "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("| Alpha ") && l.contains(&client::keys::tasks("alpha"))),
            "the row shows its queue's Redis key: {text}"
        );
        assert_eq!(
            text.matches("Alpha (id 1): worker Reconnecting").count(),
            1,
            "{text}"
        );
        assert!(
            !text.contains("Starting"),
            "table drawn before settling: {text}"
        );
    }

    #[test]
    fn a_renamed_row_and_a_row_taken_away_print_a_line_each() {
        let mut buf = Vec::new();
        {
            let mut p = Plain::new(&mut buf);
            p.frame(&header(), &snap("failed"));
            let mut renamed = snap("failed");
            renamed.circles[0].name = "Alpha Two".into();
            p.frame(&header(), &renamed);
            p.frame(&header(), &renamed);
            let empty = Snapshot {
                circles: Vec::new(),
                ..snap("failed")
            };
            p.frame(&header(), &empty);
            p.frame(&header(), &empty);
        }
        let text = String::from_utf8(buf).expect("utf8");
        assert_eq!(
            text.matches("Alpha Two (id 1): worker Failed, server Running, restarts 0")
                .count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.matches("Alpha Two (id 1): no longer shown").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn table_waits_for_the_first_read_of_the_counters() {
        let mut buf = Vec::new();
        {
            let mut p = Plain::new(&mut buf);
            let unread = Snapshot {
                polled: false,
                ..snap("running")
            };
            p.frame(&header(), &unread);
            assert!(p.header_done && !p.table_done);
            let read = Snapshot {
                circles: vec![Row {
                    worker: "running",
                    gateway_count: Some(1),
                    ..Row::sample("Alpha", 1, "alpha")
                }],
                ..snap("running")
            };
            p.frame(&header(), &read);
            assert!(p.table_done);
        }
        let text = String::from_utf8(buf).expect("utf8");
        assert_eq!(text.matches("Circle Name").count(), 1, "{text}");
        let row = text
            .lines()
            .find(|l| l.starts_with("| Alpha "))
            .expect("the row");
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[8], "1", "Gateways of the first table: {row}");
    }
}
