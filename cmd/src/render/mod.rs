//! Drawing the status table (DESIGN §6) in the three output modes:
//! [`live::Live`] redraws in place on a terminal, [`plain::Plain`] prints the
//! table once when every circle has settled and then one line per change,
//! [`json::Json`] prints one snapshot per line whenever something changes.

pub mod json;
pub mod live;
pub mod plain;
pub mod table;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::roster::Roster;
use crate::settings::Mode;
use crate::status::{Header, Row, Snapshot, snapshot};

/// Redraw interval while some circle is still starting.
const STARTUP_POLL: Duration = Duration::from_millis(50);

/// An output mode.
pub trait Renderer: Send {
    /// Called on every change and every refresh tick.
    fn frame(&mut self, header: &Header, snap: &Snapshot);
    /// Called once after shutdown with the final state; restores the terminal.
    fn finish(&mut self, header: &Header, snap: &Snapshot);
}

/// The renderer of `mode`; the live one takes over the terminal.
pub fn renderer(mode: Mode) -> std::io::Result<Box<dyn Renderer>> {
    Ok(match mode {
        Mode::Live => Box::new(live::Live::start()?),
        Mode::Json => Box::new(json::Json::new(std::io::stdout())),
        Mode::Plain => Box::new(plain::Plain::new(std::io::stdout())),
    })
}

/// Draws a frame on every change and every `refresh` (quicker while some
/// circle is still starting) until `stop`, then the final `stopped` frame.
/// The phase shown is `shutting down` once `draining` is set.
pub async fn draw(
    mut renderer: Box<dyn Renderer>,
    header: Header,
    roster: Roster,
    refresh: Duration,
    changed: Arc<Notify>,
    draining: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    // Until every circle has settled the worker's own state changes (which
    // do not notify) are polled quickly, so the plain table appears promptly.
    let mut settled = false;
    loop {
        let wait = if settled { refresh } else { STARTUP_POLL };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = changed.notified() => {}
            () = stop.cancelled() => break,
        }
        let phase = if draining.load(Ordering::Relaxed) {
            "shutting down"
        } else {
            "running"
        };
        let snap = snapshot(&header, &roster.current(), phase);
        settled = snap.circles.iter().all(Row::settled);
        renderer.frame(&header, &snap);
    }
    renderer.finish(&header, &snapshot(&header, &roster.current(), "stopped"));
}

/// The header line: version, circles, Redis, data dir.
pub fn header_line(header: &Header, snap: &Snapshot) -> String {
    let managed = match (header.redis_managed, snap.redis_restarts) {
        (false, _) => String::new(),
        (true, 0) => " (managed: started by the orchestrator)".to_string(),
        (true, n) => format!(" (managed: started by the orchestrator, restarted {n}x after dying)"),
    };
    let admin = match &header.admin {
        Some(url) => format!(" | admin {url}"),
        None => " | admin off".to_string(),
    };
    let reload = match snap.reload.as_ref().and_then(|r| r.error.as_ref()) {
        Some(e) => format!(" | reload failed: {e}"),
        None => String::new(),
    };
    format!(
        "circles_orchestrator {} | {} circle{} | redis {}{} | data {}{admin}{reload}",
        env!("CARGO_PKG_VERSION"),
        snap.circles.len(),
        if snap.circles.len() == 1 { "" } else { "s" },
        header.redis_url,
        managed,
        header.data_dir
    )
}

/// Seconds as `1h02m`, `3m05s`, `42s`.
pub fn human_duration(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// UTC wall-clock time of day, `HH:MM:SS`, for plain-mode change lines.
pub fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_says_when_the_last_reload_failed() {
        let header = Header {
            redis_url: "redis://127.0.0.1:1".into(),
            redis_managed: false,
            data_dir: "/tmp/d".into(),
            log_file: None,
            admin: None,
            redis_restarts: Default::default(),
            started: std::time::Instant::now(),
            reload: Default::default(),
        };
        let line = header_line(&header, &snapshot(&header, &[], "running"));
        assert!(!line.contains("reload"), "{line}");
        *crate::status::lock(&header.reload) = Some(crate::reload::LastReload {
            seq: 1,
            applied: false,
            summary: None,
            error: Some(crate::reload::ReloadError::new(
                crate::reload::ReloadErrorKind::InvalidConfig,
                "circles.json: duplicate port 8081",
            )),
        });
        let line = header_line(&header, &snapshot(&header, &[], "running"));
        assert!(
            line.ends_with(" | reload failed: circles.json: duplicate port 8081"),
            "{line}"
        );
    }

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(185), "3m05s");
        assert_eq!(human_duration(3720), "1h02m");
    }
}
