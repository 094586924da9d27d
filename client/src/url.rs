//! Redis URLs: parsed once by redis-rs's own rules (exactly what a
//! connection accepts), where they point (host and port, loopback or not),
//! and how they are printed.
//!
//! One redaction rule for every message, log line and status header: a
//! printed URL carries no credentials at all. The user name and password of
//! `redis://USER:PASSWORD@HOST` are removed whole (an ACL user name is half a
//! credential), and so are the `user` and `pass` query parameters of a unix
//! socket URL; only the query parameters known to hold no secret (`db`,
//! `protocol`) are kept. A string that does not parse as a URL is cut after
//! its last `@` and before its `?`, so a malformed URL leaks nothing either.
//!
//! A `redis+sentinel://` URL (see [`sentinel`] for its form) names the
//! sentinels and the service whose current primary every connection asks
//! them for; it prints without its credentials and query.
//!
//! ```
//! let url = client::RedisUrl::parse("redis://:hunter2@127.0.0.1:6390/0").expect("valid");
//! assert_eq!(url.host_port(), Some(("127.0.0.1", 6390)));
//! assert!(url.is_loopback());
//! assert_eq!(url.to_string(), "redis://127.0.0.1:6390/0");
//! assert_eq!(client::url::redact("redis://u:pw@h:1"), "redis://h:1");
//! let url = client::RedisUrl::parse("redis+sentinel://:pw@10.0.0.1,10.0.0.2:26380/mymaster")
//!     .expect("valid");
//! assert!(url.is_sentinel());
//! assert_eq!(url.to_string(), "redis+sentinel://10.0.0.1,10.0.0.2:26380/mymaster");
//! ```

use std::fmt;
use std::path::PathBuf;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use crate::{Error, Result};

pub mod sentinel;

pub(crate) use sentinel::SentinelSpec;

/// Query parameters that never hold a secret; every other one is left out
/// of a printed URL.
const PUBLIC_QUERY_KEYS: [&str; 2] = ["db", "protocol"];

/// Where a Redis URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum Endpoint {
    /// A TCP host and port (`redis://`, or `rediss://` with `tls`).
    Tcp {
        /// Host name or IP address, IPv6 without brackets.
        host: String,
        /// Port (6379 when the URL names none).
        port: u16,
        /// Whether the connection is TLS (`rediss://`).
        tls: bool,
    },
    /// A unix socket (`unix://` or `redis+unix://`).
    Unix(PathBuf),
}

/// What a URL connects to.
#[derive(Clone)]
pub(crate) enum Kind {
    /// One server.
    Direct {
        /// Where it is.
        endpoint: Endpoint,
        /// How redis-rs connects to it.
        info: ConnectionInfo,
    },
    /// The current primary of a service monitored by sentinels.
    Sentinel(SentinelSpec),
}

/// A Redis URL that a connection accepts. Printing it ([`fmt::Display`],
/// [`fmt::Debug`]) shows the redacted form; only [`RedisUrl::as_str`] gives
/// the credentials, for connecting. Two are equal when written the same.
#[derive(Clone)]
pub struct RedisUrl {
    full: String,
    redacted: String,
    kind: Kind,
}

impl PartialEq for RedisUrl {
    fn eq(&self, other: &Self) -> bool {
        self.full == other.full
    }
}

impl Eq for RedisUrl {}

impl std::hash::Hash for RedisUrl {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.full.hash(state);
    }
}

impl RedisUrl {
    /// Parses `url` as redis-rs does when it connects, or as a
    /// `redis+sentinel://` URL ([`sentinel`]). A URL that a connection
    /// would refuse is [`Error::InvalidUrl`].
    pub fn parse(url: &str) -> Result<RedisUrl> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: redact(url),
            reason,
        };
        if sentinel::is_sentinel(url) {
            let spec = sentinel::parse(url).map_err(invalid)?;
            return Ok(RedisUrl {
                full: url.to_owned(),
                redacted: redact(url),
                kind: Kind::Sentinel(spec),
            });
        }
        // `redis://admin:2024#pw@host` parses as host `admin`, port 2024 and
        // a fragment holding the rest: a '#' in a password, not encoded.
        // So does `redis://admin:2024?pw@host`, the rest a query.
        if let Some(u) = redis::parse_redis_url(url) {
            for (part, sign, code) in [(u.fragment(), '#', "%23"), (u.query(), '?', "%3F")] {
                if part.is_some_and(|p| p.contains('@')) {
                    return Err(invalid(format!(
                        "a '{sign}' before the '@' (percent-encode a '{sign}' in a password as \
                         {code})"
                    )));
                }
            }
        }
        let info = url
            .into_connection_info()
            .map_err(|e| invalid(e.to_string()))?;
        let endpoint = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Endpoint::Tcp {
                host: host.clone(),
                port: *port,
                tls: false,
            },
            ConnectionAddr::TcpTls { host, port, .. } => Endpoint::Tcp {
                host: host.clone(),
                port: *port,
                tls: true,
            },
            ConnectionAddr::Unix(path) => Endpoint::Unix(path.clone()),
            other => return Err(invalid(format!("unsupported address {other}"))),
        };
        Ok(RedisUrl {
            full: url.to_owned(),
            redacted: redact(url),
            kind: Kind::Direct { endpoint, info },
        })
    }

    /// The URL as given, credentials included: for connecting, never for printing.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// Host and port of a TCP URL; `None` for a unix socket and for a
    /// Sentinel URL (whose primary is known only once asked for).
    pub fn host_port(&self) -> Option<(&str, u16)> {
        match &self.kind {
            Kind::Direct {
                endpoint: Endpoint::Tcp { host, port, .. },
                ..
            } => Some((host, *port)),
            _ => None,
        }
    }

    /// Whether the connection is TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        matches!(
            self.kind,
            Kind::Direct {
                endpoint: Endpoint::Tcp { tls: true, .. },
                ..
            }
        )
    }

    /// Whether this is a `redis+sentinel://` URL.
    pub fn is_sentinel(&self) -> bool {
        matches!(self.kind, Kind::Sentinel(_))
    }

    /// Whether the URL is TCP on this machine's loopback interface.
    pub fn is_loopback(&self) -> bool {
        self.host_port()
            .is_some_and(|(host, _)| is_loopback_host(host))
    }

    /// What the URL connects to.
    pub(crate) fn kind(&self) -> &Kind {
        &self.kind
    }

    /// What redis-rs connects with, for a URL of one server.
    #[cfg(test)]
    pub(crate) fn connection_info(&self) -> ConnectionInfo {
        match &self.kind {
            Kind::Direct { info, .. } => info.clone(),
            Kind::Sentinel(_) => panic!("a sentinel URL has no single connection info"),
        }
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisUrl").field(&self.redacted).finish()
    }
}

/// `localhost`, or an IP address on the loopback interface.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `url` without credentials (see the module docs for the rule). A URL with
/// none is returned exactly as given.
pub fn redact(url: &str) -> String {
    if sentinel::is_sentinel(url) {
        return sentinel::redact(url);
    }
    let Some(parsed) = redis::parse_redis_url(url) else {
        return redact_unparsed(url);
    };
    let query: Vec<&str> = parsed
        .query()
        .map(|q| q.split('&').filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    let public = |pair: &&str| {
        let key = pair.split('=').next().unwrap_or_default();
        PUBLIC_QUERY_KEYS.contains(&key)
    };
    let secret =
        !parsed.username().is_empty() || parsed.password().is_some() || !query.iter().all(public);
    if !secret {
        // An '@' the parse found no credentials before sits in the query or
        // fragment: a password with a '?' or '#' in it, not encoded.
        if url.contains('@') {
            return redact_unparsed(url);
        }
        return url.to_owned();
    }
    let mut out = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or(""));
    if let Some(port) = parsed.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(parsed.path());
    let kept: Vec<&str> = query.into_iter().filter(public).collect();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(fragment) = parsed.fragment() {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// A string that is no URL: keep the scheme, drop everything up to the last
/// `@` and everything from the first `?` after it.
fn redact_unparsed(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(i) => text.split_at(i + 3),
        None => ("", text),
    };
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let rest = rest.split('?').next().unwrap_or(rest);
    format!("{scheme}{rest}")
}

#[cfg(test)]
mod tests;
