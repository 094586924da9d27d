//! A submit to a queue whose key a third party wrote as another type than a
//! list: Redis runs the MULTI/EXEC's `HSET` and fails its `LPUSH`
//! (WRONGTYPE is an error at EXEC time, which does not undo the rest). The
//! submit is refused, naming the key; it must not leave behind a `pending` task hash that no
//! queue holds: such a hash has no TTL (none while pending), so every
//! refused request would stay in Redis for good.

use client::{Client, SubmitOptions};

#[tokio::test]
async fn a_submit_refused_by_a_queue_key_of_another_type_leaves_no_task_hash_behind() {
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let client = Client::connect(&url).await.expect("connect");
    let mut conn = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("SET")
        .arg(client::keys::tasks("q"))
        .arg("not a list")
        .query_async(&mut conn)
        .await
        .expect("set");
    let submitted = client
        .submit("q", "40 + 2", &SubmitOptions::default())
        .await;
    // Redis refuses that queue until its operator acts, and the error
    // names the key: not a protocol violation of this system's own.
    let err = submitted.as_ref().expect_err("refused");
    assert_eq!(err.refusal(), Some(client::Refusal::KeyType), "{err:?}");
    assert!(
        err.to_string().contains("rhai_tasks:q holds another type"),
        "{err}"
    );
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", client::keys::TASK_DETAILS_PREFIX))
        .query_async(&mut conn)
        .await
        .expect("keys");
    let ttls: Vec<i64> = {
        let mut ttls = Vec::new();
        for key in &left {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .expect("pttl");
            ttls.push(ttl);
        }
        ttls
    };
    assert!(
        left.is_empty(),
        "a refused submit left {left:?} (PTTL {ttls:?}) in redis; submit said {submitted:?}"
    );
}
