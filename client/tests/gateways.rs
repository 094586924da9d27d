//! Gateway heartbeats against a real Redis: a beat writes each circle's
//! heartbeat key with its TTL and the gateway set, says which queues have a
//! live worker, and a reader lists the gateways of many queues at once,
//! pruning those whose heartbeat expired.

mod common;
use common::raw;

use std::time::Duration;

use client::broker::{BrokerOptions, WorkerBroker};
use client::{Client, GatewayProcess, keys};

#[tokio::test]
async fn a_beat_writes_each_circles_heartbeat_with_its_ttl_and_a_leave_removes_it() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    let gateway = GatewayProcess::new("box1");
    let circles = [
        ("alpha", "ws://127.0.0.1:1/ws"),
        ("beta", "ws://127.0.0.1:2/ws"),
    ];
    client
        .gateway_beat(&gateway, &circles, Duration::from_secs(60))
        .await
        .expect("beat");
    let mut conn = raw(&redis.url()).await;
    for (queue, url) in circles {
        let key = keys::gateway_heartbeat(queue, &gateway.id);
        let value: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("get");
        assert_eq!(
            value,
            Some(format!("{}|box1|{url}", std::process::id())),
            "{key}"
        );
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("pttl");
        assert!(ttl > 0 && ttl <= 60_000, "{key} has TTL {ttl} ms");
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::gateways(queue))
            .query_async(&mut conn)
            .await
            .expect("smembers");
        assert_eq!(members, std::slice::from_ref(&gateway.id));
    }
    client
        .gateway_leave(&gateway, &["alpha"])
        .await
        .expect("leave");
    let listed = client
        .gateways_many(&["alpha", "beta"])
        .await
        .expect("list");
    assert!(listed[0].is_empty(), "{listed:?}");
    assert_eq!(listed[1].len(), 1, "{listed:?}");
    assert_eq!(listed[1][0].url, "ws://127.0.0.1:2/ws");
    assert_eq!(listed[1][0].host, "box1");
    assert_eq!(listed[1][0].pid, Some(std::process::id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_beat_says_which_queues_have_a_live_worker_and_how_long_its_heartbeat_lives() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let gateway = GatewayProcess::new("box1");
    let broker = WorkerBroker::new(
        &url,
        "served",
        "w1",
        &BrokerOptions::new(Duration::from_secs(60)),
    )
    .expect("broker");
    broker
        .beat(Duration::from_millis(300), false)
        .await
        .expect("beat");
    let circles = [("served", "ws://a/ws"), ("empty", "ws://b/ws")];
    let live = client
        .gateway_beat(&gateway, &circles, Duration::from_secs(60))
        .await
        .expect("beat");
    let left = live[0].expect("the served queue has a live worker");
    assert!(
        left > Duration::ZERO && left <= Duration::from_millis(300),
        "its heartbeat's TTL is what is left of 300 ms: {left:?}"
    );
    assert_eq!(live[1], None, "the empty queue has none");
    // A look alone tells the same, and writes nothing: Redis' count of
    // changes (every write, a rewritten value or TTL included) stays put.
    broker
        .beat(Duration::from_secs(60), false)
        .await
        .expect("beat");
    let changes = || {
        let info = testkit::command(redis.port(), &["INFO", "persistence"]).expect("INFO");
        let info = info.text().expect("INFO answers text").to_owned();
        info.lines()
            .find_map(|l| l.strip_prefix("rdb_changes_since_last_save:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no change count in INFO: {info}"))
    };
    let before = changes();
    let looked = client
        .worker_heartbeat("served", Duration::from_secs(60))
        .await
        .expect("look")
        .expect("a live worker");
    assert!(
        looked > Duration::from_secs(30) && looked <= Duration::from_secs(60),
        "{looked:?}"
    );
    let none = client
        .worker_heartbeat("empty", Duration::from_secs(60))
        .await
        .expect("look");
    assert_eq!(none, None);
    assert_eq!(changes(), before, "a look writes nothing");
    broker
        .beat(Duration::from_millis(300), false)
        .await
        .expect("beat");
    // The worker stops beating: once its heartbeat expires it is not live,
    // though it is still registered.
    testkit::wait_for(
        "the worker's heartbeat to expire",
        Duration::from_secs(10),
        || {
            let live = block(client.gateway_beat(&gateway, &circles, Duration::from_secs(60)));
            (live.expect("beat") == [None, None]).then_some(())
        },
    );
}

/// Runs `f` to its end from a synchronous closure inside a test runtime.
fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_of_many_queues_are_read_at_once_and_expired_ones_pruned() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    let (one, two) = (GatewayProcess::new("h1"), GatewayProcess::new("h2"));
    client
        .gateway_beat(&one, &[("a", "ws://h1:1/ws")], Duration::from_secs(60))
        .await
        .expect("beat one");
    client
        .gateway_beat(
            &two,
            &[("a", "ws://h2:1/ws"), ("b", "ws://h2:2/ws")],
            Duration::from_millis(200),
        )
        .await
        .expect("beat two");
    let listed = client.gateways_many(&["a", "b", "c"]).await.expect("list");
    let hosts = |i: usize| {
        let mut h: Vec<String> = listed[i].iter().map(|g| g.host.clone()).collect();
        h.sort();
        h
    };
    assert_eq!(hosts(0), ["h1", "h2"]);
    assert_eq!(hosts(1), ["h2"]);
    assert!(listed[2].is_empty());
    // Gateway two stops beating (killed): its keys expire and a reader
    // drops it from the sets.
    let listed = testkit::wait_for("gateway two to expire", Duration::from_secs(10), || {
        let listed = block(client.gateways_many(&["a", "b"])).expect("list");
        (listed[0].len() == 1 && listed[1].is_empty()).then_some(listed)
    });
    assert_eq!(listed[0][0].id, one.id);
    let mut conn = raw(&redis.url()).await;
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::gateways("a"))
        .query_async(&mut conn)
        .await
        .expect("smembers");
    assert_eq!(
        members,
        std::slice::from_ref(&one.id),
        "the expired member was pruned"
    );
}

/// Keys of a queue that another program wrote as other types (its
/// mistake) fail neither a beat nor a listing of the queues beside it: the
/// odd queue has no worker and no gateway listed, the other is served as
/// ever.
#[tokio::test]
async fn keys_of_another_type_of_one_queue_fail_no_beat_or_listing_of_the_others() {
    let redis = testkit::RedisServer::start();
    let client = Client::connect(&redis.url()).await.expect("connect");
    let mut conn = raw(&redis.url()).await;
    for key in [keys::workers("odd"), keys::gateways("odd")] {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("not a set")
            .query_async(&mut conn)
            .await
            .expect("set");
    }
    let gateway = GatewayProcess::new("box1");
    let circles = [("odd", "ws://a/ws"), ("fine", "ws://b/ws")];
    let live = client
        .gateway_beat(&gateway, &circles, Duration::from_secs(60))
        .await
        .expect("a beat despite the odd queue's keys");
    assert_eq!(live, [None, None]);
    let listed = client
        .gateways_many(&["odd", "fine"])
        .await
        .expect("a listing despite the odd queue's keys");
    assert!(listed[0].is_empty(), "{listed:?}");
    assert_eq!(
        listed[1].iter().map(|g| g.url.as_str()).collect::<Vec<_>>(),
        ["ws://b/ws"]
    );
}
