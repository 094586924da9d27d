//! Reloading circles.json without a restart: the [`ReloadHandle`] any trigger
//! holds (SIGHUP, the admin endpoint), the [`ReloadSummary`] of an applied
//! reload and the [`ReloadError`] of a refused one. The work itself is done
//! by the orchestrator (`orchestrator/apply.rs`), one reload at a time, on
//! the requests of every handle in the order they arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// What a reload changed, by circle name (a changed circle by its new name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadSummary {
    /// Circles started: their id was not in the running set.
    pub added: Vec<String>,
    /// Circles drained and stopped: their id is no longer in the file.
    pub removed: Vec<String>,
    /// Circles restarted: same id, some field changed.
    pub changed: Vec<String>,
}

impl ReloadSummary {
    /// Whether the file changed nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing changed");
        }
        let mut parts = Vec::new();
        for (what, names) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("changed", &self.changed),
        ] {
            if !names.is_empty() {
                parts.push(format!("{what} {}", quoted(names)));
            }
        }
        // A name both added and removed moved to another id: a circle of
        // its own, with the database of its new id.
        let moved: Vec<String> = (self.added.iter())
            .filter(|n| self.removed.contains(n))
            .cloned()
            .collect();
        if !moved.is_empty() {
            let has = if moved.len() == 1 { "has" } else { "have" };
            parts.push(format!(
                "{} {has} another id, and with it that id's database",
                quoted(&moved)
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Circle names as a message lists them: `"Alpha", "Beta"`.
pub fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| crate::names::quoted(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a reload was refused or only partly applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadErrorKind {
    /// The file is unreadable or invalid (DESIGN §2): nothing changed. A
    /// `reload` command exits 2 for it.
    InvalidConfig,
    /// A circle could not be started (a port in use, a locked database):
    /// the message says which and what did change.
    CannotStart,
    /// The orchestrator is shutting down; nothing changed.
    ShuttingDown,
}

/// A refused or partly applied reload; `message` names the file and what in
/// it is wrong, or the circle that could not start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadError {
    /// Which kind of failure.
    pub kind: ReloadErrorKind,
    /// What is wrong, for people.
    pub message: String,
    /// What did change, for a reload applied only in part
    /// ([`ReloadErrorKind::CannotStart`] after circles were stopped): a
    /// changed circle that could not start again counts as removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<ReloadSummary>,
}

impl ReloadError {
    /// A reload refused with `kind`.
    pub fn new(kind: ReloadErrorKind, message: impl Into<String>) -> Self {
        ReloadError {
            kind,
            message: message.into(),
            applied: None,
        }
    }
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ReloadError {}

/// How a reload ended.
pub type ReloadResult = Result<ReloadSummary, ReloadError>;

/// One reload asked for: where its outcome goes, and whether the
/// orchestrator took it or its asker withdrew it first (see
/// [`ReloadHandle::reload_unless`]).
#[derive(Debug)]
pub struct Request {
    reply: oneshot::Sender<ReloadResult>,
    state: Arc<AtomicU8>,
}

/// [`Request::state`]: waiting in the channel, taken, withdrawn.
const WAITING: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

impl Request {
    /// Sends the outcome to the asker (who may have gone).
    pub fn answer(self, outcome: ReloadResult) {
        let _ = self.reply.send(outcome);
    }
}

/// Asks the running orchestrator to re-read its circles.json. Cheap to
/// clone; every clone reaches the same orchestrator, which applies reloads
/// one at a time in the order asked.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    requests: mpsc::Sender<Request>,
}

impl ReloadHandle {
    /// Re-reads circles.json (the path given on the command line) and applies
    /// it; returns what changed, or why nothing (or not everything) did.
    /// Waits for the removed and changed circles to drain.
    pub async fn reload(&self) -> ReloadResult {
        self.reload_unless(std::future::pending()).await
    }

    /// [`ReloadHandle::reload`], withdrawn with a shutting-down error when
    /// `stop` completes while the request still waits for the orchestrator;
    /// once the orchestrator has taken it, it is applied and its outcome
    /// awaited whatever `stop` does.
    pub async fn reload_unless(&self, stop: impl Future<Output = ()>) -> ReloadResult {
        let (reply, outcome) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(WAITING));
        let stopping = || {
            ReloadError::new(
                ReloadErrorKind::ShuttingDown,
                "the orchestrator is shutting down; nothing was reloaded",
            )
        };
        let request = Request {
            reply,
            state: Arc::clone(&state),
        };
        tokio::pin!(outcome, stop);
        // The channel may be full (reloads queued behind a long drain): a
        // request still waiting to get in is withdrawn by `stop` too.
        tokio::select! {
            sent = self.requests.send(request) => sent.map_err(|_| stopping())?,
            () = &mut stop => return Err(stopping()),
        }
        let mut stopped = false;
        loop {
            tokio::select! {
                answered = &mut outcome => return answered.map_err(|_| stopping())?,
                () = &mut stop, if !stopped => {
                    stopped = true;
                    let withdrawn = state
                        .compare_exchange(WAITING, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                    if withdrawn {
                        return Err(stopping());
                    }
                }
            }
        }
    }
}

/// The orchestrator's end of every [`ReloadHandle`].
#[derive(Debug)]
pub struct Requests {
    receiver: mpsc::Receiver<Request>,
}

impl Requests {
    /// The next reload asked for and not withdrawn, now taken: its asker
    /// waits for its outcome. `None` never comes while a handle lives.
    pub async fn next(&mut self) -> Option<Request> {
        loop {
            let request = self.receiver.recv().await?;
            let taken = request
                .state
                .compare_exchange(WAITING, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if taken {
                return Some(request);
            }
        }
    }
}

/// A handle and the orchestrator's end of it.
pub fn channel() -> (ReloadHandle, Requests) {
    let (requests, receiver) = mpsc::channel(16);
    (ReloadHandle { requests }, Requests { receiver })
}

/// The last reload, as the status header and the JSON snapshot show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastReload {
    /// Counts reloads since the start (1 for the first).
    pub seq: u64,
    /// Whether it was applied in full.
    pub applied: bool,
    /// What changed (also after a partly applied reload).
    pub summary: Option<ReloadSummary>,
    /// Why it was refused or only partly applied.
    pub error: Option<ReloadError>,
    /// Why circles of the file last applied (in part) are not running: the
    /// error of the last reload that changed anything, when it could not
    /// start them all. A refused reload (an invalid file, a shutdown)
    /// leaves it as it was; one applied in full clears it.
    #[serde(skip)]
    pub stopped: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_of_a_handle_gets_the_outcome_of_its_own_request() {
        let (handle, mut requests) = channel();
        let other = handle.clone();
        let orchestrator = tokio::spawn(async move {
            let mut n = 0;
            while let Some(request) = requests.next().await {
                n += 1;
                let outcome = if n == 1 {
                    Ok(ReloadSummary {
                        added: vec!["Delta".into()],
                        ..ReloadSummary::default()
                    })
                } else {
                    Err(ReloadError::new(
                        ReloadErrorKind::InvalidConfig,
                        "circles.json: duplicate port",
                    ))
                };
                request.answer(outcome);
            }
        });
        let first = handle.reload().await.expect("applied");
        assert_eq!(first.to_string(), "added \"Delta\"");
        let second = other.reload().await.expect_err("refused");
        assert_eq!(second.kind, ReloadErrorKind::InvalidConfig);
        assert_eq!(
            serde_json::to_value(&second).expect("serializes"),
            serde_json::json!({"kind": "invalid_config", "message": "circles.json: duplicate port"})
        );
        drop((handle, other));
        orchestrator.await.expect("no panic");
    }

    #[tokio::test]
    async fn a_request_withdrawn_before_it_is_taken_never_runs_and_one_taken_is_answered() {
        let (handle, mut requests) = channel();
        // Withdrawn while it waits: refused, and the orchestrator never sees it.
        let e = handle
            .reload_unless(std::future::ready(()))
            .await
            .expect_err("withdrawn");
        assert_eq!(e.kind, ReloadErrorKind::ShuttingDown);
        // Taken first: the stop that comes after is no reason to give up.
        let (taken, took) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let orchestrator = tokio::spawn(async move {
            let request = requests.next().await.expect("the second request");
            taken.send(()).expect("told");
            stopped.await.expect("the stop came");
            request.answer(Ok(ReloadSummary::default()));
            requests
        });
        let asked = handle.reload_unless(async {
            took.await.expect("taken");
            stop.send(()).expect("stop");
        });
        assert_eq!(asked.await.expect("applied"), ReloadSummary::default());
        let mut requests = orchestrator.await.expect("no panic");
        drop(handle);
        assert!(
            requests.next().await.is_none(),
            "the withdrawn one was skipped"
        );
    }

    #[tokio::test]
    async fn a_handle_whose_orchestrator_is_gone_says_it_is_shutting_down() {
        let (handle, requests) = channel();
        drop(requests);
        let e = handle.reload().await.expect_err("nobody to reload");
        assert_eq!(e.kind, ReloadErrorKind::ShuttingDown);
    }

    #[test]
    fn a_summary_serializes_its_three_lists() {
        let s = ReloadSummary {
            added: vec!["D".into()],
            removed: vec!["B".into()],
            changed: vec!["C".into()],
        };
        assert_eq!(
            serde_json::to_value(&s).expect("serializes"),
            serde_json::json!({"added": ["D"], "removed": ["B"], "changed": ["C"]})
        );
        assert_eq!(s.to_string(), "added \"D\"; removed \"B\"; changed \"C\"");
        assert_eq!(ReloadSummary::default().to_string(), "nothing changed");
        // A name on another id is both added and removed, and said to be so.
        let moved = ReloadSummary {
            added: vec!["A".into(), "D".into()],
            removed: vec!["A".into(), "B".into()],
            changed: vec![],
        };
        assert_eq!(
            moved.to_string(),
            "added \"A\", \"D\"; removed \"A\", \"B\"; \"A\" has another id, and with it that \
             id's database"
        );
    }
}
