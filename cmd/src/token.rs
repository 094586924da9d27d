//! `circles_orchestrator token new`: makes a principal for a circle. The
//! token is 32 bytes from the operating system's random source, URL-safe
//! base64 without padding (43 characters, 256 bits); it is printed once and
//! never stored. circles.json gets only its SHA-256.

use anyhow::Context;
use base64::Engine as _;
use rand::TryRng as _;
use sha2::Digest as _;

use crate::UsageError;
use crate::cli::TokenNewArgs;
use crate::config;
use crate::principals;

/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// Prints a fresh token (stdout line 1) and the circles.json element for it
/// (stdout line 2); what to do with them goes to stderr.
pub fn new(args: &TokenNewArgs) -> anyhow::Result<()> {
    let circles = config::load(&args.config)?;
    let circle = config::pick_circle(&circles, &args.circle, &args.config)?;
    principals::check_name(&args.name)
        .map_err(|problem| UsageError(format!("--name {:?}: {problem}", args.name)))?;
    if circle.principals.iter().any(|p| p.name == args.name) {
        return Err(UsageError(format!(
            "circle {:?} (id {}) in {} already has a principal named {:?}; choose another \
             --name, or remove that principal first to replace its token",
            circle.name,
            circle.id,
            args.config.display(),
            args.name
        ))
        .into());
    }
    let token = fresh_token()?;
    let element = element(&args.name, &token, &args.role);
    crate::stdout::tell(&format!(
        "The token below is shown once: give it to {:?} and keep it secret (it is stored \
         nowhere). Add the JSON element after it to the \"principals\" array of circle {:?} \
         (id {}) in {}, then reload the orchestrator (kill -HUP, or circles_orchestrator \
         reload).\n",
        args.name,
        circle.name,
        circle.id,
        args.config.display()
    ));
    crate::stdout::write("the token", &format!("{token}\n{element}\n"))
}

/// `token admin`: prints a fresh token (stdout line 1) and the option that
/// makes the admin endpoint ask for it (line 2); what to do goes to stderr.
pub fn admin() -> anyhow::Result<()> {
    let token = fresh_token()?;
    let hash = principals::encode_hex(&sha2::Sha256::digest(token.as_bytes()));
    crate::stdout::tell(
        "The token below is shown once: keep it secret (it is stored nowhere). Start the \
         orchestrator with the option after it (or CIRCLES_ADMIN_TOKEN_SHA256=<hex>); send \
         the token as Authorization: Bearer <token>, or give it to `circles_orchestrator \
         status --token` (or CIRCLES_ADMIN_TOKEN).\n",
    );
    crate::stdout::write(
        "the token",
        &format!("{token}\n--admin-token-sha256 {hash}\n"),
    )
}

fn fresh_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::SysRng
        .try_fill_bytes(&mut bytes)
        .context("cannot read random bytes from the operating system")?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The circles.json element of a principal holding `token`.
fn element(name: &str, token: &str, role: &str) -> String {
    let hash = principals::encode_hex(&sha2::Sha256::digest(token.as_bytes()));
    let name = serde_json::to_string(name).expect("a string always serialises");
    format!(r#"{{"name": {name}, "token_sha256": "{hash}", "role": "{role}"}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_characters_and_differ() {
        let a = fresh_token().expect("token");
        let b = fresh_token().expect("token");
        assert_eq!(a.len(), 43, "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{a}"
        );
        assert_ne!(a, b);
    }
}
