//! Redis back without the client's user (a restart that lost its ACL, a
//! password changed meanwhile): every request refused while the connection
//! backs off between attempts names why the last attempt failed, so the
//! status table, `/readyz` and a `play`'s -32002 say the password is
//! refused, not only that a reconnect waits.

use std::time::Duration;

use client::{Client, SubmitOptions};

#[tokio::test]
async fn every_request_refused_while_reconnecting_names_the_refused_password() {
    let mut redis = testkit::RedisServer::start();
    let port = redis.port();
    let user = ["ACL", "SETUSER", "c", "on", ">pw", "~*", "&*", "+@all"];
    testkit::command(port, &user).expect("acl user");
    let client = Client::connect(&format!("redis://c:pw@127.0.0.1:{port}/"))
        .await
        .expect("connect");
    client
        .submit("q", "1", &SubmitOptions::default())
        .await
        .expect("submit");
    redis.kill();
    redis.restart();
    // The first meets the connection the restart broke: it may have gone
    // out before (`MaybeQueued`).
    let _broken = client.submit("q", "1", &SubmitOptions::default()).await;
    // Over several attempts and the backoffs between them (50 ms, doubling).
    let mut backing_off = 0;
    for _ in 0..60 {
        let err = client
            .submit("q", "1", &SubmitOptions::default())
            .await
            .expect_err("refused");
        assert!(err.password_refused(), "{err}");
        backing_off += usize::from(err.to_string().contains("backing off"));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(backing_off > 0, "no request met the backoff");
    testkit::command(port, &user).expect("acl user again");
    testkit::until("a submit taken again", Duration::from_secs(30), || async {
        client
            .submit("q", "1", &SubmitOptions::default())
            .await
            .ok()
    })
    .await;
}
