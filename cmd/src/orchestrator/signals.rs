//! The signals that stop or reload the orchestrator. Only `cmd` handles
//! signals.

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT and SIGTERM mean a clean shutdown, and a second one during the
/// drain stops at once; SIGHUP means "reload circles.json" (as for most
/// daemons), also when it comes from a closed terminal.
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    /// Hooks the three signals; must run inside the runtime.
    pub fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("cannot hook SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot hook SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("cannot hook SIGHUP")?,
        })
    }

    /// The name of the next signal received, SIGHUP included (one that came
    /// before the call is returned at once).
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }

    /// The name of the next SIGINT or SIGTERM; SIGHUPs meanwhile are
    /// ignored (no reload during a drain).
    pub async fn next_stop(&mut self) -> &'static str {
        loop {
            match self.next().await {
                "SIGHUP" => log::info!("SIGHUP ignored: shutting down"),
                other => return other,
            }
        }
    }
}
