//! The option parser's tests: defaults, usage errors, what each option accepts.
use super::*;
use clap::CommandFactory;

#[test]
fn durations_accept_units_and_bare_seconds() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert!(parse_duration("ten").is_err());
    assert!(parse_duration("5 weeks").is_err());
    assert_eq!(parse_duration("87600h"), Ok(MAX_DURATION));
    let e = parse_duration("87601h").expect_err("past ten years");
    assert!(e.contains("longer than any option takes"), "{e}");
}

#[test]
fn a_duration_past_ten_years_is_a_usage_error_naming_the_option() {
    for option in [
        "--worker-heartbeat",
        "--task-timeout",
        "--result-ttl",
        "--shutdown-grace",
        "--refresh",
    ] {
        let e = Cli::try_parse_from(["c", option, "10000000000000000000"]).expect_err(option);
        assert_eq!(e.exit_code(), 2, "{option}: {e}");
        assert!(e.to_string().contains(option), "{option}: {e}");
    }
}

#[test]
fn options_where_zero_makes_no_sense_refuse_it_naming_the_option() {
    for (option, zero) in [
        ("--task-timeout", "0s"),
        ("--script-timeout", "0ms"),
        ("--result-ttl", "0"),
        ("--delivered-ttl", "0ms"),
        ("--worker-pop-timeout", "0s"),
        ("--worker-heartbeat", "0s"),
        ("--worker-reap-interval", "0s"),
        ("--refresh", "0s"),
        ("--max-operations", "0"),
        ("--max-script-memory", "0"),
        ("--max-message-bytes", "0"),
        ("--max-in-flight", "0"),
        ("--max-connections", "0"),
    ] {
        let e = Cli::try_parse_from(["c", option, zero]).expect_err(option);
        assert_eq!(
            e.kind(),
            clap::error::ErrorKind::ValueValidation,
            "{option}"
        );
        assert!(e.to_string().contains(option), "{option}: {e}");
    }
    // A zero grace is meaningful: cancel running scripts at once.
    let cli = Cli::try_parse_from(["c", "--shutdown-grace", "0s"]).expect("zero grace");
    assert_eq!(cli.run.shutdown_grace, Duration::ZERO);
    let cli =
        Cli::try_parse_from(["c", "--max-in-flight", "1", "--max-operations", "1"]).expect("ones");
    assert_eq!((cli.run.max_in_flight, cli.run.max_operations), (1, 1));
}

#[test]
fn durability_is_sync_by_default_and_an_unknown_mode_is_a_usage_error() {
    let cli = Cli::try_parse_from(["c"]).expect("parses");
    assert_eq!(cli.run.durability, Durability::Sync);
    let cli = Cli::try_parse_from(["c", "--durability", "flush"]).expect("parses");
    assert_eq!(cli.run.durability, Durability::Flush);
    let e = Cli::try_parse_from(["c", "--durability", "fast"]).expect_err("unknown mode");
    assert_eq!(e.exit_code(), 2, "{e}");
    let shown = e.to_string();
    for needle in ["--durability", "sync", "flush"] {
        assert!(shown.contains(needle), "{needle} missing from: {shown}");
    }
}

#[test]
fn claim_batch_takes_1_to_1024_and_refuses_others_naming_the_option() {
    let cli = Cli::try_parse_from(["c"]).expect("parses");
    assert_eq!(cli.run.claim_batch, worker::DEFAULT_CLAIM_BATCH);
    for n in ["1", "1024"] {
        let cli = Cli::try_parse_from(["c", "--claim-batch", n]).expect(n);
        assert_eq!(cli.run.claim_batch.to_string(), n);
    }
    for bad in ["0", "1025", "-3", "many"] {
        let arg = format!("--claim-batch={bad}");
        let e = Cli::try_parse_from(["c", arg.as_str()]).expect_err(bad);
        assert_eq!(e.exit_code(), 2, "{bad}: {e}");
        let shown = e.to_string();
        assert!(shown.contains("--claim-batch"), "{bad}: {shown}");
        assert!(shown.contains(bad), "{bad}: {shown}");
    }
}

#[test]
fn cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn play_as_first_argument_is_the_subcommand_and_a_path_otherwise() {
    let cli = Cli::try_parse_from(["c", "play", "40 + 2"]).expect("parses");
    assert!(matches!(cli.command, Some(Command::Play(_))));
    let cli = Cli::try_parse_from(["c", "./play"]).expect("parses");
    assert!(cli.command.is_none());
    assert_eq!(cli.run.config, PathBuf::from("./play"));
    let cli = Cli::try_parse_from(["c", "mine.json", "--host", "0.0.0.0"]).expect("parses");
    assert_eq!(cli.run.config, PathBuf::from("mine.json"));
    assert_eq!(cli.run.host, "0.0.0.0");
}

#[test]
fn tls_cert_and_key_come_together_and_a_missing_one_is_named() {
    for (given, missing) in [("--tls-cert", "--tls-key"), ("--tls-key", "--tls-cert")] {
        let err = Cli::try_parse_from(["c", given, "x.pem"]).expect_err(given);
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(err.to_string().contains(missing), "{given}: {err}");
    }
    let cli =
        Cli::try_parse_from(["c", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).expect("both");
    assert_eq!(cli.run.tls_cert, Some(PathBuf::from("c.pem")));
    assert_eq!(cli.run.tls_key, Some(PathBuf::from("k.pem")));
}

#[test]
fn a_token_is_never_shown_by_debug_and_must_fit_a_header() {
    let cli = Cli::try_parse_from(["c", "play", "--token", "s3cret-tok", "1"]).expect("parses");
    let shown = format!("{cli:?}");
    assert!(!shown.contains("s3cret-tok"), "{shown}");
    assert!(shown.contains("Token(<redacted>)"), "{shown}");
    for bad in ["", "a b", "tök"] {
        let err = Cli::try_parse_from(["c", "play", "--token", bad, "1"]).expect_err(bad);
        assert_eq!(err.exit_code(), 2, "{err}");
    }
}

#[test]
fn an_allowed_origin_must_be_an_origin_a_browser_can_send() {
    for good in [
        "https://app.example.com",
        "http://intranet:8080",
        "http://intranet:8080/",
        "https://[2001:db8::1]:8443",
        "chrome-extension://abcdefghij",
    ] {
        let cli = Cli::try_parse_from(["c", "--allowed-origin", good]).expect(good);
        assert_eq!(cli.run.allowed_origins, [good.trim_end_matches('/')]);
    }
    for (bad, says) in [
        ("*", "is a pattern"),
        ("https://*.example.com", "is a pattern"),
        ("", "no scheme://"),
        ("app.example.com", "no scheme://"),
        ("http://ok.example/path", "a `/`"),
        ("http://user@ok.example", "a `@`"),
        ("http://ok.example:99999", "bad port `99999`"),
        ("http://ok.example:", "bad port ``"),
        ("http://", "no valid host"),
        ("1http://x", "no valid scheme"),
        ("http://[::1", "unclosed `[`"),
        ("http://ok.example:80", "default port"),
        ("https://ok.example:443/", "default port"),
        ("http://ok.example:80:90", "no valid host"),
    ] {
        let e = Cli::try_parse_from(["c", "--allowed-origin", bad]).expect_err(bad);
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        let text = e.to_string();
        assert!(text.contains(says), "{bad}: {text}");
        assert!(text.contains("scheme://host[:port]"), "{bad}: {text}");
    }
}

/// The parser refuses what "would never equal a header" (cli/origin.rs):
/// a browser writes a port without leading zeros and leaves out the default
/// one, writes a host outside ASCII in its punycode (`xn--`) form and an
/// IPv6 address in its canonical (shortest) form. Each
/// of these would be accepted and then silently allow nothing.
#[test]
fn an_allowed_origin_a_browser_never_sends_is_refused() {
    for bad in [
        "http://ok.example:080",
        "https://ok.example:0443",
        "http://intranet:08080",
        "https://bücher.example",
        "https://[2001:db8:0:0::1]",
        "http://[::0001]:8080",
    ] {
        let parsed = Cli::try_parse_from(["c", "--allowed-origin", bad]);
        assert!(
            parsed.is_err(),
            "{bad} was accepted, yet no browser sends it as its Origin: {:?}",
            parsed.map(|c| c.run.allowed_origins)
        );
    }
}

/// A browser serializes an IPv6 host by the WHATWG URL rules:
/// eight hex pieces, the longest zero run compressed, never a dotted IPv4
/// tail (`new URL("http://[::ffff:1.2.3.4]").origin` is
/// `http://[::ffff:102:304]`). The canonical-form check compares with Rust's
/// `Ipv6Addr` display, which writes an IPv4-mapped address dotted: it
/// refuses the origin a browser sends and asks for one none sends.
#[test]
fn an_ipv4_mapped_ipv6_origin_as_a_browser_sends_it_is_accepted() {
    let sent = "http://[::ffff:102:304]:8080";
    let parsed = Cli::try_parse_from(["c", "--allowed-origin", sent]);
    assert!(
        parsed.is_ok(),
        "the Origin a browser sends is refused: {}",
        parsed.err().map(|e| e.to_string()).unwrap_or_default()
    );
    let never = "http://[::ffff:1.2.3.4]:8080";
    assert!(
        Cli::try_parse_from(["c", "--allowed-origin", never]).is_err(),
        "{never} is accepted, yet no browser sends it"
    );
}

/// A browser writes an IPv4
/// host as four decimal parts without leading zeros (a leading zero is
/// octal to it: `http://192.168.001.010` is sent as `http://192.168.1.8`).
#[test]
fn an_ipv4_origin_no_browser_sends_is_refused() {
    for bad in ["http://192.168.001.010:8080", "http://127.1:8080"] {
        let parsed = Cli::try_parse_from(["c", "--allowed-origin", bad]);
        assert!(
            parsed.is_err(),
            "{bad} was accepted, yet no browser sends it as its Origin: {:?}",
            parsed.map(|c| c.run.allowed_origins)
        );
    }
}
