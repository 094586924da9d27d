//! Who may use the admin endpoint: no foreign web page (the `Origin`
//! check, as circles do it), and with a configured token hash only holders
//! of the token (compared by SHA-256 in constant time, as circles do).

use actix_web::HttpRequest;
use actix_web::HttpResponse;
use actix_web::http::header;
use sha2::Digest as _;

/// The admin endpoint's rules.
#[derive(Debug, Clone)]
pub struct Access {
    /// `http://ADDR` of the endpoint itself: an origin always allowed.
    pub own_origin: String,
    /// SHA-256 of the token; `None`: no token needed.
    pub token_sha256: Option<[u8; 32]>,
}

/// What a request to a route may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Only the origin check: the probes (an orchestrator's prober sends no
    /// token) and the console's files (a browser's navigation sends none,
    /// and they hold no data).
    Origin,
    /// The origin check and, when configured, the token.
    Token,
}

impl Access {
    /// `None` when `req` may go on, else the refusal: 403 for a foreign
    /// `Origin`, 401 for a missing or wrong token.
    pub fn check(&self, req: &HttpRequest, need: Need) -> Option<HttpResponse> {
        let origin = match req.headers().get(header::ORIGIN).map(|v| v.to_str()) {
            None => None,
            Some(Ok(o)) => Some(o),
            Some(Err(_)) => Some(""),
        };
        if !server_ws::origin_allowed(origin, std::slice::from_ref(&self.own_origin)) {
            return Some(HttpResponse::Forbidden().body(
                "origin not allowed: the admin endpoint answers only its own and loopback origins\n",
            ));
        }
        if need == Need::Origin {
            return None;
        }
        let expected = self.token_sha256?;
        let offered = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
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
