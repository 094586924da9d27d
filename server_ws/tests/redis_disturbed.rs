//! Redis disturbed under load (clients killed, paused, stopped): every
//! request gets exactly one reply, no task runs twice, and the server and
//! worker carry on.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Fixture, Ws, play, recv, recv_any, send, start_worker, start_worker_with};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use server_ws::{ServerTiming, codes};
use tokio_tungstenite::tungstenite::Message;

const CONNS: usize = 4;
const PER_CONN: usize = 60;

fn script(key: &str) -> String {
    format!(r#"db::insert(#{{ k: "{key}" }}); "{key}""#)
}

/// Sends `PER_CONN` plays spread over `spread`, reading replies as they
/// come; returns every reply by id (a list: a duplicate shows).
async fn load(ws: Ws, conn: usize, spread: Duration) -> HashMap<String, Vec<Value>> {
    let (mut tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        for j in 0..PER_CONN {
            let key = format!("c{conn}-{j}");
            tx.send(Message::text(play(key.clone(), &script(&key))))
                .await
                .expect("send");
            tokio::time::sleep(spread / PER_CONN as u32).await;
        }
        tx
    });
    let mut replies: HashMap<String, Vec<Value>> = HashMap::new();
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + spread + Duration::from_secs(45);
    while got < PER_CONN {
        let msg = match tokio::time::timeout_at(deadline, rx.next()).await {
            Ok(Some(Ok(msg))) => msg,
            Ok(other) => panic!("conn {conn}: connection ended: {other:?}"),
            Err(_) => break,
        };
        if let Message::Text(text) = msg {
            let v: Value = serde_json::from_str(text.as_str()).expect("json");
            let id = v["id"].as_str().expect("string id").to_owned();
            replies.entry(id).or_default().push(v);
            got += 1;
        }
    }
    let _ = sender.await;
    // A late duplicate shows within a moment.
    if let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(Duration::from_millis(500), rx.next()).await
    {
        let v: Value = serde_json::from_str(text.as_str()).expect("json");
        let id = v["id"].as_str().unwrap_or("?").to_owned();
        replies.entry(id).or_default().push(v);
    }
    replies
}

async fn redis_cmd(fx: &Fixture, args: &[&str]) {
    let mut conn = common::redis_conn(fx).await;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query_async(&mut conn).await.expect("admin command");
}

/// Stops Redis (SIGSTOP) for `pause`, then lets it go on.
async fn stop_redis_for(fx: &Fixture, pause: Duration) {
    let pid = fx.redis.pid().expect("pid").to_string();
    let signal = |sig: &str| {
        let sent = std::process::Command::new("kill")
            .args([sig, &pid])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill {sig} {pid}");
    };
    signal("-STOP");
    tokio::time::sleep(pause).await;
    signal("-CONT");
}

async fn run_scenario(disturb: impl AsyncFnOnce(&mut Fixture)) {
    let mut fx = Fixture::start_with(|_| {}, ServerTiming::default(), false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&fx, dir.path());
    // Warm up.
    let mut probe = fx.connect().await;
    send(&mut probe, &play("warm", "1")).await;
    assert_eq!(recv(&mut probe).await["result"]["output"], "1");

    let spread = Duration::from_secs(6);
    let mut loads = Vec::new();
    for c in 0..CONNS {
        let ws = fx.connect().await;
        loads.push(tokio::spawn(load(ws, c, spread)));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    disturb(&mut fx).await;
    let mut all: HashMap<String, Vec<Value>> = HashMap::new();
    for l in loads {
        all.extend(l.await.expect("join"));
    }
    let mut problems = Vec::new();
    let mut completed = Vec::new();
    let mut codes_seen: HashMap<i64, usize> = HashMap::new();
    for c in 0..CONNS {
        for j in 0..PER_CONN {
            let key = format!("c{c}-{j}");
            match all.get(&key).map(Vec::as_slice) {
                None | Some([]) => problems.push(format!("{key}: no reply")),
                Some([one]) => {
                    if one["result"]["output"] == key.as_str() {
                        completed.push(key.clone());
                    } else if let Some(code) = one["error"]["code"].as_i64() {
                        *codes_seen.entry(code).or_default() += 1;
                        if code != codes::BROKER_UNAVAILABLE
                            && code != codes::TIMED_OUT
                            && code != -32003
                        {
                            problems.push(format!("{key}: unexpected error {one}"));
                        }
                    } else {
                        problems.push(format!("{key}: wrong reply {one}"));
                    }
                }
                Some(many) => problems.push(format!("{key}: {} replies: {many:?}", many.len())),
            }
        }
    }
    // What ran, from the circle's own database.
    let mut ws = fx.connect().await;
    let census = r#"let out = []; let n = db::next_id(); for i in 1..n { if db::exists(i) { out.push(db::get(i).k); } } out.reduce(|s, v| if s == () { v } else { s + "," + v }, ())"#;
    let mut reply = Value::Null;
    for attempt in 0..20 {
        send(&mut ws, &play(format!("census{attempt}"), census)).await;
        reply = recv(&mut ws).await;
        if reply["result"]["output"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = reply["result"]["output"]
        .as_str()
        .unwrap_or_else(|| panic!("the circle did not recover: {reply}"))
        .to_owned();
    let mut ran: HashMap<&str, usize> = HashMap::new();
    for k in text.split(',').filter(|k| !k.is_empty()) {
        *ran.entry(k).or_default() += 1;
    }
    for (k, n) in &ran {
        if *n > 1 {
            problems.push(format!("{k}: ran {n} times"));
        }
    }
    for (key, replies) in &all {
        if let [one] = replies.as_slice()
            && one["error"]["code"].as_i64() == Some(codes::BROKER_UNAVAILABLE)
            && ran.contains_key(key.as_str())
        {
            let hash = common::task_of_script(&fx, &script(key)).await;
            problems.push(format!("{key}: answered {one} but ran; its task: {hash:?}"));
        }
    }
    for k in &completed {
        if !ran.contains_key(k.as_str()) {
            problems.push(format!("{k}: completed but its write is missing"));
        }
    }
    worker.cancel();
    assert!(
        problems.is_empty(),
        "{problems:#?}\ncompleted {}, errors {codes_seen:?}, ran {}",
        completed.len(),
        ran.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_play_gets_one_reply_when_redis_kills_the_pubsub_clients() {
    run_scenario(async |fx| {
        for _ in 0..3 {
            redis_cmd(fx, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_play_gets_one_reply_when_redis_kills_the_normal_clients() {
    run_scenario(async |fx| {
        for _ in 0..3 {
            redis_cmd(fx, &["CLIENT", "KILL", "TYPE", "normal"]).await;
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_play_gets_one_reply_through_a_client_pause() {
    run_scenario(async |fx| {
        redis_cmd(fx, &["CLIENT", "PAUSE", "3000", "ALL"]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_play_gets_one_reply_through_a_stop_shorter_than_the_response_timeout() {
    run_scenario(async |fx| stop_redis_for(fx, Duration::from_secs(4)).await).await;
}

/// Redis stopped (SIGSTOP) for 8 s under load, past the client's 5 s
/// response timeout: a play whose MULTI/EXEC went out while it was stopped
/// may still be queued when Redis goes on, and the worker may run it before
/// any cancel lands. It is not answered -32002 without a `task_id`
/// ("nothing was queued: try again", README): it waits as queued and gets
/// its outcome, or -32002 with its `task_id` ("it may have run").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_play_whose_submit_got_no_reply_is_not_told_nothing_was_queued() {
    run_scenario(async |fx| stop_redis_for(fx, Duration::from_secs(8)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_play_gets_one_reply_through_a_restart_without_persistence() {
    run_scenario(async |fx| {
        fx.redis.kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
        fx.redis.restart();
    })
    .await;
}

/// `--task-timeout` is "how long a `play` waits for its result" (README),
/// and the task's own deadline is that long after it was sent. A push held
/// by Redis (`CLIENT PAUSE … WRITE`, or stopped for less than the
/// response timeout) must count against it: the wait ends at the task's
/// deadline, not a whole timeout after the push returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_play_held_by_a_redis_pause_is_answered_at_its_task_timeout() {
    let fx = Fixture::start_with(
        |c| c.task_timeout = Duration::from_secs(3),
        ServerTiming::default(),
        false, // no worker: the task never ends
    )
    .await;
    let mut ws = fx.connect().await;
    common::pause_writes(&fx, 4000).await;
    let sent = std::time::Instant::now();
    send(&mut ws, &play(1, "1")).await;
    let reply = tokio::time::timeout(Duration::from_secs(20), recv_any(&mut ws))
        .await
        .expect("a reply");
    let took = sent.elapsed();
    assert_eq!(reply["error"]["code"], codes::TIMED_OUT, "{reply}");
    // The push returns when the pause ends (4 s, within the 5 s response
    // timeout), past the 3 s deadline: the answer comes then (plus the
    // last read), not 3 s later (7 s).
    assert!(
        took < Duration::from_secs(6),
        "answered after {took:?}: {reply}"
    );
}

/// A play of `script` waiting (4 s task timeout, no worker) while its
/// Redis restarts with its clock a minute behind (restored on a host
/// without NTP; a replica on another machine promoted): the deadline its
/// task got by the clock Redis had before lies a minute further off by the
/// one it has now.
async fn waiting_across_a_restart_with_the_clock_behind(script: &str) -> (Fixture, Ws) {
    let mut fx = Fixture::start_on(
        testkit::RedisServer::start_persistent(),
        |c| c.task_timeout = Duration::from_secs(4),
        ServerTiming::default(),
        false,
    )
    .await;
    let mut ws = fx.connect().await;
    send(&mut ws, &play(1, script)).await;
    // The waiter's first fallback poll (2 s in) reads the task's hash: the
    // push was answered by then, so the restart cannot cut it off.
    common::eventually("the waiter's poll", || {
        testkit::command(fx.redis.port(), &["INFO", "commandstats"])
            .is_ok_and(|stats| stats.text().is_some_and(|s| s.contains("cmdstat_hgetall:")))
    })
    .await;
    fx.redis.restart_with_clock(-60);
    (fx, ws)
}

/// A play answered -32001 does not run when a worker takes its task
/// after Redis came back with its clock behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_play_answered_timed_out_does_not_run_after_redis_came_back_with_its_clock_behind() {
    let (fx, mut ws) = waiting_across_a_restart_with_the_clock_behind("1").await;
    let reply = tokio::time::timeout(Duration::from_secs(20), recv_any(&mut ws))
        .await
        .expect("a reply");
    assert_eq!(reply["error"]["code"], codes::TIMED_OUT, "{reply}");

    // A worker comes, on Redis' clock as it is now.
    let claim = common::late_claim(&fx.redis.url(), common::QUEUE).await;
    assert!(
        matches!(claim, Some(client::broker::Claim::Cancelled { .. })),
        "a worker was handed the task its client was answered -32001 for: {claim:?}"
    );
}

/// A play whose task a worker started after Redis came back with its
/// clock behind, still running when its client is answered -32001, is
/// stopped then, not run on to the end of a deadline a minute off (here
/// the engine's own 20 s limit, which would end it as `timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_play_answered_timed_out_is_stopped_after_redis_came_back_with_its_clock_behind() {
    let (fx, mut ws) =
        waiting_across_a_restart_with_the_clock_behind("db::insert(1); loop { }").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = engine::Limits {
        timeout: Duration::from_secs(20),
        max_operations: 0,
        ..engine::Limits::default()
    };
    let worker = start_worker_with(&fx, dir.path(), limits);
    let reply = tokio::time::timeout(Duration::from_secs(20), recv_any(&mut ws))
        .await
        .expect("a reply");
    assert_eq!(reply["error"]["code"], codes::TIMED_OUT, "{reply}");
    let id = reply["error"]["data"]["task_id"].as_str().expect("task id");
    let mut conn = common::redis_conn(&fx).await;
    let mut fields: HashMap<String, String> = HashMap::new();
    for _ in 0..600 {
        fields = redis::cmd("HGETALL")
            .arg(client::keys::task_details(id))
            .query_async(&mut conn)
            .await
            .expect("hgetall");
        if fields
            .get("status")
            .is_some_and(|s| s == "completed" || s == "error")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        fields.get("errorKind").map(String::as_str),
        Some("cancelled"),
        "the script ran on after its client was answered -32001: {fields:?}"
    );
    assert!(
        fields["error"].starts_with("cancelled while it ran"),
        "{fields:?}"
    );
    worker.cancel();
}

/// A play whose Redis failed after its task was queued, and stayed away
/// past its deadline, is answered -32002 "it may have run, but it cannot
/// start any more". Redis back with its clock a minute behind, after an
/// outage longer than the task's timeout, puts that deadline ahead again:
/// the task must still not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_play_answered_32002_after_its_task_was_queued_does_not_run_when_redis_is_back_behind() {
    let mut fx = Fixture::start_on(
        testkit::RedisServer::start_persistent(),
        |c| c.task_timeout = Duration::from_secs(3),
        ServerTiming::default(),
        false,
    )
    .await;
    let mut ws = fx.connect().await;
    send(&mut ws, &play(1, "1")).await;
    // The waiter's first fallback poll (2 s in): the push was answered.
    common::eventually("the waiter's poll", || {
        testkit::command(fx.redis.port(), &["INFO", "commandstats"])
            .is_ok_and(|stats| stats.text().is_some_and(|s| s.contains("cmdstat_hgetall:")))
    })
    .await;
    fx.redis.kill();
    let reply = tokio::time::timeout(Duration::from_secs(20), recv_any(&mut ws))
        .await
        .expect("a reply");
    assert_eq!(reply["error"]["code"], codes::BROKER_UNAVAILABLE, "{reply}");
    let id = reply["error"]["data"]["task_id"]
        .as_str()
        .expect("the queued task's id");
    // Away for longer than the task's timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    fx.redis.restart_with_clock(-60);

    // The cancel comes back with Redis (a reconnect and a retry, at most a
    // few seconds); the claim below says whether it did.
    let _ = common::cancel_written(fx.redis.port(), id).await;
    let claim = common::late_claim(&fx.redis.url(), common::QUEUE).await;
    assert!(
        matches!(claim, Some(client::broker::Claim::Cancelled { .. })),
        "a task answered \"it cannot start any more\" was handed to a worker: {claim:?}"
    );
}
