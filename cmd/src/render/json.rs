//! `--output json`: one [`Snapshot`] object per line on stdout, printed at
//! start, whenever anything but the uptimes changes (a reload's result
//! included, also one that changed nothing: its `seq` is new), and once at
//! the end (with `"phase": "stopped"`).

use std::io::Write;

use super::Renderer;
use crate::status::{Header, Row, Snapshot};

/// JSON-lines renderer.
pub struct Json<W: Write + Send> {
    out: W,
    last: Option<Key>,
}

impl<W: Write + Send> Json<W> {
    /// Writes to `out` (stdout in the binary).
    pub fn new(out: W) -> Self {
        Json { out, last: None }
    }

    fn emit(&mut self, snap: &Snapshot) {
        match serde_json::to_string(snap) {
            Ok(line) => {
                let _ = writeln!(self.out, "{line}");
                let _ = self.out.flush();
            }
            Err(e) => log::error!("cannot encode a status snapshot: {e}"),
        }
    }
}

/// What a line is printed for a change of: the phase, the managed Redis's
/// restarts, the last reload's `seq` and the rows, uptimes left out.
type Key = (String, u32, Option<u64>, Vec<Row>);

fn without_uptimes(snap: &Snapshot) -> Key {
    let rows = snap
        .circles
        .iter()
        .map(|r| Row {
            uptime_secs: 0,
            ..r.clone()
        })
        .collect();
    (
        snap.phase.to_string(),
        snap.redis_restarts,
        snap.reload.as_ref().map(|r| r.seq),
        rows,
    )
}

impl<W: Write + Send> Renderer for Json<W> {
    fn frame(&mut self, _header: &Header, snap: &Snapshot) {
        let key = without_uptimes(snap);
        if self.last.as_ref() != Some(&key) {
            self.emit(snap);
            self.last = Some(key);
        }
    }

    fn finish(&mut self, _header: &Header, snap: &Snapshot) {
        self.emit(snap);
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn a_restart_of_the_managed_redis_alone_prints_a_new_line() {
        let header = Header::for_tests("redis://127.0.0.1:6379", true, "/tmp/x");
        let mut snap = crate::status::snapshot(&header, &[], "running");
        let mut json = Json::new(Vec::new());
        json.frame(&header, &snap);
        snap.uptime_secs = 2;
        json.frame(&header, &snap);
        snap.redis_restarts = 1;
        json.frame(&header, &snap);
        let out = String::from_utf8(json.out).expect("utf-8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "an uptime alone prints nothing: {out}");
        assert!(lines[1].contains("\"redis_restarts\":1"), "{out}");
    }

    #[test]
    fn each_reload_prints_a_line_also_one_that_changed_nothing() {
        use crate::reload::{LastReload, ReloadError, ReloadErrorKind, ReloadSummary};
        let header = Header::for_tests("redis://127.0.0.1:6379", false, "/tmp/x");
        let mut snap = crate::status::snapshot(&header, &[], "running");
        snap.circles = vec![Row::sample("Alpha", 1, "alpha")];
        let mut json = Json::new(Vec::new());
        json.frame(&header, &snap);
        let failed = |seq| LastReload {
            seq,
            applied: false,
            summary: None,
            error: Some(ReloadError::new(
                ReloadErrorKind::InvalidConfig,
                "circles.json: duplicate port 8081",
            )),
            stopped: None,
        };
        // The rows stay as they are: only the reloads tell the lines apart.
        for reload in [
            LastReload {
                seq: 1,
                applied: true,
                summary: Some(ReloadSummary::default()),
                error: None,
                stopped: None,
            },
            failed(2),
            failed(3),
        ] {
            snap.reload = Some(reload);
            json.frame(&header, &snap);
            json.frame(&header, &snap);
        }
        let out = String::from_utf8(json.out).expect("utf-8");
        let seqs: Vec<serde_json::Value> = out
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("JSON")["reload"]["seq"].clone()
            })
            .collect();
        assert_eq!(
            seqs,
            [serde_json::Value::Null, 1.into(), 2.into(), 3.into()],
            "{out}"
        );
    }

    #[test]
    fn a_circle_carries_its_queue_name_and_its_queue_redis_key() {
        let row = Row::sample("Alpha Circle", 1, "alpha_circle");
        let value = serde_json::to_value(&row).expect("encodes");
        assert_eq!(value["queue"], "alpha_circle");
        assert_eq!(value["queue_key"], client::keys::tasks("alpha_circle"));
    }
}
