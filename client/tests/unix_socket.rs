//! The client through a Redis Unix socket (`unix://`), which the library
//! takes (the orchestrator's `--redis-url` does not): it serves, and at
//! `maxclients` the error names the limit as over TCP, Redis writing its
//! words to a socket client too.

use client::Client;

/// A Redis that also listens on a Unix socket; the server and the socket's
/// `unix://` URL.
fn redis_with_a_socket() -> (testkit::RedisServer, String) {
    let socket = std::env::temp_dir().join(format!(
        "circles-redis-{}-{}.sock",
        std::process::id(),
        testkit::free_port()
    ));
    let socket = socket.to_str().expect("utf-8 path").to_owned();
    let redis = testkit::RedisServer::start_with_args(&[
        "--unixsocket",
        &socket,
        "--unixsocketperm",
        "700",
    ]);
    (redis, format!("unix://{socket}"))
}

#[tokio::test]
async fn over_a_unix_socket_a_redis_at_maxclients_is_unavailable_naming_the_limit() {
    let (redis, url) = redis_with_a_socket();
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
        let err = Client::connect(&url)
            .await
            .expect_err("no room for another client");
        assert!(matches!(err, client::Error::Unavailable { .. }), "{err:?}");
        assert!(
            err.to_string().contains("max number of clients reached"),
            "{err}"
        );
    }
    maxclients(10_000);
    let client = Client::connect(&url).await.expect("room again");
    client.ping().await.expect("PING");
    let path = url.strip_prefix("unix://").expect("unix url");
    drop(redis);
    let _ = std::fs::remove_file(path);
}
