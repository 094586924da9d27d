//! [`Target`]: the server a connection is made to, resolved again for every
//! connection. A plain URL always names the same server; a
//! `redis+sentinel://` URL names the service whose current primary the
//! sentinels are asked for at every connect, so a connection made after a
//! failover goes to the promoted replica.

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, RedisResult};

use crate::url::{Kind, SentinelSpec};
use crate::{RedisCa, RedisUrl};

/// Where connections of one URL go. See the module docs.
pub(crate) enum Target {
    /// One server.
    Direct(redis::Client),
    /// The primary named by the sentinels; the lock serialises the lookups
    /// (redis-rs keeps one cached connection per sentinel).
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// TCP_NODELAY: requests are small and pipelined; Nagle's algorithm would
/// hold a second request back until the first is acknowledged.
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

impl Target {
    /// The target of `url`; with `ca`, a `rediss://` URL trusts it. The
    /// error is redis-rs's words.
    pub(crate) fn new(url: &RedisUrl, ca: Option<&RedisCa>) -> Result<Target, String> {
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
            Kind::Sentinel(spec) => sentinel_client(spec)
                .map(|c| Target::Sentinel(tokio::sync::Mutex::new(c)))
                .map_err(|e| e.to_string()),
        }
    }

    /// A client for the server to connect to now: for a Sentinel URL, the
    /// primary the first answering sentinel names (and which says it is a
    /// primary when asked).
    pub(crate) async fn resolve(&self) -> RedisResult<redis::Client> {
        match self {
            Target::Direct(client) => Ok(client.clone()),
            // Boxed: the lookup's future is deeply nested, and every future
            // that connects (up to a websocket connection's) would carry
            // its type.
            Target::Sentinel(sentinel) => {
                let lookup: std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>> =
                    Box::pin(async move { sentinel.lock().await.async_get_client().await });
                lookup.await
            }
        }
    }
}

fn sentinel_client(spec: &SentinelSpec) -> RedisResult<SentinelClient> {
    let nodes = spec
        .nodes
        .iter()
        .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
    let mut builder = SentinelClientBuilder::new(nodes, &spec.service, SentinelServerType::Master)?
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
    builder.build()
}
