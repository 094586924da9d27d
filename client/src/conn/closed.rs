//! Why Redis closed a new connection before it answered. At `maxclients`
//! Redis writes "max number of clients reached" to each new connection and
//! closes it at once; a connection that had already sent its first
//! commands, as each of ours does, mostly sees only the reset, the words
//! lost with it. A second connection that sends nothing reads them. Over
//! TLS Redis closes such a connection before the handshake, without a
//! word: another connection of this process to the same Redis asks it how
//! many clients it has.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::ConnectionAddr;
use redis::aio::MultiplexedConnection;
use tokio::io::AsyncReadExt;

use super::State;

/// What Redis writes to a connection it has no room for.
pub(crate) const MAXCLIENTS: &str = "max number of clients reached";

/// How long the second connection waits for Redis' words.
const LISTEN: Duration = Duration::from_millis(250);

/// How many live connections are asked at once over TLS.
const ASKED: usize = 4;

/// A connection's URL (without credentials) and state.
type Listed = (String, Weak<Mutex<State>>);

/// The connections of this process, and how many there were after the
/// latest sweep of the dropped ones.
static CONNS: Mutex<(Vec<Listed>, usize)> = Mutex::new((Vec::new(), 0));

/// Lists the connection whose state is `state`, to `url` (without
/// credentials), for [`explain`] of a TLS connection to ask on.
pub(super) fn join(url: &str, state: &Arc<Mutex<State>>) {
    let mut conns = CONNS.lock().unwrap_or_else(|e| e.into_inner());
    let (list, swept) = &mut *conns;
    if list.len() >= (*swept * 2).max(64) {
        list.retain(|(_, state)| state.strong_count() > 0);
        *swept = list.len();
    }
    list.push((url.to_owned(), Arc::downgrade(state)));
}

/// `reason`, why a new connection to `client`'s address (`url`, without
/// credentials) failed, naming `maxclients` when that is why Redis closed
/// it.
pub(super) async fn explain(client: &redis::Client, url: &str, reason: String) -> String {
    if reason.contains(MAXCLIENTS) || !closed_early(&reason) {
        return reason;
    }
    let full = match client.get_connection_info().addr() {
        ConnectionAddr::TcpTls { .. } => tokio::time::timeout(LISTEN, full(url))
            .await
            .unwrap_or(false),
        addr => matches!(
            tokio::time::timeout(LISTEN, first_words(addr)).await,
            Ok(Some(words)) if words.contains(MAXCLIENTS)
        ),
    };
    if full {
        format!(
            "{MAXCLIENTS}: redis has no room for another client (raise its maxclients, or \
             open fewer connections to it) ({reason})"
        )
    } else {
        reason
    }
}

/// Whether the Redis at `url` has as many clients as its `maxclients`, as
/// `INFO clients` on a live connection of this process to it says (the
/// first of a few to answer: one may be waiting in a blocking pop). No
/// live connection, or `INFO` refused (an ACL): `false`.
async fn full(url: &str) -> bool {
    let mut asks: futures_util::stream::FuturesUnordered<_> = live(url)
        .into_iter()
        .map(|mut conn| async move {
            let info: redis::RedisResult<String> = redis::cmd("INFO")
                .arg("clients")
                .query_async(&mut conn)
                .await;
            info.ok()
        })
        .collect();
    while let Some(answer) = asks.next().await {
        if let Some(info) = answer {
            return at_maxclients(&info);
        }
    }
    false
}

/// Up to [`ASKED`] live connections of this process to `url`.
fn live(url: &str) -> Vec<MultiplexedConnection> {
    let states: Vec<Arc<Mutex<State>>> = {
        let conns = CONNS.lock().unwrap_or_else(|e| e.into_inner());
        conns
            .0
            .iter()
            .filter(|(to, _)| to == url)
            .filter_map(|(_, state)| state.upgrade())
            .collect()
    };
    states
        .iter()
        .filter_map(|state| state.lock().unwrap_or_else(|e| e.into_inner()).conn.clone())
        .take(ASKED)
        .collect()
}

/// Whether `INFO clients` shows `connected_clients` at `maxclients`.
fn at_maxclients(info: &str) -> bool {
    let field = |name: &str| -> Option<u64> {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.trim().parse().ok())
    };
    matches!(
        (field("connected_clients"), field("maxclients")),
        (Some(connected), Some(max)) if connected >= max
    )
}

/// Whether `reason` is a connection closed or reset by the other side.
fn closed_early(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    [
        "reset by peer",
        "broken pipe",
        "connection closed",
        "unexpected end",
        "eof",
    ]
    .iter()
    .any(|words| reason.contains(words))
}

/// What Redis writes first to a connection that sends nothing (plain TCP
/// or a Unix socket).
async fn first_words(addr: &ConnectionAddr) -> Option<String> {
    let mut buf = [0u8; 64];
    let n = match addr {
        ConnectionAddr::Tcp(host, port) => {
            let mut stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .ok()?;
            stream.read(&mut buf).await.ok()?
        }
        ConnectionAddr::Unix(path) => {
            let mut stream = tokio::net::UnixStream::connect(path).await.ok()?;
            stream.read(&mut buf).await.ok()?
        }
        _ => return None,
    };
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_connection_closed_by_the_other_side_is_looked_into() {
        assert!(closed_early("Connection reset by peer (os error 104)"));
        assert!(closed_early("Broken pipe (os error 32)"));
        assert!(!closed_early("Connection refused (os error 111)"));
        assert!(!closed_early("WRONGPASS: invalid username-password pair"));
    }

    #[test]
    fn info_clients_at_maxclients_is_told_from_room_left() {
        let info = |connected: u64| {
            format!(
                "# Clients\r\nconnected_clients:{connected}\r\ncluster_connections:0\r\n\
                 maxclients:12\r\nblocked_clients:0\r\n"
            )
        };
        assert!(at_maxclients(&info(12)));
        assert!(!at_maxclients(&info(11)));
        // Redis before 7.0 does not show maxclients.
        assert!(!at_maxclients("# Clients\r\nconnected_clients:12\r\n"));
    }
}
