//! `redis+sentinel://` URLs against a real primary, replica and three
//! sentinels (`testkit::SentinelGroup`), with passwords on both: the
//! primary's in the URL, the sentinels' as `sentinel_password`. Wrong or
//! missing ones are refused, and no error repeats a password.

use client::{Client, SubmitOptions};
use testkit::{Reply, SentinelGroup, command_as};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_url_with_both_passwords_reaches_the_primary_and_wrong_ones_are_refused() {
    let group = SentinelGroup::start_with_passwords(Some("data-pw"), Some("sentinel-pw"));
    let url = group.url_with_passwords();
    let client = Client::connect(&url).await.expect("connect");
    client.ping().await.expect("ping");
    let task_id = client
        .submit("through_sentinels", "40 + 2", &SubmitOptions::default())
        .await
        .expect("submit");
    let queued = command_as(
        group.primary_port(),
        Some("data-pw"),
        &["LRANGE", "rhai_tasks:through_sentinels", "0", "-1"],
    )
    .expect("LRANGE on the primary");
    assert_eq!(queued, Reply::Array(Some(vec![Reply::Bulk(Some(task_id))])));

    let nodes = group.url().replace("redis+sentinel://", "");
    for bad in [
        // The primary's password wrong.
        format!("redis+sentinel://:wrong-pw@{nodes}?sentinel_password=sentinel-pw"),
        // The sentinels' password wrong, then missing.
        format!("redis+sentinel://:data-pw@{nodes}?sentinel_password=wrong-pw"),
        format!("redis+sentinel://:data-pw@{nodes}"),
        // A service the sentinels do not monitor: its name is in the error.
        format!(
            "redis+sentinel://:data-pw@{}?sentinel_password=sentinel-pw",
            nodes.replace("/circles", "/nobody")
        ),
    ] {
        let e = Client::connect(&bad).await.expect_err(&bad).to_string();
        assert!(e.contains("no primary from the sentinels"), "{e}");
        for secret in ["wrong-pw", "data-pw", "sentinel-pw"] {
            assert!(!e.contains(secret), "{secret} in {e}");
        }
    }
}
