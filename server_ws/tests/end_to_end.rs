//! The whole path with the real worker: WebSocket → server → Redis → worker →
//! Rhai engine on an OurDB in a temp dir → reply.

mod common;

use std::sync::Arc;

use common::{Fixture, call, code, play};
use server_ws::{ServerTiming, codes};
use tokio_util::sync::CancellationToken;

/// Starts the real worker for the fixture's queue; returns its stop token.
fn start_worker(fx: &Fixture, dir: &std::path::Path) -> CancellationToken {
    let db = ourdb::OurDb::open(dir, ourdb::Config::default()).expect("open ourdb");
    let engine = Arc::new(engine::CircleEngine::new(
        Arc::new(db),
        engine::Limits::default(),
    ));
    let token = CancellationToken::new();
    tokio::spawn(worker::run(
        worker::WorkerConfig::new(&fx.redis.url(), common::QUEUE),
        engine,
        Arc::new(worker::WorkerStatus::default()),
        token.clone(),
    ));
    token
}

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
