//! What a new connection runs before it is used: the check that its user
//! may run MULTI and EXEC, and a measure of Redis' clock.

use redis::aio::MultiplexedConnection;

use super::states::refusing_state;
use crate::clock::RedisClock;

/// Checks `conn` (see [`transactions_allowed`]), then measures Redis' clock
/// into `clock` (refused, by an ACL without `TIME`: the clock keeps its
/// last measure).
pub(super) async fn run(
    conn: &mut MultiplexedConnection,
    clock: &RedisClock,
) -> Result<(), String> {
    transactions_allowed(conn).await?;
    clock.measure(conn).await;
    Ok(())
}

/// Checks on a new connection that its user may run MULTI and EXEC, with
/// an empty transaction sent as two plain commands. Redis runs the commands
/// that follow a refused MULTI one by one, so a submit (HSET and LPUSH in
/// one MULTI/EXEC) would queue its task and still fail, and the redis
/// client, expecting a transaction's replies, loses count of them. Such a
/// connection is not used; the reason keeps Redis's NOPERM, so the error
/// reads as a permission [`Refusal`](crate::Refusal).
async fn transactions_allowed(conn: &mut MultiplexedConnection) -> Result<(), String> {
    let mut pipe = redis::pipe();
    pipe.cmd("MULTI").ignore().cmd("EXEC").ignore();
    pipe.query_async::<()>(conn).await.map_err(|e| {
        if refusing_state(&e.to_string()) == Some(crate::Refusal::Permission) {
            format!(
                "this user may not run MULTI or EXEC, and a task is written in one \
                 MULTI/EXEC: grant both (+multi +exec, or +@transaction) in its ACL ({e})"
            )
        } else {
            e.to_string()
        }
    })
}
