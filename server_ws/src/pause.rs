//! [`Pause`]: how the owner of a running host makes it stop accepting
//! connections on every listener while the connections it already holds carry
//! on, until its token fires. A host that hands its circles over to a new host
//! (the orchestrator's reload) is paused, so its listeners can be given to the
//! new host or shut, and its open sockets are not cut.

use tokio_util::sync::CancellationToken;

/// A request to pause one host, and the host's acknowledgement. Clones share
/// both; a fresh `Pause` never fires.
#[derive(Debug, Clone, Default)]
pub struct Pause {
    requested: CancellationToken,
    done: CancellationToken,
}

impl Pause {
    /// A pause not yet requested.
    pub fn new() -> Self {
        Pause::default()
    }

    /// Asks the host to stop accepting; returns once its accept loop has had
    /// the request for a moment (actix does not acknowledge it; see
    /// `PAUSE_SETTLE` in `host.rs`), or once the host has returned. A paused
    /// host is never resumed.
    pub async fn pause(&self) {
        self.requested.cancel();
        self.done.cancelled().await;
    }

    /// Whether a pause was asked for.
    pub fn is_requested(&self) -> bool {
        self.requested.is_cancelled()
    }

    /// Resolves when a pause is asked for.
    pub(crate) async fn requested(&self) {
        self.requested.cancelled().await;
    }

    /// The host stopped accepting, or ended: [`Pause::pause`] returns.
    pub(crate) fn acknowledge(&self) {
        self.done.cancel();
    }
}
