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
    bearer_header(headers).or_else(|| {
        let mut offers = bearer_subprotocols(headers);
        let first = offers.next()?;
        if offers.next().is_some() {
            return Some("");
        }
        Some(&first[SUBPROTOCOL_PREFIX.len()..])
    })
}

/// The token the `Authorization` headers of the `Bearer` scheme offer:
/// `None` without one (headers of other schemes do not count), `Some("")`
/// for several, as for several `bearer.` subprotocols: which one would
/// count must not depend on their order.
pub fn bearer_header(headers: &HeaderMap) -> Option<&str> {
    let mut tokens = headers
        .get_all(header::AUTHORIZATION)
        .filter_map(|value| value.to_str().ok())
        .filter_map(bearer_token);
    let first = tokens.next()?;
    if tokens.next().is_some() {
        return Some("");
    }
    Some(first)
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
mod tests;
