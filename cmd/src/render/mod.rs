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

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::reload::LastReload;
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
    /// Whether it holds the terminal, so that a Ctrl-Z (SIGTSTP) goes
    /// through [`Renderer::suspend`] and [`Renderer::resume`]; otherwise
    /// SIGTSTP keeps its default action.
    fn holds_terminal(&self) -> bool {
        false
    }
    /// Gives the terminal back before the process stops (Ctrl-Z).
    fn suspend(&mut self) {}
    /// Takes the terminal again once the process goes on (`fg`).
    fn resume(&mut self) {}
}

/// The renderer of `mode`; the live one takes over the terminal.
pub fn renderer(mode: Mode) -> std::io::Result<Box<dyn Renderer>> {
    Ok(match mode {
        Mode::Live => Box::new(live::Live::start()?),
        Mode::Json => Box::new(json::Json::new(std::io::stdout())),
        Mode::Plain => Box::new(plain::Plain::new(std::io::stdout())),
    })
}

/// What the frames are built from.
pub struct Source {
    /// The header facts.
    pub header: Header,
    /// The circles shown (a reload changes them).
    pub roster: Roster,
    /// Set once the drain starts: the phase shown is then `shutting down`.
    pub draining: Arc<AtomicBool>,
    /// Each reload's outcome, in the order they ended.
    pub reloads: mpsc::UnboundedReceiver<LastReload>,
}

/// Draws a frame on every change and every `refresh` (quicker while some
/// circle is still starting) until `stop`, then the final `stopped` frame.
///
/// Each reload's outcome gets a frame of its own: the frames show the reload
/// last taken from `source.reloads`, not the header's latest, so two
/// reloads that end between two frames are both shown, the earlier first.
pub async fn draw(
    mut renderer: Box<dyn Renderer>,
    mut source: Source,
    refresh: Duration,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let header = &source.header;
    // Until every circle has settled the worker's own state changes (which
    // do not notify) are polled quickly, so the plain table appears promptly.
    let mut settled = false;
    let mut reload = None;
    // A terminal that changed its size gets a frame for it at once: one
    // made smaller keeps the bottom of the last frame, its header scrolled
    // out, until the next one.
    let mut resized =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok();
    // Ctrl-Z: the shell gets its screen and cursor back while this process
    // is stopped.
    let (mut stopped, mut continued) = if renderer.holds_terminal() {
        let hook =
            |sig| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(sig));
        match (hook(libc::SIGTSTP), hook(libc::SIGCONT)) {
            (Ok(stopped), Ok(continued)) => (Some(stopped), Some(continued)),
            _ => (None, None),
        }
    } else {
        (None, None)
    };
    loop {
        let wait = if settled { refresh } else { STARTUP_POLL };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = changed.notified() => {}
            Some(()) = next_signal(&mut resized) => {}
            Some(()) = next_signal(&mut stopped) => {
                blocking(|| renderer.suspend());
                // The stop of a whole process may reach this thread only
                // after it ran on: it takes the terminal again once the
                // process was continued (`fg`), not before.
                if stop_here() {
                    next_signal(&mut continued).await;
                }
                blocking(|| renderer.resume());
            }
            Some(next) = source.reloads.recv() => reload = Some(next),
            () = stop.cancelled() => break,
        }
        let phase = if source.draining.load(Ordering::Relaxed) {
            "shutting down"
        } else {
            "running"
        };
        let mut snap = snapshot(header, &source.roster.current(), phase);
        snap.reload = reload.clone();
        snap.polled = source.roster.polled();
        settled = snap.polled && snap.circles.iter().all(Row::settled);
        blocking(|| renderer.frame(header, &snap));
    }
    let mut snap = snapshot(header, &source.roster.current(), "stopped");
    snap.reload = reload;
    snap.polled = source.roster.polled();
    while let Ok(next) = source.reloads.try_recv() {
        snap.reload = Some(next);
        blocking(|| renderer.frame(header, &snap));
    }
    blocking(|| renderer.finish(header, &snap));
}

/// Runs `write`, a write to the terminal or stdout that may block (a full
/// pipe nobody reads, a terminal stopped by Ctrl-S), so that it holds only
/// the display: on a multi-threaded runtime the thread's other tasks move
/// to another thread meanwhile. On one CPU the runtime has a single thread,
/// which would otherwise wait with the write, and every circle with it.
fn blocking<T>(write: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi {
        tokio::task::block_in_place(write)
    } else {
        write()
    }
}

/// Stops the whole process, as SIGTSTP's default action does, until a
/// SIGCONT (`fg`); whether the stop was sent.
fn stop_here() -> bool {
    use rustix::process::{Signal, getpid, kill_process};
    match kill_process(getpid(), Signal::STOP) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("cannot stop for Ctrl-Z: {e}");
            false
        }
    }
}

/// The next signal of `signal`; never, when it could not be hooked.
async fn next_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// The header line: version, circles, Redis, data dir, admin endpoint,
/// and the last reload's failure, if it failed.
pub fn header_line(header: &Header, snap: &Snapshot) -> String {
    match reload_failure(snap) {
        Some(failure) => format!("{} | {failure}", header_base(header, snap)),
        None => header_base(header, snap),
    }
}

/// `reload partly applied: …` or `reload failed, nothing changed: …` when
/// the last reload did not apply in full.
pub(crate) fn reload_failure(snap: &Snapshot) -> Option<String> {
    reload_error_line(snap.reload.as_ref()?)
}

/// How every output names a reload that did not apply in full: in part
/// (its message starts with what changed), or not at all.
pub(crate) fn reload_error_line(r: &LastReload) -> Option<String> {
    let e = r.error.as_ref()?;
    Some(match &r.summary {
        Some(summary) if !summary.is_empty() => format!("reload partly applied: {e}"),
        _ => format!("reload failed, nothing changed: {e}"),
    })
}

/// [`header_line`] without the reload's failure.
pub(crate) fn header_base(header: &Header, snap: &Snapshot) -> String {
    let managed = match (header.redis_managed, snap.redis_restarts) {
        (false, _) => String::new(),
        (true, 0) => " (managed: started by the orchestrator)".to_string(),
        (true, n) => format!(" (managed: started by the orchestrator, restarted {n}x after dying)"),
    };
    let admin = match &header.admin {
        Some(url) => format!(" | admin {url}"),
        None => " | admin off".to_string(),
    };
    format!(
        "circles_orchestrator {} | {} circle{} | redis {}{} | data {}{admin}",
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
        let header = Header::for_tests("redis://127.0.0.1:1", false, "/tmp/d");
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
            stopped: None,
        });
        let line = header_line(&header, &snapshot(&header, &[], "running"));
        assert!(
            line.ends_with(" | reload failed, nothing changed: circles.json: duplicate port 8081"),
            "{line}"
        );
        // One that changed something before a circle could not start.
        let mut error = crate::reload::ReloadError::new(
            crate::reload::ReloadErrorKind::CannotStart,
            "added \"Delta\", but \"Gamma\" (added) did not start: port 8093 is in use",
        );
        let applied = crate::reload::ReloadSummary {
            added: vec!["Delta".into()],
            ..Default::default()
        };
        error.applied = Some(applied.clone());
        *crate::status::lock(&header.reload) = Some(crate::reload::LastReload {
            seq: 2,
            applied: false,
            summary: Some(applied),
            error: Some(error),
            stopped: None,
        });
        let line = header_line(&header, &snapshot(&header, &[], "running"));
        assert!(
            line.ends_with(" | reload partly applied: added \"Delta\", but \"Gamma\" (added) did not start: port 8093 is in use"),
            "{line}"
        );
    }

    /// Records the reload `seq` of every frame.
    struct Seqs(Arc<std::sync::Mutex<Vec<Option<u64>>>>);

    impl Renderer for Seqs {
        fn frame(&mut self, _header: &Header, snap: &Snapshot) {
            let seq = snap.reload.as_ref().map(|r| r.seq);
            crate::status::lock(&self.0).push(seq);
        }
        fn finish(&mut self, header: &Header, snap: &Snapshot) {
            self.frame(header, snap);
        }
    }

    #[tokio::test]
    async fn two_reloads_that_end_before_a_frame_get_a_frame_each_in_order() {
        let header = Header::for_tests("redis://127.0.0.1:1", false, "/tmp/d");
        let (shown, reloads) = mpsc::unbounded_channel();
        for seq in 1..=2 {
            let last = LastReload {
                seq,
                applied: true,
                summary: Some(crate::reload::ReloadSummary::default()),
                error: None,
                stopped: None,
            };
            *crate::status::lock(&header.reload) = Some(last.clone());
            shown.send(last).expect("the display listens");
        }
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let source = Source {
            header,
            roster: Roster::new(Vec::new()),
            draining: Arc::default(),
            reloads,
        };
        let drawing = tokio::spawn(draw(
            Box::new(Seqs(seen.clone())),
            source,
            Duration::from_secs(60),
            Arc::new(Notify::new()),
            stop.clone(),
        ));
        while !crate::status::lock(&seen).contains(&Some(2)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        drawing.await.expect("no panic");
        let mut seqs = crate::status::lock(&seen).clone();
        seqs.dedup();
        let first_reload = seqs.iter().position(Option::is_some).expect("a reload");
        assert_eq!(seqs[first_reload..], [Some(1), Some(2)], "{seqs:?}");
    }

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(185), "3m05s");
        assert_eq!(human_duration(3720), "1h02m");
    }
}
