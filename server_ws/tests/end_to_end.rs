//! The whole path with the real worker: WebSocket → server → Redis → worker →
//! Rhai engine on an OurDB in a temp dir → reply.

mod common;

use common::{Fixture, call, code, play, recv, redis_conn, send, start_worker, start_worker_with};
use server_ws::{ServerTiming, codes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_run_on_the_real_worker_and_their_data_persists_between_requests() {
    let fx = Fixture::start_with(|_| {}, ServerTiming::default(), false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&fx, dir.path());
    let mut ws = fx.connect().await;

    let reply = call(&mut ws, &play(1, "40 + 2")).await;
    assert_eq!(reply["result"]["output"], "42", "{reply}");

    let reply = call(&mut ws, &play(2, r#"print("hello"); ()"#)).await;
    assert_eq!(reply["result"]["output"], "", "{reply}");
    assert!(
        reply["result"]["printed"]
            .as_str()
            .is_some_and(|p| p.contains("hello")),
        "{reply}"
    );

    let reply = call(
        &mut ws,
        &play(3, r#"db::insert(#{ name: "Ada", age: 36 })"#),
    )
    .await;
    assert_eq!(reply["result"]["output"], "1", "{reply}");
    let reply = call(&mut ws, &play(4, "db::get(1).name")).await;
    assert_eq!(reply["result"]["output"], "Ada", "{reply}");

    let reply = call(&mut ws, &play(5, "let x = ;")).await;
    assert_eq!(code(&reply), codes::SCRIPT_FAILED, "{reply}");
    assert_eq!(reply["error"]["data"]["kind"], "syntax");
    assert_eq!(reply["error"]["data"]["line"], 1);
    assert!(reply["error"]["data"]["column"].is_u64(), "{reply}");

    worker.cancel();
}

/// The ids of every task hash.
async fn task_ids(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let hashes: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", client::keys::TASK_DETAILS_PREFIX))
        .query_async(conn)
        .await
        .expect("keys");
    hashes
        .iter()
        .map(|h| h[client::keys::TASK_DETAILS_PREFIX.len()..].to_owned())
        .collect()
}

/// The id of the one task hash, once there is one.
async fn until_one_task(conn: &mut redis::aio::MultiplexedConnection) -> String {
    for _ in 0..1000 {
        if let [id] = &task_ids(conn).await[..] {
            return id.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("no task was submitted");
}

/// The id of a task hash other than `known`, once there is one.
async fn until_other_task(conn: &mut redis::aio::MultiplexedConnection, known: &str) -> String {
    for _ in 0..1000 {
        if let Some(id) = task_ids(conn).await.into_iter().find(|id| id != known) {
            return id;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("no second task was submitted");
}

/// The fields of task `id` once it has ended (or as they are after 30 s).
async fn until_task_ended(
    conn: &mut redis::aio::MultiplexedConnection,
    id: &str,
) -> std::collections::HashMap<String, String> {
    let mut fields: std::collections::HashMap<String, String> = Default::default();
    for _ in 0..3000 {
        fields = redis::cmd("HGETALL")
            .arg(client::keys::task_details(id))
            .query_async(conn)
            .await
            .expect("hgetall");
        if matches!(
            fields.get("status").map(String::as_str),
            Some("completed" | "error")
        ) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    fields
}

/// The ids of the tasks whose hash says `status`.
async fn tasks_with_status(
    conn: &mut redis::aio::MultiplexedConnection,
    status: &str,
) -> Vec<String> {
    let hashes: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", client::keys::TASK_DETAILS_PREFIX))
        .query_async(conn)
        .await
        .expect("keys");
    let mut ids = Vec::new();
    for hash in hashes {
        let found: Option<String> = redis::cmd("HGET")
            .arg(&hash)
            .arg("status")
            .query_async(conn)
            .await
            .expect("hget");
        if found.as_deref() == Some(status) {
            ids.push(hash[client::keys::TASK_DETAILS_PREFIX.len()..].to_owned());
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_script_stops_the_script_and_nothing_it_wrote_is_kept() {
    let fx = Fixture::start_with(|_| {}, ServerTiming::default(), false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Two minutes per script: within the test's wait only a cancel ends
    // the endless script below (a time limit would end it as `timeout`).
    let limits = engine::Limits {
        timeout: std::time::Duration::from_secs(120),
        max_operations: 0,
        ..engine::Limits::default()
    };
    let worker = start_worker_with(&fx, dir.path(), limits);
    let mut conn = redis::Client::open(fx.redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");

    // Once with a close frame, once with the TCP connection simply cut.
    for (round, polite) in [(1, true), (2, false)] {
        let mut ws = fx.connect().await;
        common::send(&mut ws, &play(1, "db::insert(1); loop { }")).await;
        let mut running = Vec::new();
        for _ in 0..1000 {
            running = tasks_with_status(&mut conn, "processing").await;
            if !running.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(running.len(), 1, "round {round}: one running task");
        let id = running.remove(0);
        if polite {
            ws.close(None).await.expect("close frame");
        } else {
            drop(ws);
        }
        let fields = until_task_ended(&mut conn, &id).await;
        assert_eq!(fields["status"], "error", "round {round}: {fields:?}");
        assert_eq!(
            fields["errorKind"], "cancelled",
            "round {round}: {fields:?}"
        );
        assert!(
            fields["error"].contains(client::SUBMITTER_GONE),
            "round {round}: {fields:?}"
        );
    }

    // The worker is free at once, and neither script's insert was kept.
    let mut ws = fx.connect().await;
    let reply = call(&mut ws, &play(2, "db::next_id()")).await;
    assert_eq!(reply["result"]["output"], "1", "{reply}");
    worker.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_s_script_runs_to_its_end_after_its_sender_went_away() {
    let fx = Fixture::start_with(|_| {}, ServerTiming::default(), false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&fx, dir.path());
    let mut conn = redis::Client::open(fx.redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");

    let mut ws = fx.connect().await;
    // No id: the sender wants the script run, not its result.
    common::send(
        &mut ws,
        &serde_json::json!({"jsonrpc": "2.0", "method": "play", "params": {"script":
            "db::insert(5); let x = 0; while x < 1_000_000 { x += 1; } x"}})
        .to_string(),
    )
    .await;
    // Its task exists (queued or running) before the sender goes away.
    let id = until_one_task(&mut conn).await;
    drop(ws);

    let fields = until_task_ended(&mut conn, &id).await;
    assert_eq!(fields["status"], "completed", "{fields:?}");
    assert_eq!(fields["output"], "1000000");
    assert!(!fields.contains_key("cancel"), "{fields:?}");
    let mut ws = fx.connect().await;
    let reply = call(&mut ws, &play(1, "db::get(1)")).await;
    assert_eq!(reply["result"]["output"], "5", "{reply}");
    worker.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_shutdown_drain_ends_with_requests_unanswered_cancels_their_tasks() {
    // A drain too short for the scripts: the server stops waiting for their
    // replies and can no longer send them, so it cancels their tasks, as for
    // a client that went away: the running one stops, keeping none of its
    // writes, and the queued one ends without running. A client told
    // nothing can count on neither running later, after a restart.
    let mut fx = Fixture::start_with(
        |_| {},
        ServerTiming::default().with_drain_timeout(std::time::Duration::from_millis(50)),
        false,
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker_with(&fx, dir.path(), endless_limits());
    let mut conn = redis_conn(&fx).await;
    let mut ws = fx.connect().await;
    common::send(&mut ws, &play(1, "db::insert(5); loop { }")).await;
    let running = until_one_task(&mut conn).await;
    for _ in 0..1000 {
        if tasks_with_status(&mut conn, "processing").await == [running.clone()] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    common::send(&mut ws, &play(2, "db::insert(6); 6")).await;
    let queued = until_other_task(&mut conn, &running).await;
    fx.shut_down().await.expect("server stops cleanly");
    drop(ws);

    for (id, how) in [
        (&running, "cancelled while it ran"),
        (&queued, "cancelled before it ran"),
    ] {
        let fields = until_task_ended(&mut conn, id).await;
        assert_eq!(fields["status"], "error", "{fields:?}");
        assert_eq!(fields["errorKind"], "cancelled", "{fields:?}");
        assert!(
            fields["error"].starts_with(&format!("{how}: {}", client::SUBMITTER_GONE)),
            "{fields:?}"
        );
    }
    worker.cancel();
}

/// Limits under which only a cancel (or the test's end) stops `loop { }`.
fn endless_limits() -> engine::Limits {
    engine::Limits {
        timeout: std::time::Duration::from_secs(120),
        max_operations: 0,
        ..engine::Limits::default()
    }
}

/// Polls until `count` task hashes have ended (completed or error); their
/// fields by id.
async fn until_ended(
    conn: &mut redis::aio::MultiplexedConnection,
    count: usize,
) -> std::collections::HashMap<String, std::collections::HashMap<String, String>> {
    let mut ended = std::collections::HashMap::new();
    for _ in 0..2000 {
        ended.clear();
        let hashes: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", client::keys::TASK_DETAILS_PREFIX))
            .query_async(conn)
            .await
            .expect("keys");
        for hash in hashes {
            let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&hash)
                .query_async(conn)
                .await
                .expect("hgetall");
            if matches!(
                fields.get("status").map(String::as_str),
                Some("completed" | "error")
            ) {
                ended.insert(hash, fields);
            }
        }
        if ended.len() >= count {
            return ended;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("only {} of {count} tasks ended: {ended:?}", ended.len());
}

fn notification(script: &str) -> String {
    serde_json::json!({"jsonrpc": "2.0", "method": "play", "params": {"script": script}})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_sent_right_before_a_close_or_a_fin_still_runs() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let fx = Fixture::start_with(|_| {}, ServerTiming::default(), false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&fx, dir.path());
    let mut conn = redis_conn(&fx).await;
    for i in 0..20 {
        let mut ws = fx.connect().await;
        // The notification and the end leave in one write, as a client that
        // fires and forgets sends them.
        ws.feed(Message::text(notification("db::insert(1)")))
            .await
            .expect("feed");
        if i % 2 == 0 {
            ws.close(None).await.expect("close frame");
        } else {
            ws.flush().await.expect("flush");
            drop(ws);
        }
    }
    let ended = until_ended(&mut conn, 20).await;
    assert!(
        ended.values().all(|f| f["status"] == "completed"),
        "{ended:?}"
    );
    let mut ws = fx.connect().await;
    let reply = call(&mut ws, &play(1, "db::next_id()")).await;
    assert_eq!(reply["result"]["output"], "21", "{reply}");
    worker.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_a_notification_waits_for_a_slot_is_noticed() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let fx = Fixture::start_with(|c| c.max_in_flight = 2, ServerTiming::default(), false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker_with(&fx, dir.path(), endless_limits());
    let mut conn = redis_conn(&fx).await;
    let mut ws = fx.connect().await;
    // Two requests take both slots; the notification behind them waits.
    for text in [
        play(1, "db::insert(1); loop { }"),
        play(2, "db::insert(2); loop { }"),
        notification("db::insert(7); 7"),
    ] {
        ws.feed(Message::text(text)).await.expect("feed");
    }
    ws.flush().await.expect("flush");
    // The connection is still read meanwhile: a ping is answered.
    ws.send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(common::PROMPTLY, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Pong(data))) => return data,
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a pong while the notification waits");
    assert_eq!(&pong[..], b"still there?");

    ws.close(None).await.expect("close");
    // Both requests are cancelled (nobody will read them), the notification
    // runs: an endless script would otherwise hold the circle for 2 minutes.
    let ended = until_ended(&mut conn, 3).await;
    let mut kinds: Vec<&str> = ended
        .values()
        .map(|f| {
            f.get("errorKind")
                .map(String::as_str)
                .unwrap_or(f["status"].as_str())
        })
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["cancelled", "cancelled", "completed"], "{ended:?}");
    let mut ws = fx.connect().await;
    let reply = call(&mut ws, &play(3, "db::get(1)")).await;
    assert_eq!(
        reply["result"]["output"], "7",
        "only the notification wrote"
    );
    worker.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_waiting_for_a_slot_at_shutdown_is_still_queued() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut fx = Fixture::start_with(
        |c| c.max_in_flight = 1,
        ServerTiming::default().with_drain_timeout(std::time::Duration::from_millis(50)),
        false,
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker_with(&fx, dir.path(), endless_limits());
    let mut conn = redis_conn(&fx).await;
    let mut ws = fx.connect().await;
    // One write for both (no Nagle delay between them): the notification
    // is read, and waits for the request's slot, before the shutdown.
    ws.feed(Message::text(play(1, "loop { }")))
        .await
        .expect("feed");
    ws.feed(Message::text(notification("db::insert(7); 7")))
        .await
        .expect("feed");
    ws.flush().await.expect("flush");
    until_one_task(&mut conn).await;
    fx.shut_down().await.expect("server stops cleanly");
    let hashes: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", client::keys::TASK_DETAILS_PREFIX))
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert_eq!(hashes.len(), 2, "the notification was queued: {hashes:?}");
    worker.cancel();
}

/// A client with several requests in flight gets each reply as soon as it
/// is ready. With Nagle's algorithm on the server's socket, a second small
/// reply would wait until the client acknowledged the first, and a client
/// with nothing more to send delays that acknowledgement (40 ms on Linux).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_get_their_replies_without_waiting_for_an_acknowledgement() {
    let fx = Fixture::start_with(|_| {}, ServerTiming::default(), false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&fx, dir.path());
    // Without Nagle's algorithm on the client's side too (as browsers and
    // Python's asyncio do): the second request leaves at once, so the
    // client has nothing to carry its acknowledgement of the first reply.
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(fx.url(), None, true)
        .await
        .expect("websocket upgrade");
    let reply = call(&mut ws, &play(0, "40 + 2")).await;
    assert_eq!(reply["result"]["output"], "42", "{reply}");

    let mut rounds = Vec::new();
    for round in 0..15_u64 {
        let start = std::time::Instant::now();
        send(&mut ws, &play(2 * round + 1, "40 + 2")).await;
        send(&mut ws, &play(2 * round + 2, "40 + 2")).await;
        for _ in 0..2 {
            let reply = recv(&mut ws).await;
            assert_eq!(reply["result"]["output"], "42", "{reply}");
        }
        rounds.push(start.elapsed());
    }
    rounds.sort();
    let median = rounds[rounds.len() / 2];
    // A round takes about a millisecond; one held for an acknowledgement
    // takes 40 ms or more.
    assert!(
        median < std::time::Duration::from_millis(25),
        "the median round of two pipelined requests took {median:?} (all: {rounds:?})"
    );
    worker.cancel();
}

/// A client whose request runs (the stand-in worker holds it) closes its
/// connection while the server pushes a notification of its (Redis slowed
/// by `CLIENT PAUSE`); with `shutdown` the server is shutting down by then.
/// Either way no reply can reach it: its request's task is cancelled (the
/// fields of the task once it is, or after 10 s).
async fn a_client_leaves_while_its_request_runs(
    shutdown: bool,
) -> std::collections::HashMap<String, String> {
    let fx = Fixture::start(|_| {}).await;
    let mut ws = fx.connect().await;
    // A request the (stand-in) worker claims and never finishes.
    common::send(&mut ws, &play(1, "hang")).await;
    common::eventually_async("the request's task to be claimed", || async {
        common::task_of_script(&fx, "hang")
            .await
            .is_some_and(|h| h.get("status").map(String::as_str) == Some("processing"))
    })
    .await;
    // Redis holds writes for a moment: the notification below is being
    // pushed (the server reads on meanwhile) when the shutdown comes and
    // the client leaves.
    common::pause_writes(&fx, 1500).await;
    send(
        &mut ws,
        &serde_json::json!({"jsonrpc":"2.0","method":"play","params":{"script":"echo:n"}})
            .to_string(),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    if shutdown {
        fx.token.cancel();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The client leaves without waiting for its reply.
    futures_util::SinkExt::close(&mut ws)
        .await
        .expect("send close");
    drop(ws);
    // Past the pause; on a shutdown whose read loop had gone back to waiting
    // for frames, past the drain (5 s) that waits for the request's reply
    // before it gives the request up.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let h = common::task_of_script(&fx, "hang")
            .await
            .expect("the task's hash");
        if h.contains_key("cancel") || tokio::time::Instant::now() >= deadline {
            return h;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_a_notification_is_pushed_cancels_its_request() {
    let h = a_client_leaves_while_its_request_runs(false).await;
    assert!(h.contains_key("cancel"), "not cancelled: {h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_during_a_shutdown_cancels_its_request_too() {
    let h = a_client_leaves_while_its_request_runs(true).await;
    assert!(
        h.contains_key("cancel"),
        "the request of a client that left during the shutdown, never answered, was not \
         cancelled: {h:?}"
    );
}
