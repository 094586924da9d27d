//! The calling thread's twin of a circle's task client.
//!
//! A circle's task client runs its connection and notification listener on
//! the orchestrator's runtime, so every request an actix worker thread
//! handles would cross threads twice (the push and its reply, the
//! notification and its waiter). [`client_for`] gives the actix thread a
//! twin ([`client::Client::twin`]) whose tasks run on that thread. The twin
//! connects in the background on first use; until it is up (or while it
//! cannot connect) requests go through the shared client, so a request
//! never waits for it.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use client::Client;

/// After a twin failed to connect, requests use the shared client for this
/// long before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(1);

enum Twin {
    Connecting,
    Ready(Client),
    Failed(Instant),
}

thread_local! {
    /// Per shared client (held here, so its identity stays unique): this
    /// thread's twin of it.
    static TWINS: RefCell<Vec<(Client, Twin)>> = const { RefCell::new(Vec::new()) };
}

/// The client a request on this thread submits through: the thread's twin
/// of `shared` once it is connected, `shared` itself until then (and on a
/// multi-threaded runtime, where a twin's tasks could run on any thread).
pub(crate) fn client_for(shared: &Client) -> Client {
    // Only a single-threaded runtime keeps a twin's tasks on this thread.
    let single = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    if !single {
        return shared.clone();
    }
    let ready = TWINS.with_borrow_mut(|twins| {
        let Some(slot) = slot(twins, shared) else {
            twins.push((shared.clone(), Twin::Connecting));
            connect(shared.clone());
            return None;
        };
        match slot {
            Twin::Ready(twin) => Some(twin.clone()),
            Twin::Failed(at) if at.elapsed() >= RETRY_AFTER => {
                *slot = Twin::Connecting;
                connect(shared.clone());
                None
            }
            Twin::Connecting | Twin::Failed(_) => None,
        }
    });
    ready.unwrap_or_else(|| shared.clone())
}

/// This thread's twin slot of `shared`, if it has one.
fn slot<'a>(twins: &'a mut [(Client, Twin)], shared: &Client) -> Option<&'a mut Twin> {
    twins
        .iter_mut()
        .find(|(base, _)| base.same_as(shared))
        .map(|(_, twin)| twin)
}

/// Connects this thread's twin of `shared` in a task on this thread's
/// (single-threaded) runtime and records it (or the failure) when done.
fn connect(shared: Client) {
    tokio::spawn(async move {
        let twin = shared.twin().await;
        TWINS.with_borrow_mut(|twins| {
            let Some(slot) = slot(twins, &shared) else {
                return;
            };
            *slot = match twin {
                Ok(twin) => Twin::Ready(twin),
                Err(e) => {
                    log::debug!(
                        "this thread's own task client could not connect ({e}); requests go \
                         through the shared one"
                    );
                    Twin::Failed(Instant::now())
                }
            };
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections Redis has from clients, pub/sub ones included.
    async fn connections(url: &str) -> usize {
        let redis = redis::Client::open(url).unwrap();
        let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .unwrap();
        // This very connection is not counted.
        list.lines().count() - 1
    }

    #[test]
    fn a_single_threaded_runtime_gets_its_own_twin_once_it_is_connected() {
        let redis = testkit::RedisServer::start();
        let url = redis.url();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let shared = Client::connect(&url).await.unwrap();
            let before = connections(&url).await;
            // The first call starts the twin and answers with the shared client.
            assert!(client_for(&shared).same_as(&shared));
            let mut twin = client_for(&shared);
            for _ in 0..500 {
                if !twin.same_as(&shared) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                twin = client_for(&shared);
            }
            assert!(!twin.same_as(&shared), "the twin never came up");
            // Its own command connection and listener.
            assert_eq!(connections(&url).await, before + 2);
            // The same twin from then on.
            assert!(client_for(&shared).same_as(&twin));
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_multi_threaded_runtime_uses_the_shared_client() {
        let redis = testkit::RedisServer::start();
        let shared = Client::connect(&redis.url()).await.unwrap();
        for _ in 0..3 {
            assert!(client_for(&shared).same_as(&shared));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(connections(&redis.url()).await, 2);
    }
}
