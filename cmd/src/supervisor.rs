//! Runs a component (worker or server) of a circle and restarts it, with
//! capped exponential backoff, when it returns an error, returns early, or
//! panics. Cancelling the token lets the running component drain and then stops
//! the loop; the component is never dropped mid-flight (it is spawned and its
//! handle awaited to the end).

use std::future::Future;
use std::sync::{Arc, Mutex};
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
    let mut backoff = BACKOFF_START;
    loop {
        let fut = {
            let mut s = lock(&slot);
            s.phase = Phase::Alive;
            s.started = Instant::now();
            start(&mut s)
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
            lock(&slot).phase = Phase::Stopped;
            changed.notify_one();
            return;
        }
        let reason = reason.unwrap_or_else(|| "stopped".to_string());
        if started.elapsed() >= HEALTHY_RUN {
            backoff = BACKOFF_START;
        }
        log::error!("{what} failed: {reason}; restarting in {backoff:?}");
        lock(&slot).phase = Phase::Restarting(reason);
        changed.notify_one();
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = token.cancelled() => {
                lock(&slot).phase = Phase::Stopped;
                changed.notify_one();
                return;
            }
        }
        lock(&slot).restarts += 1;
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
