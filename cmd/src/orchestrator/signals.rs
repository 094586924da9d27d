//! The signals that stop the orchestrator. Only `cmd` handles signals.

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGINT, SIGTERM and SIGHUP (a closed terminal) all mean a clean shutdown;
/// a second one during the drain stops at once.
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

    /// The name of the next signal received (one that came before the call
    /// is returned at once).
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}
