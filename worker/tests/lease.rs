//! The queue's lease as a worker holds it: refusal, renewal, take-over,
//! standby, and the partition rule (stop before the lease can expire).

mod common;

use std::time::{Duration, Instant};

use client::{Client, Lease, SubmitOptions, keys};
use common::*;
use worker::{WorkerConfig, WorkerState};

const WAIT: Duration = Duration::from_secs(30);

fn holder(pid: u32, host: &str, dir: &str) -> Lease {
    Lease {
        token: 0,
        pid,
        host: host.into(),
        dir: dir.into(),
    }
}

/// A worker on `queue` with a fresh database and a lease as `lease`.
fn leased_worker(url: &str, queue: &str, lease: Lease, standby: bool) -> TestWorker {
    leased_worker_with(url, queue, lease, standby, fast_options())
}

/// [`leased_worker`] with `options`.
fn leased_worker_with(
    url: &str,
    queue: &str,
    lease: Lease,
    standby: bool,
    options: worker::WorkerOptions,
) -> TestWorker {
    TestWorker::start_fresh(
        leased_config(url, queue, lease, standby),
        options,
        slow_limits(),
    )
}

/// The config of a worker on `queue` with a lease as `lease`.
fn leased_config(url: &str, queue: &str, lease: Lease, standby: bool) -> WorkerConfig {
    let mut config = WorkerConfig::new(url, queue);
    config.lease = Some(lease);
    config.standby = standby;
    config.shutdown_grace = Duration::from_millis(200);
    config
}

/// Options whose lease lives three beats, as with the defaults (5 s beats,
/// a 15 s lease that the worker gives up by its own clock 10 s after its
/// last renewal), on a test's time scale.
fn three_beat_lease() -> worker::WorkerOptions {
    let mut options = fast_options();
    options.heartbeat_interval = Duration::from_millis(300);
    options.heartbeat_ttl = Duration::from_millis(900);
    options
}

/// Watches `worker` for `long`: every reason it gave for losing its lease
/// meanwhile.
async fn lease_losses_within(worker: &TestWorker, long: Duration) -> Vec<String> {
    let until = Instant::now() + long;
    let mut seen = Vec::new();
    while Instant::now() < until {
        if let WorkerState::LeaseLost(why) = worker.status.state()
            && !seen.contains(&why)
        {
            seen.push(why);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    seen
}

/// Waits until a renewal of `queue`'s lease has just landed: its TTL in
/// Redis jumped back up.
async fn just_renewed(url: &str, queue: &str) {
    async fn pttl(conn: &mut redis::aio::MultiplexedConnection, queue: &str) -> i64 {
        redis::cmd("PTTL")
            .arg(keys::queue_owner(queue))
            .query_async(conn)
            .await
            .expect("pttl")
    }
    let mut conn = raw(url).await;
    let mut last = pttl(&mut conn, queue).await;
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "the lease was never renewed");
        let now = pttl(&mut conn, queue).await;
        if now > last + 100 {
            return;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs `40 + 2` on `queue` through a fresh client.
async fn forty_two(url: &str, queue: &str) {
    let client = Client::connect(url).await.expect("connect");
    let out = tokio::time::timeout(
        WAIT,
        client.run_with(
            queue,
            "40 + 2",
            &SubmitOptions::default(),
            client::OnDrop::Cancel,
        ),
    )
    .await
    .expect("run in time")
    .expect("run");
    assert!(
        matches!(out, client::Outcome::Completed(ref o) if o.output == "42"),
        "{out:?}"
    );
}

async fn lease_of(conn: &mut redis::aio::MultiplexedConnection, queue: &str) -> Option<Lease> {
    let value: Option<String> = redis::cmd("GET")
        .arg(keys::queue_owner(queue))
        .query_async(conn)
        .await
        .expect("get");
    value.map(|v| Lease::parse(&v).expect("a lease"))
}

/// Waits until `worker` has seen that host-b holds its lease: it waits to
/// take it back, claiming nothing meanwhile.
async fn seen_new_holder(worker: &TestWorker) {
    until("the worker to see the new holder", WAIT, || async {
        match worker.status.state() {
            WorkerState::LeaseLost(why) if why.contains("host-b") => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(!worker.handle.is_finished(), "it waits, it does not stop");
}

/// Another host (pid 22 on host-b) takes `queue`'s lease in Redis, for
/// `ttl_ms` (`None`: no expiry).
async fn host_b_takes(
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
    ttl_ms: Option<u64>,
) {
    let mut set = redis::cmd("SET");
    set.arg(keys::queue_owner(queue))
        .arg(format!("{}|22|host-b|/data/b", u32::MAX));
    if let Some(ttl) = ttl_ms {
        set.arg("PX").arg(ttl);
    }
    let _: () = set.query_async(conn).await.expect("set");
}

async fn running(worker: &TestWorker) {
    until("the worker to run", WAIT, || async {
        (worker.status.state() == WorkerState::Running).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_database_is_refused_naming_the_holder_and_a_clean_stop_frees_the_lease() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let first = leased_worker(&url, "shared", holder(11, "host-a", "/data/a"), false);
    running(&first).await;
    let mut conn = raw(&url).await;
    let held = lease_of(&mut conn, "shared").await.expect("held");
    assert_eq!(
        (held.pid, held.host.as_str(), held.dir.as_str()),
        (11, "host-a", "/data/a")
    );

    let intruder = leased_worker(&url, "shared", holder(22, "host-b", "/data/b"), false);
    let refused = tokio::time::timeout(WAIT, intruder.handle)
        .await
        .expect("refused at once")
        .expect("join")
        .expect_err("refused");
    let message = refused.to_string();
    assert!(
        message.contains("pid 11")
            && message.contains("host host-a")
            && message.contains("/data/a"),
        "{message}"
    );

    // Renewed with every beat: after several TTLs it is still the same lease.
    tokio::time::sleep(fast_options().heartbeat_ttl * 3).await;
    assert_eq!(lease_of(&mut conn, "shared").await, Some(held));
    first.stop().await;
    assert_eq!(
        lease_of(&mut conn, "shared").await,
        None,
        "released at a clean stop"
    );
}

/// A worker whose lease another took (after an outage longer than the TTL,
/// a standby on another host took over) claims nothing more and does not
/// stop: it waits, naming the holder, and takes the lease back with a fresh
/// token once the other's expires, then runs what was queued meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_was_taken_over_claims_nothing_more_and_takes_it_back_once_free() {
    // As after an outage longer than the TTL, in which another host took it.
    taken_over_then_free("taken", |_| u64::from(u32::MAX)).await;
}

/// A fence counter restored behind (an older snapshot, a lagging replica
/// promoted) gave another host the token number this worker holds: the
/// worker renews nothing and claims nothing with it (the whole lease is
/// compared, not the token alone), and takes the queue back with a fresh
/// token once the other's lease is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_token_number_another_host_was_given_again_claims_nothing_more() {
    taken_over_then_free("again", |mine| mine).await;
}

/// A worker holding `queue`'s lease sees host-b take it over with the token
/// `other_token(its own)`: it waits, claiming nothing and leaving host-b's
/// lease alone, until that lease is gone; then it takes the lease back with
/// a fresh token and runs the task queued meanwhile.
async fn taken_over_then_free(queue: &str, other_token: fn(u64) -> u64) {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let first = leased_worker(&url, queue, holder(11, "host-a", "/data/a"), false);
    running(&first).await;
    let mut conn = raw(&url).await;
    let old = lease_of(&mut conn, queue).await.expect("held");
    let other = format!("{}|22|host-b|/data/b", other_token(old.token));
    let _: () = redis::cmd("SET")
        .arg(keys::queue_owner(queue))
        .arg(&other)
        .query_async(&mut conn)
        .await
        .expect("set");
    let client = Client::connect(&url).await.expect("connect");
    let id = client
        .submit(queue, "40 + 2", &SubmitOptions::default())
        .await
        .expect("submit");
    let shown = until("the lease lost state", WAIT, || async {
        match first.status.state() {
            WorkerState::LeaseLost(why) if why.contains("pid 22") => Some(why),
            _ => None,
        }
    })
    .await;
    assert!(
        shown.contains("host-b") && shown.contains("taking it back"),
        "{shown}"
    );
    // Several beats later: still waiting, not stopped, the task not claimed.
    tokio::time::sleep(fast_options().heartbeat_ttl).await;
    assert!(
        !first.handle.is_finished(),
        "the worker waits, it does not stop"
    );
    assert!(
        matches!(first.status.state(), WorkerState::LeaseLost(_)),
        "{:?}",
        first.status.state()
    );
    assert_eq!(
        hget(&mut conn, &id, "status").await.as_deref(),
        Some("pending")
    );
    assert_eq!(
        lease_of(&mut conn, queue).await.map(|l| l.to_string()),
        Some(other),
        "the other host's lease is left alone"
    );
    // The other's lease expires: taken back with a fresh token, and the
    // queued task runs.
    let _: () = redis::cmd("DEL")
        .arg(keys::queue_owner(queue))
        .query_async(&mut conn)
        .await
        .expect("del");
    let outcome = client.wait(&id, WAIT).await.expect("the result");
    assert!(
        matches!(outcome, client::Outcome::Completed(ref o) if o.output == "42"),
        "{outcome:?}"
    );
    let again = lease_of(&mut conn, queue).await.expect("held again");
    assert_eq!(again.pid, 11);
    assert!(
        again.token > old.token,
        "a fresh token: {again:?} after {old:?}"
    );
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_waits_naming_the_holder_then_takes_over_with_a_fresh_token() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let first = leased_worker(&url, "standby", holder(11, "host-a", "/data/a"), false);
    running(&first).await;
    let mut conn = raw(&url).await;
    let old = lease_of(&mut conn, "standby").await.expect("held");
    let second = leased_worker(&url, "standby", holder(22, "host-b", "/data/b"), true);
    let shown = until("the standby state", WAIT, || async {
        match second.status.state() {
            WorkerState::Standby(why) => Some(why),
            _ => None,
        }
    })
    .await;
    assert!(
        shown.contains("pid 11") && shown.contains("host-a"),
        "{shown}"
    );
    // The first stops; tasks queued meanwhile run on the standby.
    first.stop().await;
    let client = Client::connect(&url).await.expect("connect");
    let out = tokio::time::timeout(
        WAIT,
        client.run_with(
            "standby",
            "40 + 2",
            &SubmitOptions::default(),
            client::OnDrop::Cancel,
        ),
    )
    .await
    .expect("run in time")
    .expect("run");
    assert!(
        matches!(out, client::Outcome::Completed(ref o) if o.output == "42"),
        "{out:?}"
    );
    let new = lease_of(&mut conn, "standby").await.expect("held");
    assert_eq!((new.pid, new.host.as_str()), (22, "host-b"));
    assert!(
        new.token > old.token,
        "a fresh token: {new:?} after {old:?}"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_worker_stops_before_its_lease_expires_and_cuts_its_script() {
    capture_log();
    let redis = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(redis.port());
    let url = redis.url();
    let worker = leased_worker(
        &proxy.redis_url(),
        "cut",
        holder(11, "host-a", "/data/a"),
        false,
    );
    running(&worker).await;
    let client = Client::connect(&url).await.expect("connect");
    let id = client
        .submit("cut", &slow_script("m"), &SubmitOptions::default())
        .await
        .expect("submit");
    let mut conn = raw(&url).await;
    // Its script runs, not only its claim made in Redis (the claim's reply
    // may still be on its way: held by the cut, the task is never run).
    until("the script to run", WAIT, || async {
        (!lines(log::Level::Debug, &format!("task {id} running")).is_empty()).then_some(())
    })
    .await;

    proxy.freeze();
    // Watch both from this side of the cut: the worker's status, and the
    // lease key in Redis.
    let mut stopped = None;
    let mut expired = None;
    let deadline = Instant::now() + WAIT;
    while stopped.is_none() || expired.is_none() {
        assert!(
            Instant::now() < deadline,
            "stopped {stopped:?}, expired {expired:?}"
        );
        if stopped.is_none()
            && let WorkerState::LeaseLost(why) = worker.status.state()
        {
            stopped = Some((Instant::now(), why));
        }
        if expired.is_none() && lease_of(&mut conn, "cut").await.is_none() {
            expired = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (stopped_at, why) = stopped.expect("stopped");
    assert!(
        why.contains("queue cut") && why.contains("not renewed"),
        "{why}"
    );
    assert!(
        stopped_at < expired.expect("expired"),
        "the worker stopped only after its lease had expired"
    );
    // Another host takes the queue over; a task queued now is not taken by
    // the cut-off worker, even once the cut heals.
    host_b_takes(&mut conn, "cut", None).await;
    let later = client
        .submit("cut", "1", &SubmitOptions::default())
        .await
        .expect("submit");
    proxy.thaw();
    seen_new_holder(&worker).await;
    assert_eq!(
        hget(&mut conn, &later, "status").await.as_deref(),
        Some("pending")
    );
    // The cut script ended (cancelled, naming the lost lease) and kept no
    // write.
    until_status(&conn, &id, "error", WAIT).await;
    let error = hget(&mut conn, &id, "error").await.unwrap_or_default();
    assert!(error.contains("lease of queue cut lost"), "{error}");
}

/// The cut falls between Redis claiming a task for the worker and the
/// claim's reply reaching it: the task is `processing` by this worker in
/// Redis, and never started here. Once the cut heals, the worker (its lease
/// lost) gives it back to the head of the queue as `pending`, for the
/// lease's next holder, and never runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_claimed_as_the_partition_began_goes_back_to_the_queue_unrun() {
    capture_log();
    let redis = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(redis.port());
    let url = redis.url();
    // Its blocking pop waits long enough to take the task sent below; beats
    // of 1 s and a lease of 3 s make it stop itself 2 s after its last
    // renewal, leaving room for the task's claim and the full cut first.
    let mut options = fast_options();
    options.pop_timeout = WAIT;
    options.heartbeat_interval = Duration::from_secs(1);
    options.heartbeat_ttl = Duration::from_secs(3);
    let worker = leased_worker_with(
        &proxy.redis_url(),
        "held",
        holder(11, "host-a", "/data/a"),
        false,
        options,
    );
    running(&worker).await;
    // One task first: Redis then has the claim sent behind each blocking
    // pop in its script cache (else it answers that claim `NOSCRIPT`, and
    // the task stays `pending` in the worker's list).
    forty_two(&url, "held").await;
    until("the worker's next blocking pop", WAIT, || async {
        let mut conn = raw(&url).await;
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .expect("client list");
        clients.contains("cmd=blmove").then_some(())
    })
    .await;
    let client = Client::connect(&url).await.expect("connect");
    // Redis acts on every request; the worker hears nothing back.
    proxy.freeze_replies();
    let id = client
        .submit("held", &slow_script("m"), &SubmitOptions::default())
        .await
        .expect("submit");
    let mut conn = raw(&url).await;
    until_status(&conn, &id, "processing", WAIT).await;
    proxy.freeze();
    until("the worker to stop for its lease", WAIT, || async {
        matches!(worker.status.state(), WorkerState::LeaseLost(_)).then_some(())
    })
    .await;
    host_b_takes(&mut conn, "held", None).await;
    proxy.thaw();
    seen_new_holder(&worker).await;
    until_status(&conn, &id, "pending", WAIT).await;
    let queued: Vec<String> = redis::cmd("LRANGE")
        .arg(keys::tasks("held"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("lrange");
    assert_eq!(queued, std::slice::from_ref(&id), "back in the queue, once");
    assert!(
        keys(&mut conn, &keys::processing("held", "*"))
            .await
            .is_empty(),
        "no processing list holds it"
    );
    // Never run here, nor counted (the first task is).
    assert!(lines(log::Level::Debug, &format!("task {id} running")).is_empty());
    assert_eq!(worker.status.counts(), (1, 0));
    assert_eq!(hget(&mut conn, &id, "workerId").await, None);
}

/// Redis restarts without the worker's user (its ACL lost, or a password
/// changed meanwhile): the lease is lost, and the row says what keeps the
/// worker from taking it again, the refused password, until it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lost_to_a_refused_password_says_so_and_is_taken_again_once_it_is_accepted() {
    let mut redis = testkit::RedisServer::start();
    let port = redis.port();
    let url = acl_user(port, Some("*"));
    let worker = leased_worker(&url, "pw", holder(11, "host-a", "/data/a"), false);
    running(&worker).await;
    redis.kill();
    redis.restart();
    until("the row to name the password", WAIT, || async {
        match worker.status.state() {
            WorkerState::LeaseLost(why) if why.contains("redis refuses the password") => Some(()),
            _ => None,
        }
    })
    .await;
    acl_user(port, Some("*"));
    running(&worker).await;
    forty_two(&redis.url(), "pw").await;
}

/// A `--standby` worker that lost its lease to another host waits,
/// `Standby`; Redis back without its user: the row says the password is
/// refused (`Reconnecting`), not who held the lease before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_whose_redis_refuses_its_password_says_so_while_it_waits() {
    let mut redis = testkit::RedisServer::start();
    let port = redis.port();
    let url = acl_user(port, Some("*"));
    let worker = leased_worker(&url, "sb", holder(11, "host-a", "/data/a"), true);
    running(&worker).await;
    let mut conn = raw(&redis.url()).await;
    host_b_takes(&mut conn, "sb", Some(60_000)).await;
    until("the worker to wait as a standby", WAIT, || async {
        matches!(worker.status.state(), WorkerState::Standby(why) if why.contains("host-b"))
            .then_some(())
    })
    .await;
    redis.kill();
    redis.restart();
    until("the row to name the password", WAIT, || async {
        match worker.status.state() {
            WorkerState::Reconnecting(why) if why.contains("redis refuses the password") => {
                Some(())
            }
            _ => None,
        }
    })
    .await;
    acl_user(port, Some("*"));
    running(&worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_vanished_takes_it_again_with_a_fresh_token_and_runs_on() {
    // As after a Redis restart that lost the key: nobody else holds it.
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let worker = leased_worker(&url, "again", holder(11, "host-a", "/data/a"), false);
    running(&worker).await;
    let mut conn = raw(&url).await;
    let old = lease_of(&mut conn, "again").await.expect("held");
    let _: () = redis::cmd("DEL")
        .arg(keys::queue_owner("again"))
        .query_async(&mut conn)
        .await
        .expect("del");
    let new = until("the lease taken again", WAIT, || {
        let mut conn = conn.clone();
        async move { lease_of(&mut conn, "again").await }
    })
    .await;
    assert!(new.token > old.token, "{new:?} after {old:?}");
    assert_eq!((new.pid, new.dir.as_str()), (11, "/data/a"));
    let client = Client::connect(&url).await.expect("connect");
    let out = tokio::time::timeout(
        WAIT,
        client.run_with(
            "again",
            "40 + 2",
            &SubmitOptions::default(),
            client::OnDrop::Cancel,
        ),
    )
    .await
    .expect("run in time")
    .expect("run");
    assert!(
        matches!(out, client::Outcome::Completed(ref o) if o.output == "42"),
        "{out:?}"
    );
    running(&worker).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_worker_gives_back_the_tasks_of_its_batch_it_never_started() {
    let redis = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(redis.port());
    let url = redis.url();
    // Queued before the worker starts, so its first claim takes them all
    // as one batch: the slow one runs, the three behind it are held.
    let client = Client::connect(&url).await.expect("connect");
    let slow = client
        .submit("batch", &slow_script("m"), &SubmitOptions::default())
        .await
        .expect("submit");
    let mut behind = Vec::new();
    for n in 0..3 {
        let script = format!("db::insert({n})");
        let id = client
            .submit("batch", &script, &SubmitOptions::default())
            .await
            .expect("submit");
        behind.push(id);
    }
    let worker = leased_worker(
        &proxy.redis_url(),
        "batch",
        holder(11, "host-a", "/data/a"),
        false,
    );
    let mut conn = raw(&url).await;
    until_status(&conn, &slow, "processing", WAIT).await;
    for id in &behind {
        assert_eq!(
            hget(&mut conn, id, "status").await.as_deref(),
            Some("processing"),
            "held in the batch"
        );
    }

    proxy.freeze();
    until("the lease to be lost", WAIT, || async {
        matches!(worker.status.state(), WorkerState::LeaseLost(_)).then_some(())
    })
    .await;
    // Another host holds the queue by the time the cut heals.
    host_b_takes(&mut conn, "batch", None).await;
    proxy.thaw();
    seen_new_holder(&worker).await;

    // The cut script ended; the held ones never ran: pending again, at the
    // head of the queue in their order, and nothing of theirs was written.
    until_status(&conn, &slow, "error", WAIT).await;
    for id in &behind {
        assert_eq!(
            hget(&mut conn, id, "status").await.as_deref(),
            Some("pending"),
            "{id} given back"
        );
        assert_eq!(hget(&mut conn, id, "output").await, None, "{id} never ran");
    }
    let queued: Vec<String> = redis::cmd("LRANGE")
        .arg(keys::tasks("batch"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("lrange");
    let oldest_first: Vec<String> = queued.into_iter().rev().collect();
    assert_eq!(oldest_first, behind, "back at the head, oldest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_past_its_lease_and_a_reply_timeout_stops_when_asked() {
    let redis = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(redis.port());
    let worker = leased_worker(
        &proxy.redis_url(),
        "cut_off",
        holder(11, "host-a", "/data/a"),
        false,
    );
    running(&worker).await;
    proxy.freeze();
    until("the lease to be lost", WAIT, || async {
        matches!(worker.status.state(), WorkerState::LeaseLost(_)).then_some(())
    })
    .await;
    // Past the 5 s response timeout of the blocked pop: the worker counts a
    // reply as lost, and owes its own list a last look it cannot take
    // without the lease.
    tokio::time::sleep(Duration::from_secs(7)).await;
    worker.token.cancel();
    let stopped = tokio::time::timeout(WAIT, worker.handle).await;
    assert!(stopped.is_ok(), "the worker did not stop within {WAIT:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_of_a_moment_keeps_the_lease_and_its_token() {
    // The lease key survives the restart (AOF): the worker must renew it as
    // soon as Redis answers again, never declare it lost, and keep its token.
    let mut redis = testkit::RedisServer::start_persistent();
    let url = redis.url();
    // Beats of 3 s; the worker gives the lease up by its own clock 6 s
    // after its last renewal: room for a restart on a busy machine.
    let mut options = three_beat_lease();
    options.heartbeat_interval = Duration::from_secs(3);
    options.heartbeat_ttl = Duration::from_secs(9);
    let worker = leased_worker_with(
        &url,
        "blip",
        holder(11, "host-a", "/data/a"),
        false,
        options,
    );
    running(&worker).await;
    let before = lease_of(&mut raw(&url).await, "blip").await.expect("held");
    // The restart lands between two renewals. Whether the renewal or the
    // heartbeat (same connection, same period) is the first request to meet
    // the connection it cut varies; three restarts cover both.
    for n in 0..3 {
        redis.restart();
        let lost = lease_losses_within(&worker, Duration::from_secs(4)).await;
        assert!(
            lost.is_empty(),
            "restart {n}: the lease was declared lost: {lost:?}"
        );
        forty_two(&url, "blip").await;
    }
    let after = lease_of(&mut raw(&url).await, "blip").await.expect("held");
    assert_eq!(after, before, "the same lease, never taken again");
    assert_eq!(worker.status.state(), WorkerState::Running);
    worker.stop().await;
}

/// A leased worker on `queue` with beats of 3 s and a 9 s lease, which it
/// gives up by its own clock 6 s after its last renewal. Its Redis goes
/// down just after a renewal and comes back 3.6 s later: past the next
/// renewal, which fails, and before the worker would give the lease up.
/// Returns the worker, its lease before the outage, and when the renewal
/// before it was seen.
async fn down_past_a_renewal(
    redis: &mut testkit::RedisServer,
    queue: &str,
) -> (TestWorker, Option<Lease>, Instant) {
    let mut options = three_beat_lease();
    options.heartbeat_interval = Duration::from_secs(3);
    options.heartbeat_ttl = Duration::from_secs(9);
    let url = redis.url();
    let worker = leased_worker_with(&url, queue, holder(11, "host-a", "/data/a"), false, options);
    running(&worker).await;
    let before = lease_of(&mut raw(&url).await, queue).await;
    just_renewed(&url, queue).await;
    let renewed = Instant::now();
    redis.kill();
    tokio::time::sleep(Duration::from_millis(3_600)).await;
    redis.restart();
    (worker, before, renewed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_sent_while_redis_was_down_is_retried_once_it_is_back_and_the_lease_kept() {
    // The renewal must be sent again once Redis is back, not a beat later
    // (after the worker would have given the lease up).
    let mut redis = testkit::RedisServer::start_persistent();
    let url = redis.url();
    let (worker, before, renewed) = down_past_a_renewal(&mut redis, "down").await;
    let before = before.expect("held");
    // Watched until two seconds past the point where the missed renewal
    // would have made the worker give the lease up.
    let lost =
        lease_losses_within(&worker, (renewed + Duration::from_secs(8)) - Instant::now()).await;
    assert!(lost.is_empty(), "the lease was declared lost: {lost:?}");
    let after = lease_of(&mut raw(&url).await, "down").await.expect("held");
    assert_eq!(after, before, "the same lease, never taken again");
    forty_two(&url, "down").await;
    assert_eq!(worker.status.state(), WorkerState::Running);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_a_redis_restart_lost_takes_it_again_as_soon_as_redis_answers() {
    // As above, but Redis comes back empty, the lease key gone: the renewal
    // sent again once Redis answers finds it gone and the worker takes it
    // again at once, before its own clock would have made it give up; it
    // never stops for want of a renewal.
    let mut redis = testkit::RedisServer::start();
    let url = redis.url();
    let (worker, _, renewed) = down_past_a_renewal(&mut redis, "empty").await;
    let mut conn = raw(&url).await;
    let mut held = None;
    while held.is_none() && Instant::now() < renewed + Duration::from_millis(5_400) {
        held = lease_of(&mut conn, "empty").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let held = held.expect("the lease taken again before the worker gave it up");
    assert_eq!((held.pid, held.dir.as_str()), (11, "/data/a"));
    let lost =
        lease_losses_within(&worker, (renewed + Duration::from_secs(8)) - Instant::now()).await;
    assert!(
        !lost.iter().any(|why| why.contains("not renewed")),
        "the lease was declared unrenewed with redis reachable: {lost:?}"
    );
    forty_two(&url, "empty").await;
    running(&worker).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_sent_just_after_redis_restarted_empty_runs_without_waiting_for_the_next_beat() {
    // Beats of 60 s. Redis restarts empty just after the lease was taken; a
    // task sent at once meets a claim refused for want of the lease key.
    // The worker takes the lease again at once (it is free) and runs the
    // task, long before its next beat (the bound, half a beat, only tells
    // the two apart: no speed is measured).
    let mut options = three_beat_lease();
    options.heartbeat_interval = Duration::from_secs(60);
    options.heartbeat_ttl = Duration::from_secs(180);
    let mut redis = testkit::RedisServer::start();
    let url = redis.url();
    let worker = leased_worker_with(
        &url,
        "emptied",
        holder(11, "host-a", "/data/a"),
        false,
        options,
    );
    running(&worker).await;
    let taken = Instant::now();
    redis.restart();
    forty_two(&url, "emptied").await;
    let served = taken.elapsed();
    assert!(
        served < Duration::from_secs(30),
        "the task waited {served:?} after the restart, for the worker's next beat"
    );
    running(&worker).await;
    let held = lease_of(&mut raw(&url).await, "emptied")
        .await
        .expect("held");
    assert_eq!((held.pid, held.dir.as_str()), (11, "/data/a"));
    worker.stop().await;
}

/// A run of this database's worker that died holding a task: its lease
/// (pid `dead_pid`, host-a, /data/a), its registration with a heartbeat of
/// a minute and task `t1` processing in its list.
async fn dead_run(url: &str, queue: &str, dead_pid: u32) -> String {
    let dead = format!("{dead_pid}-0123456789ab");
    let mut conn = raw(url).await;
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(keys::queue_owner(queue))
        .arg(format!("7|{dead_pid}|host-a|/data/a"))
        .arg("PX")
        .arg(60_000)
        .ignore()
        .cmd("SADD")
        .arg(keys::workers(queue))
        .arg(&dead)
        .ignore()
        .cmd("SET")
        .arg(keys::heartbeat(queue, &dead))
        .arg("1")
        .arg("PX")
        .arg(60_000)
        .ignore()
        .cmd("HSET")
        .arg(keys::task_details("t1"))
        .arg("script")
        .arg("1")
        .arg("status")
        .arg("processing")
        .arg("workerId")
        .arg(&dead)
        .arg("createdAt")
        .arg(1)
        .ignore()
        .cmd("LPUSH")
        .arg(keys::processing(queue, &dead))
        .arg("t1")
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("dead run");
    dead
}

/// Waits until task `t1` ended as `worker_lost`; a connection for more.
async fn until_worker_lost(url: &str) -> redis::aio::MultiplexedConnection {
    let mut conn = raw(url).await;
    until_status(&conn, "t1", "error", WAIT).await;
    assert_eq!(
        hget(&mut conn, "t1", "errorKind").await.as_deref(),
        Some("worker_lost")
    );
    conn
}

/// Task `t1` is still `processing` after `wait`.
async fn still_processing_after(url: &str, wait: Duration) {
    tokio::time::sleep(wait).await;
    let mut conn = raw(url).await;
    assert_eq!(
        hget(&mut conn, "t1", "status").await.as_deref(),
        Some("processing")
    );
}

/// A run killed with a task in hand, restarted at once on the same
/// database (another pid, same host and directory): the new worker takes
/// the lease over and, holding the database the dead run held, resolves its
/// task as `worker_lost` at once, not once the dead run's heartbeat (a
/// minute here) expires; and since no live registration of the dead run is
/// left, a clean stop frees the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_the_same_database_resolves_the_dead_runs_silent_tasks_early_and_frees_the_lease_at_stop()
 {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let dead = dead_run(&url, "q", 10).await;
    let worker = leased_worker(&url, "q", holder(11, "host-a", "/data/a"), false);
    let mut c = until_worker_lost(&url).await;
    let workers: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::workers("q"))
        .query_async(&mut c)
        .await
        .expect("smembers");
    assert!(!workers.contains(&dead), "{workers:?}");
    forty_two(&url, "q").await;
    worker.stop().await;
    assert_eq!(
        lease_of(&mut c, "q").await,
        None,
        "released at a clean stop"
    );
}

/// The same restart through a standby's wait (`await_lease` takes the
/// lease over before the database is opened, `run_with` then holds it with
/// its own pid): the earlier run is still known, and its task resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_restart_on_the_same_database_resolves_the_dead_runs_silent_tasks_early() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    dead_run(&url, "q", 10).await;
    let mut config = leased_config(&url, "q", holder(11, "host-a", "/data/a"), true);
    let status = worker::WorkerStatus::default();
    let awaited = worker::await_lease(
        &config,
        &fast_options(),
        &status,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("lease");
    assert_eq!(
        awaited,
        worker::Awaited::Held {
            predecessor: Some(10)
        }
    );
    config.predecessor = Some(10);
    let worker = TestWorker::start_fresh(config, fast_options(), slow_limits());
    until_worker_lost(&url).await;
    worker.stop().await;
}

/// The lease names an earlier run of this database, but that run's worker
/// still beats (another process whose data dir only has the same name on
/// this host): its task is left to its heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_of_the_named_earlier_run_that_still_beats_keeps_its_task() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let dead = dead_run(&url, "q", 10).await;
    let beating = tokio_util::sync::CancellationToken::new();
    let beater = {
        let (mut conn, beating) = (raw(&url).await, beating.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !beating.is_cancelled() {
                n += 1;
                let _: () = redis::cmd("SET")
                    .arg(keys::heartbeat("q", &dead))
                    .arg(n)
                    .arg("PX")
                    .arg(60_000)
                    .query_async(&mut conn)
                    .await
                    .expect("beat");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Beats a second apart: the beat and a half the worker watches (1.5 s)
    // holds many of the other's beats, however late one of them is.
    let mut options = fast_options();
    options.heartbeat_interval = Duration::from_secs(1);
    options.heartbeat_ttl = Duration::from_secs(6);
    let worker = leased_worker_with(&url, "q", holder(11, "host-a", "/data/a"), false, options);
    forty_two(&url, "q").await;
    // Well past the beat and a half the worker waits.
    still_processing_after(&url, Duration::from_secs(3)).await;
    beating.cancel();
    beater.await.expect("beater");
    worker.stop().await;
}

/// The same leftovers under a lease of this very process (a circle
/// restarted within one run): nothing is known dead, so the task waits for
/// the heartbeat's expiry, as the reaper has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_of_the_same_process_resolves_nothing_before_the_heartbeat_expires() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    dead_run(&url, "q", 11).await;
    let worker = leased_worker(&url, "q", holder(11, "host-a", "/data/a"), false);
    forty_two(&url, "q").await;
    // Many reap intervals of the test's options (200 ms) pass.
    still_processing_after(&url, Duration::from_secs(2)).await;
    worker.stop().await;
}
