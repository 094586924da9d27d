//! A batch's requests and the in-flight limit: a request whose reply waits
//! in its batch for a slower batch-mate still counts against the limit, so
//! a connection never holds more finished, unsent replies than
//! `max_in_flight`.

mod common;

use std::time::Duration;

use common::{Fixture, Ws, send};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Replies (top-level messages) that arrive within `quiet` of each other.
async fn drain(ws: &mut Ws, quiet: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(quiet, ws.next()).await {
        if let Message::Text(t) = msg {
            got.push(serde_json::from_str(&t).expect("json"));
        }
    }
    got
}

fn batch(tag: &str, fast: usize) -> String {
    let mut items = vec![
        json!({"jsonrpc":"2.0","id":format!("{tag}0"),"method":"play","params":{"script":"sleep:4000"}}),
    ];
    for i in 1..=fast {
        items.push(json!({"jsonrpc":"2.0","id":format!("{tag}{i}"),"method":"play","params":{"script":"echo:x"}}));
    }
    Value::Array(items).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_held_in_a_batch_keep_their_in_flight_slots() {
    const MAX: usize = 4;
    let fx = Fixture::start(|c| c.max_in_flight = MAX).await;
    let mut ws = fx.connect().await;
    let mut answered = 0;
    // Each batch: one slow request that keeps the batch open, then fast
    // ones that finish at once and whose replies wait in the batch.
    for (tag, fast) in [("a", 3), ("b", 2), ("c", 1)] {
        send(&mut ws, &batch(tag, fast)).await;
        answered += drain(&mut ws, Duration::from_millis(500)).await.len();
    }
    let done = fx.processed().await;
    // Finished requests whose replies the client has not got (all answered
    // ones are whole batches; a batch that came back counts nothing here).
    assert!(
        done as usize <= MAX,
        "{done} requests finished with their replies held unsent on one connection \
         (in flight now: {}, batches answered: {answered}); max_in_flight is {MAX}",
        fx.status.in_flight()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_behind_batch_mates_holding_every_slot_still_runs() {
    // Both slots are held by finished requests whose replies wait in the
    // batch: the notification behind them takes one of those (the batch
    // must not wait on itself), and once the array is sent the slots are
    // the connection's again.
    let fx = Fixture::start(|c| c.max_in_flight = 2).await;
    let mut ws = fx.connect().await;
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"play","params":{"script":"echo:one"}},
        {"jsonrpc":"2.0","id":2,"method":"play","params":{"script":"echo:two"}},
        {"jsonrpc":"2.0","method":"play","params":{"script":"sleep:20"}},
        {"jsonrpc":"2.0","method":"play","params":{"script":"sleep:20"}},
        {"jsonrpc":"2.0","method":"play","params":{"script":"sleep:20"}},
    ]);
    let reply = common::call(&mut ws, &batch.to_string()).await;
    let replies = reply.as_array().expect("an array");
    assert_eq!(replies.len(), 2, "{reply}");
    common::eventually_async("all 5 tasks to finish", || async {
        fx.processed().await == 5
    })
    .await;
    common::eventually("the slots to be free", || fx.status.in_flight() == 0).await;
    for id in 3..5 {
        send(&mut ws, &common::play(id, "sleep:200")).await;
    }
    let both = drain(&mut ws, Duration::from_secs(2)).await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(
        both.iter().all(|r| r["result"]["output"] == "slept"),
        "both slots free again: {both:?}"
    );
}
