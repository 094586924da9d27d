//! Which token an upgrade offers, and whom it authenticates.

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
    // Several Bearer headers, in either order; one of another scheme
    // beside one does not count.
    for pair in [["Bearer abc", "Bearer xyz"], ["Bearer xyz", "Bearer abc"]] {
        let h = headers(&pair.map(|v| (header::AUTHORIZATION, v)));
        assert_eq!(offered(&h), Some(""), "{pair:?}");
        assert_eq!(bearer_header(&h), Some(""), "{pair:?}");
    }
    for pair in [["Basic YWJj", "Bearer abc"], ["Bearer abc", "Basic YWJj"]] {
        let h = headers(&pair.map(|v| (header::AUTHORIZATION, v)));
        assert_eq!(offered(&h), Some("abc"), "{pair:?}");
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
