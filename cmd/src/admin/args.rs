//! The admin endpoint's options (`--admin`, `--admin-token-sha256`), their
//! check, and what they resolve to. Phase one and two of the command line
//! for this one concern, kept beside the endpoint.

use std::net::{SocketAddr, ToSocketAddrs};

use clap::Args;

use crate::UsageError;

/// Where the admin endpoint listens unless `--admin` says otherwise:
/// loopback, clear of the example circles (8081, 8082) and of the usual
/// Prometheus ports (9090-9100).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9480";

/// Options of the admin HTTP endpoint.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Address of the admin HTTP endpoint (/metrics, /healthz, /readyz,
    /// /api/status, /api/reload, /), or `off`. Port 0 picks a free port; the status
    /// header shows the address.
    #[arg(
        long = "admin",
        env = "CIRCLES_ADMIN",
        hide_env_values = true,
        value_name = "ADDR|off",
        default_value = DEFAULT_ADMIN
    )]
    pub admin: String,

    /// SHA-256 (64 hex digits) of the bearer token the admin endpoint asks
    /// for (`Authorization: Bearer <token>`; /healthz, /readyz and the
    /// console's page are open, the console asks for the token).
    /// Needed when --host or --admin is not a loopback address, unless
    /// --allow-open. `circles_orchestrator token admin` makes one.
    #[arg(
        long,
        env = "CIRCLES_ADMIN_TOKEN_SHA256",
        hide_env_values = true,
        value_name = "HEX"
    )]
    pub admin_token_sha256: Option<String>,
}

/// The admin endpoint, resolved: off, or an address and who may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where it listens; `None` with `--admin off`.
    pub addr: Option<SocketAddr>,
    /// The host name `--admin` gave, when it gave a name rather than an IP
    /// address: a `Host` the endpoint answers besides IP literals and
    /// `localhost`.
    pub host_name: Option<String>,
    /// The SHA-256 of the token it asks for; `None`: no token needed.
    pub token_sha256: Option<[u8; 32]>,
}

impl AdminSettings {
    /// No admin endpoint.
    pub fn off() -> AdminSettings {
        AdminSettings {
            addr: None,
            host_name: None,
            token_sha256: None,
        }
    }
}

/// Checks the admin options: a parsable address or `off`, a well-formed
/// hash, and a hash whenever the endpoint or the circles face the network
/// (`host_is_loopback` false) unless `allow_open`.
pub fn resolve(
    args: &AdminArgs,
    host_is_loopback: bool,
    allow_open: bool,
) -> anyhow::Result<AdminSettings> {
    if args.admin.trim().eq_ignore_ascii_case("off") {
        return Ok(AdminSettings::off());
    }
    let addr = parse_addr(&args.admin)?;
    let token_sha256 = match &args.admin_token_sha256 {
        None => None,
        Some(hex) => Some(crate::principals::decode_hex_32(hex.trim()).ok_or_else(|| {
            UsageError(
                "--admin-token-sha256 is not 64 hex digits (the SHA-256 of the token; \
                 circles_orchestrator token admin prints one)"
                    .to_string(),
            )
        })?),
    };
    let exposed = !host_is_loopback || !addr.ip().is_loopback();
    if exposed && token_sha256.is_none() && !allow_open {
        return Err(UsageError(format!(
            "the admin endpoint ({addr}) would serve the status and metrics of every circle \
             without a token, and --host or --admin is not a loopback address. Make a token \
             with `circles_orchestrator token admin` and pass its hash with \
             --admin-token-sha256 (or CIRCLES_ADMIN_TOKEN_SHA256), or pass --admin off, or \
             --allow-open to serve it open anyway"
        ))
        .into());
    }
    Ok(AdminSettings {
        addr: Some(addr),
        host_name: host_name(&args.admin),
        token_sha256,
    })
}

/// The host name of an `--admin` address (`NAME:PORT`), `None` when it is
/// an IP address.
fn host_name(text: &str) -> Option<String> {
    let text = text.trim();
    if text.parse::<SocketAddr>().is_ok() {
        return None;
    }
    let (name, _port) = text.rsplit_once(':')?;
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

/// `HOST:PORT` (IPv6 in brackets; a name resolves to its first address).
pub fn parse_addr(text: &str) -> anyhow::Result<SocketAddr> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = |why: String| {
        UsageError(format!(
            "--admin {text:?} is not an address ({why}); for example {DEFAULT_ADMIN}, \
             [::1]:9480, localhost:9480 or off"
        ))
    };
    let found = text
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next();
    found.ok_or_else(|| bad("it resolves to no address".to_string()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(admin: &str, hash: Option<&str>) -> AdminArgs {
        AdminArgs {
            admin: admin.to_string(),
            admin_token_sha256: hash.map(str::to_string),
        }
    }

    fn is_usage(e: &anyhow::Error) -> bool {
        e.chain().any(|c| c.is::<UsageError>())
    }

    #[test]
    fn off_turns_it_off_and_the_default_is_loopback_without_a_token() {
        assert_eq!(
            resolve(&args("off", None), true, false).expect("off"),
            AdminSettings::off()
        );
        let s = resolve(&args(DEFAULT_ADMIN, None), true, false).expect("default");
        assert!(s.addr.expect("an address").ip().is_loopback());
        assert_eq!(s.token_sha256, None);
        assert_eq!(s.host_name, None);
    }

    #[test]
    fn a_name_given_as_the_address_is_kept_and_an_ip_address_is_not() {
        let s = resolve(&args("LocalHost:0", None), true, false).expect("a name");
        assert_eq!(s.host_name.as_deref(), Some("localhost"));
        for ip in ["127.0.0.1:0", "[::1]:0"] {
            let s = resolve(&args(ip, None), true, false).expect(ip);
            assert_eq!(s.host_name, None, "{ip}");
        }
    }

    #[test]
    fn a_network_facing_host_or_admin_address_needs_a_token_hash_or_allow_open() {
        let e = resolve(&args(DEFAULT_ADMIN, None), false, false).expect_err("no token");
        assert!(is_usage(&e) && e.to_string().contains("token admin"), "{e}");
        let e = resolve(&args("0.0.0.0:9480", None), true, false).expect_err("no token");
        assert!(is_usage(&e), "{e}");
        let hash = "ab".repeat(32);
        let s = resolve(&args("0.0.0.0:9480", Some(&hash)), false, false).expect("token");
        assert_eq!(s.token_sha256, Some([0xab; 32]));
        assert!(resolve(&args("0.0.0.0:9480", None), false, true).is_ok());
    }

    #[test]
    fn a_bad_address_or_hash_is_a_usage_error() {
        for (admin, hash) in [("nonsense", None), ("127.0.0.1:9480", Some("xyz"))] {
            let e = resolve(&args(admin, hash), true, false).expect_err(admin);
            assert!(is_usage(&e), "{e}");
        }
    }
}
