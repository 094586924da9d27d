//! [`Target`]: the server a connection is made to, resolved again for every
//! connection. A plain URL always names the same server. A
//! `redis+sentinel://` URL names the service whose current primary the
//! sentinels are asked for at every connect, so a connection made after a
//! failover goes to the promoted replica.
//!
//! A connection made before a failover would stay on the old primary, which
//! keeps accepting writes that are lost when it becomes a replica. So a
//! Sentinel target also follows the sentinels' failover events
//! ([`failover`]): connections made before a switch are dropped at their
//! next use and made again where the events say, a reply listener
//! resubscribes, and a blocked pop gives up its wait.

mod failover;

use std::sync::{Arc, Mutex, OnceLock};

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisResult};
use tokio::sync::watch;

use crate::url::{Kind, SentinelSpec};
use crate::{RedisCa, RedisUrl};

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
    /// The sentinels, for the event watcher.
    sentinels: Vec<ConnectionInfo>,
    /// How the primary's connections are made (database, credentials).
    node: redis::RedisConnectionInfo,
    /// What the sentinels' events say (see the module docs).
    failovers: Arc<failover::Failovers>,
    /// The event watcher, started by the first lookup (inside a runtime)
    /// and stopped when the target is dropped.
    watcher: OnceLock<tokio::task::JoinHandle<()>>,
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
                // The CA is for `rediss://`; a plain URL beside one (a
                // circle's own Redis) connects without TLS.
                match ca.filter(|_| url.is_tls()) {
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
                if let Some((host, port)) = sentinel.failovers.announced() {
                    let info = ConnectionAddr::Tcp(host, port)
                        .into_connection_info()?
                        .set_redis_settings(sentinel.node.clone())
                        .set_tcp_settings(tcp_settings());
                    return redis::Client::open(info);
                }
                // Boxed: the lookup's future is deeply nested, and every
                // future that connects (up to a websocket connection's)
                // would carry its type.
                let lookup: std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>> =
                    Box::pin(async move { sentinel.client.lock().await.async_get_client().await });
                let client = lookup.await.map_err(|e| {
                    redis::RedisError::from((
                        e.kind(),
                        "no primary from the sentinels",
                        format!(
                            "asking them for the primary of {:?} and checking its role: {e}",
                            sentinel.failovers.service()
                        ),
                    ))
                })?;
                if let ConnectionAddr::Tcp(host, port) = client.get_connection_info().addr() {
                    sentinel.failovers.looked_up((host.clone(), *port));
                }
                Ok(client)
            }
        }
    }

    /// The switches of the primary seen so far (always 0 for a plain URL).
    pub(crate) fn switch_count(&self) -> u64 {
        match self {
            Target::Direct(_) => 0,
            Target::Sentinel(sentinel) => sentinel.failovers.count(),
        }
    }

    /// A receiver that sees every later switch of the primary; `None` for a
    /// plain URL (whose server never changes).
    pub(crate) fn switches(&self) -> Option<watch::Receiver<u64>> {
        match self {
            Target::Direct(_) => None,
            Target::Sentinel(sentinel) => Some(sentinel.failovers.switches()),
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
        let mut node = redis::RedisConnectionInfo::default().set_db(spec.db);
        if let Some(user) = &spec.username {
            node = node.set_username(user);
        }
        if let Some(password) = &spec.password {
            node = node.set_password(password);
        }
        Ok(SentinelTarget {
            client: tokio::sync::Mutex::new(builder.build()?),
            sentinels,
            node,
            failovers: Arc::new(failover::Failovers::new(&spec.service)),
            watcher: OnceLock::new(),
        })
    }

    fn start_watcher(&self) {
        self.watcher.get_or_init(|| {
            let (failovers, sentinels) = (self.failovers.clone(), self.sentinels.clone());
            tokio::spawn(async move { failovers.watch(sentinels).await })
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
