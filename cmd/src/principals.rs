//! circles.json `principals` (DESIGN §7): who may connect to a circle, as
//! `{ "name", "token_sha256", "role" }` elements. The file holds only each
//! token's SHA-256, so it can be committed. A hash is never put into a
//! message: errors name the principal by its index and name.

use std::collections::HashMap;

use serde::Deserialize;
use server_ws::Principal;

/// One principal as written in circles.json.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrincipalEntry {
    name: String,
    token_sha256: String,
    role: String,
}

/// Validates the decoded principals of one circle; `entries` are in file
/// order. The error is the problem, naming the principal (not the circle).
pub(crate) fn validate(entries: Vec<PrincipalEntry>) -> Result<Vec<Principal>, String> {
    if entries.is_empty() {
        return Err(
            "an empty `principals` list: leave the field out for an open circle, \
                    or add a principal (circles_orchestrator token new)"
                .to_string(),
        );
    }
    let mut names = HashMap::new();
    let mut hashes = HashMap::new();
    let mut principals = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let here = describe(index, &entry.name);
        check_name(&entry.name).map_err(|problem| format!("{here}: {problem}"))?;
        let Some(token_sha256) = decode_hex_32(&entry.token_sha256) else {
            return Err(format!(
                "{here}: token_sha256 is not a SHA-256 in hex (64 hex digits, as \
                 `circles_orchestrator token new` prints it)"
            ));
        };
        let Some(role) = client::Role::from_wire(&entry.role) else {
            return Err(format!(
                "{here}: unknown role {:?} (expected \"read\" or \"write\")",
                entry.role
            ));
        };
        if let Some(first) = names.insert(entry.name.clone(), index) {
            return Err(format!(
                "{here}: duplicate principal name (also used by principal at index {first})"
            ));
        }
        if let Some(first) = hashes.insert(token_sha256, index) {
            return Err(format!(
                "{here}: the same token_sha256 as principal at index {first} (each principal \
                 needs its own token)"
            ));
        }
        principals.push(Principal {
            name: entry.name,
            token_sha256,
            role,
        });
    }
    Ok(principals)
}

/// A principal name must be non-empty and free of control characters (and of
/// the invisible ones that garble a terminal, see `names::garbles`): it is
/// shown in the task hash, logs and to scripts.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("the name is empty".to_string());
    }
    if let Some(c) = name.chars().find(|&c| crate::names::garbles(c)) {
        return Err(format!("the name contains the control character {c:?}"));
    }
    Ok(())
}

/// Names a principal of a circle in an error.
pub(crate) fn describe(index: usize, name: &str) -> String {
    format!("principal at index {index} (name {name:?})")
}

/// Decodes exactly 64 hex digits (either case) into 32 bytes.
pub(crate) fn decode_hex_32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let high = (pair[0] as char).to_digit(16)?;
        let low = (pair[1] as char).to_digit(16)?;
        *slot = u8::try_from(high * 16 + low).expect("two hex digits fit in a byte");
    }
    Some(out)
}

/// Lowercase hex of `bytes`.
pub(crate) fn encode_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            write!(s, "{b:02x}").expect("writing to a String cannot fail");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_in_either_case_and_nothing_else_decodes() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 8) as u8);
        let hex = encode_hex(&bytes);
        assert_eq!(decode_hex_32(&hex), Some(bytes));
        assert_eq!(decode_hex_32(&hex.to_uppercase()), Some(bytes));
        assert_eq!(decode_hex_32(&hex[..62]), None);
        assert_eq!(decode_hex_32(&format!("{}zz", &hex[..62])), None);
        assert_eq!(decode_hex_32(&format!("{}+1", &hex[..62])), None);
        assert_eq!(decode_hex_32(&"é".repeat(32)), None);
    }
}
