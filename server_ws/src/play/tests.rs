//! `play`'s unit tests: how each way a task ends becomes a JSON-RPC reply.

use std::time::Duration;

use client::{TaskFailure, TaskOutput};

use super::*;

#[test]
fn completed_task_gives_output_printed_and_task_id() {
    let v = reply(
        "c",
        &json!(1),
        Ok(Outcome::Completed(TaskOutput {
            task_id: "t1".into(),
            output: "42".into(),
            printed: "hi\n".into(),
            run_time: Some(Duration::from_millis(3)),
        })),
    );
    assert_eq!(v["id"], 1);
    assert_eq!(v["result"]["output"], "42");
    assert_eq!(v["result"]["printed"], "hi\n");
    assert_eq!(v["result"]["task_id"], "t1");
    assert_eq!(v["result"]["run_time_ms"], 3.0);
}

#[test]
fn failed_script_gives_32000_with_kind_line_and_column() {
    let v = reply(
        "c",
        &json!("x"),
        Ok(Outcome::Failed(TaskFailure {
            task_id: "t2".into(),
            kind: FailureKind::from_wire("syntax"),
            message: "unexpected end".into(),
            line: Some(1),
            column: Some(4),
        })),
    );
    assert_eq!(v["error"]["code"], rpc::SCRIPT_FAILED);
    assert_eq!(v["error"]["message"], "unexpected end");
    assert_eq!(
        v["error"]["data"],
        json!({"kind":"syntax","line":1,"column":4,"task_id":"t2"})
    );
}

#[test]
fn a_failure_without_a_position_has_no_line_or_column() {
    let v = reply(
        "c",
        &json!("x"),
        Ok(Outcome::Failed(TaskFailure {
            task_id: "t9".into(),
            kind: FailureKind::from_wire("limit"),
            message: "result of 3600000 bytes exceeds the output limit".into(),
            line: None,
            column: None,
        })),
    );
    assert_eq!(v["error"]["data"], json!({"kind":"limit","task_id":"t9"}));
}

#[test]
fn timeouts_give_32001() {
    let v = reply(
        "c",
        &json!(1),
        Err(client::Error::Timeout {
            task_id: "t3".into(),
            timeout: Duration::from_secs(2),
        }),
    );
    assert_eq!(v["error"]["code"], rpc::TIMED_OUT);
    assert_eq!(v["error"]["data"]["task_id"], "t3");
    let v = reply(
        "c",
        &json!(1),
        Ok(Outcome::Failed(TaskFailure {
            task_id: "t4".into(),
            kind: FailureKind::from_wire("timeout"),
            message: "script ran out of time".into(),
            line: None,
            column: None,
        })),
    );
    assert_eq!(v["error"]["code"], rpc::TIMED_OUT);
    let v = reply(
        "c",
        &json!(1),
        Ok(Outcome::Failed(TaskFailure {
            task_id: "t5".into(),
            kind: FailureKind::from_wire("expired"),
            message: "the deadline passed before a worker took the task".into(),
            line: None,
            column: None,
        })),
    );
    assert_eq!(v["error"]["code"], rpc::TIMED_OUT);
    assert_eq!(v["error"]["data"]["kind"], "expired");
}

#[test]
fn a_forbidden_write_gives_32004_with_kind_forbidden() {
    let message = "db::insert is not allowed: principal 'bob' has role read; \
                   writes need role write";
    let v = reply(
        "c",
        &json!(7),
        Ok(Outcome::Failed(TaskFailure {
            task_id: "t6".into(),
            kind: FailureKind::from_wire("forbidden"),
            message: message.into(),
            line: Some(1),
            column: Some(5),
        })),
    );
    assert_eq!(rpc::FORBIDDEN, -32004);
    assert_eq!(v["id"], 7);
    assert_eq!(v["error"]["code"], -32004);
    assert_eq!(v["error"]["message"], message);
    assert_eq!(
        v["error"]["data"],
        json!({"kind":"forbidden","line":1,"column":5,"task_id":"t6"})
    );
}

/// The whole chain behind a read principal's write: its task goes
/// through a real Redis to the real worker and engine, which refuse the
/// write, and the reply is -32004 with kind `forbidden`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_callers_write_through_the_real_worker_gives_32004() {
    use std::sync::Arc;

    let redis = testkit::RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ourdb::OurDb::open(dir.path(), ourdb::Config::default()).expect("open ourdb");
    let engine = Arc::new(engine::CircleEngine::new(
        Arc::new(db),
        engine::Limits::default(),
    ));
    let token = tokio_util::sync::CancellationToken::new();
    tokio::spawn(worker::run(
        worker::WorkerConfig::new(&redis.url(), "roles"),
        engine,
        Arc::new(worker::WorkerStatus::default()),
        token.clone(),
    ));
    let client = client::Client::connect(&redis.url())
        .await
        .expect("connect");
    let as_bob = client::SubmitOptions {
        caller: Some(client::Caller {
            name: "bob".into(),
            role: client::Role::Read,
        }),
        ..client::SubmitOptions::with_timeout(Duration::from_secs(30))
    };
    let ended = client
        .run_with("roles", "db::insert(1)", &as_bob, client::OnDrop::Cancel)
        .await;
    let v = reply("c", &json!(9), ended);
    assert_eq!(v["error"]["code"], rpc::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["data"]["kind"], "forbidden", "{v}");
    assert_eq!(
        v["error"]["message"],
        "db::insert is not allowed: principal 'bob' has role read; writes need role write"
    );
    let ended = client
        .run_with(
            "roles",
            "`${caller()}: ${db::next_id()}`",
            &as_bob,
            client::OnDrop::Cancel,
        )
        .await;
    let v = reply("c", &json!(10), ended);
    assert_eq!(v["result"]["output"], "bob: 1", "{v}");
    token.cancel();
}

#[test]
fn broker_faults_leak_no_internals() {
    let v = reply(
        "c",
        &json!(1),
        Err(client::Error::Unavailable {
            url: "redis://127.0.0.1:1/".into(),
            reason: "connection refused".into(),
        }),
    );
    assert_eq!(v["error"]["code"], rpc::BROKER_UNAVAILABLE);
    assert!(!v.to_string().contains("127.0.0.1"));
    let v = reply(
        "c",
        &json!(1),
        Err(client::Error::Protocol("bad hash field".into())),
    );
    assert_eq!(v["error"]["code"], rpc::INTERNAL_ERROR);
    assert!(!v.to_string().contains("hash"));
    // Queued before the broker failed: it may have run, and is named.
    let v = reply(
        "c",
        &json!(1),
        Err(client::Error::Interrupted {
            task_id: "t-1".into(),
            url: "redis://127.0.0.1:1/".into(),
            reason: "connection refused".into(),
        }),
    );
    assert_eq!(v["error"]["code"], rpc::BROKER_UNAVAILABLE);
    assert_eq!(v["error"]["data"]["task_id"], "t-1");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("it may have run, but it cannot start any more"),
        "{v}"
    );
    assert!(!message.contains("try again later"), "{v}");
    assert!(!v.to_string().contains("127.0.0.1"));
    // Its submit unanswered and Redis gone: it may have been queued, and
    // is named.
    let v = reply(
        "c",
        &json!(1),
        Err(client::Error::MaybeQueued {
            task_id: "t-2".into(),
            url: "redis://127.0.0.1:1/".into(),
            reason: "connection refused".into(),
        }),
    );
    assert_eq!(v["error"]["code"], rpc::BROKER_UNAVAILABLE);
    assert_eq!(v["error"]["data"]["task_id"], "t-2");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("it may have been queued"), "{v}");
    assert!(!message.contains("try again later"), "{v}");
    assert!(!v.to_string().contains("127.0.0.1"));
}
