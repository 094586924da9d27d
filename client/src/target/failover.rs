//! [`Failovers`]: what the sentinels of one `redis+sentinel://` URL say
//! about its primary, as they say it, so that connections leave the old
//! primary as early as is safe.
//!
//! Every sentinel is watched (the one leading a failover is not known in
//! advance) on three kinds of events:
//! - `+failover-state-send-slaveof-noone`: the leader is about to promote a
//!   replica. From then on the old primary's writes are lost (it becomes a
//!   replica of the promoted one, and resyncs), so connections go to the
//!   replica being promoted at once, well before the sentinels name it; a
//!   write that reaches it before its promotion is refused (`READONLY`) and
//!   retried, never acknowledged and lost.
//! - `+switch-master`: the sentinels name the new primary.
//! - `-failover-abort-*`: the promotion was given up; connections go back to
//!   what the sentinels name.
//!
//! Each change of where connections should go counts as a switch
//! ([`Failovers::switches`]); connections made under an older count are
//! dropped at their next use. For a while after an event, connections go
//! where it said ([`Failovers::announced`]) rather than where a lookup says:
//! a sentinel that has not heard of the failover yet would name the old
//! primary. After a lost subscription, the sentinel is asked for the
//! primary again, in case an event went unseen.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::{ConnectionInfo, RedisResult};
use tokio::sync::watch;

use super::lock;

/// Sentinel channels watched (see the module docs).
const PROMOTING: &str = "+failover-state-send-slaveof-noone";
const SWITCH: &str = "+switch-master";
const ABORT_PATTERN: &str = "-failover-abort-*";
/// Bound on connecting and subscribing to one sentinel.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(2);
/// Cap of a sentinel's resubscription backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long an event's word outranks a lookup: every sentinel has heard of a
/// switch by then (they exchange hellos every 2 s), and a promotion neither
/// confirmed nor aborted by then is no longer followed.
const ANNOUNCED_FOR: Duration = Duration::from_secs(10);

/// A primary's address.
pub(crate) type Addr = (String, u16);

#[derive(Default)]
struct Primary {
    /// Where connections go now, as far as known.
    current: Option<Addr>,
    /// The primary the latest event named, when, and whether it is still
    /// being promoted.
    announced: Option<(Addr, Instant, bool)>,
}

/// See the module docs.
pub(crate) struct Failovers {
    service: String,
    switches: watch::Sender<u64>,
    primary: Mutex<Primary>,
}

impl Failovers {
    pub(crate) fn new(service: &str) -> Failovers {
        Failovers {
            service: service.to_owned(),
            switches: watch::channel(0).0,
            primary: Mutex::default(),
        }
    }

    /// The monitored service's name.
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// Switches counted so far.
    pub(crate) fn count(&self) -> u64 {
        *self.switches.borrow()
    }

    /// A receiver of later switches.
    pub(crate) fn switches(&self) -> watch::Receiver<u64> {
        self.switches.subscribe()
    }

    fn bump(&self) {
        self.switches.send_modify(|n| *n += 1);
    }

    /// Where a recent event sends connections (a replica being promoted, or
    /// the primary of a switch), instead of a lookup.
    pub(crate) fn announced(&self) -> Option<Addr> {
        let mut primary = lock(&self.primary);
        match &primary.announced {
            Some((addr, since, _)) if since.elapsed() < ANNOUNCED_FOR => Some(addr.clone()),
            Some(_) => {
                primary.announced = None;
                None
            }
            None => None,
        }
    }

    /// Records the primary a lookup found; a different one than known
    /// means a switch went unseen (counted).
    pub(crate) fn looked_up(&self, addr: Addr) {
        let mut primary = lock(&self.primary);
        let unseen = primary.current.as_ref().is_some_and(|c| *c != addr);
        primary.current = Some(addr);
        drop(primary);
        if unseen {
            self.bump();
        }
    }

    /// Connections go to `addr` from now on: counted when it is a change.
    fn go_to(&self, addr: Addr, promoting: bool) {
        let mut primary = lock(&self.primary);
        primary.announced = Some((addr.clone(), Instant::now(), promoting));
        if primary.current.as_ref() == Some(&addr) {
            return;
        }
        primary.current = Some(addr);
        drop(primary);
        self.bump();
    }

    /// Handles one event of a sentinel (see the module docs).
    fn on_event(&self, channel: &str, payload: &str) {
        let words: Vec<&str> = payload.split(' ').collect();
        let addr = |ip: usize, port: usize| -> Option<Addr> {
            Some((words.get(ip)?.to_string(), words.get(port)?.parse().ok()?))
        };
        match channel {
            // `slave <ip>:<port> <ip> <port> @ <service> <master ip> <master port>`
            PROMOTING if words.get(5) == Some(&self.service.as_str()) => {
                if let Some(replica) = addr(2, 3) {
                    log::info!(
                        "the sentinels promote {}:{} to primary of {}; connections go there",
                        replica.0,
                        replica.1,
                        self.service
                    );
                    self.go_to(replica, true);
                }
            }
            // `<service> <old ip> <old port> <new ip> <new port>`
            SWITCH if words.first() == Some(&self.service.as_str()) => {
                if let Some(new) = addr(3, 4) {
                    log::info!(
                        "the sentinels switched the primary of {} to {}:{}",
                        self.service,
                        new.0,
                        new.1
                    );
                    self.go_to(new, false);
                }
            }
            // `master <service> <ip> <port>`
            abort
                if abort.starts_with("-failover-abort")
                    && words.get(1) == Some(&self.service.as_str()) =>
            {
                let mut primary = lock(&self.primary);
                if primary
                    .announced
                    .as_ref()
                    .is_some_and(|(.., promoting)| *promoting)
                {
                    primary.announced = None;
                    primary.current = None;
                    drop(primary);
                    log::warn!(
                        "the sentinels gave up a failover of {} ({abort}); connections go back \
                         to the primary they name",
                        self.service
                    );
                    self.bump();
                }
            }
            _ => {}
        }
    }

    /// Watches every sentinel until aborted (see the module docs).
    pub(crate) async fn watch(&self, sentinels: Vec<ConnectionInfo>) {
        futures_util::future::join_all(sentinels.iter().map(|info| self.watch_one(info))).await;
    }

    async fn watch_one(&self, info: &ConnectionInfo) {
        let mut backoff = Duration::ZERO;
        let mut watched_before = false;
        loop {
            let subscribe = async {
                let mut pubsub = redis::Client::open(info.clone())?
                    .get_async_pubsub()
                    .await?;
                pubsub.subscribe(&[PROMOTING, SWITCH]).await?;
                pubsub.psubscribe(ABORT_PATTERN).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(SENTINEL_TIMEOUT, subscribe).await {
                Ok(Ok(pubsub)) => {
                    if watched_before {
                        self.check(info).await;
                    }
                    watched_before = true;
                    backoff = Duration::ZERO;
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let payload: String = message.get_payload().unwrap_or_default();
                        self.on_event(message.get_channel_name(), &payload);
                    }
                    log::debug!("lost the event subscription to sentinel {}", info.addr());
                }
                Ok(Err(e)) => log::debug!("watching sentinel {}: {e}", info.addr()),
                Err(_) => log::debug!("watching sentinel {}: no answer", info.addr()),
            }
            backoff = (backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
            tokio::time::sleep(backoff).await;
        }
    }

    /// After a resubscription: asks the sentinel for the primary, as an
    /// event may have gone unseen.
    async fn check(&self, info: &ConnectionInfo) {
        let named = tokio::time::timeout(SENTINEL_TIMEOUT, primary_named(info, &self.service));
        if let Ok(Ok(named)) = named.await
            && self.announced().is_none()
        {
            self.looked_up(named);
        }
    }
}

/// The primary of `service` as the sentinel at `info` names it.
async fn primary_named(info: &ConnectionInfo, service: &str) -> RedisResult<Addr> {
    let mut conn = redis::Client::open(info.clone())?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(service)
        .query_async(&mut conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Addr {
        ("10.0.0.1".to_string(), port)
    }

    #[test]
    fn a_promotion_then_its_switch_count_once_and_a_foreign_service_not_at_all() {
        let f = Failovers::new("circles");
        f.looked_up(addr(1));
        assert_eq!(f.count(), 0);
        f.on_event(PROMOTING, "slave 10.0.0.1:2 10.0.0.1 2 @ other 10.0.0.1 1");
        assert_eq!((f.count(), f.announced()), (0, None));
        f.on_event(
            PROMOTING,
            "slave 10.0.0.1:2 10.0.0.1 2 @ circles 10.0.0.1 1",
        );
        assert_eq!((f.count(), f.announced()), (1, Some(addr(2))));
        // Every sentinel announces the switch; connections are already there.
        for _ in 0..3 {
            f.on_event(SWITCH, "circles 10.0.0.1 1 10.0.0.1 2");
        }
        assert_eq!((f.count(), f.announced()), (1, Some(addr(2))));
    }

    #[test]
    fn a_switch_seen_only_as_switch_master_or_by_a_lookup_counts() {
        let f = Failovers::new("circles");
        f.looked_up(addr(1));
        f.on_event(SWITCH, "circles 10.0.0.1 1 10.0.0.1 2");
        assert_eq!((f.count(), f.announced()), (1, Some(addr(2))));
        f.looked_up(addr(2));
        assert_eq!(f.count(), 1);
        f.looked_up(addr(3));
        assert_eq!(f.count(), 2);
    }

    #[test]
    fn an_aborted_promotion_sends_connections_back() {
        let f = Failovers::new("circles");
        f.looked_up(addr(1));
        f.on_event(
            PROMOTING,
            "slave 10.0.0.1:2 10.0.0.1 2 @ circles 10.0.0.1 1",
        );
        f.on_event("-failover-abort-slave-timeout", "master circles 10.0.0.1 1");
        assert_eq!((f.count(), f.announced()), (2, None));
        // The next lookup names the old primary again: no further switch.
        f.looked_up(addr(1));
        assert_eq!(f.count(), 2);
    }
}
