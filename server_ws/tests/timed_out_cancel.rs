//! The cancel of a play's task as its client is answered -32001, while
//! Redis does not take it at that moment: the answer does not wait for
//! Redis, and the cancel is written once Redis takes it.

mod common;

use std::time::Duration;

use common::{Fixture, Ws, play, recv_any, send};
use server_ws::{ServerTiming, codes};

/// A play (`timeout` task timeout, no worker) on `redis`, its push
/// answered: the waiter's first fallback poll (2 s in) has read the
/// task's hash.
async fn waiting(redis: testkit::RedisServer, timeout: Duration) -> (Fixture, Ws) {
    let fx = Fixture::start_on(
        redis,
        |c| c.task_timeout = timeout,
        ServerTiming::default(),
        false,
    )
    .await;
    let mut ws = fx.connect().await;
    send(&mut ws, &play(1, "1")).await;
    common::eventually("the waiter's poll", || {
        testkit::command(fx.redis.port(), &["INFO", "commandstats"])
            .is_ok_and(|stats| stats.text().is_some_and(|s| s.contains("cmdstat_hgetall:")))
    })
    .await;
    (fx, ws)
}

/// Redis holds writes (`CLIENT PAUSE … WRITE`) from before the task's
/// deadline to past it: the read of the task at the deadline is answered,
/// its cancel is held. The -32001 goes out while Redis still holds it, and
/// the cancel is written once Redis takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_play_timing_out_while_redis_holds_writes_is_answered_before_it_takes_them_again() {
    let (fx, mut ws) = waiting(testkit::RedisServer::start(), Duration::from_secs(3)).await;
    // Another connection's write, answered when Redis takes writes again
    // (no response timeout).
    let mut other = redis::Client::open(fx.redis.url())
        .expect("url")
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await
        .expect("redis");
    // Past the deadline (3 s; now 2 s in) by 3.5 s, within the 5 s
    // response timeout from it.
    common::pause_writes(&fx, 4500).await;
    let resumed = async move {
        let _: () = redis::cmd("SET")
            .arg("written-after-the-pause")
            .arg(1)
            .query_async(&mut other)
            .await
            .expect("SET");
    };
    let reply = tokio::select! {
        biased;
        reply = recv_any(&mut ws) => reply,
        () = resumed => panic!("the -32001 answer waited for Redis to take writes again"),
    };
    assert_eq!(reply["error"]["code"], codes::TIMED_OUT, "{reply}");
    let id = reply["error"]["data"]["task_id"].as_str().expect("task id");
    assert!(
        common::cancel_written(fx.redis.port(), id).await,
        "the task answered -32001 was not cancelled once Redis took writes again"
    );
}

/// Redis refuses the cancel as its client is answered -32001 (here its ACL,
/// for a moment; as well a Redis that went away just then), then comes
/// back with its clock a minute behind, which puts the task's deadline
/// ahead again: the cancel is written then, and no worker runs the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_play_answered_timed_out_whose_cancel_redis_refused_does_not_run_when_redis_is_back_behind()
 {
    let (mut fx, mut ws) = waiting(
        testkit::RedisServer::start_persistent(),
        Duration::from_secs(4),
    )
    .await;
    // Not persisted: the restart below lifts it.
    assert_eq!(
        testkit::command(
            fx.redis.port(),
            &["ACL", "SETUSER", "default", "-eval", "-evalsha"],
        ),
        Ok(testkit::Reply::Status("OK".into()))
    );
    let reply = tokio::time::timeout(Duration::from_secs(20), recv_any(&mut ws))
        .await
        .expect("a reply");
    assert_eq!(reply["error"]["code"], codes::TIMED_OUT, "{reply}");
    let id = reply["error"]["data"]["task_id"]
        .as_str()
        .expect("task id")
        .to_owned();
    fx.redis.restart_with_clock(-60);

    // The cancel comes back with Redis (a reconnect and a retry, at most a
    // few seconds); the claim below says whether it did.
    let _ = common::cancel_written(fx.redis.port(), &id).await;
    let claim = common::late_claim(&fx.redis.url(), common::QUEUE).await;
    assert!(
        matches!(claim, Some(client::broker::Claim::Cancelled { .. })),
        "a worker was handed the task its client was answered -32001 for: {claim:?}"
    );
}
