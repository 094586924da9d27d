//! The batched claim and finish of the worker side: several tasks in one
//! round trip each way, every task keeping its own status, result,
//! notification and TTL; held tasks re-checked for a cancel.

mod common;
use common::raw;

use std::time::Duration;

use client::broker::{BlockingPopper, BrokerOptions, Claim, WorkerBroker};
use client::{Client, FailureKind, Outcome, SubmitOptions, TaskFailure, TaskOutput, keys};

const RESULT_TTL: Duration = Duration::from_secs(60);

/// A Redis of the test's own, a submitting client, the worker side of queue
/// `q` as worker `w1`, and a raw connection for what other programs do.
struct Setup {
    _redis: testkit::RedisServer,
    client: Client,
    broker: WorkerBroker,
    conn: redis::aio::MultiplexedConnection,
}

async fn setup() -> Setup {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let broker =
        WorkerBroker::new(&url, "q", "w1", &BrokerOptions::new(RESULT_TTL)).expect("broker");
    let conn = raw(&url).await;
    Setup {
        _redis: redis,
        client,
        broker,
        conn,
    }
}

/// Worker `w1`'s processing list of queue `q`, newest first.
async fn processing(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(keys::processing("q", "w1"))
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .expect("lrange")
}

/// Queue `q`'s `processed` and `failed` counters in Redis.
async fn counted(client: &Client) -> (u64, u64) {
    let stats = client.stats_many(&["q"]).await.expect("stats").remove(0);
    (stats.processed, stats.failed)
}

/// Submits `script` to `q`; its id.
async fn submit(client: &Client, script: &str) -> String {
    client
        .submit("q", script, &SubmitOptions::default())
        .await
        .expect("submit")
}

/// Submits one task per script to `q`, then claims them as one batch and
/// checks that it holds all of them, oldest first; returns their ids.
async fn submit_and_claim(client: &Client, broker: &WorkerBroker, scripts: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for script in scripts {
        ids.push(submit(client, script).await);
    }
    let claims = broker.claim_batch(scripts.len()).await.expect("claim");
    assert_eq!(run_ids(&claims), ids);
    ids
}

/// What a careless third party does: a string where `key` was.
async fn replace_with_string(conn: &mut redis::aio::MultiplexedConnection, key: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("replaced")
        .query_async(conn)
        .await
        .expect("set");
}

/// What a third-party submitter whose push's reply was lost does: it
/// pushes `id` to `q` again, so that the queue holds it twice.
async fn push_again(conn: &mut redis::aio::MultiplexedConnection, id: &str) {
    let _: () = redis::cmd("LPUSH")
        .arg(keys::tasks("q"))
        .arg(id)
        .query_async(conn)
        .await
        .expect("lpush");
}

/// The `status` field of task `id`.
async fn status(conn: &mut redis::aio::MultiplexedConnection, id: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(keys::task_details(id))
        .arg("status")
        .query_async(conn)
        .await
        .expect("hget")
}

/// Task `id` completed with output `1`.
fn completed(id: &str) -> Outcome {
    Outcome::Completed(TaskOutput {
        task_id: id.to_owned(),
        output: "1".into(),
        printed: String::new(),
        run_time: None,
    })
}

fn run_ids(claims: &[Claim]) -> Vec<String> {
    claims
        .iter()
        .map(|c| match c {
            Claim::Run(t) => t.task_id.clone(),
            other => panic!("expected a runnable claim, got {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_claimed_oldest_first_and_each_task_is_finished_with_its_own_result() {
    let Setup {
        _redis,
        client,
        broker,
        mut conn,
    } = setup().await;
    // Registered, as a running worker is (`held` looks at registered ones).
    broker
        .beat(Duration::from_secs(60), false)
        .await
        .expect("beat");
    let delivered = SubmitOptions {
        delivered_ttl: Some(Duration::from_secs(2)),
        ..SubmitOptions::default()
    };
    let a = client
        .submit_watched("q", "1", &delivered)
        .await
        .expect("submit");
    let b = client
        .submit_watched("q", "2", &SubmitOptions::default())
        .await
        .expect("submit");
    let c = submit(&client, "3").await;
    let d = submit(&client, "4").await;
    let e = submit(&client, "5").await;

    let claims = broker.claim_batch(3).await.expect("claim");
    let (a_id, b_id) = (a.task_id().to_owned(), b.task_id().to_owned());
    assert_eq!(run_ids(&claims), [a_id.clone(), b_id.clone(), c.clone()]);
    assert_eq!(
        client.queued("q", 10).await.expect("queued"),
        [d.clone(), e.clone()]
    );
    // The third is held behind the first, which runs (the right end).
    assert_eq!(
        client.held("q", 10).await.expect("held"),
        [c.clone(), b_id.clone()]
    );
    assert!(client.cancel(&c, "not any more").await.expect("cancel"));

    let outcomes = [
        completed(&a_id),
        Outcome::Failed(TaskFailure {
            task_id: b_id.clone(),
            kind: FailureKind::Runtime,
            message: "boom".into(),
            line: Some(1),
            column: Some(1),
        }),
    ];
    let done = broker
        .finish_batch(&outcomes, &[&c], 0, false)
        .await
        .expect("finish");
    assert_eq!(done.written, [true, true]);
    assert_eq!(
        done.cancelled,
        [(
            c.clone(),
            "not any more".to_owned(),
            client::FailureKind::Cancelled
        )]
    );
    assert!(done.next.is_empty(), "none asked for");

    assert!(matches!(a.outcome().await, Ok(Outcome::Completed(ref o)) if o.output == "1"));
    let Ok(Outcome::Failed(f)) = b.outcome().await else {
        panic!("b failed")
    };
    assert_eq!((f.kind, f.message.as_str()), (FailureKind::Runtime, "boom"));
    let Some(Outcome::Failed(f)) = client.check(&c).await.expect("check") else {
        panic!("c ends cancelled")
    };
    assert_eq!(f.kind, FailureKind::Cancelled);
    assert_eq!(f.message, "cancelled before it ran: not any more");
    let pttl = |id: String| {
        let mut conn = conn.clone();
        async move {
            let left: i64 = redis::cmd("PTTL")
                .arg(keys::task_details(&id))
                .query_async(&mut conn)
                .await
                .expect("pttl");
            left
        }
    };
    let left = pttl(a_id).await;
    assert!(
        left > 0 && left <= 2000,
        "a asked for the delivered TTL: {left}"
    );
    let left = pttl(b_id).await;
    assert!(left > 55_000, "b keeps the result TTL: {left}");

    // Nothing held: the finish claims the next batch in the same script.
    let done = broker
        .finish_batch(&[], &[], 10, false)
        .await
        .expect("finish");
    assert_eq!(run_ids(&done.next), [d.clone(), e.clone()]);
    // A stopping worker gives them back, in order.
    let done = broker
        .finish_batch(&[], &[&d, &e], 0, true)
        .await
        .expect("release");
    assert!(done.cancelled.is_empty());
    assert_eq!(
        client.queued("q", 10).await.expect("queued"),
        [d.clone(), e.clone()]
    );
    assert_eq!(status(&mut conn, &d).await.as_deref(), Some("pending"));
    let stats = client.stats_many(&["q"]).await.expect("stats").remove(0);
    assert_eq!((stats.processed, stats.failed, stats.in_flight), (1, 2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_sent_again_after_a_lost_reply_reports_what_its_first_try_settled() {
    let Setup {
        _redis,
        client,
        broker,
        mut conn,
    } = setup().await;
    let ids = submit_and_claim(&client, &broker, &["1", "2", "3"]).await;
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    assert!(client.cancel(b, "not any more").await.expect("cancel"));
    let outcomes = [completed(a)];
    let first = broker
        .finish_batch(&outcomes, &[b, c], 0, false)
        .await
        .expect("finish");
    assert_eq!(
        first.cancelled,
        [(
            b.clone(),
            "not any more".to_owned(),
            client::FailureKind::Cancelled
        )]
    );
    assert!(first.gone.is_empty());
    assert_eq!(counted(&client).await, (1, 1));
    // Its reply lost, the worker sends the same again and hears what the
    // first try did: a's result written, b ended as cancelled (it must not
    // run), c still held. Nothing is written or counted twice.
    let again = broker
        .finish_batch(&outcomes, &[b, c], 0, false)
        .await
        .expect("finish again");
    assert_eq!(again.written, [true]);
    assert_eq!(again.cancelled, first.cancelled);
    assert!(again.gone.is_empty());
    assert_eq!(processing(&mut conn).await, std::slice::from_ref(c));
    assert_eq!(counted(&client).await, (1, 1));
    assert_eq!(status(&mut conn, a).await.as_deref(), Some("completed"));

    // A first try that gave c back (the worker was stopping), sent again
    // without that: c is gone, and stays queued for whoever takes it.
    broker
        .finish_batch(&[], &[c], 0, true)
        .await
        .expect("release");
    let again = broker
        .finish_batch(&[], &[c], 0, false)
        .await
        .expect("finish again");
    assert_eq!(again.gone, std::slice::from_ref(c));
    assert_eq!(status(&mut conn, c).await.as_deref(), Some("pending"));
    assert_eq!(
        client.queued("q", 10).await.expect("queued"),
        std::slice::from_ref(c)
    );
    assert!(processing(&mut conn).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_claim_ends_the_tasks_it_cannot_run_and_counts_each_one_failure() {
    let Setup {
        _redis,
        client,
        broker,
        mut conn,
    } = setup().await;
    let first = submit(&client, "1").await;
    let cancelled = submit(&client, "2").await;
    assert!(
        client
            .cancel(&cancelled, "changed my mind")
            .await
            .expect("cancel")
    );
    // An id pushed without its hash.
    let _: () = redis::cmd("LPUSH")
        .arg(keys::tasks("q"))
        .arg("no-hash")
        .query_async(&mut conn)
        .await
        .expect("lpush");
    let last = submit(&client, "4").await;

    let claims = broker.claim_batch(10).await.expect("claim");
    assert_eq!(claims.len(), 4, "{claims:?}");
    assert!(matches!(&claims[0], Claim::Run(t) if t.task_id == first));
    assert!(
        matches!(&claims[1], Claim::Cancelled { task_id, reason }
            if *task_id == cancelled && reason == "changed my mind"),
        "{:?}",
        claims[1]
    );
    assert!(
        matches!(&claims[2], Claim::Invalid { task_id, .. } if task_id == "no-hash"),
        "{:?}",
        claims[2]
    );
    assert!(matches!(&claims[3], Claim::Run(t) if t.task_id == last));
    assert!(client.queued("q", 10).await.expect("queued").is_empty());
    // Both that could not run ended as errors, counted once each; the two
    // runnable ones are held, oldest at the right end.
    let stats = client.stats_many(&["q"]).await.expect("stats").remove(0);
    assert_eq!((stats.processed, stats.failed), (0, 2));
    let processing = processing(&mut conn).await;
    assert_eq!(processing, [last.clone(), first.clone()]);
    let Some(Outcome::Failed(f)) = client.check(&cancelled).await.expect("check") else {
        panic!("the cancelled task ends as an error")
    };
    assert_eq!(f.kind, FailureKind::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_hash_a_third_party_replaced_is_finished_as_no_longer_ours() {
    let Setup {
        _redis,
        client,
        broker,
        mut conn,
    } = setup().await;
    let ids = submit_and_claim(&client, &broker, &["1", "2", "3"]).await;
    // While the first runs, a third party puts a string where the hashes of
    // the first (finished next) and the third (held) were.
    for id in [&ids[0], &ids[2]] {
        replace_with_string(&mut conn, &keys::task_details(id)).await;
    }
    let done = broker
        .finish_batch(&[completed(&ids[0])], &[&ids[1], &ids[2]], 0, true)
        .await
        .expect("a finish over keys of another type still answers");
    assert_eq!(done.written, [false]);
    // The second goes back to the queue; the others leave the processing
    // list, their keys untouched.
    assert_eq!(
        client.queued("q", 10).await.expect("queued"),
        [ids[1].clone()]
    );
    let processing = processing(&mut conn).await;
    assert!(processing.is_empty(), "{processing:?}");
    for id in [&ids[0], &ids[2]] {
        let text: String = redis::cmd("GET")
            .arg(keys::task_details(id))
            .query_async(&mut conn)
            .await
            .expect("get");
        assert_eq!(text, "replaced");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_finish_that_fails_partway_still_counts_the_tasks_it_ended() {
    let Setup {
        _redis,
        client,
        broker,
        mut conn,
    } = setup().await;
    let ids = submit_and_claim(&client, &broker, &["1", "2"]).await;
    // While they run, a third party puts a string where the queue was: the
    // finish writes both results, then its claim of the next batch fails.
    replace_with_string(&mut conn, &keys::tasks("q")).await;
    let outcomes: Vec<Outcome> = ids.iter().map(|id| completed(id)).collect();
    let err = broker
        .finish_batch(&outcomes, &[], 2, false)
        .await
        .expect_err("the next claim reads a queue that is not a list");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    for id in &ids {
        assert_eq!(status(&mut conn, id).await.as_deref(), Some("completed"));
    }
    let counted: (Option<u64>, Option<u64>) = redis::cmd("HMGET")
        .arg(keys::stats("q"))
        .arg("processed")
        .arg("failed")
        .query_async(&mut conn)
        .await
        .expect("hmget");
    assert_eq!(counted, (Some(2), None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_group_leaves_the_processing_list_and_what_is_held_or_foreign_stays() {
    let Setup {
        _redis,
        client,
        broker,
        mut conn,
    } = setup().await;
    let ids = submit_and_claim(&client, &broker, &["1", "2", "3", "4", "5"]).await;
    // The group is the list's right end (the oldest two); one of them is no
    // longer ours (a third party replaced its hash): both leave the list.
    replace_with_string(&mut conn, &keys::task_details(&ids[1])).await;
    let held: Vec<&str> = ids[2..].iter().map(String::as_str).collect();
    let done = broker
        .finish_batch(&[completed(&ids[0]), completed(&ids[1])], &held, 0, false)
        .await
        .expect("finish");
    assert_eq!(done.written, [true, false]);
    assert_eq!(
        processing(&mut conn).await,
        [ids[4].clone(), ids[3].clone(), ids[2].clone()]
    );

    // A third party pushes an id of its own to the right end: the group is
    // no longer the list's end, and only the group's ids leave it.
    let _: () = redis::cmd("RPUSH")
        .arg(keys::processing("q", "w1"))
        .arg("stray")
        .query_async(&mut conn)
        .await
        .expect("rpush");
    let done = broker
        .finish_batch(
            &[completed(&ids[2]), completed(&ids[3])],
            &[&ids[4]],
            0,
            false,
        )
        .await
        .expect("finish");
    assert_eq!(done.written, [true, true]);
    assert_eq!(
        processing(&mut conn).await,
        [ids[4].clone(), "stray".to_owned()]
    );
    for id in [&ids[0], &ids[2], &ids[3]] {
        assert_eq!(status(&mut conn, id).await.as_deref(), Some("completed"));
    }
    assert_eq!(
        status(&mut conn, &ids[4]).await.as_deref(),
        Some("processing")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_result_a_finish_wrote_itself_counts_as_written_when_it_is_sent_again() {
    let Setup {
        _redis,
        client,
        broker,
        mut conn,
    } = setup().await;
    let ended_by_hand = submit(&client, "1").await;
    let twice = submit(&client, "2").await;
    let claims = broker.claim_batch(2).await.expect("claim");
    assert_eq!(run_ids(&claims), [ended_by_hand.clone(), twice.clone()]);
    // While the first runs, a third party ends it by hand, leaving this
    // worker's id on it.
    let _: () = redis::cmd("HSET")
        .arg(keys::task_details(&ended_by_hand))
        .arg(&[("status", "error"), ("error", "ended by hand")])
        .query_async(&mut conn)
        .await
        .expect("hset");
    // The second id is given twice.
    let outcomes = [
        completed(&ended_by_hand),
        completed(&twice),
        completed(&twice),
    ];
    let first = broker
        .finish_batch(&outcomes, &[], 0, false)
        .await
        .expect("finish");
    assert_eq!(first.written, [false, true, false]);
    // The same finish again (its reply lost): the same answer, nothing
    // written or counted twice.
    let again = broker
        .finish_batch(&outcomes, &[], 0, false)
        .await
        .expect("finish again");
    assert_eq!(again.written, first.written);
    assert_eq!(counted(&client).await, (1, 0));
    assert_eq!(
        status(&mut conn, &ended_by_hand).await.as_deref(),
        Some("error")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_finished_and_held_in_one_call_is_gone_not_cancelled_before_it_ran() {
    let Setup {
        _redis,
        client,
        broker,
        mut conn,
    } = setup().await;
    let id = submit(&client, "1").await;
    let claims = broker.claim_batch(1).await.expect("claim");
    assert_eq!(run_ids(&claims), std::slice::from_ref(&id));
    // Cancelled while it runs; its finish also names it as held.
    assert!(client.cancel(&id, "stop").await.expect("cancel"));
    let cut = Outcome::Failed(TaskFailure {
        task_id: id.clone(),
        kind: FailureKind::Cancelled,
        message: "cancelled while it ran: stop; none of its writes were kept".into(),
        line: None,
        column: None,
    });
    for _try in 0..2 {
        let done = broker
            .finish_batch(std::slice::from_ref(&cut), &[&id], 0, false)
            .await
            .expect("finish");
        assert_eq!(done.written, [true]);
        assert!(done.cancelled.is_empty(), "{:?}", done.cancelled);
        assert_eq!(done.gone, std::slice::from_ref(&id));
    }
    assert_eq!(counted(&client).await, (0, 1));
    assert!(processing(&mut conn).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_pushed_twice_is_claimed_once_by_a_batch_and_by_a_finish() {
    let Setup {
        _redis,
        client,
        broker,
        mut conn,
    } = setup().await;
    // Queued oldest first: a, a again, b.
    let a = submit(&client, "1").await;
    push_again(&mut conn, &a).await;
    let b = submit(&client, "2").await;
    let claims = broker.claim_batch(3).await.expect("claim");
    assert_eq!(run_ids(&claims), [a.clone(), b.clone()]);
    assert_eq!(processing(&mut conn).await, [b.clone(), a.clone()]);
    // The next claim of a finish, one at a time: c once, then nothing.
    let c = submit(&client, "3").await;
    push_again(&mut conn, &c).await;
    let done = broker
        .finish_batch(&[completed(&a), completed(&b)], &[], 1, false)
        .await
        .expect("finish");
    assert_eq!(run_ids(&done.next), std::slice::from_ref(&c));
    let done = broker
        .finish_batch(&[], &[], 1, false)
        .await
        .expect("claim again");
    assert!(done.next.is_empty(), "{:?}", done.next);
    assert_eq!(processing(&mut conn).await, std::slice::from_ref(&c));
    assert!(client.queued("q", 10).await.expect("queued").is_empty());
    let done = broker
        .finish_batch(&[completed(&c)], &[], 0, false)
        .await
        .expect("finish");
    assert_eq!(done.written, [true]);
    assert!(processing(&mut conn).await.is_empty());
    assert_eq!(counted(&client).await, (3, 0));
}

/// The idle pop's claim leaves an id this worker holds where it is (the
/// pop timed out, the held id is the list's head) and takes a second copy
/// of it out of the list (pushed twice, the pop moved the copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_pop_keeps_a_held_id_once_and_drops_a_second_copy_of_it() {
    let Setup {
        _redis,
        client,
        broker,
        mut conn,
    } = setup().await;
    let popper = BlockingPopper::new(
        &_redis.url(),
        "q",
        "w1",
        Duration::from_secs(5),
        &BrokerOptions::new(RESULT_TTL),
    )
    .expect("popper");
    let a = submit_and_claim(&client, &broker, &["1"]).await.remove(0);
    let pop = || popper.pop_and_claim(Duration::from_millis(100));
    assert_eq!(pop().await.expect("pop"), None, "nothing queued");
    assert_eq!(processing(&mut conn).await, std::slice::from_ref(&a));
    push_again(&mut conn, &a).await;
    assert_eq!(pop().await.expect("pop"), None, "a second copy is no claim");
    assert_eq!(processing(&mut conn).await, std::slice::from_ref(&a));
    assert!(client.queued("q", 10).await.expect("queued").is_empty());
    let done = broker
        .finish_batch(&[completed(&a)], &[], 0, false)
        .await
        .expect("finish");
    assert_eq!(done.written, [true]);
    assert!(processing(&mut conn).await.is_empty());
    assert_eq!(counted(&client).await, (1, 0));
}
