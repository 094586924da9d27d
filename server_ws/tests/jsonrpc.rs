//! JSON-RPC 2.0 over a real socket, raw text: results, every error code,
//! notifications, batches, concurrency.

mod common;

use std::time::Duration;

use common::{Fixture, call, code, play, recv, send};
use serde_json::{Value, json};
use server_ws::codes;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_returns_the_output_printed_text_and_task_id() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    let reply = call(&mut ws, &play(1, "echo:42")).await;
    assert_eq!(reply["jsonrpc"], "2.0");
    assert_eq!(reply["id"], 1);
    assert_eq!(reply["result"]["output"], "42");
    assert_eq!(reply["result"]["printed"], "");
    assert!(
        reply["result"]["task_id"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert!(reply["result"]["run_time_ms"].as_f64().is_some());

    let reply = call(&mut ws, &play("p", "print:hello")).await;
    assert_eq!(reply["id"], "p");
    assert_eq!(reply["result"]["output"], "");
    assert_eq!(reply["result"]["printed"], "hello\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positional_params_are_accepted() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    let reply = call(
        &mut ws,
        r#"{"jsonrpc":"2.0","id":9,"method":"play","params":["echo:pos"]}"#,
    )
    .await;
    assert_eq!(reply["result"]["output"], "pos");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_the_json_rpc_error_codes() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    let cases: &[(&str, i64, Value)] = &[
        (
            r#"{"jsonrpc":"2.0","id":1,"method""#,
            codes::PARSE_ERROR,
            Value::Null,
        ),
        (
            r#"{"jsonrpc":"1.0","id":2,"method":"play","params":{"script":"1"}}"#,
            codes::INVALID_REQUEST,
            json!(2),
        ),
        (
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"play","params":{"script":"1"}}"#,
            codes::INVALID_REQUEST,
            Value::Null,
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"eval"}"#,
            codes::METHOD_NOT_FOUND,
            json!(3),
        ),
        (
            r#"{"jsonrpc":"2.0","id":4,"method":"play","params":{}}"#,
            codes::INVALID_PARAMS,
            json!(4),
        ),
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"play","params":{"script":42}}"#,
            codes::INVALID_PARAMS,
            json!(5),
        ),
    ];
    for (text, want, id) in cases {
        let reply = call(&mut ws, text).await;
        assert_eq!(code(&reply), *want, "{text} → {reply}");
        assert_eq!(&reply["id"], id, "{text} → {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // The connection survives every one of them.
    assert_eq!(
        call(&mut ws, &play(6, "echo:ok")).await["result"]["output"],
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_script_gets_32000_with_kind_line_and_column() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    let reply = call(&mut ws, &play(1, "fail:variable not found: x")).await;
    assert_eq!(code(&reply), codes::SCRIPT_FAILED);
    assert_eq!(reply["id"], 1);
    assert_eq!(reply["error"]["message"], "variable not found: x");
    assert_eq!(reply["error"]["data"]["kind"], "runtime");
    assert_eq!(reply["error"]["data"]["line"], 1);
    assert_eq!(reply["error"]["data"]["column"], 5);
    assert!(reply["error"]["data"]["task_id"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_does_not_finish_in_time_gets_32001() {
    let fx = Fixture::start(|c| c.task_timeout = Duration::from_millis(300)).await;
    let mut ws = fx.connect().await;
    let reply = call(&mut ws, &play(1, "hang")).await;
    assert_eq!(code(&reply), codes::TIMED_OUT, "{reply}");
    assert_eq!(reply["error"]["data"]["kind"], "timeout");
    // A script the engine stopped for running out of time is reported alike.
    let reply = call(&mut ws, &play(2, "expire")).await;
    assert_eq!(code(&reply), codes::TIMED_OUT, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_when_redis_is_down_get_32002() {
    let mut fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    assert_eq!(
        call(&mut ws, &play(1, "echo:up")).await["result"]["output"],
        "up"
    );
    fx.redis.kill();
    let reply = call(&mut ws, &play(2, "echo:down")).await;
    assert_eq!(code(&reply), codes::BROKER_UNAVAILABLE, "{reply}");
    assert_eq!(reply["id"], 2);
    let text = reply.to_string();
    assert!(!text.contains("127.0.0.1"), "no internals leaked: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_run_but_get_no_reply() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    send(
        &mut ws,
        r#"{"jsonrpc":"2.0","method":"play","params":{"script":"echo:quiet"}}"#,
    )
    .await;
    // Malformed notifications are not answered either.
    send(&mut ws, r#"{"jsonrpc":"2.0","method":"nope"}"#).await;
    send(&mut ws, r#"{"jsonrpc":"2.0","method":"play","params":{}}"#).await;
    // The next reply is the one for the next request: nothing came in between.
    let reply = call(&mut ws, &play(7, "echo:loud")).await;
    assert_eq!(reply["id"], 7);
    assert_eq!(reply["result"]["output"], "loud");
    let status = fx.status.clone();
    common::eventually("the notification to have run", || {
        status.requests() == 2 && status.in_flight() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_batch_is_answered_with_an_array_without_the_notifications() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"play","params":{"script":"echo:one"}},
        {"jsonrpc":"2.0","method":"play","params":{"script":"echo:note"}},
        {"jsonrpc":"2.0","id":2,"method":"nope"},
        1,
        {"jsonrpc":"2.0","id":3,"method":"play","params":{"script":"fail:boom"}},
    ]);
    let reply = call(&mut ws, &batch.to_string()).await;
    let replies = reply.as_array().expect("a batch reply is an array");
    assert_eq!(replies.len(), 4, "{reply}");
    let by_id = |id: Value| {
        replies
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("reply for {id} in {reply}"))
    };
    assert_eq!(by_id(json!(1))["result"]["output"], "one");
    assert_eq!(code(by_id(json!(2))), codes::METHOD_NOT_FOUND);
    assert_eq!(code(by_id(json!(3))), codes::SCRIPT_FAILED);
    assert_eq!(code(by_id(Value::Null)), codes::INVALID_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_limit_gets_one_32003_and_one_at_the_limit_is_answered_item_by_item() {
    let max = server_ws::MAX_BATCH_ITEMS;
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    // Over the limit: one error for the whole batch, and none of it runs
    // (not even the play in front).
    let mut over =
        vec![json!({"jsonrpc":"2.0","id":"first","method":"play","params":{"script":"echo:no"}})];
    over.extend(std::iter::repeat_n(json!(1), max));
    let reply = call(&mut ws, &Value::Array(over).to_string()).await;
    assert!(
        reply.is_object(),
        "one error, not an array of {} replies",
        reply.as_array().map_or(0, Vec::len)
    );
    assert_eq!(reply["id"], Value::Null);
    assert_eq!(code(&reply), codes::LIMIT_EXCEEDED);
    assert_eq!(
        reply["error"]["data"],
        json!({"limit": "max_batch_items", "max": max})
    );
    let message = reply["error"]["message"].as_str().expect("a message");
    assert!(
        message.contains(&(max + 1).to_string()) && message.contains(&max.to_string()),
        "the message names the count and the limit: {message}"
    );
    assert_eq!(fx.status.requests(), 0, "nothing of it ran");

    // At the limit: every item answered, in order, the plays run.
    let at: Vec<Value> = (0..max)
        .map(|i| match i % 100 {
            0 => json!({"jsonrpc":"2.0","id":i,"method":"play","params":{"script":format!("echo:{i}")}}),
            _ => json!({"jsonrpc":"2.0","id":i,"method":"nope"}),
        })
        .collect();
    let reply = call(&mut ws, &Value::Array(at).to_string()).await;
    let replies = reply.as_array().expect("a batch reply is an array");
    assert_eq!(replies.len(), max);
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply["id"], i, "in item order");
        if i % 100 == 0 {
            assert_eq!(reply["result"]["output"], i.to_string());
        } else {
            assert_eq!(code(reply), codes::METHOD_NOT_FOUND);
        }
    }

    // The connection keeps serving.
    let reply = call(&mut ws, &play("after", "echo:after")).await;
    assert_eq!(reply["result"]["output"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_batch_is_one_invalid_request_and_an_all_notification_batch_is_silent() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    let reply = call(&mut ws, "[]").await;
    assert!(reply.is_object(), "a single error, not an array: {reply}");
    assert_eq!(code(&reply), codes::INVALID_REQUEST);
    assert_eq!(reply["id"], Value::Null);

    send(
        &mut ws,
        &json!([
            {"jsonrpc":"2.0","method":"play","params":{"script":"echo:a"}},
            {"jsonrpc":"2.0","method":"play","params":{"script":"echo:b"}},
        ])
        .to_string(),
    )
    .await;
    let reply = call(&mut ws, &play("after", "echo:after")).await;
    assert_eq!(
        reply["id"], "after",
        "the silent batch sent nothing: {reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_requests_in_flight_on_one_connection_are_matched_by_id() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    // Request 0 completes only after the 19 others have: the server must have
    // all 20 in flight at once, and reply out of order.
    send(&mut ws, &play(0, "gate:19")).await;
    for id in 1..20 {
        send(&mut ws, &play(id, &format!("echo:r{id}"))).await;
    }
    let mut seen = Vec::new();
    for _ in 0..20 {
        let reply = recv(&mut ws).await;
        let id = reply["id"].as_u64().expect("numeric id");
        let want = if id == 0 {
            "gate".to_string()
        } else {
            format!("r{id}")
        };
        assert_eq!(reply["result"]["output"], want.as_str(), "{reply}");
        seen.push(id);
    }
    assert_eq!(seen.last(), Some(&0), "the gated request is answered last");
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_limit_get_32003() {
    let fx = Fixture::start(|c| c.max_in_flight = 2).await;
    let mut ws = fx.connect().await;
    send(&mut ws, &play(1, "gate:1")).await;
    send(&mut ws, &play(2, "gate:1")).await;
    let status = fx.status.clone();
    common::eventually("two requests in flight", || status.in_flight() == 2).await;
    let reply = call(&mut ws, &play(3, "echo:x")).await;
    assert_eq!(reply["id"], 3);
    assert_eq!(code(&reply), codes::LIMIT_EXCEEDED);
    assert_eq!(reply["error"]["data"]["limit"], "max_in_flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_over_the_size_limit_gets_32003_and_never_reaches_the_broker() {
    let fx = Fixture::start(|c| c.max_script_bytes = 64).await;
    let mut ws = fx.connect().await;
    let big = format!("echo:{}", "x".repeat(100));
    let reply = call(&mut ws, &play(1, &big)).await;
    assert_eq!(reply["id"], 1);
    assert_eq!(code(&reply), codes::LIMIT_EXCEEDED, "{reply}");
    assert_eq!(reply["error"]["data"]["limit"], "max_script_bytes");
    assert_eq!(reply["error"]["data"]["max"], 64);
    assert_eq!(fx.status.requests(), 0, "the refused script was submitted");
    // A script within the limit on the same connection still runs.
    assert_eq!(
        call(&mut ws, &play(2, "echo:fine")).await["result"]["output"],
        "fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_task_record_gets_32603_without_internals() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    // The waiter finds the bad status on its fallback read of the task hash.
    let reply = call(&mut ws, &play(1, "garble")).await;
    assert_eq!(code(&reply), codes::INTERNAL_ERROR, "{reply}");
    assert_eq!(reply["id"], 1);
    assert_eq!(reply["error"]["message"], "internal error");
    assert!(reply["error"].get("data").is_none(), "{reply}");
    assert_eq!(
        call(&mut ws, &play(2, "echo:fine")).await["result"]["output"],
        "fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_beyond_the_in_flight_limit_wait_for_a_slot_and_all_run() {
    // A notification cannot be refused (it gets no reply), so over the limit
    // it waits for a slot instead of being dropped.
    let fx = Fixture::start(|c| c.max_in_flight = 2).await;
    let mut ws = fx.connect().await;
    for i in 0..20 {
        send(
            &mut ws,
            &json!({"jsonrpc": "2.0", "method": "play", "params": {"script": format!("sleep:{}", i % 3)}})
                .to_string(),
        )
        .await;
    }
    common::eventually_async("all 20 notifications to run", || async {
        fx.processed().await == 20
    })
    .await;
    // A finished task's slot is freed once its notification reached the
    // server, a moment after Redis counted it.
    common::eventually_async("the 20 notifications' slots to be freed", || async {
        fx.status.in_flight() == 0
    })
    .await;

    // In a batch too: the calls of the batch start as they are admitted, so a
    // notification behind them waits for their slots, not for the batch.
    let mut batch = vec![
        json!({"jsonrpc": "2.0", "id": 1, "method": "play", "params": {"script": "sleep:50"}}),
    ];
    for _ in 0..10 {
        batch.push(json!({"jsonrpc": "2.0", "method": "play", "params": {"script": "sleep:5"}}));
    }
    let reply = call(&mut ws, &Value::Array(batch).to_string()).await;
    let replies = reply
        .as_array()
        .unwrap_or_else(|| panic!("an array: {reply}"));
    assert_eq!(replies.len(), 1, "a reply for the request only: {reply}");
    assert_eq!(replies[0]["result"]["output"], "slept", "{reply}");
    common::eventually_async("all 31 tasks to finish", || async {
        fx.processed().await == 31
    })
    .await;
}

/// Redis refusing writes until its operator acts (out of memory under
/// `maxmemory` with `noeviction`): -32002 saying so in its message and in
/// `data.reason`, not "try again later"; served again once it is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory_is_32002_naming_why_and_served_again_once_fixed() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    let conn = common::redis_conn(&fx).await;
    let config = |name: &'static str, value: &'static str| {
        let mut conn = conn.clone();
        async move {
            let () = redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .query_async(&mut conn)
                .await
                .expect("config set");
        }
    };
    config("maxmemory-policy", "noeviction").await;
    config("maxmemory", "1").await;
    let reply = call(&mut ws, &play(1, "echo:refused")).await;
    assert_eq!(code(&reply), codes::BROKER_UNAVAILABLE, "{reply}");
    assert_eq!(
        reply["error"]["data"]["reason"], "redis is out of memory (maxmemory)",
        "{reply}"
    );
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("until its operator acts") && !message.contains("try again"),
        "{reply}"
    );
    config("maxmemory", "0").await;
    let reply = call(&mut ws, &play(2, "echo:served")).await;
    assert_eq!(reply["result"]["output"], "served", "{reply}");
}

/// A queue key another program wrote as another type than a list: Redis
/// refuses every push to it, which is no internal fault of this system:
/// -32002 saying the key holds another type, in its message and in
/// `data.reason`; served again once the key is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_key_of_another_type_is_32002_naming_why_and_served_again_once_deleted() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    let mut conn = common::redis_conn(&fx).await;
    let queue = client::keys::tasks(common::QUEUE);
    let () = redis::cmd("SET")
        .arg(&queue)
        .arg("not a list")
        .query_async(&mut conn)
        .await
        .expect("set");
    let reply = call(&mut ws, &play(1, "echo:refused")).await;
    assert_eq!(code(&reply), codes::BROKER_UNAVAILABLE, "{reply}");
    let reason = reply["error"]["data"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("queue key in redis holds another type"),
        "{reply}"
    );
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("until its operator acts") && !message.contains("try again"),
        "{reply}"
    );
    let _: i64 = redis::cmd("DEL")
        .arg(&queue)
        .query_async(&mut conn)
        .await
        .expect("del");
    let reply = call(&mut ws, &play(2, "echo:served")).await;
    assert_eq!(reply["result"]["output"], "served", "{reply}");
}

/// JSON-RPC 2.0 §4: the reply carries the id as sent. An integer past 64
/// bits reads as a float, and echoed it would be another number
/// (1.8446744073709552e19 for 2^64 + 1), which a client that reads integers
/// exactly (Python, Go's json.Number) never matches: it is refused, -32600
/// with a null id, and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integer_id_beyond_64_bits_is_refused_not_echoed_as_another_number() {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    for id in ["18446744073709551617", "-9223372036854775809"] {
        let request = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"play","params":{{"script":"echo:a"}}}}"#
        );
        let reply = call(&mut ws, &request).await;
        assert_eq!(code(&reply), codes::INVALID_REQUEST, "{id}: {reply}");
        assert_eq!(reply["id"], Value::Null, "{id}: {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("beyond 64 bits")),
            "{reply}"
        );
    }
    // The largest that fit are echoed as sent.
    let reply = call(&mut ws, &play(u64::MAX, "echo:a")).await;
    assert_eq!(reply["id"], json!(u64::MAX), "{reply}");
    assert_eq!(reply["result"]["output"], "a", "{reply}");
}
