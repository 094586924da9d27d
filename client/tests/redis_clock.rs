//! Redis' clock as a process measures it (`clock.rs`: this machine's clock
//! plus the offset the latest `TIME` showed, half its round trip counted).
//! A `TIME` whose round trip took seconds (Redis or the network stalled
//! under a beat) is no measure once the clock has one: it would put the
//! clock off by half the stall. A user whose ACL refuses `TIME` keeps the
//! clock at its last measure, and its worker and gateway beats still beat.

mod common;

use std::time::Duration;

use client::broker::{BrokerOptions, WorkerBroker};
use client::{Client, GatewayProcess, SubmitOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_beat_whose_reply_stalled_does_not_put_the_clock_off_by_half_the_stall() {
    let redis = testkit::RedisServer::start();
    let proxy = testkit::Proxy::start(redis.port());
    let client = Client::connect(&proxy.redis_url()).await.expect("connect");
    let gateway = GatewayProcess::new("box1");
    // The beat goes out, and the proxy holds it 3 s (a stalled network or
    // Redis): Redis runs it, `TIME` included, 3 s after it was sent.
    // Every connection of the client made (the listener's too), each
    // measuring the clock as it connects.
    client
        .submit(
            "q",
            "0",
            &SubmitOptions::with_timeout(Duration::from_secs(30)),
        )
        .await
        .expect("first submit");
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.freeze();
    // The proxy's pumps look at the flag between reads of 20 ms at most.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let beat = {
        let client = client.clone();
        let gateway = gateway.clone();
        tokio::spawn(async move {
            client
                .gateway_beat(&gateway, &[("q", "ws://a/ws")], Duration::from_secs(60))
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.thaw();
    beat.await.expect("join").expect("beat");

    let id = client
        .submit(
            "q",
            "1",
            &SubmitOptions::with_timeout(Duration::from_secs(30)),
        )
        .await
        .expect("submit");
    let mut raw = common::raw(&redis.url()).await;
    let created: u64 = redis::cmd("HGET")
        .arg(client::keys::task_details(&id))
        .arg(client::fields::CREATED_AT)
        .query_async(&mut raw)
        .await
        .expect("hget");
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut raw)
        .await
        .expect("time");
    let redis_now = secs * 1000 + micros / 1000;
    let off = created as i64 - redis_now as i64;
    assert!(
        off.abs() < 500,
        "createdAt is {off} ms off Redis' clock after a beat that stalled 3 s"
    );
}

fn user_without_time(redis: &testkit::RedisServer) -> String {
    let port = redis.port();
    testkit::command(
        port,
        &[
            "ACL", "SETUSER", "t", "on", ">pw", "~*", "&*", "+@all", "-time",
        ],
    )
    .expect("acl user without time");
    format!("redis://t:pw@127.0.0.1:{port}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_beat_goes_through_for_a_user_the_acl_refuses_time() {
    let redis = testkit::RedisServer::start();
    let url = user_without_time(&redis);
    let broker = WorkerBroker::new(
        &url,
        "q",
        "w1",
        &BrokerOptions::new(Duration::from_secs(60)),
    )
    .expect("broker");
    let beat = broker.beat(Duration::from_secs(5), true).await;
    assert!(beat.is_ok(), "a worker beat without TIME: {beat:?}");
    let alive = testkit::command(redis.port(), &["EXISTS", "rhai_worker_heartbeat:q:w1"]);
    assert_eq!(alive.expect("exists"), testkit::Reply::Int(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_beat_goes_through_for_a_user_the_acl_refuses_time() {
    let redis = testkit::RedisServer::start();
    let url = user_without_time(&redis);
    let client = Client::connect(&url).await.expect("connect");
    let gateway = GatewayProcess::new("box1");
    let beat = client
        .gateway_beat(&gateway, &[("q", "ws://a/ws")], Duration::from_secs(60))
        .await;
    assert!(beat.is_ok(), "a gateway beat without TIME: {beat:?}");
}
