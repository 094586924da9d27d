//! The JSON-RPC decoder and request validation (server_ws `rpc`): any text
//! a client sends becomes calls to run or error replies; never a panic, and
//! every reply is a JSON-RPC 2.0 error object that serializes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use server_ws::codes;
use server_ws::fuzzing::{Incoming, Item, parse};

const CODES: [i64; 4] = [
    codes::PARSE_ERROR,
    codes::INVALID_REQUEST,
    codes::METHOD_NOT_FOUND,
    codes::INVALID_PARAMS,
];

fn check_id(id: &Value) {
    assert!(
        matches!(id, Value::Null | Value::String(_) | Value::Number(_)),
        "id {id:?} is not a string, a number or null"
    );
}

fn check(item: &Item, text: &str) {
    match item {
        Item::Reply(reply) => {
            let wire = serde_json::to_string(reply).expect("a reply serializes");
            let back: Value = serde_json::from_str(&wire).expect("a reply reads back");
            assert_eq!(&back, reply, "the reply survives its own serialization");
            let obj = back.as_object().expect("a reply is an object");
            assert_eq!(obj.len(), 3, "jsonrpc, id, error: {wire}");
            assert_eq!(obj["jsonrpc"], "2.0");
            check_id(&obj["id"]);
            let err = obj["error"].as_object().expect("an error object");
            let code = err["code"].as_i64().expect("an integer code");
            assert!(CODES.contains(&code), "code {code} in {wire}");
            assert!(err["message"].is_string());
            assert!(err.get("data").is_none());
            if code == codes::PARSE_ERROR {
                assert!(serde_json::from_str::<Value>(text).is_err());
            }
        }
        Item::Play { id, .. } => {
            if let Some(id) = id {
                check_id(id);
            }
            // Only well-formed JSON can carry a call.
            assert!(serde_json::from_str::<Value>(text).is_ok());
        }
        Item::Silent => {}
    }
}

fuzz_target!(|data: &[u8]| {
    // The connection hands `parse` only UTF-8 text (the rest is answered
    // before it); lossy decoding keeps the other inputs useful.
    let text = String::from_utf8_lossy(data);
    match parse(&text) {
        Incoming::Single(item) => check(&item, &text),
        Incoming::Batch(items) => {
            assert!(
                !items.is_empty(),
                "an empty batch is one error, not a batch"
            );
            for item in &items {
                check(item, &text);
            }
        }
    }
});
