//! `redis+sentinel://` URLs: a Redis primary found through Redis Sentinel.
//!
//! redis-rs has a Sentinel client but no URL form for it, so this one is
//! ours:
//!
//! ```text
//! redis+sentinel://[USER[:PASSWORD]@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]
//!                  [?sentinel_username=U&sentinel_password=P]
//! ```
//!
//! - `HOST[:PORT]`, comma-separated: the sentinels (at least one), asked in
//!   order; a port defaults to 26379; an IPv6 address goes in brackets.
//! - `SERVICE`: the name the sentinels monitor the primary under (`sentinel
//!   monitor SERVICE …`), percent-decoded, not empty.
//! - `DB`: the database number on the primary, default 0.
//! - `USER` and `PASSWORD` (percent-encoded, as in `redis://`): the
//!   credentials of the primary, not of the sentinels.
//! - `sentinel_username`, `sentinel_password`: the credentials of the
//!   sentinels, when they require some. No other query parameter is accepted.
//!
//! Printed, such a URL keeps its sentinels, service and database and loses
//! its user name, password and whole query. TLS (`rediss+sentinel://`) is
//! refused with an error saying so.

/// The scheme of a Sentinel URL.
pub(crate) const SCHEME: &str = "redis+sentinel";
/// The port of a sentinel named without one.
pub(crate) const DEFAULT_PORT: u16 = 26379;

/// A parsed `redis+sentinel://` URL.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SentinelSpec {
    /// The sentinels, in the URL's order.
    pub nodes: Vec<(String, u16)>,
    /// The monitored service (master) name.
    pub service: String,
    /// The database on the primary.
    pub db: i64,
    /// The primary's user name.
    pub username: Option<String>,
    /// The primary's password.
    pub password: Option<String>,
    /// The sentinels' user name.
    pub sentinel_username: Option<String>,
    /// The sentinels' password.
    pub sentinel_password: Option<String>,
}

impl std::fmt::Debug for SentinelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| v.as_ref().map(|_| "<set>");
        f.debug_struct("SentinelSpec")
            .field("nodes", &self.nodes)
            .field("service", &self.service)
            .field("db", &self.db)
            .field("username", &set(&self.username))
            .field("password", &set(&self.password))
            .field("sentinel_username", &set(&self.sentinel_username))
            .field("sentinel_password", &set(&self.sentinel_password))
            .finish()
    }
}

/// The scheme of `url` (before `://`), lowercased; `None` without one.
fn scheme_of(url: &str) -> Option<String> {
    url.split_once("://").map(|(s, _)| s.to_ascii_lowercase())
}

/// Whether `url` is meant as a Sentinel URL (scheme `redis+sentinel`, or a
/// variant this module refuses with a reason).
pub(crate) fn is_sentinel(url: &str) -> bool {
    scheme_of(url).is_some_and(|s| s.contains("sentinel"))
}

const EXAMPLE: &str = "for example redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/0";

/// Parses a Sentinel URL. The error says what is wrong and never repeats a
/// credential.
pub(crate) fn parse(url: &str) -> Result<SentinelSpec, String> {
    let scheme = scheme_of(url).unwrap_or_default();
    if scheme != SCHEME {
        return Err(format!(
            "scheme {scheme}:// is not supported for sentinels (TLS to sentinels or a sentinel \
             primary is not supported); use {SCHEME}://, {EXAMPLE}"
        ));
    }
    let rest = &url[SCHEME.len() + 3..];
    if rest.contains('#') {
        return Err(
            "a sentinel URL takes no #fragment (percent-encode a '#' in a password as %23)"
                .to_string(),
        );
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    // The credentials end at the last '@' (a '/' in a password is taken as
    // part of it); a '@' in a service name is written %40.
    let (userinfo, after_userinfo) = match before_query.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, before_query),
    };
    let Some((hosts, path)) = after_userinfo.split_once('/') else {
        return Err(format!("no service name after the sentinels; {EXAMPLE}"));
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, pass) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            let user = decode(user).map_err(|e| format!("the user name {e}"))?;
            let pass = pass
                .map(|p| decode(p).map_err(|e| format!("the password {e}")))
                .transpose()?;
            (
                Some(user).filter(|u| !u.is_empty()),
                pass.filter(|p| !p.is_empty()),
            )
        }
    };
    let nodes = hosts
        .split(',')
        .enumerate()
        .map(|(i, node)| {
            parse_node(node).map_err(|e| format!("sentinel {} ({node:?}): {e}", i + 1))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut segments = path.split('/');
    let service =
        decode(segments.next().unwrap_or_default()).map_err(|e| format!("the service name {e}"))?;
    if service.is_empty() {
        return Err(format!("the service name is empty; {EXAMPLE}"));
    }
    let db = match segments.next() {
        None | Some("") => 0,
        Some(db) => db
            .parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| format!("database {db:?} is not a number 0 or more"))?,
    };
    if let Some(extra) = segments.find(|s| !s.is_empty()) {
        return Err(format!(
            "unexpected path segment {extra:?} after the service name and database \
             (/SERVICE[/DB])"
        ));
    }
    let mut spec = SentinelSpec {
        nodes,
        service,
        db,
        username,
        password,
        sentinel_username: None,
        sentinel_password: None,
    };
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value).map_err(|e| format!("query parameter {key} {e}"))?;
        let value = Some(value).filter(|v| !v.is_empty());
        match key {
            "sentinel_username" => spec.sentinel_username = value,
            "sentinel_password" => spec.sentinel_password = value,
            other => {
                return Err(format!(
                    "unknown query parameter {:?} (accepted: sentinel_username, \
                     sentinel_password)",
                    other.chars().take(32).collect::<String>()
                ));
            }
        }
    }
    Ok(spec)
}

/// One `HOST[:PORT]` of the sentinel list.
fn parse_node(node: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(inner) = node.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err("an IPv6 address without its closing ']'".to_string());
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("unexpected {after:?} after ']'")),
            },
        }
    } else {
        match node.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (node, None),
        }
    };
    if host.is_empty() {
        return Err("no host".to_string());
    }
    if host.contains(['/', '@', '?', ' ']) || (!node.starts_with('[') && host.contains(':')) {
        return Err("not a host name or address".to_string());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {port:?} is not a number from 1 to 65535"))?,
    };
    Ok((host.to_string(), port))
}

/// Percent-decodes `text` as UTF-8; the error does not repeat the text.
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a '%' not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once percent-decoded".to_string())
}

/// `url` (a Sentinel URL, parsed or not) without credentials: everything up
/// to its last `@` and its whole query are dropped. An `@` past the first
/// `?` or `#` of a URL that does not parse may end a password holding that
/// `?` or `#`: then nothing but the scheme is kept.
pub(crate) fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (before_query, after) = rest.split_at(rest.find(['?', '#']).unwrap_or(rest.len()));
    if after.contains('@') && parse(url).is_err() {
        return format!("{scheme}://(credentials hidden)");
    }
    let rest = before_query.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_sentinel_url_gives_its_sentinels_service_database_and_both_credentials() {
        let spec = parse(
            "redis+sentinel://app:s%40cret@10.0.0.1:26380,sentinel-b,[::1]:26381/my%20master/3\
             ?sentinel_username=watch&sentinel_password=p%26w",
        )
        .expect("valid");
        assert_eq!(
            spec.nodes,
            vec![
                ("10.0.0.1".to_string(), 26380),
                ("sentinel-b".to_string(), DEFAULT_PORT),
                ("::1".to_string(), 26381),
            ]
        );
        assert_eq!(spec.service, "my master");
        assert_eq!(spec.db, 3);
        assert_eq!(spec.username.as_deref(), Some("app"));
        assert_eq!(spec.password.as_deref(), Some("s@cret"));
        assert_eq!(spec.sentinel_username.as_deref(), Some("watch"));
        assert_eq!(spec.sentinel_password.as_deref(), Some("p&w"));
    }

    #[test]
    fn a_minimal_sentinel_url_has_no_credentials_and_database_0() {
        let spec = parse("redis+sentinel://127.0.0.1/mymaster").expect("valid");
        assert_eq!(spec.nodes, vec![("127.0.0.1".to_string(), DEFAULT_PORT)]);
        assert_eq!((spec.service.as_str(), spec.db), ("mymaster", 0));
        assert_eq!(spec.username, None);
        assert_eq!(spec.password, None);
        let spec = parse("REDIS+SENTINEL://:pw@h:1/m/").expect("valid");
        assert_eq!(
            (spec.username, spec.password.as_deref()),
            (None, Some("pw"))
        );
    }

    #[test]
    fn each_bad_part_of_a_sentinel_url_is_named() {
        for (bad, says) in [
            ("redis+sentinel://h:26379", "no service name"),
            ("redis+sentinel://h:26379/", "service name is empty"),
            ("redis+sentinel://h:0/m", "port \"0\""),
            ("redis+sentinel://h:port/m", "port \"port\""),
            ("redis+sentinel://a:1,,b:2/m", "sentinel 2"),
            ("redis+sentinel://[::1/m", "closing ']'"),
            ("redis+sentinel://h/m/x", "database \"x\""),
            ("redis+sentinel://h/m/-1", "database \"-1\""),
            (
                "redis+sentinel://h/m/0/extra",
                "unexpected path segment \"extra\"",
            ),
            (
                "redis+sentinel://h/m?db=1",
                "unknown query parameter \"db\"",
            ),
            ("redis+sentinel://h/m%zz", "service name has a '%'"),
            ("rediss+sentinel://h/m", "TLS"),
            ("redis+sentinel://h/m#x", "fragment"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn no_credential_appears_in_an_error_or_a_redacted_url() {
        for bad in [
            "redis+sentinel://u:hunter2@h:0/m?sentinel_password=hunter2",
            "redis+sentinel://u:hunter2@h/m/x?sentinel_password=hunter2",
            "redis+sentinel://u:hunter2%zz@h/m",
            "redis+sentinel://u:hunter2@h/m?sentinel_password=hunter2%zz",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(!e.contains("hunter2"), "{e}");
            assert!(!redact(bad).contains("hunter2"), "{}", redact(bad));
        }
        assert_eq!(
            redact("redis+sentinel://u:hunter2@a:1,b:2/m/1?sentinel_password=hunter2"),
            "redis+sentinel://a:1,b:2/m/1"
        );
        assert_eq!(redact("redis+sentinel://a/m"), "redis+sentinel://a/m");
        assert_eq!(redact("redis+sentinel://u:p/w@a/m"), "redis+sentinel://a/m");
        let spec = parse("redis+sentinel://u:p/w@a/m").expect("valid");
        assert_eq!(spec.password.as_deref(), Some("p/w"));
        assert_eq!(redact("redis+sentinel://:p@a"), "redis+sentinel://a");
        for bad in [
            "redis+sentinel://app:hunter2#x@h:26379/m",
            "redis+sentinel://app:hunter2?x@h:26379/m",
        ] {
            assert!(!redact(bad).contains("hunter2"), "{}", redact(bad));
        }
        assert_eq!(
            redact("redis+sentinel://h/m?sentinel_password=p@ss"),
            "redis+sentinel://h/m"
        );
    }
}
