//! The submitting principal in the task hash: `Client` writes `caller` and
//! `role` when given a caller and neither without one, and a worker's claim
//! reads them back (a task without a role runs as the trusted identity; any
//! other role ends the task as invalid, never run).

mod common;
use common::raw;

use std::collections::HashMap;
use std::time::Duration;

use client::broker::{BrokerOptions, Claim, WorkerBroker};
use client::{Caller, Client, OnDrop, Role, SubmitOptions, fields, keys};

async fn hash(
    conn: &mut redis::aio::MultiplexedConnection,
    task_id: &str,
) -> HashMap<String, String> {
    redis::cmd("HGETALL")
        .arg(keys::task_details(task_id))
        .query_async(conn)
        .await
        .expect("hgetall")
}

fn as_caller(name: &str, role: Role) -> SubmitOptions {
    SubmitOptions {
        caller: Some(Caller {
            name: name.to_owned(),
            role,
        }),
        ..SubmitOptions::with_timeout(Duration::from_secs(30))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watched_writes_caller_and_role_only_when_given_a_caller() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    let mut conn = raw(&redis.url()).await;

    let read = client
        .submit_watched("q", "1", &as_caller("bob", Role::Read))
        .await
        .expect("submit");
    let h = hash(&mut conn, read.task_id()).await;
    assert_eq!(h.get(fields::CALLER).map(String::as_str), Some("bob"));
    assert_eq!(h.get(fields::ROLE).map(String::as_str), Some("read"));

    let write = client
        .submit_watched("q", "1", &as_caller("alice", Role::Write))
        .await
        .expect("submit");
    let h = hash(&mut conn, write.task_id()).await;
    assert_eq!(h.get(fields::CALLER).map(String::as_str), Some("alice"));
    assert_eq!(h.get(fields::ROLE).map(String::as_str), Some("write"));

    let open = client
        .submit_watched("q", "1", &SubmitOptions::default())
        .await
        .expect("submit");
    let h = hash(&mut conn, open.task_id()).await;
    assert_eq!(h.get(fields::SCRIPT).map(String::as_str), Some("1"));
    assert!(!h.contains_key(fields::CALLER), "{h:?}");
    assert!(!h.contains_key(fields::ROLE), "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_writes_caller_and_role_only_when_given_a_caller() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    let mut conn = raw(&redis.url()).await;
    for (options, expected) in [
        (as_caller("bob", Role::Read), Some(("bob", "read"))),
        (SubmitOptions::default(), None),
    ] {
        let options = SubmitOptions {
            timeout: Duration::from_millis(300),
            ..options
        };
        // No worker: the call times out, and a timeout cancels nothing.
        let ended = client
            .run_with("nobody", "1", &options, OnDrop::Cancel)
            .await;
        let Err(client::Error::Timeout { task_id, .. }) = ended else {
            panic!("{ended:?}")
        };
        let h = hash(&mut conn, &task_id).await;
        assert_eq!(
            h.get(fields::CALLER).map(String::as_str),
            expected.map(|e| e.0)
        );
        assert_eq!(
            h.get(fields::ROLE).map(String::as_str),
            expected.map(|e| e.1)
        );
    }
}

/// A task id, the extra fields of its hash, and the caller its claim gives.
type Case = (
    &'static str,
    Vec<(&'static str, &'static [u8])>,
    Option<Caller>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_gives_the_caller_or_the_trusted_identity_and_refuses_any_other_role() {
    let redis = testkit::RedisServer::start();
    let mut conn = raw(&redis.url()).await;
    let options = BrokerOptions::new(Duration::from_secs(60));
    let broker = WorkerBroker::new(&redis.url(), "claims", "w1", &options).expect("broker");
    let push = |id: &str, extra: &[(&str, &[u8])]| {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(keys::task_details(id))
            .arg("script")
            .arg("1")
            .arg("status")
            .arg("pending");
        for (field, value) in extra {
            cmd.arg(*field).arg(*value);
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .add_command(cmd)
            .ignore()
            .cmd("LPUSH")
            .arg(keys::tasks("claims"))
            .arg(id)
            .ignore();
        pipe
    };
    let claim = |conn: redis::aio::MultiplexedConnection, pipe: redis::Pipeline| {
        let broker = &broker;
        async move {
            let mut conn = conn;
            let _: () = pipe.query_async(&mut conn).await.expect("push");
            broker
                .pop_and_claim()
                .await
                .expect("claim")
                .expect("a task was queued")
        }
    };

    let cases: [Case; 4] = [
        (
            "read",
            vec![("caller", b"bob"), ("role", b"read")],
            Some(Caller {
                name: "bob".into(),
                role: Role::Read,
            }),
        ),
        (
            "write",
            vec![("caller", b"alice"), ("role", b"write")],
            Some(Caller {
                name: "alice".into(),
                role: Role::Write,
            }),
        ),
        ("absent", vec![], None),
        // Without a role, a caller name alone grants nothing and names nobody.
        ("name-only", vec![("caller", b"mallory")], None),
    ];
    for (id, extra, expected) in cases {
        match claim(conn.clone(), push(id, &extra)).await {
            Claim::Run(task) => {
                assert_eq!(task.task_id, id);
                assert_eq!(task.caller, expected, "{id}");
            }
            other => panic!("{id}: {other:?}"),
        }
        let status: Option<String> = redis::cmd("HGET")
            .arg(keys::task_details(id))
            .arg("status")
            .query_async(&mut conn)
            .await
            .expect("hget");
        assert_eq!(status.as_deref(), Some("processing"), "{id}");
    }

    let bad: [(&str, &[u8], &str); 4] = [
        ("garbage", b"admin", r#"unknown role "admin""#),
        ("capital", b"Read", r#"unknown role "Read""#),
        ("empty", b"", r#"unknown role """#),
        ("binary", b"\xffwrite", "unknown role (not printable text)"),
    ];
    for (id, role, named) in bad {
        let claimed = claim(
            conn.clone(),
            push(id, &[("caller", b"bob"), ("role", role)]),
        )
        .await;
        let Claim::Invalid { task_id, reason } = claimed else {
            panic!("{id}: {claimed:?}")
        };
        assert_eq!(task_id, id);
        assert!(reason.starts_with(named), "{id}: {reason}");
        // The role field may hold bytes that are not text: read the rest.
        let h: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(keys::task_details(id))
            .arg(&["status", "errorKind", "error", "startedAt"][..])
            .query_async(&mut conn)
            .await
            .expect("hmget");
        assert_eq!(h[0].as_deref(), Some("error"), "{id}");
        assert_eq!(h[1].as_deref(), Some("invalid"), "{id}");
        let error = h[2].clone().unwrap_or_default();
        assert!(error.starts_with(named), "{id}: {error}");
        assert!(
            error.contains(r#"a task's role is "read" or "write""#),
            "{id}: {error}"
        );
        assert_eq!(h[3], None, "{id} never ran");
    }
}
