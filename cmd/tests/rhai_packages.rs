//! Rhai's standard packages through the built binary: a script using
//! timestamps and blobs answers `play`, and storing a timestamp is a script
//! error naming the type.

mod common;

use common::{Orchestrator, Sandbox, connect, play, port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_and_blobs_work_through_play_and_are_refused_when_stored() {
    let sandbox = Sandbox::new();
    let redis = testkit::RedisServer::start();
    let ws_port = port();
    let config = sandbox.circles(&[(1, "Alpha", ws_port)]);
    let mut orchestrator = Orchestrator::start(&sandbox, &config, &redis.url(), &[]);
    orchestrator.wait_table();
    let mut ws = connect(ws_port).await;

    let script = r#"
        let t = timestamp();
        let b = blob(3, 0x41);
        b.push(0x42);
        print(t);
        [type_of(t), t.elapsed < 10.0, (t + 5) - t, b.len(), b.as_string(), b]
    "#;
    let reply = play(&mut ws, 1, script).await;
    assert_eq!(
        reply["result"]["output"], r#"["timestamp", true, 5.0, 4, "AAAB", [41414142]]"#,
        "{reply}"
    );
    assert_eq!(reply["result"]["printed"], "<timestamp>\n", "{reply}");

    let reply = play(&mut ws, 2, "db::insert(#{ when: timestamp() })").await;
    assert_eq!(reply["error"]["code"], -32000, "{reply}");
    assert_eq!(reply["error"]["data"]["kind"], "value", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("value.when is a timestamp, which cannot be stored"),
        "{reply}"
    );

    // Nothing was stored.
    let reply = play(&mut ws, 3, "db::next_id()").await;
    assert_eq!(reply["result"]["output"], "1", "{reply}");
    orchestrator.stop();
}
