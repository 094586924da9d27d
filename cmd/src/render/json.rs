//! `--output json`: one [`Snapshot`] object per line on stdout, printed at
//! start, whenever anything but the uptimes changes, and once at the end
//! (with `"phase": "stopped"`).

use std::io::Write;

use super::Renderer;
use crate::status::{Header, Row, Snapshot};

/// JSON-lines renderer.
pub struct Json<W: Write + Send> {
    out: W,
    last: Option<(String, Vec<Row>)>,
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

fn without_uptimes(snap: &Snapshot) -> (String, Vec<Row>) {
    let rows = snap
        .circles
        .iter()
        .map(|r| Row {
            uptime_secs: 0,
            ..r.clone()
        })
        .collect();
    (snap.phase.to_string(), rows)
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
