//! Roles enforced by a real worker on a real Redis: a task runs as the
//! caller and role in its hash, as the trusted identity without a role, and
//! not at all with any other role.

mod common;

use std::time::Duration;

use client::{Caller, Client, FailureKind, OnDrop, Outcome, Role, SubmitOptions};
use common::*;

const WAIT: Duration = Duration::from_secs(30);

fn as_caller(name: &str, role: Role) -> SubmitOptions {
    SubmitOptions {
        caller: Some(Caller {
            name: name.to_owned(),
            role,
        }),
        ..SubmitOptions::with_timeout(WAIT)
    }
}

/// Pushes a raw task hash (as another program would) and waits for its end.
async fn raw_task(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
    id: &str,
    script: &str,
    extra: &[(&[u8], &[u8])],
) -> String {
    let mut fields: Vec<(&[u8], &[u8])> =
        vec![(b"script", script.as_bytes()), (b"status", b"pending")];
    fields.extend_from_slice(extra);
    hset_raw(conn, id.as_bytes(), &fields).await;
    lpush_raw(conn, &client::keys::tasks(queue), &[id.as_bytes()]).await;
    let c = conn.clone();
    until(&format!("task {id} to end"), WAIT, || {
        let mut conn = c.clone();
        async move {
            hget(&mut conn, id, "status")
                .await
                .filter(|s| s == "completed" || s == "error")
        }
    })
    .await
}

/// Extra raw fields of a task hash.
type Fields = &'static [(&'static [u8], &'static [u8])];

const READ_BACK: &str = "`${db::get(1)}|${db::get(2)}|${db::next_id()}`";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tasks_run_as_their_role_or_as_the_trusted_identity() {
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "raw");
    let mut conn = raw(&redis.url()).await;

    // No role: the trusted identity writes, and caller() is "" even when a
    // caller name is there.
    let status = raw_task(
        &mut conn,
        "raw",
        "t-absent",
        r#"db::insert("one"); caller()"#,
        &[],
    )
    .await;
    assert_eq!(status, "completed");
    assert_eq!(
        hget(&mut conn, "t-absent", "output").await.as_deref(),
        Some("")
    );
    let status = raw_task(
        &mut conn,
        "raw",
        "t-name-only",
        r#"db::insert("two"); `[${caller()}]`"#,
        &[(b"caller", b"mallory")],
    )
    .await;
    assert_eq!(status, "completed");
    assert_eq!(
        hget(&mut conn, "t-name-only", "output").await.as_deref(),
        Some("[]")
    );

    // Role write: writes, and names its caller.
    let status = raw_task(
        &mut conn,
        "raw",
        "t-write",
        r#"db::update(1, "uno"); caller()"#,
        &[(b"caller", b"alice"), (b"role", b"write")],
    )
    .await;
    assert_eq!(status, "completed");
    assert_eq!(
        hget(&mut conn, "t-write", "output").await.as_deref(),
        Some("alice")
    );

    // Role read: reads work, each write is forbidden and changes nothing.
    let status = raw_task(
        &mut conn,
        "raw",
        "t-read",
        "`${caller()}:${db::get(1)}|${db::get(2)}|${db::next_id()}`",
        &[(b"caller", b"bob"), (b"role", b"read")],
    )
    .await;
    assert_eq!(status, "completed");
    assert_eq!(
        hget(&mut conn, "t-read", "output").await.as_deref(),
        Some("bob:uno|two|3")
    );
    for (n, (function, script)) in [
        ("db::insert", r#"db::insert("three")"#),
        ("db::update", r#"db::update(2, "dos")"#),
        ("db::delete", "db::delete(1)"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("t-read-write-{n}");
        let status = raw_task(
            &mut conn,
            "raw",
            &id,
            script,
            &[(b"caller", b"bob"), (b"role", b"read")],
        )
        .await;
        assert_eq!(status, "error", "{script}");
        assert_eq!(
            hget(&mut conn, &id, "errorKind").await.as_deref(),
            Some("forbidden")
        );
        assert_eq!(
            hget(&mut conn, &id, "error").await.unwrap_or_default(),
            format!(
                "{function} is not allowed: principal 'bob' has role read; writes need role write"
            )
        );
    }
    let status = raw_task(&mut conn, "raw", "t-after", READ_BACK, &[]).await;
    assert_eq!(status, "completed");
    assert_eq!(
        hget(&mut conn, "t-after", "output").await.as_deref(),
        Some("uno|two|3"),
        "the forbidden writes changed nothing"
    );
    worker.stop().await;
}

/// A raw task's id, its fields besides `script` and `status`, and the
/// start of the error it must end with.
type Refused<'a> = (&'a str, &'a [(&'a [u8], &'a [u8])], &'a str);

/// Sends each case ([`Refused`]) as a raw task to `queue` and asserts that
/// it ended as `error`, kind `invalid`, with that error, and never started.
async fn assert_each_ends_invalid_unrun(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
    cases: &[Refused<'_>],
) {
    for (id, fields, named) in cases {
        let status = raw_task(conn, queue, id, r#"db::insert("should not exist")"#, fields).await;
        assert_eq!(status, "error", "{id}");
        assert_eq!(
            hget(conn, id, "errorKind").await.as_deref(),
            Some("invalid")
        );
        let error = hget(conn, id, "error").await.unwrap_or_default();
        assert!(error.starts_with(named), "{id}: {error}");
        assert_eq!(hget(conn, id, "startedAt").await, None, "{id} never ran");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_an_unknown_role_ends_invalid_without_running() {
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "bad");
    let mut conn = raw(&redis.url()).await;
    assert_each_ends_invalid_unrun(
        &mut conn,
        "bad",
        &[
            (
                "t-admin",
                &[(b"caller", b"bob"), (b"role", b"admin")],
                r#"unknown role "admin""#,
            ),
            (
                "t-empty",
                &[(b"caller", b"bob"), (b"role", b"")],
                r#"unknown role """#,
            ),
            (
                "t-binary",
                &[(b"caller", b"bob"), (b"role", b"wr\xffite")],
                "unknown role (not printable text)",
            ),
        ],
    )
    .await;
    // Nothing ran: the first insert of the circle still gets id 1.
    let status = raw_task(&mut conn, "bad", "t-check", "db::insert(0)", &[]).await;
    assert_eq!(status, "completed");
    assert_eq!(
        hget(&mut conn, "t-check", "output").await.as_deref(),
        Some("1")
    );
    // The worker counted the refused tasks as failures and goes on.
    let status = worker.status.clone();
    until("the worker to count", WAIT, || {
        let counts = status.counts();
        async move { (counts == (1, 3)).then_some(()) }
    })
    .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_deadline_is_not_a_time_ends_invalid_without_running() {
    // A deadline the worker cannot read would let the task run unbounded by
    // it: the task ends naming the field instead.
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "late");
    let mut conn = raw(&redis.url()).await;
    assert_each_ends_invalid_unrun(
        &mut conn,
        "late",
        &[
            (
                "t-word",
                &[(b"deadline", b"abc")],
                r#"deadline "abc" is not a time"#,
            ),
            (
                "t-float",
                &[(b"deadline", b"1.5e12")],
                r#"deadline "1.5e12" is not a time"#,
            ),
            (
                "t-empty",
                &[(b"deadline", b"")],
                r#"deadline "" is not a time"#,
            ),
            (
                "t-binary",
                &[(b"deadline", b"12\xff")],
                "deadline (not printable text) is not a time",
            ),
        ],
    )
    .await;
    // A deadline in digits runs; nothing before it did.
    let later = (std::time::SystemTime::now() + Duration::from_secs(60))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        .to_string();
    let status = raw_task(
        &mut conn,
        "late",
        "t-ok",
        "db::insert(0)",
        &[(b"deadline", later.as_bytes())],
    )
    .await;
    assert_eq!(status, "completed");
    assert_eq!(
        hget(&mut conn, "t-ok", "output").await.as_deref(),
        Some("1")
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_pushed_processing_without_a_worker_ends_invalid_without_running() {
    // No worker claimed it (a claim writes workerId), so none ever would:
    // it ends, and its hash expires like any result.
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "held");
    let mut conn = raw(&redis.url()).await;
    assert_each_ends_invalid_unrun(
        &mut conn,
        "held",
        &[(
            "t-processing",
            &[(b"status", b"processing")],
            r#"status "processing" but no worker holds it"#,
        )],
    )
    .await;
    let ttl = pttl(&mut conn, "t-processing").await;
    assert!(ttl > 0, "the error hash expires (pttl {ttl})");
    // Nothing ran: the first insert of the circle still gets id 1.
    let status = raw_task(&mut conn, "held", "t-check", "db::insert(0)", &[]).await;
    assert_eq!(status, "completed");
    assert_eq!(
        hget(&mut conn, "t-check", "output").await.as_deref(),
        Some("1")
    );
    assert_settled(&redis.url(), "held", &worker, 1, 1).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_hash_pushed_without_an_expiry_gets_the_result_ttl_and_is_not_rewritten() {
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "done");
    let mut conn = raw(&redis.url()).await;
    let finished: [(&str, Fields); 2] = [
        (
            "t-completed",
            &[
                (b"script", b"db::insert(\"should not exist\")"),
                (b"status", b"completed"),
            ],
        ),
        (
            "t-error",
            &[
                (b"script", b"db::insert(\"should not exist\")"),
                (b"status", b"error"),
                (b"error", b"a third party's verdict"),
            ],
        ),
    ];
    for (id, fields) in finished {
        hset_raw(&mut conn, id.as_bytes(), fields).await;
        lpush_raw(&mut conn, &client::keys::tasks("done"), &[id.as_bytes()]).await;
    }
    // FIFO: once the task pushed behind them has run, both ids were taken.
    let status = raw_task(&mut conn, "done", "t-check", "db::insert(0)", &[]).await;
    assert_eq!(status, "completed");
    assert_eq!(
        hget(&mut conn, "t-check", "output").await.as_deref(),
        Some("1"),
        "neither finished task ran"
    );
    for (id, fields) in finished {
        let ttl = pttl(&mut conn, id).await;
        assert!(ttl > 0, "{id}: the finished hash expires (pttl {ttl})");
        let written: std::collections::BTreeMap<String, String> = fields
            .iter()
            .map(|(f, v)| {
                (
                    String::from_utf8_lossy(f).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        assert_eq!(
            hgetall(&mut conn, id).await,
            written,
            "{id} is not rewritten"
        );
    }
    // Skipped, not counted: only the check task was.
    assert_settled(&redis.url(), "done", &worker, 1, 0).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_another_worker_holds_and_runs_is_left_alone() {
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "theirs");
    let mut conn = raw(&redis.url()).await;
    let fields: Fields = &[
        (b"script", b"db::insert(\"should not exist\")"),
        (b"status", b"processing"),
        (b"workerId", b"another-worker"),
    ];
    hset_raw(&mut conn, b"t-theirs", fields).await;
    // The other worker holds it (its processing list has it) and this
    // queue has a second copy of the id: pushed twice.
    lpush_raw(
        &mut conn,
        &client::keys::processing("theirs", "another-worker"),
        &[b"t-theirs"],
    )
    .await;
    lpush_raw(&mut conn, &client::keys::tasks("theirs"), &[b"t-theirs"]).await;
    let status = raw_task(&mut conn, "theirs", "t-check", "db::insert(0)", &[]).await;
    assert_eq!(status, "completed");
    assert_eq!(
        hget(&mut conn, "t-check", "output").await.as_deref(),
        Some("1"),
        "the other worker's task did not run here"
    );
    assert_eq!(
        hgetall(&mut conn, "t-theirs").await,
        [
            ("script", "db::insert(\"should not exist\")"),
            ("status", "processing"),
            ("workerId", "another-worker"),
        ]
        .into_iter()
        .map(|(f, v)| (f.to_owned(), v.to_owned()))
        .collect(),
        "untouched"
    );
    assert_eq!(
        pttl(&mut conn, "t-theirs").await,
        -1,
        "no expiry while it runs"
    );
    // The other worker's list is its own; this worker left nothing.
    let _: () = redis::cmd("DEL")
        .arg(client::keys::processing("theirs", "another-worker"))
        .query_async(&mut conn)
        .await
        .expect("del");
    assert_settled(&redis.url(), "theirs", &worker, 1, 0).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_submitted_through_the_client_run_as_their_caller() {
    let redis = testkit::RedisServer::start();
    let worker = TestWorker::start(&redis.url(), "cli");
    let client = Client::connect(&redis.url()).await.expect("connect");
    let run = |script: &'static str, options: SubmitOptions| {
        let client = client.clone();
        async move {
            client
                .run_with("cli", script, &options, OnDrop::Cancel)
                .await
                .expect("run")
        }
    };
    let out = run(r#"db::insert(caller())"#, as_caller("alice", Role::Write)).await;
    assert!(
        matches!(&out, Outcome::Completed(o) if o.output == "1"),
        "{out:?}"
    );

    let out = run(r#"db::insert(caller())"#, as_caller("bob", Role::Read)).await;
    let Outcome::Failed(f) = out else {
        panic!("{out:?}")
    };
    assert_eq!(f.kind, FailureKind::Forbidden);
    assert_eq!(
        f.message,
        "db::insert is not allowed: principal 'bob' has role read; writes need role write"
    );
    assert_eq!((f.line, f.column), (Some(1), Some(5)));

    let out = run(
        r#"`${caller()} reads ${db::get(1)}`"#,
        as_caller("bob", Role::Read),
    )
    .await;
    assert!(
        matches!(&out, Outcome::Completed(o) if o.output == "bob reads alice"),
        "{out:?}"
    );
    // An open circle's task (no caller): caller() is "", writes work.
    let out = run(r#"db::insert(caller())"#, SubmitOptions::with_timeout(WAIT)).await;
    assert!(
        matches!(&out, Outcome::Completed(o) if o.output == "2"),
        "{out:?}"
    );
    let out = run(
        "[db::get(1), db::get(2), db::next_id()]",
        SubmitOptions::with_timeout(WAIT),
    )
    .await;
    assert!(
        matches!(&out, Outcome::Completed(o) if o.output == r#"["alice", "", 3]"#),
        "{out:?}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_mixed_roles_runs_each_task_as_its_own_caller() {
    let redis = testkit::RedisServer::start();
    let mut conn = raw(&redis.url()).await;
    // Queued before the worker starts: most are claimed by the script that
    // writes the previous result, whose reply carries the next task.
    let tasks: [(&str, &str, Fields); 6] = [
        (
            "b1",
            "db::insert(1)",
            &[(b"caller", b"bob"), (b"role", b"read")],
        ),
        ("b2", "db::insert(caller())", &[]),
        (
            "b3",
            "`${caller()} ${db::insert(3)}`",
            &[(b"caller", b"alice"), (b"role", b"write")],
        ),
        ("b4", "caller()", &[(b"caller", b"bob"), (b"role", b"read")]),
        (
            "b5",
            "db::insert(5)",
            &[(b"caller", b"bob"), (b"role", b"owner")],
        ),
        (
            "b6",
            "db::delete(1)",
            &[(b"caller", b"bob"), (b"role", b"read")],
        ),
    ];
    for (id, script, extra) in tasks {
        let mut fields: Vec<(&[u8], &[u8])> =
            vec![(b"script", script.as_bytes()), (b"status", b"pending")];
        fields.extend_from_slice(extra);
        hset_raw(&mut conn, id.as_bytes(), &fields).await;
        lpush_raw(&mut conn, &client::keys::tasks("mixed"), &[id.as_bytes()]).await;
    }
    let worker = TestWorker::start(&redis.url(), "mixed");
    let expected = [
        ("b1", "error", "errorKind", "forbidden"),
        ("b2", "completed", "output", "1"),
        ("b3", "completed", "output", "alice 2"),
        ("b4", "completed", "output", "bob"),
        ("b5", "error", "errorKind", "invalid"),
        ("b6", "error", "errorKind", "forbidden"),
    ];
    for (id, status, field, value) in expected {
        let c = conn.clone();
        let ended = until(&format!("task {id} to end"), WAIT, || {
            let mut conn = c.clone();
            async move {
                hget(&mut conn, id, "status")
                    .await
                    .filter(|s| s == "completed" || s == "error")
            }
        })
        .await;
        assert_eq!(ended, status, "{id}");
        assert_eq!(
            hget(&mut conn, id, field).await.as_deref(),
            Some(value),
            "{id}"
        );
    }
    worker.stop().await;
}
