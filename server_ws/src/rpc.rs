//! JSON-RPC 2.0 framing (DESIGN.md §4): parsing a text message into calls,
//! and building every reply the server sends. No I/O here.

use serde_json::{Map, Value, json};

use crate::config::MAX_BATCH_ITEMS;
use crate::strict::{Strict, named};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a valid request object (wrong `jsonrpc`, bad `id`, `method` not a string, empty batch…).
pub const INVALID_REQUEST: i64 = -32600;
/// No such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// `params` do not fit the method.
pub const INVALID_PARAMS: i64 = -32602;
/// Genuine internal fault; nothing internal is leaked.
pub const INTERNAL_ERROR: i64 = -32603;
/// The script failed.
pub const SCRIPT_FAILED: i64 = -32000;
/// The task timed out.
pub const TIMED_OUT: i64 = -32001;
/// The broker (Redis) is unavailable.
pub const BROKER_UNAVAILABLE: i64 = -32002;
/// A limit was exceeded.
pub const LIMIT_EXCEEDED: i64 = -32003;
/// The caller's role does not allow what the script did (a write with role
/// `read`; error kind `forbidden`); nothing was written.
pub const FORBIDDEN: i64 = -32004;

/// One element of an incoming message, after validation.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// Answer this right away (an invalid request or params).
    Reply(Value),
    /// Run `script`; `id` is `None` for a notification (executed, unanswered).
    Play {
        /// The request's id; `None` for a notification.
        id: Option<Value>,
        /// The script to run.
        script: String,
    },
    /// A notification that cannot be run: nothing to do and nothing to say.
    Silent,
}

/// An incoming text message.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A single request (or a reply to a message that was not one).
    Single(Item),
    /// A non-empty batch of at most [`MAX_BATCH_ITEMS`] elements; answered
    /// with an array of the non-silent replies.
    Batch(Vec<Item>),
}

/// Parses one text message.
pub fn parse(text: &str) -> Incoming {
    let value = match serde_json::from_str::<Strict>(text) {
        Ok(Strict(v)) => v,
        // Valid JSON with a member named twice in one object.
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return with_a_member_twice(text, &e);
        }
        Err(e) => return parse_error(&e),
    };
    match value {
        Value::Array(elements) => match refused_batch(elements.len()) {
            Some(refusal) => refusal,
            None => Incoming::Batch(elements.into_iter().map(item).collect()),
        },
        other => Incoming::Single(item(other)),
    }
}

/// The reply to a message that is not JSON (or nests too deep).
fn parse_error(e: &serde_json::Error) -> Incoming {
    // serde_json names a lone surrogate (`"\ud800"`) as a hex escape that
    // ends early: say what JSON asks of such an escape.
    let hint = if e.to_string().contains("hex escape") {
        " (a \\u escape is 4 hex digits, and one from \\ud800 to \\udfff is half of a \
         surrogate pair, a \\ud800-\\udbff then a \\udc00-\\udfff: a lone one is no character)"
    } else {
        ""
    };
    Incoming::Single(Item::Reply(error(
        &Value::Null,
        PARSE_ERROR,
        &format!("parse error: {e}{hint}"),
        None,
    )))
}

/// The one reply to a batch of `len` elements refused whole: an empty one,
/// or one of more than [`MAX_BATCH_ITEMS`], refused before any element is
/// looked at (answering each element of a message full of junk would send
/// back far more than came in).
fn refused_batch(len: usize) -> Option<Incoming> {
    let reply = if len == 0 {
        error(
            &Value::Null,
            INVALID_REQUEST,
            "invalid request: empty batch",
            None,
        )
    } else if len > MAX_BATCH_ITEMS {
        limit_exceeded(
            &Value::Null,
            &format!("batch of {len} elements exceeds the limit of {MAX_BATCH_ITEMS} elements"),
            "max_batch_items",
            MAX_BATCH_ITEMS,
        )
    } else {
        return None;
    };
    Some(Incoming::Single(Item::Reply(reply)))
}

/// A message with a member named twice in an object (RFC 8259 leaves its
/// meaning open, so such a request is refused rather than read one way): a
/// batch is answered element by element, the others as they come.
fn with_a_member_twice(text: &str, e: &serde_json::Error) -> Incoming {
    // The strict reading stops at the first member named twice: what comes
    // after it may still not be JSON (or nest too deep), a parse error.
    let Ok(raw) = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(text) else {
        return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Incoming::Single(invalid(&Value::Null, &e.to_string())),
            Err(e) => parse_error(&e),
        };
    };
    if let Some(refusal) = refused_batch(raw.len()) {
        return refusal;
    }
    let mut items = Vec::with_capacity(raw.len());
    for r in raw {
        items.push(match serde_json::from_str::<Strict>(r.get()) {
            Ok(Strict(v)) => item(v),
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                invalid(&Value::Null, &e.to_string())
            }
            // Nested too deep: the message is refused whole, as it would be
            // without the member named twice.
            Err(e) => return parse_error(&e),
        });
    }
    Incoming::Batch(items)
}

fn invalid(id: &Value, why: &str) -> Item {
    Item::Reply(error(
        id,
        INVALID_REQUEST,
        &format!("invalid request: {why}"),
        None,
    ))
}

/// Validates one request object.
fn item(value: Value) -> Item {
    let Value::Object(mut obj) = value else {
        return invalid(&Value::Null, "expected a JSON object");
    };
    // `id` absent: a notification. Present: string, number or null (echoed as is).
    let id = match obj.remove("id") {
        None => None,
        // An integer past 64 bits is read as a float: echoed, it would come
        // back as another number (1.8446744073709552e19 for 2^64 + 1), which
        // a client that reads integers exactly never matches with its own.
        Some(Value::Number(n)) if beyond_64_bits(&n) => {
            return invalid(
                &Value::Null,
                "\"id\" is a whole number beyond 64 bits (however written: 1e20 too), which \
                 cannot be echoed exactly: use a smaller number or a string",
            );
        }
        Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(id),
        Some(_) => return invalid(&Value::Null, "\"id\" must be a string, a number or null"),
    };
    let reply_id = id.clone().unwrap_or(Value::Null);
    match obj.remove("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        _ => return invalid(&reply_id, "\"jsonrpc\" must be \"2.0\""),
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        _ => return invalid(&reply_id, "\"method\" must be a string"),
    };
    let params = match obj.remove("params") {
        None => None,
        Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
        Some(_) => return invalid(&reply_id, "\"params\" must be an object or an array"),
    };
    if let Some(extra) = obj.keys().next() {
        return invalid(&reply_id, &format!("unknown member {}", named(extra)));
    }
    // From here on the request is well formed, so a notification is never answered.
    let reply = |code, message: String| match &id {
        Some(id) => Item::Reply(error(id, code, &message, None)),
        None => Item::Silent,
    };
    if method != "play" {
        return reply(
            METHOD_NOT_FOUND,
            format!(
                "method not found: {} (the only method is \"play\")",
                named(&method)
            ),
        );
    }
    match play_script(params) {
        Ok(script) => Item::Play { id, script },
        Err(why) => reply(INVALID_PARAMS, format!("invalid params: {why}")),
    }
}

/// Whether `n` is a whole number outside `i64` and `u64`, so read as a float
/// that does not hold it exactly (JSON-RPC wants the id echoed as sent).
fn beyond_64_bits(n: &serde_json::Number) -> bool {
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    !n.is_i64()
        && !n.is_u64()
        && n.as_f64()
            .is_some_and(|f| f.fract() == 0.0 && f.abs() >= TWO_POW_63)
}

/// `play` takes `{"script": string}` or `[string]`.
fn play_script(params: Option<Value>) -> Result<String, String> {
    match params {
        None => Err("missing \"script\"".into()),
        Some(Value::Object(mut map)) => {
            let script = match map.remove("script") {
                Some(Value::String(s)) => s,
                Some(_) => return Err("\"script\" must be a string".into()),
                None => return Err("missing \"script\"".into()),
            };
            match map.keys().next() {
                Some(extra) => Err(format!("unknown parameter {}", named(extra))),
                None => Ok(script),
            }
        }
        Some(Value::Array(mut list)) => match (list.len(), list.pop()) {
            (1, Some(Value::String(s))) => Ok(s),
            (1, Some(_)) => Err("\"script\" must be a string".into()),
            _ => Err("expected exactly one positional parameter, the script".into()),
        },
        Some(_) => Err("\"params\" must be an object or an array".into()),
    }
}

/// A success reply.
pub(crate) fn success(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// An error reply; `data` is omitted when `None`.
pub(crate) fn error(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut err = Map::new();
    err.insert("code".into(), code.into());
    err.insert("message".into(), message.into());
    if let Some(data) = data {
        err.insert("data".into(), data);
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": err })
}

/// A -32003 reply: `message`, with the limit's name and value as `data`.
pub(crate) fn limit_exceeded(id: &Value, message: &str, limit: &str, max: usize) -> Value {
    error(
        id,
        LIMIT_EXCEEDED,
        message,
        Some(json!({ "limit": limit, "max": max })),
    )
}

/// The reply to a message over the `max` bytes of the message limit.
pub(crate) fn message_too_large(max: usize) -> Value {
    limit_exceeded(
        &Value::Null,
        &format!("message too large (limit {max} bytes)"),
        "max_message_bytes",
        max,
    )
}

/// The reply to a binary message.
pub(crate) fn binary_refused() -> Value {
    error(
        &Value::Null,
        INVALID_REQUEST,
        "invalid request: binary frames are not supported; send JSON-RPC as text",
        None,
    )
}

/// The reply to a text message that is not UTF-8.
pub(crate) fn not_utf8() -> Value {
    error(
        &Value::Null,
        PARSE_ERROR,
        "parse error: text frame is not valid UTF-8",
        None,
    )
}

/// The generic internal-error reply.
pub(crate) fn internal(id: &Value) -> Value {
    error(id, INTERNAL_ERROR, "internal error", None)
}

#[cfg(test)]
mod tests;
