//! The `Origin` check on upgrade: a browser page on another origin must not be
//! able to drive a local circle.

use std::net::{Ipv4Addr, Ipv6Addr};

use actix_web::http::header::{self, HeaderMap};

/// The `Origin` of a request, for [`is_allowed`]: `None` without one, `""`
/// (allowed nowhere) for one that is not text, and for several (a browser
/// sends one; whichever were checked, the others would pass unseen).
pub fn of_request(headers: &HeaderMap) -> Option<&str> {
    let mut origins = headers.get_all(header::ORIGIN);
    match (origins.next().map(|v| v.to_str()), origins.next()) {
        (None, _) => None,
        (Some(Ok(origin)), None) => Some(origin),
        (Some(_), _) => Some(""),
    }
}

/// Whether an upgrade carrying `origin` (the raw header, `None` when absent) is
/// allowed. Absent origins (non-browser clients) and loopback web origins
/// (`http(s)://localhost`, `127.0.0.0/8`, `[::1]`, any port) are allowed, as is
/// any origin equal (ASCII case-insensitively) to one in `allowed`. Everything
/// else is refused, including the opaque origin `null` that sandboxed frames and
/// `file:` pages send.
pub fn is_allowed(origin: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let origin = origin.trim();
    if allowed
        .iter()
        .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    is_loopback_origin(origin)
}

fn is_loopback_origin(origin: &str) -> bool {
    let lower = origin.to_ascii_lowercase();
    let Some(authority) = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
    else {
        return false;
    };
    // A serialized origin has no path, query or user info.
    if authority.contains(['/', '?', '#', '@']) {
        return false;
    }
    match authority_host(authority) {
        Some(AuthorityHost::V6(ip)) => ip.is_loopback(),
        Some(AuthorityHost::Name(host)) => {
            host == "localhost" || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// The host an authority (`host[:port]`, an IPv6 address in brackets) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityHost<'a> {
    /// An IPv6 address, written in brackets.
    V6(Ipv6Addr),
    /// A name or an IPv4 address, as written.
    Name(&'a str),
}

/// The host of `authority`, or `None` when it is malformed: an unclosed
/// bracket, no IPv6 address in brackets, or a port that is not a number up to
/// 65535.
pub fn authority_host(authority: &str) -> Option<AuthorityHost<'_>> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (AuthorityHost::V6(inside.parse().ok()?), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (AuthorityHost::Name(host), Some(port)),
            None => (AuthorityHost::Name(authority), None),
        }
    };
    let port_ok =
        port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok());
    port_ok.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::is_allowed;

    #[test]
    fn absent_origin_is_allowed() {
        assert!(is_allowed(None, &[]));
    }

    #[test]
    fn loopback_origins_on_any_port_are_allowed() {
        for o in [
            "http://localhost",
            "http://localhost:3000",
            "https://LOCALHOST:8443",
            "http://127.0.0.1",
            "http://127.0.0.1:5173",
            "http://127.12.0.9:80",
            "http://[::1]",
            "http://[::1]:8080",
        ] {
            assert!(is_allowed(Some(o), &[]), "{o} should be allowed");
        }
    }

    #[test]
    fn foreign_and_malformed_origins_are_refused() {
        for o in [
            "http://evil.example",
            "https://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "http://128.0.0.1",
            "http://[::2]:80",
            "http://localhost:notaport",
            "http://localhost:99999",
            "http://localhost@evil.example",
            "null",
            "file://",
            "ws://localhost",
            "",
        ] {
            assert!(!is_allowed(Some(o), &[]), "{o} should be refused");
        }
    }

    #[test]
    fn configured_origins_are_allowed_exactly() {
        let allowed = vec!["https://app.example.com".to_string()];
        assert!(is_allowed(Some("https://app.example.com"), &allowed));
        assert!(is_allowed(Some("https://APP.example.com"), &allowed));
        assert!(!is_allowed(Some("https://app.example.com:444"), &allowed));
        assert!(!is_allowed(Some("http://app.example.com"), &allowed));
    }
}
