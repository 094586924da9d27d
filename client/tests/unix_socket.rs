//! The client through a Redis Unix socket (`unix://`), which the library
//! takes (the orchestrator's `--redis-url` does not): it serves, and at
//! `maxclients` the error names the limit as over TCP, Redis writing its
//! words to a socket client too.

mod common;

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
    common::at_maxclients_each_connect_names_the_limit(&redis, &url).await;
    let path = url.strip_prefix("unix://").expect("unix url");
    drop(redis);
    let _ = std::fs::remove_file(path);
}
