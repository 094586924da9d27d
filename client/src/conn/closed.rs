//! Why Redis closed a new connection before it answered. At `maxclients`
//! Redis writes "max number of clients reached" to each new connection and
//! closes it at once; a connection that had already sent its first
//! commands, as each of ours does, mostly sees only the reset, the words
//! lost with it. A second connection that sends nothing reads them.

use std::time::Duration;

use redis::ConnectionAddr;
use tokio::io::AsyncReadExt;

/// What Redis writes to a connection it has no room for.
pub(crate) const MAXCLIENTS: &str = "max number of clients reached";

/// How long the second connection waits for Redis' words.
const LISTEN: Duration = Duration::from_millis(250);

/// `reason`, why a new connection to `client`'s address failed, naming
/// `maxclients` when that is why Redis closed it.
pub(super) async fn explain(client: &redis::Client, reason: String) -> String {
    if reason.contains(MAXCLIENTS) || !closed_early(&reason) {
        return reason;
    }
    let addr = client.get_connection_info().addr();
    match tokio::time::timeout(LISTEN, first_words(addr)).await {
        Ok(Some(words)) if words.contains(MAXCLIENTS) => format!(
            "{MAXCLIENTS}: redis has no room for another client (raise its maxclients, or \
             open fewer connections to it) ({reason})"
        ),
        _ => reason,
    }
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
/// or a Unix socket; over TLS its words would come before the handshake,
/// which then fails, so none are read).
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
}
