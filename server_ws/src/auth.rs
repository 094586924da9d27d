//! Upgrade authentication of a circle with principals, and the slow-down of
//! addresses that keep failing it.
//!
//! A token comes in `Authorization: Bearer <token>` or, for browsers (which
//! cannot set headers on a WebSocket), as the subprotocol `bearer.<token>`;
//! never in the URL. Its SHA-256 is compared with every principal's in
//! constant time: no early exit on a byte or on a match, and a missing token
//! is hashed and compared like a wrong one, so the two take the same time and
//! get the same 401. Neither a token nor a hash is ever logged.
//!
//! [`Limiter`]: an address with [`MAX_FAILURES`] failed upgrades within
//! [`WINDOW`] gets 429 for the rest of that window, without its token being
//! looked at (a right token too). Other addresses are unaffected. IPv6
//! addresses count per /64 (one host usually holds a whole /64). At most
//! [`MAX_TRACKED`] addresses are tracked: stale windows are dropped first,
//! then the oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderMap};
use sha2::Digest as _;

use crate::config::Principal;

/// Failed upgrades an address may make within [`WINDOW`]; the next ones in
/// that window get 429.
pub const MAX_FAILURES: u32 = 10;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once per circle (bounded memory).
pub const MAX_TRACKED: usize = 4096;

/// The subprotocol prefix that carries a token.
const SUBPROTOCOL_PREFIX: &str = "bearer.";

/// The token of an upgrade request: the `Authorization: Bearer` header if
/// there is one, else the first `bearer.` subprotocol offered.
pub(crate) fn offered(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        return Some(token.trim());
    }
    bearer_subprotocol(headers).map(|protocol| &protocol[SUBPROTOCOL_PREFIX.len()..])
}

/// The first `bearer.` subprotocol an upgrade request offers. The answer
/// echoes it whatever the circle does with the token (an open circle
/// ignores it): a browser drops a socket whose upgrade answer names none
/// of the subprotocols it offered.
pub(crate) fn bearer_subprotocol(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .find(|protocol| protocol.starts_with(SUBPROTOCOL_PREFIX))
}

/// The principal whose token is `token` (`None`: missing). Every principal's
/// hash is compared in full, whatever matched before.
pub(crate) fn authenticate<'p>(
    principals: &'p [Principal],
    token: Option<&str>,
) -> Option<&'p Principal> {
    // A missing token is hashed too, so it costs what a wrong one does; an
    // empty token matches nothing (no hash below is compared as a match
    // unless `present`).
    let present = token.is_some_and(|t| !t.is_empty());
    let hash: [u8; 32] = sha2::Sha256::digest(token.unwrap_or("").as_bytes()).into();
    let mut found = None;
    for principal in principals {
        if constant_time_eq(&hash, &principal.token_sha256) & present {
            found = Some(principal);
        }
    }
    found
}

/// Whether `a == b`, looking at every byte whatever the earlier ones were.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// One address's failures in its current window.
struct Window {
    started: Instant,
    failures: u32,
}

/// Failed upgrades per client address (see the module doc).
#[derive(Default)]
pub(crate) struct Limiter {
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl Limiter {
    /// `Some(seconds left)` when `ip` is slowed down at `now`.
    pub(crate) fn limited(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows.get(&key(ip))?;
        let ends = window.started + WINDOW;
        (window.failures >= MAX_FAILURES && now < ends)
            .then(|| (ends - now).as_secs_f64().ceil() as u64)
    }

    /// Counts a failed upgrade of `ip` at `now`.
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let ip = key(ip);
        if !windows.contains_key(&ip) && windows.len() >= MAX_TRACKED {
            windows.retain(|_, w| now.saturating_duration_since(w.started) < WINDOW);
            if windows.len() >= MAX_TRACKED {
                let oldest = windows
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    windows.remove(&oldest);
                }
            }
        }
        let window = windows.entry(ip).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.saturating_duration_since(window.started) >= WINDOW {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.windows.lock().map(|w| w.len()).unwrap_or(0)
    }
}

/// The address failures are counted under: IPv4 as is, IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn principal(name: &str, token: &str) -> Principal {
        Principal {
            name: name.to_string(),
            token_sha256: sha2::Sha256::digest(token.as_bytes()).into(),
            role: client::Role::Read,
        }
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn a_token_is_taken_from_the_bearer_header_or_a_bearer_subprotocol() {
        let h = headers(&[(header::AUTHORIZATION, "Bearer abc")]);
        assert_eq!(offered(&h), Some("abc"));
        assert_eq!(bearer_subprotocol(&h), None);
        let h = headers(&[(header::AUTHORIZATION, "bearer  abc ")]);
        assert_eq!(offered(&h), Some("abc"));
        let h = headers(&[(header::AUTHORIZATION, "Basic YWJj")]);
        assert_eq!(offered(&h), None);
        let h = headers(&[(header::SEC_WEBSOCKET_PROTOCOL, "json, bearer.xyz")]);
        assert_eq!(offered(&h), Some("xyz"));
        assert_eq!(bearer_subprotocol(&h), Some("bearer.xyz"));
        // The header's token authenticates; the subprotocol is still echoed.
        let h = headers(&[
            (header::AUTHORIZATION, "Bearer abc"),
            (header::SEC_WEBSOCKET_PROTOCOL, "bearer.xyz, bearer.other"),
        ]);
        assert_eq!(offered(&h), Some("abc"));
        assert_eq!(bearer_subprotocol(&h), Some("bearer.xyz"));
        let h = headers(&[(header::SEC_WEBSOCKET_PROTOCOL, "json")]);
        assert_eq!(offered(&h), None);
        assert_eq!(bearer_subprotocol(&h), None);
        assert_eq!(offered(&HeaderMap::new()), None);
    }

    #[test]
    fn only_a_principals_own_token_authenticates_it() {
        let ps = [principal("ann", "t-ann"), principal("bob", "t-bob")];
        assert_eq!(
            authenticate(&ps, Some("t-bob")).map(|p| p.name.as_str()),
            Some("bob")
        );
        assert_eq!(
            authenticate(&ps, Some("t-ann")).map(|p| p.name.as_str()),
            Some("ann")
        );
        assert!(authenticate(&ps, Some("t-carl")).is_none());
        assert!(authenticate(&ps, None).is_none());
        // A principal whose hash is that of the empty string still needs a token.
        assert!(authenticate(&[principal("e", "")], Some("")).is_none());
        assert!(authenticate(&[principal("e", "")], None).is_none());
    }

    #[test]
    fn an_address_is_limited_after_max_failures_for_the_rest_of_the_window_only() {
        let limiter = Limiter::default();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(limiter.limited(ip, t0), None, "after {i} failures");
            limiter.failed(ip, t0 + Duration::from_secs(1));
        }
        assert_eq!(limiter.limited(ip, t0 + Duration::from_secs(1)), Some(60));
        assert_eq!(
            limiter.limited(other, t0),
            None,
            "other addresses are unaffected"
        );
        assert_eq!(limiter.limited(ip, t0 + Duration::from_secs(59)), Some(2));
        assert_eq!(
            limiter.limited(ip, t0 + WINDOW + Duration::from_secs(1)),
            None
        );
        limiter.failed(ip, t0 + WINDOW + Duration::from_secs(1));
        assert_eq!(
            limiter.limited(ip, t0 + WINDOW + Duration::from_secs(1)),
            None,
            "a new window"
        );
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_window() {
        let limiter = Limiter::default();
        let now = Instant::now();
        for i in 0..MAX_FAILURES {
            let ip: IpAddr = format!("2001:db8::{:x}", i + 1).parse().expect("ip");
            limiter.failed(ip, now);
        }
        assert!(
            limiter
                .limited("2001:db8::ffff".parse().expect("ip"), now)
                .is_some()
        );
        assert!(
            limiter
                .limited("2001:db8:0:1::1".parse().expect("ip"), now)
                .is_none()
        );
    }

    #[test]
    fn the_tracked_addresses_stay_bounded() {
        let limiter = Limiter::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            limiter.failed(
                IpAddr::V4(i.into()),
                now + Duration::from_millis(u64::from(i)),
            );
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED);
        // The newest address is tracked; the oldest made room for it.
        let newest = IpAddr::V4((MAX_TRACKED as u32 + 99).into());
        for _ in 1..MAX_FAILURES {
            limiter.failed(newest, now + Duration::from_secs(10));
        }
        assert!(
            limiter
                .limited(newest, now + Duration::from_secs(10))
                .is_some()
        );
    }
}
