//! Runs a component (a circle's worker, or the websocket host of every
//! circle) and restarts it, with
//! capped exponential backoff, when it returns an error, returns early, or
//! panics. Cancelling the token lets the running component drain and then stops
//! the loop; the component is never dropped mid-flight (it is spawned and its
//! handle awaited to the end).

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::status::{Phase, Slot, lock};

/// First restart delay.
pub const BACKOFF_START: Duration = Duration::from_millis(250);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run that lasted this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Supervises one component until `token` is cancelled.
///
/// `start` is called for every (re)start with the slot to publish live status
/// into; it returns the component's future.
pub async fn supervise<F, Fut>(
    what: String,
    slot: Arc<Mutex<Slot>>,
    changed: Arc<Notify>,
    token: CancellationToken,
    mut start: F,
) where
    F: FnMut(&mut Slot) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    supervise_shared(what, vec![slot], changed, token, move |slots| {
        start(&mut slots[0])
    })
    .await;
}

/// Supervises one component that serves several circles (the websocket
/// host): its lifecycle is mirrored into every circle's slot, so a failure or
/// restart of the shared component shows in every row it serves and none of
/// them is `running` while it is down.
///
/// `start` gets every slot, locked, in the order given.
pub async fn supervise_shared<F, Fut>(
    what: String,
    slots: Vec<Arc<Mutex<Slot>>>,
    changed: Arc<Notify>,
    token: CancellationToken,
    mut start: F,
) where
    F: FnMut(&mut [MutexGuard<'_, Slot>]) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let set_phase = |phase: Phase| {
        for slot in &slots {
            lock(slot).phase = phase.clone();
        }
        changed.notify_one();
    };
    let mut backoff = BACKOFF_START;
    let mut first = true;
    loop {
        let fut = {
            let mut guards: Vec<MutexGuard<'_, Slot>> = slots.iter().map(|s| lock(s)).collect();
            let now = Instant::now();
            for s in &mut guards {
                // A circle the host this one takes over from (a reload)
                // served all along keeps its start: its connections carry on.
                if !(first && s.phase == Phase::Alive) {
                    s.started = now;
                }
                s.phase = Phase::Alive;
            }
            first = false;
            start(&mut guards)
        };
        changed.notify_one();
        let started = Instant::now();
        let outcome = tokio::spawn(fut).await;
        let reason = match outcome {
            Ok(Ok(())) if token.is_cancelled() => None,
            Ok(Ok(())) => Some("stopped unexpectedly".to_string()),
            Ok(Err(e)) => Some(e),
            Err(join) if join.is_panic() => Some(format!("panicked: {}", panic_message(join))),
            Err(_) => Some("was aborted".to_string()),
        };
        if token.is_cancelled() {
            if let Some(reason) = &reason {
                log::warn!("{what} ended during shutdown: {reason}");
            }
            set_phase(Phase::Stopped);
            return;
        }
        let reason = reason.unwrap_or_else(|| "stopped".to_string());
        if started.elapsed() >= HEALTHY_RUN {
            backoff = BACKOFF_START;
        }
        log::error!("{what} failed: {reason}; restarting in {backoff:?}");
        set_phase(Phase::Restarting(reason));
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = token.cancelled() => {
                set_phase(Phase::Stopped);
                return;
            }
        }
        for slot in &slots {
            lock(slot).restarts += 1;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    let payload = join.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn slot() -> Arc<Mutex<Slot>> {
        Arc::new(Mutex::new(Slot::new()))
    }

    #[tokio::test]
    async fn a_failing_or_panicking_component_is_restarted_and_counted() {
        let s = slot();
        let token = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let task = {
            let (s, token, runs) = (s.clone(), token.clone(), runs.clone());
            tokio::spawn(supervise(
                "test".into(),
                s,
                Arc::new(Notify::new()),
                token.clone(),
                move |_| {
                    let n = runs.fetch_add(1, Ordering::SeqCst);
                    let token = token.clone();
                    async move {
                        match n {
                            0 => Err("boom".to_string()),
                            1 => panic!("kaput"),
                            _ => {
                                token.cancelled().await;
                                Ok(())
                            }
                        }
                    }
                },
            ))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(
                Instant::now() < deadline,
                "component was not restarted twice"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(lock(&s).restarts, 2);
        assert_eq!(lock(&s).phase, Phase::Alive);
        token.cancel();
        task.await.expect("supervisor ends");
        assert_eq!(lock(&s).phase, Phase::Stopped);
    }

    #[tokio::test]
    async fn a_shared_component_shows_its_failure_and_restart_in_every_slot() {
        let slots = vec![slot(), slot(), slot()];
        let token = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let task = {
            let (slots, token, runs) = (slots.clone(), token.clone(), runs.clone());
            tokio::spawn(supervise_shared(
                "host".into(),
                slots,
                Arc::new(Notify::new()),
                token.clone(),
                move |guards| {
                    assert_eq!(guards.len(), 3);
                    let n = runs.fetch_add(1, Ordering::SeqCst);
                    let token = token.clone();
                    async move {
                        if n == 0 {
                            return Err("port vanished".to_string());
                        }
                        token.cancelled().await;
                        Ok(())
                    }
                },
            ))
        };
        // A current-thread runtime: the supervisor updates all slots between
        // two polls of this test, so the slots are always seen in step.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(lock(&slots[0]).phase, Phase::Restarting(_)) {
            assert!(Instant::now() < deadline, "never shown restarting");
            tokio::task::yield_now().await;
        }
        for s in &slots {
            assert_eq!(lock(s).phase, Phase::Restarting("port vanished".into()));
        }
        while runs.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "the host was not restarted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for s in &slots {
            assert_eq!(lock(s).phase, Phase::Alive);
            assert_eq!(lock(s).restarts, 1);
        }
        token.cancel();
        task.await.expect("supervisor ends");
        for s in &slots {
            assert_eq!(lock(s).phase, Phase::Stopped);
        }
    }

    #[tokio::test]
    async fn a_failed_component_is_shown_restarting_with_its_reason() {
        let s = slot();
        let token = CancellationToken::new();
        let task = tokio::spawn(supervise(
            "test".into(),
            s.clone(),
            Arc::new(Notify::new()),
            token.clone(),
            |_| async { Err::<(), _>("port vanished".to_string()) },
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Phase::Restarting(reason) = lock(&s).phase.clone() {
                assert_eq!(reason, "port vanished");
                break;
            }
            assert!(Instant::now() < deadline, "never shown restarting");
            tokio::task::yield_now().await;
        }
        token.cancel();
        task.await.expect("supervisor ends");
        assert_eq!(lock(&s).phase, Phase::Stopped);
    }
}
