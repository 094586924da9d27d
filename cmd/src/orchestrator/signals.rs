//! The signals that stop or reload the orchestrator. Only `cmd` handles
//! signals.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// A stop signal this soon after the previous one is the same request sent
/// twice, not a second one: `timeout(1)` sends its signal to the process
/// and then to its whole process group, which holds the process too.
const SAME_STOP: Duration = Duration::from_millis(250);

/// SIGINT and SIGTERM mean a clean shutdown, and a second one during the
/// drain (at least [`SAME_STOP`] after the first) stops at once; SIGHUP
/// means "reload circles.json" (as for most daemons), also when it comes
/// from a closed terminal, and opens the live mode's log file again at
/// once, whenever it comes (start-up and shutdown included: logrotate may
/// compress and delete the moved file right after its signal).
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
    /// When the last SIGINT or SIGTERM was received.
    last_stop: Option<Instant>,
    /// A SIGHUP came during start-up: circles.json is read again once
    /// everything is up.
    hup_pending: bool,
    /// The signals [`hook_early`] caught before these were hooked (in the
    /// order SIGINT, SIGTERM, SIGHUP, not that of their coming): received
    /// as if they came now.
    early: VecDeque<&'static str>,
}

/// The signals [`hook_early`] records, by name.
const EARLY_SIGNALS: [(i32, &str); 3] = [
    (libc::SIGINT, "SIGINT"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGHUP, "SIGHUP"),
];

/// Which of [`EARLY_SIGNALS`] came since [`hook_early`].
static EARLY: std::sync::LazyLock<[Arc<AtomicBool>; 3]> =
    std::sync::LazyLock::new(Default::default);

/// The hooks [`hook_early`] made, taken away by [`Signals::new`], and why
/// any could not be made (logged there: logging starts after the hooks).
static EARLY_HOOKS: std::sync::Mutex<(Vec<signal_hook::SigId>, Vec<String>)> =
    std::sync::Mutex::new((Vec::new(), Vec::new()));

/// Records SIGINT, SIGTERM and SIGHUP from the first moment of `main` on,
/// instead of their default action (the process killed, exit 130, 143 or
/// 129): the orchestrator reads circles.json and builds its runtime before
/// [`Signals::new`] can hook them, and a supervisor that stops a service
/// it has just started must get the clean stop all the same, also when it
/// is sent twice at once (`timeout` signals the process, then its group).
/// A second SIGINT before then (Ctrl-C again) takes the default action: a
/// start stuck there (circles.json on a hung file system) can still be
/// ended from its terminal.
pub fn hook_early() {
    let mut hooks = crate::status::lock(&EARLY_HOOKS);
    for ((signal, name), came) in EARLY_SIGNALS.into_iter().zip(EARLY.iter()) {
        let again = signal == libc::SIGINT;
        let hooked = (again)
            .then(|| signal_hook::flag::register_conditional_default(signal, Arc::clone(came)))
            .into_iter()
            .chain([signal_hook::flag::register(signal, Arc::clone(came))]);
        for hook in hooked {
            match hook {
                Ok(id) => hooks.0.push(id),
                Err(e) => hooks.1.push(format!("cannot hook {name} early: {e}")),
            }
        }
    }
}

impl Signals {
    /// Hooks the three signals; must run inside the runtime.
    pub fn new() -> anyhow::Result<Signals> {
        let signals = Signals {
            int: signal(SignalKind::interrupt()).context("cannot hook SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot hook SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("cannot hook SIGHUP")?,
            last_stop: None,
            hup_pending: false,
            // Taken once tokio's own hooks are in place: a signal from here
            // on reaches those too.
            early: (EARLY_SIGNALS.iter().zip(EARLY.iter()))
                .filter(|(_, came)| came.swap(false, Ordering::SeqCst))
                .map(|((_, name), _)| *name)
                .collect(),
        };
        // From here on tokio's hooks alone: a second stop is the drain's
        // "stop at once", a second SIGHUP a second reload.
        let mut hooks = crate::status::lock(&EARLY_HOOKS);
        for id in hooks.0.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        for failed in hooks.1.drain(..) {
            log::warn!("{failed}");
        }
        Ok(signals)
    }

    /// The name of the next signal received, SIGHUP included (one that came
    /// before the call is returned at once; the log file is opened again
    /// before it is returned). A stop signal within [`SAME_STOP`] of the
    /// previous one is passed over.
    pub async fn next(&mut self) -> &'static str {
        loop {
            let name = match self.early.pop_front() {
                Some(name) => name,
                None => tokio::select! {
                    _ = self.int.recv() => "SIGINT",
                    _ = self.term.recv() => "SIGTERM",
                    _ = self.hup.recv() => "SIGHUP",
                },
            };
            if name == "SIGHUP" {
                crate::logging::reopen();
                return name;
            }
            let now = Instant::now();
            if self.last_stop.is_some_and(|at| now - at < SAME_STOP) {
                log::debug!("{name} within {SAME_STOP:?} of the last one: the same request");
                continue;
            }
            self.last_stop = Some(now);
            return name;
        }
    }

    /// The name of the next SIGINT or SIGTERM during start-up; a SIGHUP
    /// meanwhile asks for a reload once started ([`Signals::take_hup`]): a
    /// reload request never stops a start.
    pub async fn next_stop_starting(&mut self) -> &'static str {
        loop {
            match self.next().await {
                "SIGHUP" => {
                    log::info!("SIGHUP during start-up: circles.json is read again once started");
                    self.hup_pending = true;
                }
                other => return other,
            }
        }
    }

    /// Whether a SIGHUP came during start-up (once).
    pub fn take_hup(&mut self) -> bool {
        std::mem::take(&mut self.hup_pending)
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
