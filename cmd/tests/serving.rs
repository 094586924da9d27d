//! Two circles served by the built binary against a real Redis: play on each,
//! every JSON-RPC error code, batches, notifications, requests in flight,
//! isolation, origin check, size limit.

mod common;

use std::time::Duration;

use common::{Orchestrator, Sandbox, connect, output, play, port, recv, send};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

struct Two {
    _sandbox: Sandbox,
    orchestrator: Orchestrator,
    _redis: testkit::RedisServer,
    alpha: u16,
    beta: u16,
}

fn two_circles(extra: &[&str]) -> Two {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (alpha, beta) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", alpha), (2, "Beta Circle", beta)]);
    let mut orchestrator = Orchestrator::start(&sandbox, &config, &redis.url(), extra);
    orchestrator.wait_table();
    Two {
        _sandbox: sandbox,
        orchestrator,
        _redis: redis,
        alpha,
        beta,
    }
}

fn error_code(reply: &Value) -> i64 {
    reply["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error reply: {reply}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_circle_answers_play_with_the_scripts_value() {
    let two = two_circles(&[]);
    let mut a = connect(two.alpha).await;
    let mut b = connect(two.beta).await;
    assert_eq!(output(&mut a, "40 + 2").await, "42");
    assert_eq!(output(&mut b, "\"be\" + \"ta\"").await, "beta");
    assert_eq!(
        output(&mut a, "let x = 1;").await,
        "",
        "unit renders as empty output"
    );
    let reply = play(&mut b, 7, "print(\"hello\"); 1").await;
    assert_eq!(reply["result"]["output"], "1", "{reply}");
    assert!(
        reply["result"]["printed"]
            .as_str()
            .unwrap_or("")
            .contains("hello"),
        "print output missing: {reply}"
    );
    drop(two);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_rpc_error_code_is_reachable_end_to_end() {
    let two = two_circles(&[
        "--task-timeout",
        "500ms",
        "--max-message-bytes",
        "4096",
        "--max-operations",
        "1000000000000",
    ]);
    let mut ws = connect(two.alpha).await;

    send(&mut ws, "{not json").await;
    assert_eq!(error_code(&recv(&mut ws).await), -32700);

    send(&mut ws, r#"{"jsonrpc":"2.0","id":1}"#).await;
    assert_eq!(error_code(&recv(&mut ws).await), -32600);

    send(
        &mut ws,
        r#"{"jsonrpc":"2.0","id":2,"method":"dance","params":{}}"#,
    )
    .await;
    assert_eq!(error_code(&recv(&mut ws).await), -32601);

    send(
        &mut ws,
        r#"{"jsonrpc":"2.0","id":3,"method":"play","params":{}}"#,
    )
    .await;
    assert_eq!(error_code(&recv(&mut ws).await), -32602);
    send(
        &mut ws,
        r#"{"jsonrpc":"2.0","id":4,"method":"play","params":{"script":42}}"#,
    )
    .await;
    assert_eq!(error_code(&recv(&mut ws).await), -32602);

    let reply = play(&mut ws, 5, "let a = 1;\nlet b = ;").await;
    assert_eq!(error_code(&reply), -32000, "{reply}");
    let data = &reply["error"]["data"];
    assert_eq!(data["kind"], "syntax", "{reply}");
    assert_eq!(data["line"], 2, "{reply}");
    assert!(data["column"].is_u64(), "{reply}");
    let reply = play(&mut ws, 6, "throw \"no\"").await;
    assert_eq!(error_code(&reply), -32000, "{reply}");
    assert_eq!(reply["error"]["data"]["kind"], "runtime", "{reply}");

    let big = "x".repeat(8000);
    send(
        &mut ws,
        &json!({"jsonrpc":"2.0","id":8,"method":"play","params":{"script": big}}).to_string(),
    )
    .await;
    let reply = recv(&mut ws).await;
    assert_eq!(error_code(&reply), -32003, "{reply}");
    assert_eq!(
        output(&mut ws, "40 + 2").await,
        "42",
        "connection must keep working after an oversize message"
    );

    // Last: the endless script keeps this circle's worker busy until its
    // engine limit, past the 500 ms the waiter allows.
    let reply = play(&mut ws, 7, "loop { }").await;
    assert_eq!(error_code(&reply), -32001, "{reply}");
    drop(two);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_unavailable_is_reported_as_32002() {
    let mut two = two_circles(&["--task-timeout", "5s"]);
    let mut ws = connect(two.alpha).await;
    assert_eq!(output(&mut ws, "1").await, "1");
    two._redis.kill();
    let reply = play(&mut ws, 2, "40 + 2").await;
    assert_eq!(error_code(&reply), -32002, "{reply}");
    // The table must not claim the worker runs normally while Redis is gone.
    two.orchestrator
        .wait_stdout("Alpha (id 1): worker Reconnecting", Duration::from_secs(30));
}

/// Redis dies while a request's script runs and comes back with its data
/// before the task's deadline: the request is answered with the script's
/// result, and its write is in the database once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_redis_comes_back_before_its_deadline_gets_its_result() {
    let sandbox = Sandbox::new();
    let mut redis = testkit::RedisServer::start_persistent();
    let alpha = port();
    let config = sandbox.circles(&[(1, "Alpha", alpha)]);
    let mut orchestrator = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &["--max-operations", "1000000000", "--script-timeout", "20s"],
    );
    orchestrator.wait_table();
    let mut ws = connect(alpha).await;
    assert_eq!(output(&mut ws, "1").await, "1");
    let busy = "let t = timestamp(); while t.elapsed < 1.5 { } db::insert(\"kept\")";
    let request = json!({"jsonrpc": "2.0", "id": 2, "method": "play", "params": {"script": busy}});
    send(&mut ws, &request.to_string()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();
    let reply = recv(&mut ws).await;
    assert_eq!(reply["id"], 2, "{reply}");
    assert_eq!(reply["result"]["output"], "1", "{reply}");
    assert_eq!(output(&mut ws, "db::get(1)").await, "kept");
    assert_eq!(output(&mut ws, "db::next_id()").await, "2");
    assert_eq!(orchestrator.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_answered_and_notifications_are_not() {
    let two = two_circles(&[]);
    let mut ws = connect(two.alpha).await;
    send(
        &mut ws,
        r#"[{"jsonrpc":"2.0","id":1,"method":"play","params":{"script":"1 + 1"}},
            {"jsonrpc":"2.0","method":"play","params":{"script":"db::insert(1)"}},
            {"jsonrpc":"2.0","id":2,"method":"nope"}]"#,
    )
    .await;
    let reply = recv(&mut ws).await;
    let replies = reply
        .as_array()
        .unwrap_or_else(|| panic!("batch reply is not an array: {reply}"));
    assert_eq!(
        replies.len(),
        2,
        "the notification must get no reply: {reply}"
    );
    let by_id = |id: i64| {
        replies
            .iter()
            .find(|r| r["id"] == json!(id))
            .unwrap_or_else(|| panic!("no reply for id {id}: {reply}"))
    };
    assert_eq!(by_id(1)["result"]["output"], "2");
    assert_eq!(by_id(2)["error"]["code"], -32601);
    // A lone notification runs and gets no reply: the next reply is for id 9.
    send(
        &mut ws,
        r#"{"jsonrpc":"2.0","method":"play","params":{"script":"db::insert(2)"}}"#,
    )
    .await;
    let reply = play(&mut ws, 9, "db::next_id()").await;
    assert_eq!(
        reply["result"]["output"], "3",
        "both notifications ran: {reply}"
    );
    drop(two);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_requests_in_flight_on_one_connection_get_their_own_replies() {
    let two = two_circles(&[]);
    let mut ws = connect(two.beta).await;
    for id in 0..20 {
        let request = json!({"jsonrpc":"2.0","id":id,"method":"play","params":{"script": format!("{id} * 10")}});
        send(&mut ws, &request.to_string()).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let reply = recv(&mut ws).await;
        let id = reply["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no id: {reply}"));
        assert_eq!(reply["result"]["output"], (id * 10).to_string(), "{reply}");
        seen.insert(id);
    }
    assert_eq!(seen.len(), 20);
    drop(two);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_stored_in_one_circle_is_invisible_to_the_other() {
    let two = two_circles(&[]);
    let mut a = connect(two.alpha).await;
    let mut b = connect(two.beta).await;
    let id = output(&mut a, "db::insert(#{ secret: \"alpha only\" })").await;
    assert_eq!(id, "1");
    assert_eq!(output(&mut a, "db::get(1).secret").await, "alpha only");
    assert_eq!(output(&mut b, "db::exists(1)").await, "false");
    assert_eq!(output(&mut b, "db::next_id()").await, "1");
    drop(two);
}

/// The most memory the process has held (its peak resident set), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let kib = testkit::proc_status(pid, "VmHWM:");
    assert!(kib > 0, "VmHWM in /proc/{pid}/status");
    kib / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_piling_up_memory_stops_at_its_limit_and_both_circles_serve_on() {
    let two = two_circles(&["--max-script-memory", "67108864"]);
    let mut a = connect(two.alpha).await;
    let mut b = connect(two.beta).await;
    assert_eq!(output(&mut a, "db::next_id()").await, "1");
    assert_eq!(output(&mut b, "db::next_id()").await, "1");
    let before = peak_rss_mib(two.orchestrator.pid());
    // 30 arrays of 900,000 elements, each within the array size limit:
    // about 430 MB held at once without the memory limit.
    let mut script = String::from("db::insert(1);\n");
    for i in 0..30 {
        script.push_str(&format!("let a{i} = []; a{i}.pad(900000, 0);\n"));
    }
    script.push_str("a0.len()");
    let reply = play(&mut a, 2, &script).await;
    assert_eq!(error_code(&reply), -32000, "{reply}");
    let data = &reply["error"]["data"];
    assert_eq!(data["kind"], "limit", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("memory than its limit of 64 MiB")),
        "{reply}"
    );
    let grown = peak_rss_mib(two.orchestrator.pid()).saturating_sub(before);
    println!("peak RSS grew {grown} MiB for a script stopped at 64 MiB");
    assert!(grown < 160, "the peak RSS grew {grown} MiB");
    assert_eq!(
        output(&mut a, "db::next_id()").await,
        "1",
        "nothing written"
    );
    assert_eq!(output(&mut a, "40 + 2").await, "42");
    assert_eq!(output(&mut b, "db::insert(2)").await, "1");
    drop(two);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_origin_upgrade_is_refused_and_loopback_origins_pass() {
    let two = two_circles(&["--allowed-origin", "https://app.example"]);
    let upgrade = |origin: &'static str| {
        let mut request = common::ws(two.alpha)
            .into_client_request()
            .expect("request");
        request
            .headers_mut()
            .insert("Origin", origin.parse().expect("header value"));
        tokio_tungstenite::connect_async(request)
    };
    match upgrade("https://evil.example").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        Err(e) => panic!("expected HTTP 403, got {e}"),
        Ok(_) => panic!("a foreign origin was allowed to upgrade"),
    }
    assert!(
        upgrade("http://127.0.0.1:3000").await.is_ok(),
        "loopback origin refused"
    );
    assert!(
        upgrade("https://app.example").await.is_ok(),
        "--allowed-origin not honoured"
    );
    drop(two);
}

/// Ids of the task hashes in `redis` whose `field` is `value`.
async fn tasks_where(redis: &testkit::RedisServer, field: &str, value: &str) -> Vec<String> {
    let mut conn = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let hashes: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", client::keys::TASK_DETAILS_PREFIX))
        .query_async(&mut conn)
        .await
        .expect("keys");
    let mut ids = Vec::new();
    for hash in hashes {
        let found: Option<String> = redis::cmd("HGET")
            .arg(&hash)
            .arg(field)
            .query_async(&mut conn)
            .await
            .expect("hget");
        if found.as_deref() == Some(value) {
            ids.push(hash[client::keys::TASK_DETAILS_PREFIX.len()..].to_owned());
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_script_frees_its_circle_and_keeps_none_of_its_writes() {
    // Scripts may run five minutes here: only a cancel ends the endless
    // one below within `recv`'s 30 s.
    let two = two_circles(&[
        "--script-timeout",
        "5m",
        "--task-timeout",
        "5m",
        "--max-operations",
        "1000000000000000",
    ]);
    let mut gone = connect(two.alpha).await;
    send(
        &mut gone,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "play",
                "params": {"script": "db::insert(1); loop { }"}})
        .to_string(),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tasks_where(&two._redis, "status", "processing")
        .await
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the script never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The other circle is not held up by it.
    let mut b = connect(two.beta).await;
    assert_eq!(output(&mut b, "40 + 2").await, "42");

    drop(gone);
    let mut a = connect(two.alpha).await;
    assert_eq!(
        output(&mut a, "db::next_id()").await,
        "1",
        "the cancelled script's insert was not kept"
    );
    let cancelled = tasks_where(&two._redis, "errorKind", "cancelled").await;
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
    drop(two);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_notification_pipelined_before_a_half_close_runs() {
    // actix drops the bytes it has not yet handed to the WebSocket stream
    // when the client's FIN comes; the server reads ahead while it pushes
    // notifications and waits for slots, so none is left there. Found by
    // exploratory testing (2589 of 3000 ran, the tail lost).
    use std::io::{Read, Write};
    let two = two_circles(&["--max-in-flight", "2"]);
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", two.alpha)).expect("connect");
    write!(
        socket,
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .expect("upgrade request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        socket.read_exact(&mut byte).expect("upgrade response");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut bytes = Vec::new();
    for i in 0..3000 {
        let text = json!({"jsonrpc": "2.0", "method": "play",
                          "params": {"script": format!("db::insert(#{{n:{i}}})")}})
        .to_string();
        // A masked text frame (mask 0: the payload goes as it is).
        bytes.extend([0x81, 0x80 | text.len() as u8]);
        bytes.extend([0, 0, 0, 0]);
        bytes.extend(text.as_bytes());
    }
    socket.write_all(&bytes).expect("pipeline");
    socket
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let mut a = connect(two.alpha).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let next = output(&mut a, "db::next_id()").await;
        if next == "3001" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of 3000 notifications ran",
            next.parse::<u32>().unwrap_or(1) - 1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(two);
}

/// `--max-in-flight` takes any number from 1 up; past what a tokio
/// semaphore holds (2^61 - 1 permits) it means "no bound" and serves, where
/// every connection would otherwise die before its first reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_in_flight_past_what_a_semaphore_holds_serves() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let a = port();
    let config = sandbox.circles(&[(1, "Alpha", a)]);
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &["--max-in-flight", "2305843009213693952"],
    );
    o.wait_table();
    let mut ws = connect(a).await;
    assert_eq!(output(&mut ws, "40 + 2").await, "42", "{}", o.stderr());
    assert!(o.stop().success(), "{}", o.stderr());
}
