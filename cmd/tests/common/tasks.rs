//! Tasks written and read in Redis as a third party would, for circle
//! Alpha (queue `alpha`).

/// A plain connection to `redis`.
pub fn conn(redis: &testkit::RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .expect("url")
        .get_connection()
        .expect("connect to redis")
}

/// Submits `script` to circle Alpha's queue as a third party would: the
/// hash and the push in one MULTI/EXEC.
pub fn submit(conn: &mut redis::Connection, id: &str, script: &str) {
    let _: () = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(client::keys::task_details(id))
        .arg("script")
        .arg(script)
        .arg("status")
        .arg("pending")
        .ignore()
        .cmd("LPUSH")
        .arg(client::keys::tasks("alpha"))
        .arg(id)
        .ignore()
        .query(conn)
        .expect("submit");
}

/// A field of task `id`'s hash (`None` also while Redis cannot answer).
pub fn field(conn: &mut redis::Connection, id: &str, name: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(client::keys::task_details(id))
        .arg(name)
        .query(conn)
        .ok()
        .flatten()
}
