//! JSON-RPC 2.0 framing (DESIGN.md §4): parsing a text message into calls,
//! and building every reply the server sends. No I/O here.

use serde_json::{Map, Value, json};

use crate::config::MAX_BATCH_ITEMS;

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
    Incoming::Single(Item::Reply(error(
        &Value::Null,
        PARSE_ERROR,
        &format!("parse error: {e}"),
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
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return parse_error(&e);
    }
    let Ok(raw) = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(text) else {
        return Incoming::Single(invalid(&Value::Null, &e.to_string()));
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
            Err(e) => {
                return parse_error(&e);
            }
        });
    }
    Incoming::Batch(items)
}

/// A JSON value read as [`Value`] is, except that an object naming one
/// member twice is an error (serde_json keeps the last).
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(serde::de::Error::custom(format!(
                    "member {name:?} appears more than once in an object"
                )));
            }
            let Strict(v) = map.next_value()?;
            members.insert(name, v);
        }
        Ok(Value::Object(members))
    }
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
        return invalid(&reply_id, &format!("unknown member {extra:?}"));
    }
    // From here on the request is well formed, so a notification is never answered.
    let reply = |code, message: String| match &id {
        Some(id) => Item::Reply(error(id, code, &message, None)),
        None => Item::Silent,
    };
    if method != "play" {
        return reply(
            METHOD_NOT_FOUND,
            format!("method not found: {method:?} (the only method is \"play\")"),
        );
    }
    match play_script(params) {
        Ok(script) => Item::Play { id, script },
        Err(why) => reply(INVALID_PARAMS, format!("invalid params: {why}")),
    }
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
                Some(extra) => Err(format!("unknown parameter {extra:?}")),
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
mod tests {
    use super::*;

    fn code_of(item: &Item) -> i64 {
        match item {
            Item::Reply(v) => v["error"]["code"].as_i64().expect("an error code"),
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    fn single(text: &str) -> Item {
        match parse(text) {
            Incoming::Single(item) => item,
            other => panic!("expected a single item, got {other:?}"),
        }
    }

    #[test]
    fn play_with_named_or_positional_script_is_a_call() {
        let named = single(r#"{"jsonrpc":"2.0","id":1,"method":"play","params":{"script":"1"}}"#);
        assert_eq!(
            named,
            Item::Play {
                id: Some(json!(1)),
                script: "1".into()
            }
        );
        let positional = single(r#"{"jsonrpc":"2.0","id":"a","method":"play","params":["2"]}"#);
        assert_eq!(
            positional,
            Item::Play {
                id: Some(json!("a")),
                script: "2".into()
            }
        );
    }

    #[test]
    fn request_without_id_is_a_notification() {
        let n = single(r#"{"jsonrpc":"2.0","method":"play","params":{"script":"1"}}"#);
        assert_eq!(
            n,
            Item::Play {
                id: None,
                script: "1".into()
            }
        );
    }

    #[test]
    fn null_id_is_a_request_answered_with_null() {
        let n = single(r#"{"jsonrpc":"2.0","id":null,"method":"nope"}"#);
        let Item::Reply(v) = n else {
            panic!("expected a reply")
        };
        assert_eq!(v["id"], Value::Null);
        assert_eq!(v["error"]["code"], METHOD_NOT_FOUND);
    }

    #[test]
    fn an_id_beyond_64_bits_is_echoed_as_a_number_that_reads_back_the_same() {
        // Found by the `jsonrpc` fuzz target: without serde_json's exact
        // float parsing the echoed id read back one unit off.
        let id = "4".repeat(98) + "2";
        let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"nope"}}"#);
        let Item::Reply(v) = single(&text) else {
            unreachable!()
        };
        let wire = serde_json::to_string(&v).expect("serializes");
        let back: Value = serde_json::from_str(&wire).expect("reads back");
        assert_eq!(back["id"], v["id"], "{wire}");
        let sent: Value = serde_json::from_str(&id).expect("a number");
        assert_eq!(v["id"], sent);
    }

    #[test]
    fn a_member_named_twice_is_an_invalid_request_and_a_batch_answers_it_alone() {
        for text in [
            r#"{"jsonrpc":"2.0","id":16,"method":"play","params":{"script":"1"},"id":17}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"play","params":{"script":"1","script":"2"}}"#,
        ] {
            let item = single(text);
            assert_eq!(code_of(&item), INVALID_REQUEST, "{text}");
            let Item::Reply(v) = item else { unreachable!() };
            assert_eq!(v["id"], Value::Null, "{text}");
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("appears more than once"), "{message}");
        }
        let batch = parse(
            r#"[{"jsonrpc":"2.0","id":1,"id":2,"method":"play","params":["1"]},
                {"jsonrpc":"2.0","id":3,"method":"play","params":["3"]}]"#,
        );
        let Incoming::Batch(items) = batch else {
            panic!("a batch: {batch:?}")
        };
        assert_eq!(code_of(&items[0]), INVALID_REQUEST);
        assert_eq!(
            items[1],
            Item::Play {
                id: Some(json!(3)),
                script: "3".into()
            }
        );
        // Not JSON after the member named twice: a parse error still.
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"id":2,"#,
            r#"{"id":1,"id":2}x"#,
            r#"[{"a":1,"a":2}, nope]"#,
        ] {
            assert_eq!(code_of(&single(text)), PARSE_ERROR, "{text}");
        }
        let deep = format!(
            r#"[{{"a":1,"a":2}}, {}{}]"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(code_of(&single(&deep)), PARSE_ERROR, "nested too deep");
        // Refused whole as any empty or oversize batch would be.
        let many = format!(
            "[{}]",
            vec![r#"{"a":1,"a":2}"#; MAX_BATCH_ITEMS + 1].join(",")
        );
        assert_eq!(
            code_of(&single(&many)),
            LIMIT_EXCEEDED,
            "an oversize batch is refused whole"
        );
    }

    #[test]
    fn malformed_json_is_a_parse_error_with_null_id() {
        let item = single("{\"jsonrpc\":");
        assert_eq!(code_of(&item), PARSE_ERROR);
        let Item::Reply(v) = item else { unreachable!() };
        assert_eq!(v["id"], Value::Null);
    }

    #[test]
    fn structural_faults_are_invalid_requests() {
        for text in [
            r#"{"jsonrpc":"1.0","id":1,"method":"play","params":{"script":"1"}}"#,
            r#"{"id":1,"method":"play","params":{"script":"1"}}"#,
            r#"{"jsonrpc":"2.0","id":{"x":1},"method":"play","params":{"script":"1"}}"#,
            r#"{"jsonrpc":"2.0","id":[1],"method":"play"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"play","params":"1"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"play","params":{"script":"1"},"extra":true}"#,
            r#"42"#,
            r#""play""#,
        ] {
            assert_eq!(code_of(&single(text)), INVALID_REQUEST, "{text}");
        }
    }

    #[test]
    fn invalid_request_without_id_is_still_answered() {
        // Not a well-formed notification, so the spec says answer with id null.
        assert_eq!(
            code_of(&single(r#"{"jsonrpc":"1.0","method":"play"}"#)),
            INVALID_REQUEST
        );
    }

    #[test]
    fn unknown_method_and_bad_params_are_reported_for_requests_only() {
        assert_eq!(
            code_of(&single(r#"{"jsonrpc":"2.0","id":1,"method":"run"}"#)),
            METHOD_NOT_FOUND
        );
        assert_eq!(single(r#"{"jsonrpc":"2.0","method":"run"}"#), Item::Silent);
        for params in [
            "",
            r#","params":{}"#,
            r#","params":{"script":1}"#,
            r#","params":{"script":"1","timeout":5}"#,
            r#","params":[]"#,
            r#","params":[1]"#,
            r#","params":["1","2"]"#,
        ] {
            let text = format!(r#"{{"jsonrpc":"2.0","id":7,"method":"play"{params}}}"#);
            assert_eq!(code_of(&single(&text)), INVALID_PARAMS, "{text}");
            let text = format!(r#"{{"jsonrpc":"2.0","method":"play"{params}}}"#);
            assert_eq!(single(&text), Item::Silent, "{text}");
        }
    }

    #[test]
    fn empty_batch_is_one_invalid_request() {
        assert_eq!(code_of(&single("[]")), INVALID_REQUEST);
    }

    #[test]
    fn a_batch_over_the_limit_is_one_limit_error_naming_the_count() {
        let batch = |n: usize| format!("[{}]", vec!["1"; n].join(","));
        let Incoming::Single(Item::Reply(reply)) = parse(&batch(MAX_BATCH_ITEMS + 1)) else {
            panic!("expected one reply")
        };
        assert_eq!(reply["id"], Value::Null);
        assert_eq!(reply["error"]["code"], LIMIT_EXCEEDED);
        assert_eq!(
            reply["error"]["data"],
            json!({"limit": "max_batch_items", "max": MAX_BATCH_ITEMS})
        );
        let message = reply["error"]["message"].as_str().expect("a message");
        assert!(
            message.contains(&(MAX_BATCH_ITEMS + 1).to_string()),
            "{message}"
        );
        let Incoming::Batch(items) = parse(&batch(MAX_BATCH_ITEMS)) else {
            panic!("a batch at the limit is a batch")
        };
        assert_eq!(items.len(), MAX_BATCH_ITEMS);
    }

    #[test]
    fn batch_elements_are_validated_one_by_one() {
        let Incoming::Batch(items) = parse(
            r#"[1,{"jsonrpc":"2.0","method":"play","params":["x"]},{"jsonrpc":"2.0","id":2,"method":"no"}]"#,
        ) else {
            panic!("expected a batch")
        };
        assert_eq!(items.len(), 3);
        assert_eq!(code_of(&items[0]), INVALID_REQUEST);
        assert_eq!(
            items[1],
            Item::Play {
                id: None,
                script: "x".into()
            }
        );
        assert_eq!(code_of(&items[2]), METHOD_NOT_FOUND);
    }

    #[test]
    fn error_reply_has_the_json_rpc_shape() {
        let v = error(
            &json!(3),
            LIMIT_EXCEEDED,
            "too big",
            Some(json!({"limit": "x"})),
        );
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":3,"error":{"code":-32003,"message":"too big","data":{"limit":"x"}}})
        );
        assert_eq!(
            success(&json!("a"), json!(1)),
            json!({"jsonrpc":"2.0","id":"a","result":1})
        );
    }
}
