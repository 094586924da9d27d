//! The reaper, driven through the broker operations against a real Redis: a
//! "ghost" worker takes tasks and stops beating, as a killed process would.

mod common;
use common::raw;

use std::time::Duration;

use client::broker::{BrokerOptions, Claim, WorkerBroker};
use client::{Client, Outcome, SubmitOptions};

async fn wait_for_expiry(url: &str, key: &str) {
    let mut conn = raw(url).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let exists: bool = redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("exists");
        if !exists {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} never expired"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_dead_worker_s_task_ends_as_worker_lost_unless_it_opted_in_to_retry() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let opts = SubmitOptions::with_timeout(Duration::from_secs(30));
    let plain = client.submit("r", "plain", &opts).await.expect("submit");
    let retry = client.submit("r", "retry", &opts).await.expect("submit");
    let untouched = client.submit("r", "later", &opts).await.expect("submit");

    let mut conn = raw(&url).await;
    // Opting in to retry is the task's `retry` field, as a third-party
    // submitter writes it.
    let _: () = redis::cmd("HSET")
        .arg(client::keys::task_details(&retry))
        .arg(client::fields::RETRY)
        .arg("1")
        .query_async(&mut conn)
        .await
        .expect("hset retry");

    let options = BrokerOptions::new(Duration::from_secs(60));
    let ghost = WorkerBroker::new(&url, "r", "ghost", &options).expect("broker");
    ghost
        .beat(Duration::from_millis(100), false)
        .await
        .expect("beat");
    for expected in [&plain, &retry] {
        match ghost.pop_and_claim().await.expect("claim") {
            Some(Claim::Run(task)) => assert_eq!(&task.task_id, expected),
            other => panic!("{other:?}"),
        }
    }
    // The ghost also moved a third id without claiming it (crash between the
    // pop and the claim): simulate by an LMOVE the way BLMOVE does.
    let moved: Option<String> = redis::cmd("LMOVE")
        .arg(client::keys::tasks("r"))
        .arg(client::keys::processing("r", "ghost"))
        .arg("RIGHT")
        .arg("LEFT")
        .query_async(&mut conn)
        .await
        .expect("lmove");
    assert_eq!(moved.as_deref(), Some(untouched.as_str()));

    let reaper = WorkerBroker::new(&url, "r", "reaper", &options).expect("broker");
    assert_eq!(
        reaper
            .beat(Duration::from_secs(5), true)
            .await
            .expect("beat and reap"),
        (0, 0),
        "the ghost still beats"
    );
    wait_for_expiry(&url, &client::keys::heartbeat("r", "ghost")).await;
    // A live worker reaps with its heartbeat (the worker set is read in the
    // same transaction), now that the ghost's heartbeat is gone.
    assert_eq!(
        reaper
            .beat(Duration::from_secs(5), true)
            .await
            .expect("beat and reap"),
        (1, 2)
    );

    let Outcome::Failed(f) = client
        .wait(&plain, Duration::from_secs(5))
        .await
        .expect("wait")
    else {
        panic!("the plain task must fail")
    };
    assert_eq!(
        (f.kind.as_str(), f.message.as_str()),
        ("worker_lost", client::broker::WORKER_LOST_MESSAGE)
    );
    // Retried and never-claimed tasks are back at the head of the queue, in order.
    let order: Vec<String> = redis::cmd("LRANGE")
        .arg(client::keys::tasks("r"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("lrange");
    assert_eq!(
        order,
        vec![untouched.clone(), retry.clone()],
        "retry is next, then the untouched one"
    );
    assert!(
        client.check(&retry).await.expect("check").is_none(),
        "retry is pending again"
    );
    let stats = client.stats_many(&["r"]).await.expect("stats").remove(0);
    assert_eq!((stats.failed, stats.queue_len, stats.in_flight), (1, 2, 0));

    // A late finish from the ghost cannot overwrite the reaper's verdict.
    let late = Outcome::Completed(client::TaskOutput {
        task_id: plain.clone(),
        output: "late".into(),
        printed: String::new(),
        run_time: Some(Duration::ZERO),
    });
    assert!(!ghost.finish(&late).await.expect("finish"));
    let Outcome::Failed(_) = client
        .wait(&plain, Duration::from_secs(1))
        .await
        .expect("wait")
    else {
        panic!("verdict overwritten")
    };
}

#[tokio::test]
async fn a_dead_worker_s_id_whose_key_is_not_a_hash_goes_back_for_its_claim_to_drop() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let mut conn = raw(&url).await;
    let options = BrokerOptions::new(Duration::from_secs(60));
    let ghost = WorkerBroker::new(&url, "r", "ghost", &options).expect("broker");
    ghost
        .beat(Duration::from_millis(100), false)
        .await
        .expect("beat");
    // The ghost holds an id whose key a third party made a string.
    let _: () = redis::cmd("SET")
        .arg(client::keys::task_details("foreign"))
        .arg("not a task")
        .query_async(&mut conn)
        .await
        .expect("set");
    let _: () = redis::cmd("LPUSH")
        .arg(client::keys::processing("r", "ghost"))
        .arg("foreign")
        .query_async(&mut conn)
        .await
        .expect("lpush");
    wait_for_expiry(&url, &client::keys::heartbeat("r", "ghost")).await;

    let reaper = WorkerBroker::new(&url, "r", "reaper", &options).expect("broker");
    assert_eq!(
        reaper
            .beat(Duration::from_secs(5), true)
            .await
            .expect("a reap over a key of another type still answers"),
        (0, 1),
        "it goes back to the queue, as an id without a hash does"
    );
    match reaper.pop_and_claim().await.expect("claim") {
        Some(Claim::Invalid { task_id, reason }) => {
            assert_eq!(task_id, "foreign");
            assert!(reason.contains("holds a string"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let text: String = redis::cmd("GET")
        .arg(client::keys::task_details("foreign"))
        .query_async(&mut conn)
        .await
        .expect("get");
    assert_eq!(text, "not a task", "the key is left as it was");
    let client = Client::connect(&url).await.expect("connect");
    let stats = client.stats_many(&["r"]).await.expect("stats").remove(0);
    assert_eq!((stats.failed, stats.queue_len, stats.in_flight), (1, 0, 0));
}

/// Ids a dead worker moved off the queue and never claimed go back to it
/// whatever their hash says, short of an end or another worker's claim: a
/// `processing` without a worker, a status of its own (as `unclaim` puts
/// them back; their claim then ends them `invalid`).
#[tokio::test]
async fn a_dead_worker_s_unclaimed_ids_of_any_status_go_back_to_the_queue() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let queue = "rq";
    let mut conn = raw(&url).await;
    // Two third-party tasks the claim would end as `invalid` (and that
    // `unclaim` puts back on the queue): one "processing" without a
    // workerId, one with a status of its own.
    for (id, status) in [("no_worker", "processing"), ("odd_status", "queued")] {
        let _: () = redis::cmd("HSET")
            .arg(client::keys::task_details(id))
            .arg("script")
            .arg("40 + 2")
            .arg("status")
            .arg(status)
            .query_async(&mut conn)
            .await
            .expect("hset");
        let _: () = redis::cmd("LPUSH")
            .arg(client::keys::tasks(queue))
            .arg(id)
            .query_async(&mut conn)
            .await
            .expect("lpush");
    }
    // A worker registers, moves both ids off the queue (its BLMOVE) and dies
    // before its claim ran.
    let options = BrokerOptions::new(Duration::from_secs(60));
    let ghost = WorkerBroker::new(&url, queue, "ghost", &options).expect("broker");
    ghost
        .beat(Duration::from_millis(100), false)
        .await
        .expect("beat");
    for _ in 0..2 {
        let _: String = redis::cmd("LMOVE")
            .arg(client::keys::tasks(queue))
            .arg(client::keys::processing(queue, "ghost"))
            .arg("RIGHT")
            .arg("LEFT")
            .query_async(&mut conn)
            .await
            .expect("lmove");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let reaper = WorkerBroker::new(&url, queue, "reaper", &options).expect("broker");
    let (lost, requeued) = reaper
        .beat(Duration::from_secs(10), true)
        .await
        .expect("reap");
    let queued: Vec<String> = redis::cmd("LRANGE")
        .arg(client::keys::tasks(queue))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("lrange");
    let mut report = Vec::new();
    for id in ["no_worker", "odd_status"] {
        let status: Option<String> = redis::cmd("HGET")
            .arg(client::keys::task_details(id))
            .arg("status")
            .query_async(&mut conn)
            .await
            .expect("hget");
        let pttl: i64 = redis::cmd("PTTL")
            .arg(client::keys::task_details(id))
            .query_async(&mut conn)
            .await
            .expect("pttl");
        report.push((id, status, pttl, queued.iter().any(|q| q == id)));
    }
    assert_eq!((lost, requeued), (0, 2), "{queued:?} {report:?}");
    for (id, status, pttl, in_queue) in report {
        let ended = matches!(status.as_deref(), Some("completed" | "error"));
        assert!(
            in_queue || ended,
            "task {id} is neither queued again nor ended: status {status:?}, PTTL {pttl}, \
             in no list: it can never end"
        );
    }
}

/// A third-party worker registered in the worker set under an id that is not
/// UTF-8 (README: third-party workers register there to be seen live) must
/// not stop the reaper: a dead worker's task still ends `worker_lost`.
#[tokio::test]
async fn a_worker_id_that_is_not_utf8_in_the_worker_set_does_not_stop_the_reaper() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let opts = SubmitOptions::with_timeout(Duration::from_secs(30));
    let task = client.submit("r", "plain", &opts).await.expect("submit");
    let mut conn = raw(&url).await;
    let options = BrokerOptions::new(Duration::from_secs(60));
    let ghost = WorkerBroker::new(&url, "r", "ghost", &options).expect("broker");
    ghost
        .beat(Duration::from_millis(100), false)
        .await
        .expect("beat");
    assert!(matches!(
        ghost.pop_and_claim().await.expect("claim"),
        Some(Claim::Run(_))
    ));
    // A third party's worker, registered under a Latin-1 id ("wörker").
    let _: () = redis::cmd("SADD")
        .arg(client::keys::workers("r"))
        .arg(&b"w\xf6rker"[..])
        .query_async(&mut conn)
        .await
        .expect("sadd");
    wait_for_expiry(&url, &client::keys::heartbeat("r", "ghost")).await;

    let reaper = WorkerBroker::new(&url, "r", "reaper", &options).expect("broker");
    let reaped = reaper.beat(Duration::from_secs(5), true).await;
    assert_eq!(reaped.as_ref().ok(), Some(&(1, 0)), "{reaped:?}");
    let outcome = client.wait(&task, Duration::from_secs(5)).await;
    assert!(
        matches!(&outcome, Ok(Outcome::Failed(f)) if f.kind.as_str() == "worker_lost"),
        "{outcome:?}"
    );
}

/// The failure task `id` ended with, which must not say it never ran (it
/// may have run before its worker died).
async fn ended_saying_it_may_have_run(client: &Client, id: &str) -> client::TaskFailure {
    let Outcome::Failed(f) = client.wait(id, Duration::from_secs(5)).await.expect("wait") else {
        panic!("{id} cannot complete")
    };
    assert!(
        !f.message.contains("before it ran"),
        "a task that may have run ends as {:?}: {:?}",
        f.kind.as_str(),
        f.message
    );
    f
}

/// Marks task `id` `retry=1`, as its submitter may.
async fn opt_in_to_retry(conn: &mut redis::aio::MultiplexedConnection, id: &str) {
    let _: () = redis::cmd("HSET")
        .arg(client::keys::task_details(id))
        .arg(client::fields::RETRY)
        .arg("1")
        .query_async(conn)
        .await
        .expect("hset retry");
}

/// A worker of queue `r`, "ghost", registered by one beat whose heartbeat
/// lives 100 ms: it dies with whatever it claims next.
async fn ghost(url: &str) -> WorkerBroker {
    let options = BrokerOptions::new(Duration::from_secs(60));
    let ghost = WorkerBroker::new(url, "r", "ghost", &options).expect("broker");
    ghost
        .beat(Duration::from_millis(100), false)
        .await
        .expect("beat");
    ghost
}

/// Once the ghost's heartbeat expired, a worker "reaper" beats and reaps:
/// the reaper, and what its reap counted (lost, put back).
async fn reaped_after_the_ghost(url: &str) -> (WorkerBroker, (u64, u64)) {
    wait_for_expiry(url, &client::keys::heartbeat("r", "ghost")).await;
    let options = BrokerOptions::new(Duration::from_secs(60));
    let reaper = WorkerBroker::new(url, "r", "reaper", &options).expect("broker");
    let reaped = reaper
        .beat(Duration::from_secs(5), true)
        .await
        .expect("beat and reap");
    (reaper, reaped)
}

/// A task that opted in to retry (`retry=1`) was claimed and started by a
/// worker that then died; by the time a reaper finds it, its deadline has
/// passed (the reaper needs the heartbeat TTL plus a reap interval, about
/// 30 s by default, which outlasts many tasks' timeouts). It may have run and
/// committed writes, so it must not end saying it never ran: README says
/// `worker_lost` is "the one case where an `error` does not mean that
/// nothing is written", and "A `deadline` in the past ends the task as
/// `expired` without running it". The reaper ends a retry task whose
/// submitter cancelled it as lost for the same reason.
#[tokio::test]
async fn a_dead_worker_s_retry_task_whose_deadline_passed_does_not_end_as_never_run() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    // A deadline 300 ms out, as `--task-timeout` writes one.
    let opts = SubmitOptions::with_timeout(Duration::from_millis(300));
    let retry = client
        .submit("r", "db::insert(1); 1", &opts)
        .await
        .expect("submit");
    let mut conn = raw(&url).await;
    opt_in_to_retry(&mut conn, &retry).await;
    let ghost = ghost(&url).await;
    // Claimed: the ghost starts its script, then dies.
    match ghost.pop_and_claim().await.expect("claim") {
        Some(Claim::Run(task)) => assert_eq!(task.task_id, retry),
        other => panic!("{other:?}"),
    }
    // Past the task's deadline when the reaper looks.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (reaper, _) = reaped_after_the_ghost(&url).await;
    // Whatever the reaper did, the next claim settles the task.
    if let Some(claim) = reaper.pop_and_claim().await.expect("claim") {
        assert!(
            !matches!(claim, Claim::Run(_)),
            "past its deadline: {claim:?}"
        );
    }
    let f = ended_saying_it_may_have_run(&client, &retry).await;
    assert_ne!(f.kind.as_str(), "expired", "{f:?}");
}

/// One registered worker whose processing key is not a list (a third
/// party's worker registered under the queue with a key of its own kind, or
/// a key edited by hand) must not stop the reaper for every other dead
/// worker of the queue: its REAP fails with WRONGTYPE, and the reap of the
/// workers after it in the set never runs, at every beat, for good. The
/// ghost's task then stays `processing` forever (DESIGN §3: "Every task that
/// was pushed reaches `completed` or `error`").
#[tokio::test]
async fn a_dead_worker_whose_processing_key_is_not_a_list_does_not_stop_the_reaper() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let opts = SubmitOptions::with_timeout(Duration::from_secs(30));
    let task = client.submit("r", "plain", &opts).await.expect("submit");
    let mut conn = raw(&url).await;
    // Dead (no heartbeat key), its processing key a string. Worker ids that
    // are numbers keep the set an intset, listed in order: this one first.
    let _: () = redis::cmd("SADD")
        .arg(client::keys::workers("r"))
        .arg("1")
        .query_async(&mut conn)
        .await
        .expect("sadd");
    let _: () = redis::cmd("SET")
        .arg(client::keys::processing("r", "1"))
        .arg("not a list")
        .query_async(&mut conn)
        .await
        .expect("set");
    let options = BrokerOptions::new(Duration::from_secs(60));
    let ghost = WorkerBroker::new(&url, "r", "2", &options).expect("broker");
    ghost
        .beat(Duration::from_millis(100), false)
        .await
        .expect("beat");
    assert!(matches!(
        ghost.pop_and_claim().await.expect("claim"),
        Some(Claim::Run(_))
    ));
    wait_for_expiry(&url, &client::keys::heartbeat("r", "2")).await;

    let reaper = WorkerBroker::new(&url, "r", "3", &options).expect("broker");
    // Beat (and reap) a few times, as a live worker does.
    for _ in 0..3 {
        let _ = reaper.beat(Duration::from_secs(5), true).await;
    }
    let status: Option<String> = redis::cmd("HGET")
        .arg(client::keys::task_details(&task))
        .arg("status")
        .query_async(&mut conn)
        .await
        .expect("hget");
    assert_eq!(
        status.as_deref(),
        Some("error"),
        "the dead ghost's task is still not resolved by the reaper"
    );
}

/// A retry task a reaper put back on the queue (its worker died while it
/// ran) may have committed writes. Back in the queue, it can still be
/// cancelled, or see its deadline pass before a worker takes it (the queue
/// is busy, or no worker serves it for a while); its claim must not then
/// end it saying it never ran ("cancelled before it ran", "expired before
/// it ran"): README, `worker_lost` is "the one case where an `error` does
/// not mean that nothing is written".
#[tokio::test]
async fn a_retry_task_put_back_by_the_reaper_and_then_cancelled_or_expired_does_not_end_as_never_run()
 {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let mut conn = raw(&url).await;
    let short = SubmitOptions::with_timeout(Duration::from_millis(1500));
    let long = SubmitOptions::with_timeout(Duration::from_secs(30));
    let expiring = client
        .submit("r", "db::insert(1); 1", &short)
        .await
        .expect("submit");
    let cancelled = client
        .submit("r", "db::insert(2); 2", &long)
        .await
        .expect("submit");
    for id in [&expiring, &cancelled] {
        opt_in_to_retry(&mut conn, id).await;
    }
    let ghost = ghost(&url).await;
    // The ghost claims both (a batch), runs them, and dies unreported.
    assert_eq!(ghost.claim_batch(2).await.expect("claim").len(), 2);
    let (reaper, reaped) = reaped_after_the_ghost(&url).await;
    assert_eq!(
        reaped,
        (0, 2),
        "both opted in to retry, neither is past its deadline or cancelled yet"
    );
    // Back in the queue: one is cancelled, the other's deadline passes.
    assert!(
        client
            .cancel(&cancelled, "the client went away")
            .await
            .expect("cancel")
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    for claim in reaper.claim_batch(2).await.expect("claim") {
        assert!(matches!(claim, Claim::Lost { .. }), "{claim:?}");
    }
    for id in [&expiring, &cancelled] {
        let f = ended_saying_it_may_have_run(&client, id).await;
        assert_eq!(f.kind, client::FailureKind::WorkerLost, "{f:?}");
    }
}

/// As above, for a put-back retry task that a worker claimed again in a
/// batch and holds, unstarted, behind another when it is cancelled: the
/// batched finish ends it without running it, and must not say it never
/// ran either.
#[tokio::test]
async fn a_retry_task_put_back_by_the_reaper_and_cancelled_while_held_does_not_end_as_never_run() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let mut conn = raw(&url).await;
    let opts = SubmitOptions::with_timeout(Duration::from_secs(30));
    let retry = client
        .submit("r", "db::insert(1); 1", &opts)
        .await
        .expect("submit");
    opt_in_to_retry(&mut conn, &retry).await;
    let ghost = ghost(&url).await;
    assert_eq!(ghost.claim_batch(1).await.expect("claim").len(), 1);
    let (reaper, reaped) = reaped_after_the_ghost(&url).await;
    assert_eq!(reaped, (0, 1));
    // A task queued behind it; the reaper's worker claims both in one
    // batch, runs `first` (the order does not matter to the finish) and
    // still holds `retry`, unstarted, when it is cancelled.
    let first = client.submit("r", "2", &opts).await.expect("submit");
    let claims = reaper.claim_batch(2).await.expect("claim");
    assert_eq!(claims.len(), 2, "{claims:?}");
    assert!(
        client
            .cancel(&retry, "the client went away")
            .await
            .expect("cancel")
    );
    let done = reaper
        .finish_batch(
            &[Outcome::Completed(client::TaskOutput {
                task_id: first.clone(),
                output: "2".into(),
                printed: String::new(),
                run_time: Some(Duration::ZERO),
            })],
            &[retry.as_str()],
            0,
            false,
        )
        .await
        .expect("finish");
    assert_eq!(done.cancelled.len(), 1, "{done:?}");
    assert_eq!(
        done.cancelled[0].2,
        client::FailureKind::WorkerLost,
        "{done:?}"
    );
    ended_saying_it_may_have_run(&client, &retry).await;
}
