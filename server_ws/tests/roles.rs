//! Roles over a real WebSocket with the real worker: what a read principal's
//! task does (submitted with its caller, as the server does once the socket
//! is authenticated) is seen by WebSocket clients as it is in the database.

mod common;

use std::time::Duration;

use common::{Fixture, call, play, start_worker};
use server_ws::{ServerTiming, codes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_callers_writes_are_forbidden_and_the_socket_sees_the_data_unchanged() {
    assert_eq!(codes::FORBIDDEN, -32004);
    let fx = Fixture::start_with(|_| {}, ServerTiming::default(), false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let worker = start_worker(&fx, dir.path());
    let mut ws = fx.connect().await;

    // An open circle: the socket's scripts run as the trusted identity.
    let reply = call(&mut ws, &play(1, r#"db::insert("kept"); caller()"#)).await;
    assert_eq!(reply["result"]["output"], "", "{reply}");

    let client = client::Client::connect(&fx.redis.url())
        .await
        .expect("connect");
    let as_bob = client::SubmitOptions {
        caller: Some(client::Caller {
            name: "bob".into(),
            role: client::Role::Read,
        }),
        ..client::SubmitOptions::with_timeout(Duration::from_secs(30))
    };
    for (function, script) in [
        ("db::insert", r#"db::insert("bob was here")"#),
        ("db::update", r#"db::update(1, "changed")"#),
        ("db::delete", "db::delete(1)"),
    ] {
        let ended = client
            .run_with(common::QUEUE, script, &as_bob, client::OnDrop::Cancel)
            .await
            .expect("run");
        let client::Outcome::Failed(f) = ended else {
            panic!("{script}: {ended:?}")
        };
        assert_eq!(f.kind, client::FailureKind::Forbidden, "{script}");
        assert_eq!(
            f.message,
            format!(
                "{function} is not allowed: principal 'bob' has role read; writes need role write"
            )
        );
    }
    let ended = client
        .run_with(
            common::QUEUE,
            "`${caller()} reads ${db::get(1)}`",
            &as_bob,
            client::OnDrop::Cancel,
        )
        .await
        .expect("run");
    let client::Outcome::Completed(out) = ended else {
        panic!("{ended:?}")
    };
    assert_eq!(out.output, "bob reads kept");

    let reply = call(
        &mut ws,
        &play(
            2,
            "`${db::get(1)} ${db::exists(2)} ${db::history(1, 9).len()}`",
        ),
    )
    .await;
    assert_eq!(reply["result"]["output"], "kept false 1", "{reply}");
    worker.cancel();
}
