//! What the fuzz targets in `fuzz/` drive: the decoding of what a third
//! party may have written into Redis (a claim script's reply built from a
//! task hash, a task hash or notification read as an [`Outcome`]). Not part
//! of the crate's API; hidden from its docs.

use std::collections::HashMap;

use crate::broker::{self, Claim, Parsed};
use crate::{Outcome, Result};

/// What a worker makes of a claim script's reply.
#[derive(Debug)]
pub enum ClaimReading {
    /// A readable claim.
    Claim(Claim),
    /// A claimed task whose id, script or caller is not UTF-8, or whose
    /// role is neither `read` nor `write`: the worker ends it as invalid
    /// with `reason`.
    Unreadable {
        /// The task id as the reply had it.
        raw_id: Vec<u8>,
        /// Why it cannot be read.
        reason: String,
    },
}

/// Reads a claim reply (`None`: the queue was empty) as the worker does.
pub fn claim(reply: Option<Vec<Vec<u8>>>) -> Result<Option<ClaimReading>> {
    let reply: broker::RawClaim = reply;
    Ok(broker::parse_claim(reply)?.map(|parsed| match parsed {
        Parsed::Claim(claim) => ClaimReading::Claim(claim),
        Parsed::Unreadable { raw_id, reason } => ClaimReading::Unreadable { raw_id, reason },
    }))
}

/// A field a third party wrote as text, or why it is not text.
pub fn utf8(bytes: &[u8], what: &str) -> std::result::Result<String, String> {
    broker::utf8(bytes, what)
}

/// A canceller's reason as a task's error shows it.
pub fn shown_reason(raw: &[u8]) -> String {
    broker::shown_reason(raw)
}

/// The outcome a task hash describes, `None` while it is not finished.
pub fn outcome(task_id: &str, fields: &HashMap<String, String>) -> Result<Option<Outcome>> {
    crate::fields::outcome(task_id, fields)
}

/// What the notification listener makes of a published payload: the task
/// id and its outcome, or `None` when the payload is ignored.
pub fn notification(payload: &[u8]) -> Option<(String, Outcome)> {
    crate::listener::read_notification(payload)
}
