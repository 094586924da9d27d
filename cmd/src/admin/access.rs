//! Who may use the admin endpoint: only requests addressed to it by an IP
//! address, `localhost` or the name it listens on (the `Host` check, which
//! stops a DNS-rebound page; a route behind a configured token skips it,
//! the token stopping such a page), no foreign web page (the `Origin` check, as
//! circles do it), and with a configured token hash only holders of the
//! token (any case of the `Bearer` scheme, compared by SHA-256 in constant
//! time, as circles do).

use std::net::Ipv4Addr;

use actix_web::HttpRequest;
use actix_web::HttpResponse;
use actix_web::http::header;
use server_ws::AuthorityHost;
use sha2::Digest as _;

/// The admin endpoint's rules.
#[derive(Debug, Clone)]
pub struct Access {
    /// `http://ADDR` of the endpoint itself: an origin always allowed.
    pub own_origin: String,
    /// The host name `--admin` gave, when it gave a name rather than an IP
    /// address: a `Host` allowed besides IP literals and `localhost`.
    pub own_host: Option<String>,
    /// SHA-256 of the token; `None`: no token needed.
    pub token_sha256: Option<[u8; 32]>,
}

/// What a request to a route may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Only the host and origin checks: the probes (an orchestrator's prober
    /// sends no token) and the console's files (a browser's navigation sends
    /// none, and they hold no data).
    Origin,
    /// The host and origin checks and, when configured, the token.
    Token,
}

impl Access {
    /// `None` when `req` may go on, else the refusal: 421 for a `Host` that
    /// is not one this endpoint is reached by, 403 for a foreign `Origin`,
    /// 401 for a missing or wrong token.
    pub fn check(&self, req: &HttpRequest, need: Need) -> Option<HttpResponse> {
        // The `Host` headers and the authority of an absolute request target:
        // each must name this endpoint (none at all, HTTP/1.0, passes),
        // unless the route needs a configured token: a DNS-rebound page
        // holds no token, and a scraper may reach the endpoint by any name.
        let own_host = self.own_host.as_deref();
        let token_guards = need == Need::Token && self.token_sha256.is_some();
        let hosts_allowed = token_guards
            || (req
                .headers()
                .get_all(header::HOST)
                .all(|v| v.to_str().is_ok_and(|h| host_allowed(h, own_host)))
                && req
                    .uri()
                    .authority()
                    .is_none_or(|a| host_allowed(a.as_str(), own_host)));
        if !hosts_allowed {
            return Some(HttpResponse::MisdirectedRequest().body(
                "host not allowed: the admin endpoint answers only a Host that is an IP address, \
                 localhost or the name it listens on\n",
            ));
        }
        let origin = server_ws::request_origin(req.headers());
        if !server_ws::origin_allowed(origin, std::slice::from_ref(&self.own_origin)) {
            return Some(HttpResponse::Forbidden().body(
                "origin not allowed: the admin endpoint answers only its own and loopback origins\n",
            ));
        }
        if need == Need::Origin {
            return None;
        }
        let expected = self.token_sha256?;
        let offered = server_ws::bearer_header(req.headers()).unwrap_or("");
        // Hashed whether or not one was sent, compared in full.
        let digest = sha2::Sha256::digest(offered.as_bytes());
        let differ = digest
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differ == 0 && !offered.is_empty() {
            return None;
        }
        Some(
            HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .body("a valid token is needed: send Authorization: Bearer <token>\n"),
        )
    }
}

/// Whether `host` (a `Host` value: a host and an optional port) is one this
/// endpoint is reached by: an IP literal (IPv6 in brackets), which no DNS
/// answer stands behind and so cannot be rebound, `localhost`, or `own` (the
/// name `--admin` gave), names in any case, on any port. An empty value
/// names no host and passes, as a missing one does.
fn host_allowed(host: &str, own: Option<&str>) -> bool {
    let host = host.trim();
    if host.is_empty() {
        return true;
    }
    match server_ws::authority_host(host) {
        Some(AuthorityHost::V6(_)) => true,
        Some(AuthorityHost::Name(name)) => {
            name.parse::<Ipv4Addr>().is_ok()
                || name.eq_ignore_ascii_case("localhost")
                || own.is_some_and(|own| !own.is_empty() && name.eq_ignore_ascii_case(own))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn ip_literals_localhost_and_the_own_name_are_allowed_on_any_port() {
        for (host, own) in [
            ("127.0.0.1", None),
            ("127.0.0.1:9480", None),
            ("10.1.2.3:80", None),
            ("0.0.0.0:9480", None),
            ("[::1]", None),
            ("[::1]:9480", None),
            ("[2001:db8::1]:443", None),
            ("localhost", None),
            ("LocalHost:9480", None),
            ("", None),
            ("admin.internal:9480", Some("admin.internal")),
            ("ADMIN.internal", Some("admin.internal")),
        ] {
            assert!(host_allowed(host, own), "{host} with {own:?}");
        }
    }

    #[test]
    fn other_names_and_malformed_hosts_are_refused() {
        for (host, own) in [
            ("evil.example", None),
            ("evil.example:9480", None),
            ("localhost.evil.example:9480", None),
            ("127.0.0.1.evil.example", None),
            ("localhost:9480@evil.example", None),
            ("localhost:notaport", None),
            ("localhost:99999", None),
            ("[::1]evil.example", None),
            ("[::1", None),
            ("[evil.example]:80", None),
            ("::1", None),
            ("127.1:9480", None),
            ("evil.example:9480", Some("admin.internal")),
            ("admin.internal.evil.example", Some("admin.internal")),
            ("admin.internal", None),
            (":9480", Some("")),
        ] {
            assert!(!host_allowed(host, own), "{host} with {own:?}");
        }
    }
}
