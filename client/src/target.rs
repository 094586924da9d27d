//! [`Target`]: the server a connection is made to, resolved again for every
//! connection. A plain URL always names the same server. A
//! `redis+sentinel://` URL names the service whose current primary the
//! sentinels are asked for at every connect, so a connection made after a
//! failover goes to the promoted replica.
//!
//! A connection made before a failover would stay on the old primary, which
//! keeps accepting writes until the sentinels turn it into a replica (and
//! then throws them away). So a Sentinel target also watches the sentinels'
//! `+switch-master` events and counts the switches of its service
//! ([`Target::switches`]): every connection made under an older count is
//! dropped at its next use and made again to the new primary, a reply
//! listener resubscribes, and a blocked pop gives up its wait. When the
//! watcher had to subscribe again (its sentinel went away), it asks which
//! primary is current and counts a switch if it is not the last one
//! connected to.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisResult};
use tokio::sync::watch;

use crate::url::{Kind, SentinelSpec};
use crate::{RedisCa, RedisUrl};

/// The channel on which sentinels announce a new primary: `<service>
/// <old ip> <old port> <new ip> <new port>`.
const SWITCH_CHANNEL: &str = "+switch-master";
/// Bound on connecting and subscribing to one sentinel.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(2);
/// Cap of the watcher's backoff while no sentinel answers.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where connections of one URL go. See the module docs.
pub(crate) enum Target {
    /// One server.
    Direct(redis::Client),
    /// The primary named by the sentinels.
    Sentinel(SentinelTarget),
}

/// A service's primary, as the sentinels name it.
pub(crate) struct SentinelTarget {
    /// The lock serialises the lookups (redis-rs keeps one cached
    /// connection per sentinel).
    client: tokio::sync::Mutex<SentinelClient>,
    service: String,
    /// The sentinels, for the switch watcher.
    sentinels: Vec<ConnectionInfo>,
    /// Switches seen so far (see the module docs).
    switches: Arc<watch::Sender<u64>>,
    /// The switch watcher, started by the first lookup (inside a runtime)
    /// and stopped when the target is dropped.
    watcher: OnceLock<tokio::task::JoinHandle<()>>,
    /// The primary of the latest lookup.
    last: Arc<Mutex<Option<(String, u16)>>>,
}

impl Drop for SentinelTarget {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.get() {
            watcher.abort();
        }
    }
}

/// TCP_NODELAY: requests are small and pipelined; Nagle's algorithm would
/// hold a second request back until the first is acknowledged.
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// The Sentinel targets of this process by URL: every connection to one
/// `redis+sentinel://` URL shares one lookup client and one switch watcher.
static SENTINEL_TARGETS: Mutex<Vec<(String, std::sync::Weak<Target>)>> = Mutex::new(Vec::new());

impl Target {
    /// The target of `url`: shared with every other connection of this
    /// process to the same `redis+sentinel://` URL (one switch watcher);
    /// of its own for a plain URL, which trusts `ca` when it is `rediss://`.
    /// The error is redis-rs's words.
    pub(crate) fn shared(url: &RedisUrl, ca: Option<&RedisCa>) -> Result<Arc<Target>, String> {
        if !url.is_sentinel() {
            return Target::new(url, ca).map(Arc::new);
        }
        let mut targets = lock(&SENTINEL_TARGETS);
        targets.retain(|(_, target)| target.strong_count() > 0);
        if let Some(target) = targets
            .iter()
            .find(|(full, _)| full == url.as_str())
            .and_then(|(_, target)| target.upgrade())
        {
            return Ok(target);
        }
        let target = Arc::new(Target::new(url, ca)?);
        targets.push((url.as_str().to_owned(), Arc::downgrade(&target)));
        Ok(target)
    }

    fn new(url: &RedisUrl, ca: Option<&RedisCa>) -> Result<Target, String> {
        match url.kind() {
            Kind::Direct { info, .. } => {
                let info = info.clone().set_tcp_settings(tcp_settings());
                match ca {
                    Some(ca) => redis::Client::build_with_tls(info, ca.certificates()),
                    None => redis::Client::open(info),
                }
                .map(Target::Direct)
                .map_err(|e| e.to_string())
            }
            Kind::Sentinel(spec) => SentinelTarget::new(spec)
                .map(Target::Sentinel)
                .map_err(|e| e.to_string()),
        }
    }

    /// A client for the server to connect to now: for a Sentinel URL, the
    /// primary the first answering sentinel names (and which says it is a
    /// primary when asked).
    pub(crate) async fn resolve(&self) -> RedisResult<redis::Client> {
        match self {
            Target::Direct(client) => Ok(client.clone()),
            Target::Sentinel(sentinel) => {
                sentinel.start_watcher();
                // Boxed: the lookup's future is deeply nested, and every
                // future that connects (up to a websocket connection's)
                // would carry its type.
                let lookup: std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>> =
                    Box::pin(async move { sentinel.client.lock().await.async_get_client().await });
                let client = lookup.await?;
                if let ConnectionAddr::Tcp(host, port) = client.get_connection_info().addr() {
                    *lock(&sentinel.last) = Some((host.clone(), *port));
                }
                Ok(client)
            }
        }
    }

    /// The switches of the primary seen so far (always 0 for a plain URL).
    pub(crate) fn switch_count(&self) -> u64 {
        match self {
            Target::Direct(_) => 0,
            Target::Sentinel(sentinel) => *sentinel.switches.borrow(),
        }
    }

    /// A receiver that sees every later switch of the primary; `None` for a
    /// plain URL (whose server never changes).
    pub(crate) fn switches(&self) -> Option<watch::Receiver<u64>> {
        match self {
            Target::Direct(_) => None,
            Target::Sentinel(sentinel) => Some(sentinel.switches.subscribe()),
        }
    }
}

/// Resolves when `switches` sees a switch of the primary; never for `None`
/// (a plain URL) or once the target is gone.
pub(crate) async fn switched(switches: &mut Option<watch::Receiver<u64>>) {
    let Some(rx) = switches else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl SentinelTarget {
    fn new(spec: &SentinelSpec) -> RedisResult<SentinelTarget> {
        let nodes = spec
            .nodes
            .iter()
            .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
        let mut builder =
            SentinelClientBuilder::new(nodes, &spec.service, SentinelServerType::Master)?
                .set_client_to_redis_db(spec.db)
                .set_client_to_redis_tcp_settings(tcp_settings())
                .set_client_to_sentinel_tcp_settings(tcp_settings());
        if let Some(user) = &spec.username {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = &spec.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(user) = &spec.sentinel_username {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(password) = &spec.sentinel_password {
            builder = builder.set_client_to_sentinel_password(password);
        }
        let sentinels = spec
            .nodes
            .iter()
            .map(|(host, port)| {
                let mut redis = redis::RedisConnectionInfo::default();
                if let Some(user) = &spec.sentinel_username {
                    redis = redis.set_username(user);
                }
                if let Some(password) = &spec.sentinel_password {
                    redis = redis.set_password(password);
                }
                ConnectionAddr::Tcp(host.clone(), *port)
                    .into_connection_info()
                    .map(|info| info.set_redis_settings(redis))
            })
            .collect::<RedisResult<Vec<_>>>()?;
        Ok(SentinelTarget {
            client: tokio::sync::Mutex::new(builder.build()?),
            service: spec.service.clone(),
            sentinels,
            switches: Arc::new(watch::channel(0).0),
            watcher: OnceLock::new(),
            last: Arc::default(),
        })
    }

    fn start_watcher(&self) {
        self.watcher.get_or_init(|| {
            tokio::spawn(watch_switches(
                self.sentinels.clone(),
                self.service.clone(),
                self.switches.clone(),
                self.last.clone(),
            ))
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Subscribes to [`SWITCH_CHANNEL`] on the first sentinel that answers and
/// counts the switches of `service`; moves on to the next sentinel when the
/// subscription ends. After a resubscription a switch may have gone unseen:
/// it asks that sentinel for the primary and counts a switch when it is
/// not `last` (the primary of the latest lookup).
async fn watch_switches(
    sentinels: Vec<ConnectionInfo>,
    service: String,
    switches: Arc<watch::Sender<u64>>,
    last: Arc<Mutex<Option<(String, u16)>>>,
) {
    let mut backoff = Duration::ZERO;
    let mut watched_before = false;
    loop {
        for info in &sentinels {
            let subscribe = async {
                let mut pubsub = redis::Client::open(info.clone())?
                    .get_async_pubsub()
                    .await?;
                pubsub.subscribe(SWITCH_CHANNEL).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = match tokio::time::timeout(SENTINEL_TIMEOUT, subscribe).await {
                Ok(Ok(pubsub)) => pubsub,
                Ok(Err(e)) => {
                    log::debug!("watching sentinel {}: {e}", info.addr());
                    continue;
                }
                Err(_) => continue,
            };
            if watched_before {
                let named = tokio::time::timeout(SENTINEL_TIMEOUT, primary_named(info, &service));
                let changed = match named.await {
                    Ok(Ok(named)) => lock(&last).as_ref() != Some(&named),
                    // Unknown: count it, a reconnect costs little.
                    _ => true,
                };
                if changed {
                    switches.send_modify(|n| *n += 1);
                }
            }
            watched_before = true;
            backoff = Duration::ZERO;
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let payload: String = message.get_payload().unwrap_or_default();
                if payload.split(' ').next() == Some(service.as_str()) {
                    log::info!("the sentinels switched the primary of {service}: {payload}");
                    switches.send_modify(|n| *n += 1);
                }
            }
            log::debug!("lost the subscription to sentinel {}", info.addr());
        }
        backoff = (backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
        tokio::time::sleep(backoff).await;
    }
}

/// The primary of `service` as the sentinel at `info` names it.
async fn primary_named(info: &ConnectionInfo, service: &str) -> RedisResult<(String, u16)> {
    let mut conn = redis::Client::open(info.clone())?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(service)
        .query_async(&mut conn)
        .await
}
