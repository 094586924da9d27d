//! The framing's unit tests: parsing every kind of message and the replies
//! it makes.

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
fn an_id_beyond_64_bits_is_refused_rather_than_echoed_as_another_number() {
    // Found by the `jsonrpc` fuzz target: without serde_json's exact float
    // parsing the echoed id read back one unit off. Read as a float it is
    // another number than was sent all the same, so it is refused.
    for id in [
        "4".repeat(98) + "2",
        "18446744073709551617".into(),
        "-9223372036854775809".into(),
        // Whole all the same, and read as the same doubles as integers
        // written out would be.
        "1e20".into(),
        "1.5e300".into(),
    ] {
        let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"nope"}}"#);
        let Item::Reply(v) = single(&text) else {
            unreachable!()
        };
        assert_eq!(v["error"]["code"], INVALID_REQUEST, "{v}");
        assert_eq!(v["id"], Value::Null, "{v}");
        assert_eq!(
            v["error"]["message"],
            "invalid request: \"id\" is a whole number beyond 64 bits (however written: 1e20 \
             too), which cannot be echoed exactly: use a smaller number or a string",
            "{v}"
        );
    }
    // Those that fit are echoed as sent.
    for id in [
        "18446744073709551615",
        "-9223372036854775808",
        "1.5",
        "0.30000000000000004",
    ] {
        let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"nope"}}"#);
        let Item::Reply(v) = single(&text) else {
            unreachable!()
        };
        assert_eq!(serde_json::to_string(&v["id"]).expect("serializes"), id);
    }
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
fn a_lone_surrogate_is_a_parse_error_saying_what_an_escape_needs() {
    for text in [
        r#"{"jsonrpc":"2.0","id":1,"method":"play","params":["\ud800"]}"#,
        r#"{"jsonrpc":"2.0","id":"\udc00","method":"play","params":["1"]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"play","params":["\ud800\u0041"]}"#,
    ] {
        let item = single(text);
        assert_eq!(code_of(&item), PARSE_ERROR, "{text}");
        let Item::Reply(v) = item else { unreachable!() };
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("surrogate pair"), "{text}: {message}");
    }
    // A pair is a character.
    let pair = single(r#"{"jsonrpc":"2.0","id":1,"method":"play","params":["\ud83d\ude00"]}"#);
    assert_eq!(
        pair,
        Item::Play {
            id: Some(json!(1)),
            script: "\u{1f600}".into()
        }
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

/// A name the client sent is quoted by its start and its length once
/// long: 300,000 combining marks (600 KB) escape to 2.4 MB quoted whole.
#[test]
fn a_long_name_is_quoted_by_its_start_and_length_so_no_reply_outgrows_its_request() {
    let long = "\u{300}".repeat(300_000);
    for text in [
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": long}).to_string(),
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "play", long.clone(): 1})
            .to_string(),
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "play",
            "params": {"script": "1", long.clone(): 1}})
        .to_string(),
    ] {
        let Item::Reply(reply) = single(&text) else {
            panic!("a reply")
        };
        let message = reply["error"]["message"].as_str().expect("a message");
        assert!(message.len() < 1_000, "{} bytes", message.len());
        assert!(message.contains("… (600000 bytes)"), "{message}");
    }
    let Item::Reply(reply) = single(r#"{"jsonrpc":"2.0","id":1,"method":"run"}"#) else {
        panic!("a reply")
    };
    assert_eq!(
        reply["error"]["message"],
        r#"method not found: "run" (the only method is "play")"#
    );
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

/// The name of a member named twice is quoted like every other
/// name the client sent, so this reply does not outgrow its request either:
/// DEL (one byte in the request) is `\u{7f}` in Rust's debug quoting and 7
/// bytes in the JSON reply.
#[test]
fn a_member_named_twice_is_quoted_by_its_start_and_length_so_the_reply_does_not_outgrow_the_request()
 {
    let long = "\u{7f}".repeat(300_000);
    for text in [
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"play","params":{{"script":"1","{long}":1,"{long}":2}}}}"#
        ),
        format!(r#"[{{"jsonrpc":"2.0","id":1,"{long}":1,"{long}":2}}]"#),
    ] {
        let reply = match parse(&text) {
            Incoming::Single(Item::Reply(reply)) => reply,
            Incoming::Batch(items) => match &items[..] {
                [Item::Reply(reply)] => reply.clone(),
                other => panic!("one reply: {other:?}"),
            },
            other => panic!("a reply: {other:?}"),
        };
        let wire = reply.to_string();
        assert!(
            wire.len() < text.len(),
            "a reply of {} bytes to a request of {} bytes",
            wire.len(),
            text.len()
        );
        let message = reply["error"]["message"].as_str().expect("a message");
        assert!(message.contains("appears more than once"), "{message}");
    }
}
