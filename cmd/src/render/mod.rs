//! Drawing the status table (DESIGN §6) in the three output modes:
//! [`live::Live`] redraws in place on a terminal, [`plain::Plain`] prints the
//! table once when every circle has settled and then one line per change,
//! [`json::Json`] prints one snapshot per line whenever something changes.

pub mod json;
pub mod live;
pub mod plain;
pub mod table;

use crate::status::{Header, Snapshot};

/// An output mode.
pub trait Renderer: Send {
    /// Called on every change and every refresh tick.
    fn frame(&mut self, header: &Header, snap: &Snapshot);
    /// Called once after shutdown with the final state; restores the terminal.
    fn finish(&mut self, header: &Header, snap: &Snapshot);
}

/// The header line: version, circles, Redis, data dir.
pub fn header_line(header: &Header, snap: &Snapshot) -> String {
    let managed = match (header.redis_managed, snap.redis_restarts) {
        (false, _) => String::new(),
        (true, 0) => " (managed: started by the orchestrator)".to_string(),
        (true, n) => format!(" (managed: started by the orchestrator, restarted {n}x after dying)"),
    };
    format!(
        "circles_orchestrator {} | {} circle{} | redis {}{} | data {}",
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
    fn durations_read_like_a_clock() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(185), "3m05s");
        assert_eq!(human_duration(3720), "1h02m");
    }
}
