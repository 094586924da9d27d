//! Tasks written and read in Redis as a third party would, for circle
//! Alpha (queue `alpha`) unless a queue is named.

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

/// Waits (30 s at most) until field `name` of task `id` reads `value`.
pub fn wait_field(conn: &mut redis::Connection, id: &str, name: &str, value: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while field(conn, id, name).as_deref() != Some(value) {
        assert!(
            std::time::Instant::now() < deadline,
            "task {id}: {name} never became {value:?} (it is {:?})",
            field(conn, id, name)
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Queues `n` tasks of about a second each on `queue`, straight in Redis.
pub fn queue_slow_tasks(redis: &testkit::RedisServer, queue: &str, n: usize) {
    let mut conn = redis::Client::open(redis.url())
        .expect("redis url")
        .get_connection()
        .expect("redis connection");
    for i in 0..n {
        let id = format!("{queue}-slow-{i}");
        let () = redis::pipe()
            .atomic()
            .hset_multiple(
                client::keys::task_details(&id),
                &[
                    ("script", "let x = 0; for i in 0..1000000 { x += 1; } x"),
                    ("status", "pending"),
                ],
            )
            .lpush(client::keys::tasks(queue), &id)
            .query(&mut conn)
            .expect("queue a task");
    }
}

/// Circle Alpha's queue lease as Redis holds it.
pub fn lease(conn: &mut redis::Connection) -> Option<client::Lease> {
    let value: Option<String> = redis::cmd("GET")
        .arg(client::keys::queue_owner("alpha"))
        .query(conn)
        .expect("get");
    value.map(|v| client::Lease::parse(&v).expect("a lease"))
}
