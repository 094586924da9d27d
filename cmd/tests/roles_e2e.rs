//! Roles end to end through the built binary: a `read` token's script reads
//! and gets -32004 (kind `forbidden`) on each write with the database
//! unchanged; `caller()` names the connection's principal, and is "" on an
//! open circle. (The 401s and the accepted upgrades: `access.rs`.)

mod common;

use common::{Orchestrator, Sandbox, output, play, port, sha256_hex};
use serde_json::json;

const READER: &str = "reader-token-6d1f0e3a8b7c4d2e9f01";
const WRITER: &str = "writer-token-0a9b8c7d6e5f4a3b2c1d";
const OTHER: &str = "other-circle-token-11223344556677";

struct Running {
    _sandbox: Sandbox,
    _redis: testkit::RedisServer,
    orchestrator: Orchestrator,
    open: u16,
    guarded: u16,
    other: u16,
}

/// "Open" (no principals), "Guarded" (rita: read, walt: write) and "Other"
/// (olga: write), served by the binary.
fn serve() -> Running {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let (open, guarded, other) = (port(), port(), port());
    let circles = json!([
        {"id": 1, "name": "Open", "port": open},
        {"id": 2, "name": "Guarded", "port": guarded, "principals": [
            {"name": "rita", "token_sha256": sha256_hex(READER), "role": "read"},
            {"name": "walt", "token_sha256": sha256_hex(WRITER), "role": "write"},
        ]},
        {"id": 3, "name": "Other", "port": other, "principals": [
            {"name": "olga", "token_sha256": sha256_hex(OTHER), "role": "write"},
        ]},
    ]);
    let config = sandbox.write("circles.json", &circles.to_string());
    let mut orchestrator = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    orchestrator.wait_table();
    Running {
        _sandbox: sandbox,
        _redis: redis,
        orchestrator,
        open,
        guarded,
        other,
    }
}

async fn bearer(port: u16, token: &str) -> common::Ws {
    common::connect_with(port, Some(("authorization", format!("Bearer {token}"))))
        .await
        .unwrap_or_else(|status| panic!("refused with {status}"))
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_names_the_principal_of_the_connection_and_is_empty_on_an_open_circle() {
    let mut run = serve();
    let offered = format!("bearer.{READER}");
    let (mut ws, _) = common::connect_with(run.guarded, Some(("sec-websocket-protocol", offered)))
        .await
        .expect("the subprotocol upgrades");
    assert_eq!(output(&mut ws, "caller()").await, "rita");
    let mut ws = bearer(run.guarded, WRITER).await;
    assert_eq!(output(&mut ws, "caller()").await, "walt");
    let mut ws = bearer(run.other, OTHER).await;
    assert_eq!(output(&mut ws, "caller()").await, "olga");
    let mut ws = common::connect(run.open).await;
    assert_eq!(output(&mut ws, "caller()").await, "");
    assert_eq!(run.orchestrator.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_reads_and_gets_32004_on_every_write_with_the_database_unchanged() {
    let mut run = serve();
    let mut walt = bearer(run.guarded, WRITER).await;
    assert_eq!(output(&mut walt, "caller()").await, "walt");
    let id = output(&mut walt, r#"db::insert(#{ name: "Ada" })"#).await;
    let before = output(&mut walt, &format!("db::get({id}).name")).await;
    assert_eq!(before, "Ada");
    let next_before = output(&mut walt, "db::next_id()").await;

    let mut rita = bearer(run.guarded, READER).await;
    assert_eq!(output(&mut rita, "caller()").await, "rita");
    assert_eq!(
        output(&mut rita, &format!("db::get({id}).name")).await,
        "Ada"
    );
    assert_eq!(
        output(&mut rita, &format!("db::exists({id})")).await,
        "true"
    );
    for (n, write) in [
        r#"db::insert(#{ name: "Eve" })"#.to_string(),
        format!(r#"db::update({id}, #{{ name: "Eve" }})"#),
        format!("db::delete({id})"),
    ]
    .iter()
    .enumerate()
    {
        let reply = play(&mut rita, n as u64 + 10, write).await;
        assert_eq!(reply["error"]["code"], -32004, "{write}: {reply}");
        assert_eq!(
            reply["error"]["data"]["kind"], "forbidden",
            "{write}: {reply}"
        );
    }
    // Nothing was written: the record, its history and the next id are as before.
    assert_eq!(
        output(&mut walt, &format!("db::get({id}).name")).await,
        "Ada"
    );
    assert_eq!(
        output(&mut walt, &format!("db::history({id}, 10).len()")).await,
        "1"
    );
    assert_eq!(output(&mut walt, "db::next_id()").await, next_before);
    assert_eq!(run.orchestrator.stop().code(), Some(0));
}
