//! What the client tests share.

#![allow(dead_code)]

/// A plain connection to the test's Redis, for what other programs do
/// (raw keys, third parties' writes) and for checking what is stored.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

/// `redis` at `maxclients` 1, its one place held here: each of five
/// connects to `url` (the same Redis, by TCP or by its Unix socket) is
/// unavailable naming the limit; with room again, a connect answers PING.
pub async fn at_maxclients_each_connect_names_the_limit(redis: &testkit::RedisServer, url: &str) {
    let mut held = redis::Client::open(redis.url())
        .expect("url")
        .get_connection()
        .expect("the connection that holds the one place");
    let mut maxclients = |n: u32| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxclients")
            .arg(n)
            .query::<()>(&mut held)
            .expect("CONFIG SET maxclients");
    };
    maxclients(1);
    for _ in 0..5 {
        let err = client::Client::connect(url)
            .await
            .expect_err("no room for another client");
        assert!(matches!(err, client::Error::Unavailable { .. }), "{err:?}");
        assert!(
            err.to_string().contains("max number of clients reached"),
            "{err}"
        );
    }
    maxclients(10_000);
    let client = client::Client::connect(url).await.expect("room again");
    client.ping().await.expect("PING");
}
