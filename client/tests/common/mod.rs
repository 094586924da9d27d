//! What the client tests share.

/// A plain connection to the test's Redis, for what other programs do
/// (raw keys, third parties' writes) and for checking what is stored.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}
