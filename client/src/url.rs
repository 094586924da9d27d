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
mod tests {
    use super::*;

    #[test]
    fn a_password_alone_is_removed_with_its_separator() {
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://h:1/0");
        assert_eq!(
            redact("redis://:pw@10.0.0.1:6379/0"),
            "redis://10.0.0.1:6379/0"
        );
    }

    #[test]
    fn a_tls_url_keeps_its_scheme_and_loses_its_credentials() {
        assert_eq!(redact("rediss://:pw@h:1/0"), "rediss://h:1/0");
        assert_eq!(
            redact("rediss://u:pw@127.0.0.1:6380"),
            "rediss://127.0.0.1:6380"
        );
        let url = RedisUrl::parse("rediss://:hunter2@127.0.0.1:6380/0").expect("valid");
        assert!(url.is_tls());
        assert_eq!(
            format!("{url} {url:?}"),
            "rediss://127.0.0.1:6380/0 RedisUrl(\"rediss://127.0.0.1:6380/0\")"
        );
        assert!(
            !RedisUrl::parse("redis://127.0.0.1")
                .expect("valid")
                .is_tls()
        );
    }

    #[test]
    fn a_user_name_goes_with_its_password() {
        assert_eq!(redact("redis://u:pw@h"), "redis://h");
        assert_eq!(redact("redis://alice:s3cr%40t@h:7/2"), "redis://h:7/2");
        assert_eq!(redact("redis://alice@h:7"), "redis://h:7");
    }

    #[test]
    fn a_url_without_credentials_is_printed_as_given() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://127.0.0.1/",
            "redis://localhost",
            "redis://[::1]:7000/3",
            "redis://h:1/0?protocol=resp3",
            "unix:///tmp/redis.sock?db=2",
        ] {
            assert_eq!(redact(url), url);
        }
    }

    #[test]
    fn a_unix_socket_url_loses_its_user_and_pass_parameters() {
        assert_eq!(
            redact("redis+unix:///run/redis.sock?db=1&user=me&pass=hunter2"),
            "redis+unix:///run/redis.sock?db=1"
        );
        assert_eq!(
            redact("unix:///tmp/r.sock?pass=hunter2"),
            "unix:///tmp/r.sock"
        );
        let url = RedisUrl::parse("unix:///tmp/r.sock?pass=hunter2").expect("valid");
        let Kind::Direct { endpoint, .. } = url.kind() else {
            panic!("a unix URL is direct");
        };
        assert_eq!(endpoint, &Endpoint::Unix(PathBuf::from("/tmp/r.sock")));
        assert_eq!(url.host_port(), None);
        assert!(!url.is_loopback());
        assert!(!format!("{url} {url:?}").contains("hunter2"));
    }

    #[test]
    fn rediss_urls_are_redacted_the_same_way() {
        assert_eq!(
            redact("rediss://u:pw@cache.example.com:6380/0#insecure"),
            "rediss://cache.example.com:6380/0#insecure"
        );
        assert_eq!(redact("rediss://cache:6380"), "rediss://cache:6380");
    }

    #[test]
    fn a_string_that_is_no_url_leaks_nothing_after_its_last_at_sign_or_in_its_query() {
        assert_eq!(redact("127.0.0.1:6379"), "127.0.0.1:6379");
        assert_eq!(redact("http://u:pw@h:1"), "http://h:1");
        assert_eq!(redact("redis://:p/w@h"), "redis://h");
        assert_eq!(redact("redis://:a?pass=b@h"), "redis://h");
        assert_eq!(redact("nonsense?pass=x"), "nonsense");
    }

    #[test]
    fn a_password_with_an_unencoded_hash_is_refused_and_never_printed() {
        let url = "redis://admin:2024#hunter2@127.0.0.1:6379";
        assert_eq!(redact(url), "redis://127.0.0.1:6379");
        let e = RedisUrl::parse(url).expect_err("a '#' in the password");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("%23"), "{e}");
        assert_eq!(
            redact("rediss://h:6380/0#insecure"),
            "rediss://h:6380/0#insecure"
        );
        assert!(RedisUrl::parse("rediss://:pw@h:6380/0#insecure").is_ok());
    }

    #[test]
    fn parsing_gives_host_and_port_with_6379_by_default() {
        let at = |url: &str| {
            let url = RedisUrl::parse(url).expect("valid");
            url.host_port().map(|(h, p)| (h.to_owned(), p))
        };
        assert_eq!(
            at("redis://127.0.0.1:6390/"),
            Some(("127.0.0.1".into(), 6390))
        );
        assert_eq!(at("redis://localhost"), Some(("localhost".into(), 6379)));
        assert_eq!(at("redis://:pw@h:1/0"), Some(("h".into(), 1)));
        assert_eq!(at("redis://[::1]:7000"), Some(("::1".into(), 7000)));
        assert_eq!(at("unix:///tmp/r.sock"), None);
    }

    #[test]
    fn a_parsed_url_prints_redacted_and_connects_with_its_password() {
        let url = RedisUrl::parse("redis://u:hunter2@127.0.0.1:6390").expect("valid");
        assert_eq!(url.to_string(), "redis://127.0.0.1:6390");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(url.as_str(), "redis://u:hunter2@127.0.0.1:6390");
        assert_eq!(
            url.connection_info().redis_settings().password(),
            Some("hunter2")
        );
    }

    #[test]
    fn what_a_connection_refuses_is_an_error_naming_the_redacted_url() {
        for bad in ["http://127.0.0.1:6379", "127.0.0.1:6379", "redis://:pw@h/x"] {
            let e = RedisUrl::parse(bad).expect_err(bad);
            let Error::InvalidUrl { url, reason } = &e else {
                panic!("{bad}: {e:?}");
            };
            assert!(!url.contains("pw"), "{e}");
            assert!(!reason.is_empty(), "{bad}");
        }
    }

    #[test]
    fn a_sentinel_url_parses_and_prints_without_credentials() {
        let url = RedisUrl::parse(
            "redis+sentinel://app:hunter2@127.0.0.1:26379,127.0.0.1:26380/mymaster/2\
             ?sentinel_password=hunter2",
        )
        .expect("valid");
        assert!(url.is_sentinel());
        assert!(!url.is_tls());
        assert!(
            !url.is_loopback(),
            "its primary is known only once asked for"
        );
        assert_eq!(url.host_port(), None);
        assert_eq!(
            format!("{url} {url:?}"),
            "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/2 \
             RedisUrl(\"redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/2\")"
        );
        let Kind::Sentinel(spec) = url.kind() else {
            panic!("a sentinel URL");
        };
        assert_eq!(spec.service, "mymaster");
        assert_eq!(spec.db, 2);
        assert!(
            !RedisUrl::parse("redis://127.0.0.1")
                .expect("valid")
                .is_sentinel()
        );
    }

    #[test]
    fn a_bad_sentinel_url_is_an_invalid_url_naming_the_problem_without_credentials() {
        let e =
            RedisUrl::parse("redis+sentinel://u:hunter2@h:99999/mymaster").expect_err("bad port");
        let Error::InvalidUrl { url, reason } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(url, "redis+sentinel://h:99999/mymaster");
        assert!(reason.contains("port \"99999\""), "{reason}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn only_loopback_hosts_are_loopback() {
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("localhost"));
        assert!(is_loopback_host("::1"));
        assert!(is_loopback_host("[::1]"));
        assert!(!is_loopback_host("10.0.0.1"));
        assert!(!is_loopback_host("redis.example.com"));
        assert!(
            RedisUrl::parse("redis://[::1]:1")
                .expect("valid")
                .is_loopback()
        );
        assert!(
            !RedisUrl::parse("redis://10.0.0.1")
                .expect("valid")
                .is_loopback()
        );
    }

    /// The sibling of `#`: a `?` in a password, not encoded, makes the
    /// rest a query; the URL is taken as host `admin`, port 2024.
    #[test]
    fn a_password_with_an_unencoded_question_mark_is_refused_too() {
        let url = "redis://admin:2024?hunter2@127.0.0.1:6379";
        assert!(!redact(url).contains("hunter2"), "{}", redact(url));
        match RedisUrl::parse(url) {
            Ok(u) => panic!("accepted, connecting to {:?} (shown as {u})", u.host_port()),
            Err(e) => assert!(!e.to_string().contains("hunter2"), "{e}"),
        }
    }
}
