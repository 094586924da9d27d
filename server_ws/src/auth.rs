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
//! [`MAX_TRACKED`] addresses are tracked. To make room for a new one, an
//! ended window goes first, then the oldest window of an address that is not
//! limited; a limited address goes only when every tracked address is
//! limited, the one whose limit ends soonest. So failures spread over other
//! addresses do not lift a limit while anything else can be dropped.

use std::collections::{BTreeSet, HashMap};
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
/// there is one (an empty one is an empty token, which matches no
/// principal), else the `bearer.` subprotocol offered (also beside an
/// `Authorization` header of another scheme, such as the `Basic` one a
/// browser sends on its own to a host it logged in to). Several `bearer.`
/// subprotocols offer no token a principal has (`Some("")`): which one
/// would count must not depend on their order, and an upgrade is one
/// guess, however many tokens it carries.
pub(crate) fn offered(headers: &HeaderMap) -> Option<&str> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    header.or_else(|| {
        let mut offers = bearer_subprotocols(headers);
        let first = offers.next()?;
        if offers.next().is_some() {
            return Some("");
        }
        Some(&first[SUBPROTOCOL_PREFIX.len()..])
    })
}

/// The token of an `Authorization` value of the `Bearer` scheme, the scheme
/// in any case (RFC 7235), empty when the value holds the scheme alone;
/// `None` for another scheme.
pub fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The first `bearer.` subprotocol an upgrade request offers. The answer
/// echoes it whatever the circle does with the token (an open circle
/// ignores it): a browser drops a socket whose upgrade answer names none
/// of the subprotocols it offered.
pub(crate) fn bearer_subprotocol(headers: &HeaderMap) -> Option<&str> {
    bearer_subprotocols(headers).next()
}

/// Every `bearer.` subprotocol an upgrade request offers, in order.
fn bearer_subprotocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .filter(|protocol| protocol.starts_with(SUBPROTOCOL_PREFIX))
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

impl Window {
    /// Whether the address has used up its failures in this window (the
    /// window may have ended since).
    fn full(&self) -> bool {
        self.failures >= MAX_FAILURES
    }

    /// Whether the window has ended at `now`.
    fn ended(&self, now: Instant) -> bool {
        window_ended(self.started, now)
    }
}

/// Whether a window that started at `started` has ended at `now`.
fn window_ended(started: Instant, now: Instant) -> bool {
    now.saturating_duration_since(started) >= WINDOW
}

/// The tracked addresses, with two indexes ordered by window start (every
/// window lasts [`WINDOW`], so that is also the order their limits end in):
/// each tracked address is in exactly one of them, under its window's start.
#[derive(Default)]
struct Table {
    windows: HashMap<IpAddr, Window>,
    /// Addresses with fewer than [`MAX_FAILURES`] failures in their window.
    open: BTreeSet<(Instant, IpAddr)>,
    /// Addresses with [`MAX_FAILURES`] failures or more in their window.
    full: BTreeSet<(Instant, IpAddr)>,
}

impl Table {
    /// The index of addresses whose window is [`Window::full`] or not.
    fn index(&mut self, full: bool) -> &mut BTreeSet<(Instant, IpAddr)> {
        if full { &mut self.full } else { &mut self.open }
    }

    /// Drops one address to make room at `now`: one whose limit has ended,
    /// else the oldest window not limited, else the limit that ends soonest.
    fn evict(&mut self, now: Instant) {
        let ended = self
            .full
            .first()
            .is_some_and(|&(started, _)| window_ended(started, now));
        let dropped = if ended {
            self.full.pop_first()
        } else {
            self.open.pop_first().or_else(|| self.full.pop_first())
        };
        if let Some((_, ip)) = dropped {
            self.windows.remove(&ip);
        }
    }
}

/// Failed upgrades per client address (see the module doc). A failure costs
/// a hash look-up and O(log [`MAX_TRACKED`]) in the indexes.
#[derive(Default)]
pub(crate) struct Limiter {
    table: Mutex<Table>,
}

impl Limiter {
    /// `Some(seconds left)` when `ip` is slowed down at `now`.
    pub(crate) fn limited(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let window = table.windows.get(&key(ip))?;
        let ends = window.started + WINDOW;
        (window.full() && now < ends).then(|| (ends - now).as_secs_f64().ceil() as u64)
    }

    /// Counts a failed upgrade of `ip` at `now`.
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let ip = key(ip);
        let before = table.windows.get(&ip).map(|w| (w.full(), w.started));
        if before.is_none() && table.windows.len() >= MAX_TRACKED {
            table.evict(now);
        }
        let window = table.windows.entry(ip).or_insert(Window {
            started: now,
            failures: 0,
        });
        if window.ended(now) {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
        let after = (window.full(), window.started);
        if before != Some(after) {
            if let Some((full, started)) = before {
                table.index(full).remove(&(started, ip));
            }
            let (full, started) = after;
            table.index(full).insert((started, ip));
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table.lock().map(|t| t.windows.len()).unwrap_or(0)
    }
}

/// The address failures are counted under: IPv4 as is, IPv6 by its /64.
pub(crate) fn key(ip: IpAddr) -> IpAddr {
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
        // A header of another scheme (a browser's own `Basic`) leaves the
        // subprotocol's token to authenticate.
        let h = headers(&[
            (header::AUTHORIZATION, "Basic YWJj"),
            (header::SEC_WEBSOCKET_PROTOCOL, "bearer.xyz"),
        ]);
        assert_eq!(offered(&h), Some("xyz"));
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
    fn several_bearer_subprotocols_or_an_empty_bearer_header_offer_no_token() {
        for offers in [
            &["bearer.abc, bearer.xyz"][..],
            &["bearer.abc", "json, bearer.xyz"],
        ] {
            let pairs: Vec<_> = offers
                .iter()
                .map(|v| (header::SEC_WEBSOCKET_PROTOCOL, *v))
                .collect();
            let h = headers(&pairs);
            assert_eq!(offered(&h), Some(""), "{offers:?}");
            // The first is still echoed, as for any upgrade.
            assert_eq!(bearer_subprotocol(&h), Some("bearer.abc"));
        }
        for empty in ["Bearer", "bearer ", " Bearer   "] {
            let h = headers(&[
                (header::AUTHORIZATION, empty),
                (header::SEC_WEBSOCKET_PROTOCOL, "bearer.xyz"),
            ]);
            assert_eq!(offered(&h), Some(""), "{empty:?}");
        }
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

    #[test]
    fn a_flood_of_other_addresses_does_not_evict_a_limited_one() {
        let limiter = Limiter::default();
        let t0 = Instant::now();
        let blocked: IpAddr = "127.0.0.1".parse().expect("ip");
        for _ in 0..MAX_FAILURES {
            limiter.failed(blocked, t0);
        }
        assert!(limiter.limited(blocked, t0).is_some());
        // One failure from each of more addresses than are tracked, all
        // within the blocked address's window and each newer than it.
        let flood = MAX_TRACKED as u32 + 904;
        for i in 0..flood {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x7f01_0000 + i));
            limiter.failed(ip, t0 + Duration::from_millis(u64::from(i) + 1));
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED);
        let later = t0 + Duration::from_millis(u64::from(flood) + 1);
        assert_eq!(
            limiter.limited(blocked, later),
            Some(WINDOW.as_secs() - 5),
            "the limited address is still limited"
        );
    }

    #[test]
    fn when_every_tracked_address_is_limited_the_soonest_to_end_makes_room() {
        let limiter = Limiter::default();
        let t0 = Instant::now();
        let at = |i: u32| t0 + Duration::from_millis(u64::from(i));
        for i in 0..MAX_TRACKED as u32 {
            for _ in 0..MAX_FAILURES {
                limiter.failed(IpAddr::V4(i.into()), at(i));
            }
        }
        let last = at(MAX_TRACKED as u32);
        let newcomer: IpAddr = "198.51.100.1".parse().expect("ip");
        limiter.failed(newcomer, last);
        assert_eq!(limiter.tracked(), MAX_TRACKED);
        assert_eq!(limiter.limited(IpAddr::V4(0.into()), last), None);
        for i in 1..MAX_TRACKED as u32 {
            assert!(limiter.limited(IpAddr::V4(i.into()), last).is_some());
        }
        // A limit that has ended makes room before an address that is not
        // limited (the newcomer, whose window is still running).
        let after = t0 + WINDOW + Duration::from_millis(1);
        let fresh: IpAddr = "198.51.100.2".parse().expect("ip");
        limiter.failed(fresh, after);
        assert_eq!(limiter.tracked(), MAX_TRACKED);
        assert_eq!(limiter.limited(IpAddr::V4(1.into()), after), None);
        assert!(limiter.limited(IpAddr::V4(2.into()), after).is_some());
        for _ in 1..MAX_FAILURES {
            limiter.failed(newcomer, after);
        }
        assert!(
            limiter.limited(newcomer, after).is_some(),
            "the newcomer kept its first failure"
        );
    }

    #[test]
    fn the_bearer_scheme_is_taken_in_any_case() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", " bEaReR  abc "] {
            assert_eq!(bearer_token(value), Some("abc"), "{value}");
        }
        for value in ["Basic abc", "Bearerabc", "abc", ""] {
            assert_eq!(bearer_token(value), None, "{value}");
        }
    }
}
