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
    let e = RedisUrl::parse("redis+sentinel://u:hunter2@h:99999/mymaster").expect_err("bad port");
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
