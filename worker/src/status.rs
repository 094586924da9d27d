//! [`WorkerStatus`]: the live state the status table reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// What the status table shows for a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    /// Not yet connected.
    Starting,
    /// Taking tasks.
    Running,
    /// Redis cannot be used; retrying. Why, in a few words for the status
    /// table ("redis is unreachable", "redis is loading its data").
    Reconnecting(String),
    /// Waiting for the queue's lease, which another orchestrator holds
    /// (`--standby`); says who holds it.
    Standby(String),
    /// Stopped taking tasks: the queue's lease was lost or could not be
    /// renewed in time (see the `lease` module); says why. It takes the
    /// lease again as soon as it can.
    LeaseLost(String),
    /// Stopped after shutdown.
    Stopped,
    /// Stopped by a failure.
    Failed(String),
    /// Taking tasks, but its database refuses every write after a write
    /// failure (reads go on) until the program that holds it restarts;
    /// says which failure.
    Degraded(String),
}

/// Live state of a worker for the status table. Shared with `Arc`.
#[derive(Debug)]
pub struct WorkerStatus {
    state: Mutex<WorkerState>,
    /// Why its database refuses writes, once it does: shown as `Degraded`
    /// in place of `Running` from then on.
    writes_refused: OnceLock<String>,
    completed: AtomicU64,
    failed: AtomicU64,
}

impl Default for WorkerStatus {
    fn default() -> Self {
        WorkerStatus {
            state: Mutex::new(WorkerState::Starting),
            writes_refused: OnceLock::new(),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

impl WorkerStatus {
    /// The current state.
    pub fn state(&self) -> WorkerState {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match (state, self.writes_refused.get()) {
            (WorkerState::Running, Some(why)) => WorkerState::Degraded(why.clone()),
            (state, _) => state,
        }
    }

    /// Marks its database as refusing writes after `failure` (see
    /// [`ourdb::OurDb::write_failure`]); the first failure stays shown.
    pub(crate) fn set_writes_refused(&self, failure: &str) {
        if self.writes_refused.get().is_none() {
            let _ = self.writes_refused.set(format!(
                "its database refuses writes after a write failure ({failure}); restart the \
                 program to reopen it"
            ));
        }
    }

    /// Tasks this worker completed / failed since it started.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.completed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Shows the worker waiting before it takes its lease, saying why
    /// (`Standby`): for a caller that waits on something of its own first,
    /// as [`crate::await_lease`] waits on the lease.
    pub fn set_standby(&self, why: String) {
        self.set(WorkerState::Standby(why));
    }

    pub(crate) fn set(&self, state: WorkerState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Sets `Running` unless already there (cheap on the hot path) or the
    /// lease holds the worker back (only the lease's keeper ends
    /// `Standby` and `LeaseLost`).
    pub(crate) fn set_running(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(
            *state,
            WorkerState::Running | WorkerState::Standby(_) | WorkerState::LeaseLost(_)
        ) {
            *state = WorkerState::Running;
        }
    }

    /// Sets `Reconnecting`, saying why (see [`outage_reason`]), unless the
    /// lease holds the worker back: that reason stays shown.
    pub(crate) fn set_reconnecting(&self, err: &client::Error) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*state, WorkerState::LeaseLost(_)) {
            *state = WorkerState::Reconnecting(outage_reason(err));
        }
    }

    pub(crate) fn count(&self, completed: bool) {
        let counter = if completed {
            &self.completed
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A few words on why Redis cannot be used, for the status table (the log
/// has the whole error).
pub(crate) fn outage_reason(err: &client::Error) -> String {
    match err {
        // A restarted Redis answers `LOADING` ("BusyLoading: Redis is
        // loading the dataset in memory") while it reads its append-only
        // file: it is there, just not ready.
        client::Error::Unavailable { reason, .. }
            if reason.to_ascii_lowercase().contains("loading") =>
        {
            "redis is loading its data".to_string()
        }
        // No room for another connection: every new one is closed.
        client::Error::Unavailable { .. } if err.at_maxclients() => {
            "redis is at maxclients".to_string()
        }
        client::Error::Unavailable { .. } if err.password_refused() => {
            "redis refuses the password (authentication failed)".to_string()
        }
        client::Error::Unavailable { .. } if err.client_certificate_wanted() => {
            "redis asks for a client certificate (set its tls-auth-clients no)".to_string()
        }
        // Another CA's certificate, an expired one: the first words of
        // rustls' reason say which.
        client::Error::Unavailable { .. } if err.untrusted_certificate().is_some() => {
            let why = err.untrusted_certificate().unwrap_or_default();
            let why = why.split([':', ';']).next().unwrap_or_default().trim();
            format!("the certificate of redis is not trusted ({why})")
        }
        // Commands refused until its operator acts.
        client::Error::Unavailable { .. } => err
            .refusal()
            .map_or("redis is unreachable", client::Refusal::describe)
            .to_string(),
        client::Error::Protocol(_) => "redis answered outside the protocol".to_string(),
        _ => "redis request failed".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable(reason: &str) -> client::Error {
        client::Error::Unavailable {
            url: "redis://127.0.0.1:6379".into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn a_loading_redis_is_told_apart_from_an_unreachable_one() {
        assert_eq!(
            outage_reason(&unavailable(
                "LOADING: Redis is loading the dataset in memory"
            )),
            "redis is loading its data"
        );
        assert_eq!(
            outage_reason(&unavailable("Connection refused (os error 111)")),
            "redis is unreachable"
        );
        assert_eq!(
            outage_reason(&unavailable(
                "max number of clients reached: redis has no room for another client"
            )),
            "redis is at maxclients"
        );
        assert_eq!(
            outage_reason(&unavailable(
                "Password authentication failed - AuthenticationFailed"
            )),
            "redis refuses the password (authentication failed)"
        );
        assert_eq!(
            outage_reason(&unavailable(
                "WRONGPASS: invalid username-password pair or user is disabled."
            )),
            "redis refuses the password (authentication failed)"
        );
        assert_eq!(
            outage_reason(&unavailable("received fatal alert: CertificateRequired")),
            "redis asks for a client certificate (set its tls-auth-clients no)"
        );
        assert_eq!(
            outage_reason(&unavailable("invalid peer certificate: BadSignature")),
            "the certificate of redis is not trusted (BadSignature)"
        );
        assert_eq!(
            outage_reason(&unavailable(
                "invalid peer certificate: certificate expired: verification time 1796642241 \
                 (UNIX), but certificate is not valid after 1609459200 (187183041 seconds ago)"
            )),
            "the certificate of redis is not trusted (certificate expired)"
        );
        assert_eq!(
            outage_reason(&unavailable(
                "\"OOM\": command not allowed when used memory > 'maxmemory'."
            )),
            "redis is out of memory (maxmemory)"
        );
        assert_eq!(
            outage_reason(&unavailable(
                "\"MISCONF\": Errors writing to the AOF file: No space left on device"
            )),
            "redis cannot write its RDB or AOF file"
        );
        assert_eq!(
            outage_reason(&unavailable(
                "NoPerm: this user has no permissions to run the 'evalsha' command"
            )),
            "redis refuses this user a command (ACL; see the log)"
        );
        let status = WorkerStatus::default();
        status.set_reconnecting(&unavailable(
            "LOADING: Redis is loading the dataset in memory",
        ));
        assert_eq!(
            status.state(),
            WorkerState::Reconnecting("redis is loading its data".into())
        );
    }
}
