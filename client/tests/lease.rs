//! The queue's lease: acquire, renew, lose, release, and the fence every
//! claim of a worker with a lease carries.

mod common;
use common::raw;

use std::time::Duration;

use client::broker::{BlockingPopper, BrokerOptions, Claim, Fence, WorkerBroker};
use client::{Client, Lease, SubmitOptions, keys};

const TTL: Duration = Duration::from_secs(60);

fn holder(pid: u32, dir: &str) -> Lease {
    Lease {
        token: 0,
        pid,
        host: "host-a".into(),
        dir: dir.into(),
    }
}

/// Another database takes the lease of `q` over, with a token past `token`.
async fn take_over(conn: &mut redis::aio::MultiplexedConnection, token: u64) {
    let _: () = redis::cmd("SET")
        .arg(keys::queue_owner("q"))
        .arg(format!("{}|9|host-b|/b", token + 1))
        .query_async(conn)
        .await
        .expect("set");
}

/// The idle pop of a worker whose lease (of `token`) is no longer its own
/// moves `task`, the only queued task, and is refused in Redis: the id goes
/// back on the queue.
async fn idle_pop_gives_back(
    popper: &BlockingPopper,
    conn: &mut redis::aio::MultiplexedConnection,
    token: u64,
    task: &str,
) {
    assert_eq!(
        popper
            .pop_and_claim(Duration::from_secs(1))
            .await
            .expect("pop"),
        Some(Claim::Fenced {
            task_id: task.to_owned(),
            token
        })
    );
    assert_eq!(
        listed(conn, &keys::tasks("q")).await,
        vec![task.to_owned()],
        "back on the queue"
    );
}

/// The ids in list `key`, head first.
async fn listed(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .expect("lrange")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_lease_is_taken_with_a_fresh_token_and_refused_to_another_database() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let options = BrokerOptions::new(TTL);
    let a = WorkerBroker::new(&url, "q", "a", &options).expect("broker");
    let b = WorkerBroker::new(&url, "q", "b", &options).expect("broker");

    let first = a
        .acquire_lease(&holder(11, "/data|a/1"), TTL)
        .await
        .expect("redis")
        .expect("free: taken");
    assert_eq!((first.pid, first.dir.as_str()), (11, "/data|a/1"));
    assert!(first.token >= 1);
    let mut conn = raw(&url).await;
    let value: String = redis::cmd("GET")
        .arg(keys::queue_owner("q"))
        .query_async(&mut conn)
        .await
        .expect("get");
    assert_eq!(value, format!("{}|11|host-a|/data|a/1", first.token));
    let pttl: i64 = redis::cmd("PTTL")
        .arg(keys::queue_owner("q"))
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!(pttl > 0 && pttl <= TTL.as_millis() as i64, "{pttl}");

    // Another database: refused, told who holds it.
    let refused = b
        .acquire_lease(&holder(22, "/data/b/1"), TTL)
        .await
        .expect("redis")
        .expect_err("held by another database");
    assert_eq!(refused, first);

    // The same database again (a restart): taken, with a fresh token; the
    // old token can no longer renew.
    let again = b
        .acquire_lease(&holder(33, "/data|a/1"), TTL)
        .await
        .expect("redis")
        .expect("same database: taken");
    assert!(again.token > first.token);
    assert_eq!(again.pid, 33);
    let lost = a.renew_lease(&first, TTL).await.expect("redis");
    assert_eq!(lost, Err(Some(again.clone())));
    assert_eq!(b.renew_lease(&again, TTL).await.expect("redis"), Ok(()));

    // Gone (expired): a renewal says so, and another database may take it.
    let _: () = redis::cmd("DEL")
        .arg(keys::queue_owner("q"))
        .query_async(&mut conn)
        .await
        .expect("del");
    assert_eq!(b.renew_lease(&again, TTL).await.expect("redis"), Err(None));
    let other = a
        .acquire_lease(&holder(44, "/data/c/1"), TTL)
        .await
        .expect("redis")
        .expect("expired: taken");
    assert!(
        other.token > again.token,
        "the fence counter never goes back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_deletes_only_its_own_lease_once_no_live_worker_is_registered() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let options = BrokerOptions::new(TTL);
    let a = WorkerBroker::new(&url, "q", "a", &options).expect("broker");
    let lease = a
        .acquire_lease(&holder(1, "/a"), TTL)
        .await
        .expect("redis")
        .expect("taken");
    let client = Client::connect(&url).await.expect("connect");
    let newer = Lease {
        token: lease.token + 1,
        ..lease.clone()
    };
    a.release_lease(&newer).await.expect("release");
    assert_eq!(
        client.queue_leases(&["q"]).await.expect("read"),
        vec![Some(lease.clone())],
        "another token does not release it"
    );
    let elsewhere = Lease {
        dir: "/elsewhere".into(),
        ..lease.clone()
    };
    a.release_lease(&elsewhere).await.expect("release");
    assert_eq!(
        client.queue_leases(&["q"]).await.expect("read"),
        vec![Some(lease.clone())],
        "another holder's lease with the same token does not release it"
    );
    a.beat(TTL, false).await.expect("beat");
    a.release_lease(&lease).await.expect("release");
    assert_eq!(
        client.queue_leases(&["q"]).await.expect("read"),
        vec![Some(lease.clone())],
        "a registered worker still serves the queue"
    );
    // A killed worker's registration, not yet reaped: its heartbeat key is
    // gone, and it holds the lease back from nobody (a standby takes over
    // at once after a clean stop, not once the lease expires).
    let mut conn = raw(&url).await;
    let _: () = redis::cmd("SADD")
        .arg(keys::workers("q"))
        .arg("killed")
        .query_async(&mut conn)
        .await
        .expect("sadd");
    a.deregister().await.expect("deregister");
    a.release_lease(&lease).await.expect("release");
    assert_eq!(client.queue_leases(&["q"]).await.expect("read"), vec![None]);
}

/// Only the live workers of the releasing worker's own process (its ids'
/// `<pid>-` prefix) hold a release back: an earlier run's worker whose
/// heartbeat is still live (killed moments before this run took the lease
/// over) does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_live_worker_of_the_same_process_holds_a_release_back() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let options = BrokerOptions::new(TTL);
    let leaving = WorkerBroker::new(&url, "q", "100-leaving", &options).expect("broker");
    let lease = leaving
        .acquire_lease(&holder(100, "/a"), TTL)
        .await
        .expect("redis")
        .expect("taken");
    let client = Client::connect(&url).await.expect("connect");
    for other in ["99-earlier-run", "1000-other-pid"] {
        let broker = WorkerBroker::new(&url, "q", other, &options).expect("broker");
        broker.beat(TTL, false).await.expect("beat");
    }
    let sibling = WorkerBroker::new(&url, "q", "100-sibling", &options).expect("broker");
    sibling.beat(TTL, false).await.expect("beat");
    leaving.release_lease(&lease).await.expect("release");
    assert_eq!(
        client.queue_leases(&["q"]).await.expect("read"),
        vec![Some(lease.clone())],
        "a worker of the same process still serves the queue"
    );
    sibling.deregister().await.expect("deregister");
    leaving.release_lease(&lease).await.expect("release");
    assert_eq!(
        client.queue_leases(&["q"]).await.expect("read"),
        vec![None],
        "the other processes' live workers hold nothing back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_with_a_stale_token_is_refused_in_redis_and_the_task_stays_queued() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let fence = Fence::new();
    let mut fenced_options = BrokerOptions::new(TTL);
    fenced_options.fence = Some(fence.clone());
    let worker = WorkerBroker::new(&url, "q", "w", &fenced_options).expect("broker");
    let popper = BlockingPopper::new(&url, "q", "w", Duration::from_secs(1), &fenced_options)
        .expect("popper");
    let lease = worker
        .acquire_lease(&holder(1, "/a"), TTL)
        .await
        .expect("redis")
        .expect("taken");
    let client = Client::connect(&url).await.expect("connect");
    let first = client
        .submit("q", "1", &SubmitOptions::default())
        .await
        .expect("submit");

    // No token yet (0): refused, nothing moved.
    assert_eq!(
        worker.pop_and_claim().await.expect("claim"),
        Some(Claim::Fenced {
            task_id: String::new(),
            token: 0
        })
    );
    // Our token: claimed.
    fence.set(Some(&lease));
    match worker.pop_and_claim().await.expect("claim") {
        Some(Claim::Run(task)) => assert_eq!(task.task_id, first),
        other => panic!("expected a run, got {other:?}"),
    }

    // Another database took the lease over (ours expired): every way of
    // claiming is refused, and the ids go back to the queue untouched.
    let mut conn = raw(&url).await;
    take_over(&mut conn, lease.token).await;
    let second = client
        .submit("q", "2", &SubmitOptions::default())
        .await
        .expect("submit");
    let outcome = client::Outcome::Completed(client::TaskOutput {
        task_id: first.clone(),
        output: "1".into(),
        printed: String::new(),
        run_time: None,
    });
    let (written, next) = worker.finish_and_next(&outcome).await.expect("finish");
    assert!(
        written,
        "the result of a task claimed under the lease is kept"
    );
    // Each refusal names the token its claim carried.
    let fenced = |task_id: &str| Claim::Fenced {
        task_id: task_id.to_owned(),
        token: lease.token,
    };
    assert_eq!(next, Some(fenced("")));
    idle_pop_gives_back(&popper, &mut conn, lease.token, &second).await;
    assert_eq!(
        worker.processing().await.expect("processing"),
        Vec::<String>::new()
    );
    let status: String = redis::cmd("HGET")
        .arg(keys::task_details(&second))
        .arg("status")
        .query_async(&mut conn)
        .await
        .expect("hget");
    assert_eq!(status, "pending");
    // The batched claim and the batched finish's next claim are fenced too:
    // nothing moves.
    assert_eq!(
        worker.claim_batch(8).await.expect("claim batch"),
        vec![fenced("")]
    );
    let done = worker
        .finish_batch(&[], &[], 8, false)
        .await
        .expect("finish batch");
    assert_eq!(done.next, vec![fenced("")]);
    assert_eq!(
        listed(&mut conn, &keys::tasks("q")).await,
        vec![second.clone()],
        "still queued, untouched"
    );

    // A worker without a lease (a third party's) is not fenced.
    let free = WorkerBroker::new(&url, "q", "free", &BrokerOptions::new(TTL)).expect("broker");
    match free.pop_and_claim().await.expect("claim") {
        Some(Claim::Run(task)) => assert_eq!(task.task_id, second),
        other => panic!("expected a run, got {other:?}"),
    }

    // A claimed task that may not run (the lease was lost before its
    // script started) is given back: pending, at the head of the queue.
    free.give_back(&second).await.expect("give back");
    let status: String = redis::cmd("HGET")
        .arg(keys::task_details(&second))
        .arg("status")
        .query_async(&mut conn)
        .await
        .expect("hget");
    assert_eq!(status, "pending");
    assert_eq!(
        free.processing().await.expect("processing"),
        Vec::<String>::new()
    );
    match free.pop_and_claim().await.expect("claim") {
        Some(Claim::Run(task)) => assert_eq!(task.task_id, second),
        other => panic!("expected the given-back task again, got {other:?}"),
    }
}

/// A worker that lost its lease holding a claimed task: its idle pop moves
/// a second copy of that task's id (pushed twice) and takes the copy out
/// again; the task in hand stays, once, and nothing goes back to the queue.
/// A worker `w` of queue `q` holding the lease, its claims fenced by its
/// token, with its idle popper.
async fn fenced_holder(url: &str) -> (WorkerBroker, BlockingPopper, Lease) {
    let fence = Fence::new();
    let mut options = BrokerOptions::new(TTL);
    options.fence = Some(fence.clone());
    let worker = WorkerBroker::new(url, "q", "w", &options).expect("broker");
    let popper =
        BlockingPopper::new(url, "q", "w", Duration::from_secs(5), &options).expect("popper");
    let lease = worker
        .acquire_lease(&holder(1, "/a"), TTL)
        .await
        .expect("redis")
        .expect("taken");
    fence.set(Some(&lease));
    (worker, popper, lease)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_idle_pop_drops_a_second_copy_of_a_held_id() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let (worker, popper, lease) = fenced_holder(&url).await;
    let client = Client::connect(&url).await.expect("connect");
    let id = client
        .submit("q", "1", &SubmitOptions::default())
        .await
        .expect("submit");
    match worker.pop_and_claim().await.expect("claim") {
        Some(Claim::Run(task)) => assert_eq!(task.task_id, id),
        other => panic!("expected a run, got {other:?}"),
    }
    let mut conn = raw(&url).await;
    take_over(&mut conn, lease.token).await;
    let _: () = redis::cmd("LPUSH")
        .arg(keys::tasks("q"))
        .arg(&id)
        .query_async(&mut conn)
        .await
        .expect("lpush");
    assert_eq!(
        popper
            .pop_and_claim(Duration::from_secs(1))
            .await
            .expect("pop"),
        None
    );
    assert_eq!(
        listed(&mut conn, &keys::processing("q", "w")).await,
        std::slice::from_ref(&id)
    );
    assert!(listed(&mut conn, &keys::tasks("q")).await.is_empty());
}

/// Redis restarted empty: the lease and its fence counter are gone. The
/// next holder's token is past every token given before, so a worker cut
/// off with an old token cannot renew the new lease (nor pass its fence:
/// a claim compares the token as a renewal does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_given_after_redis_restarted_empty_is_new_and_the_old_one_renews_nothing() {
    let mut redis = testkit::RedisServer::start();
    let url = redis.url();
    let options = BrokerOptions::new(TTL);
    let a = WorkerBroker::new(&url, "q", "a", &options).expect("broker");
    let b = WorkerBroker::new(&url, "q", "b", &options).expect("broker");
    let old = a
        .acquire_lease(&holder(1, "/data/a"), TTL)
        .await
        .expect("redis")
        .expect("taken");
    redis.kill();
    redis.restart();
    let mut taken = None;
    for _ in 0..100 {
        match b.acquire_lease(&holder(2, "/data/b"), TTL).await {
            Ok(lease) => {
                taken = Some(lease.expect("free after the restart: taken"));
                break;
            }
            // The connection the restart cut: asked again.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let taken = taken.expect("the lease taken after the restart");
    assert!(
        taken.token > old.token,
        "token {} given again after {}",
        taken.token,
        old.token
    );
    let mut renewed = a.renew_lease(&old, TTL).await;
    if renewed.is_err() {
        renewed = a.renew_lease(&old, TTL).await;
    }
    assert_eq!(
        renewed.expect("redis"),
        Err(Some(taken.clone())),
        "the old token renews nothing"
    );
    // Nor does it pass the fence: a claim carrying it is refused in Redis
    // and the task stays queued.
    let fence = Fence::new();
    fence.set(Some(&old));
    let mut fenced_options = BrokerOptions::new(TTL);
    fenced_options.fence = Some(fence);
    let cut_off = WorkerBroker::new(&url, "q", "a", &fenced_options).expect("broker");
    let client = Client::connect(&url).await.expect("connect");
    let id = client
        .submit("q", "1", &SubmitOptions::default())
        .await
        .expect("submit");
    assert_eq!(
        cut_off.pop_and_claim().await.expect("claim"),
        Some(Claim::Fenced {
            task_id: String::new(),
            token: old.token
        })
    );
    let mut conn = raw(&url).await;
    let queued: Vec<String> = redis::cmd("LRANGE")
        .arg(keys::tasks("q"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("lrange");
    assert_eq!(queued, vec![id], "still queued, untouched");
}

/// A fence counter restored behind (an older snapshot, a lagging replica
/// promoted) gives a token number again, here to another database while
/// the first holder is cut off. The first holder renews nothing, releases
/// nothing and claims nothing with it: each compares the whole lease, whose
/// pid, host and directory differ, not the token alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_given_again_by_a_counter_restored_behind_passes_no_check_of_the_first_holder() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let (a, a_popper, first) = fenced_holder(&url).await;
    let fence_b = Fence::new();
    let mut options = BrokerOptions::new(TTL);
    options.fence = Some(fence_b.clone());
    let b = WorkerBroker::new(&url, "q", "b", &options).expect("broker");
    // The restore: the lease gone, the counter one step behind it.
    let mut conn = raw(&url).await;
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg(keys::queue_owner("q"))
        .ignore()
        .cmd("SET")
        .arg(keys::queue_fence("q"))
        .arg(first.token - 1)
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("restore");
    let second = b
        .acquire_lease(&holder(2, "/b"), TTL)
        .await
        .expect("redis")
        .expect("free after the restore: taken");
    fence_b.set(Some(&second));
    assert_eq!(second.token, first.token, "the same token given again");
    assert_ne!(second, first);
    // The first holder's renewal fails and names the new holder.
    assert_eq!(
        a.renew_lease(&first, TTL).await.expect("redis"),
        Err(Some(second.clone()))
    );
    // Its claims are refused, every way, and the task stays for the holder.
    let client = Client::connect(&url).await.expect("connect");
    let task = client
        .submit("q", "40 + 2", &SubmitOptions::default())
        .await
        .expect("submit");
    assert_eq!(
        a.claim_batch(8).await.expect("claim batch"),
        vec![Claim::Fenced {
            task_id: String::new(),
            token: first.token
        }]
    );
    idle_pop_gives_back(&a_popper, &mut conn, first.token, &task).await;
    // Its release leaves the new holder's lease alone.
    a.release_lease(&first).await.expect("release");
    assert_eq!(
        client.queue_leases(&["q"]).await.expect("read"),
        vec![Some(second.clone())]
    );
    // The new holder renews and claims.
    assert_eq!(b.renew_lease(&second, TTL).await.expect("redis"), Ok(()));
    match b.claim_batch(8).await.expect("claim batch").as_slice() {
        [Claim::Run(run)] => assert_eq!(run.task_id, task),
        other => panic!("expected the task to run, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_claim_gives_back_a_task_pushed_processing_without_a_worker() {
    // No worker holds such a task: the lease's holder ends it as invalid.
    // A worker that lost the lease must put it back, not drop it.
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let (_worker, popper, lease) = fenced_holder(&url).await;
    let mut conn = raw(&url).await;
    take_over(&mut conn, lease.token).await;
    let _: () = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(keys::task_details("orphan"))
        .arg("script")
        .arg("1")
        .arg("status")
        .arg("processing")
        .ignore()
        .cmd("LPUSH")
        .arg(keys::tasks("q"))
        .arg("orphan")
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("push");
    // The idle pop moves the id before its claim finds the lease gone.
    assert!(
        matches!(
            popper
                .pop_and_claim(Duration::from_secs(1))
                .await
                .expect("pop"),
            Some(Claim::Fenced { .. })
        ),
        "a worker that lost the lease claims nothing"
    );
    assert_eq!(listed(&mut conn, &keys::tasks("q")).await, ["orphan"]);
    assert!(
        listed(&mut conn, &keys::processing("q", "w"))
            .await
            .is_empty()
    );
}

/// Whether `key` exists.
async fn exists(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(conn)
        .await
        .expect("exists")
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_learns_the_earlier_run_it_took_the_lease_from_and_forgets_only_its_silent_workers()
 {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let options = BrokerOptions::new(TTL);
    let first = WorkerBroker::new(&url, "q", "10-aaaaaaaaaaaa", &options).expect("broker");
    let (lease, previous) = first
        .acquire_lease_after(&holder(10, "/data/a"), TTL)
        .await
        .expect("redis")
        .expect("free: taken");
    assert_eq!(previous, None, "the lease was free");

    // The run of pid 10 dies; pid 11 opens the same database and takes the
    // lease over, learning whose it was.
    let second = WorkerBroker::new(&url, "q", "11-bbbbbbbbbbbb", &options).expect("broker");
    let (_, previous) = second
        .acquire_lease_after(&holder(11, "/data/a"), TTL)
        .await
        .expect("redis")
        .expect("same database: taken");
    let previous = previous.expect("the earlier run's lease");
    assert_eq!(previous, lease);
    assert!(previous.predecessor_of(&holder(11, "/data/a")));
    assert!(
        !previous.predecessor_of(&holder(10, "/data/a")),
        "the same process is no predecessor of itself"
    );
    assert!(
        !previous.predecessor_of(&holder(11, "/data/b")),
        "another database is no predecessor"
    );

    // Registered workers with live heartbeats: two of pid 10, one of pid
    // 100 (its id starts with "10" too) and the new one of pid 11.
    let workers = ["10-aaaaaaaaaaaa", "10-cccccccccccc", "100-dddddddddddd"];
    let mut conn = raw(&url).await;
    for w in workers {
        let _: () = redis::pipe()
            .cmd("SADD")
            .arg(keys::workers("q"))
            .arg(w)
            .ignore()
            .cmd("SET")
            .arg(keys::heartbeat("q", w))
            .arg("1")
            .arg("PX")
            .arg(60_000)
            .ignore()
            .query_async(&mut conn)
            .await
            .expect("register");
    }
    second.beat(TTL, false).await.expect("beat");

    let mut beats = second.heartbeats_of(10).await.expect("heartbeats");
    beats.sort();
    assert_eq!(
        beats,
        [
            ("10-aaaaaaaaaaaa".to_owned(), "1".to_owned()),
            ("10-cccccccccccc".to_owned(), "1".to_owned())
        ]
    );
    // One of them beats meanwhile: it is alive and keeps its heartbeat.
    let _: () = redis::cmd("SET")
        .arg(keys::heartbeat("q", "10-cccccccccccc"))
        .arg("2")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .expect("beat");
    assert_eq!(
        second.forget_unchanged(&beats).await.expect("forget"),
        (vec!["10-aaaaaaaaaaaa".to_owned()], 1)
    );
    assert!(!exists(&mut conn, &keys::heartbeat("q", "10-aaaaaaaaaaaa")).await);
    assert!(exists(&mut conn, &keys::heartbeat("q", "10-cccccccccccc")).await);
    assert!(exists(&mut conn, &keys::heartbeat("q", "100-dddddddddddd")).await);
    assert!(exists(&mut conn, &keys::heartbeat("q", "11-bbbbbbbbbbbb")).await);
    assert_eq!(
        second.forget_unchanged(&beats).await.expect("again"),
        (Vec::new(), 1),
        "a key gone counts in neither"
    );

    // The next reap resolves the forgotten ones at once.
    second.beat(TTL, true).await.expect("beat and reap");
    let mut left: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::workers("q"))
        .query_async(&mut conn)
        .await
        .expect("smembers");
    left.sort();
    assert_eq!(
        left,
        ["10-cccccccccccc", "100-dddddddddddd", "11-bbbbbbbbbbbb"]
    );
}
