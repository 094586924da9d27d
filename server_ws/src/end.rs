//! How a connection ends: why ([`End`]), the close frame that says so, and
//! sends bounded in time, whose failure ends the connection.

use std::time::Duration;

use actix_ws::{CloseCode, CloseReason, Session};

/// How long the close frame may wait for room in the outgoing queue.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long, after the server's close frame, what the client still sends is
/// read (and dropped) waiting for its close frame.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// Why the read loop ended.
pub(crate) enum End {
    /// The server is shutting down: drain, then close with 1001.
    Shutdown,
    /// Nothing from the client within the client timeout, or it stopped taking data.
    Dead,
    /// The client sent a close frame.
    ClientClosed(Option<CloseReason>),
    /// The client broke the WebSocket protocol.
    Protocol,
    /// The transport is gone; nothing can be sent.
    Gone,
}

/// Awaits a send from the read loop: `Gone` when the session is closed,
/// `Dead` when the client has not taken the data within `limit`.
pub(crate) async fn within(
    limit: Duration,
    sending: impl Future<Output = Result<(), actix_ws::Closed>>,
) -> Result<(), End> {
    match tokio::time::timeout(limit, sending).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(actix_ws::Closed)) => Err(End::Gone),
        Err(_) => Err(End::Dead),
    }
}

/// Sends the close frame `answer`, waiting at most [`CLOSE_TIMEOUT`].
pub(crate) async fn close(session: Session, answer: CloseReason) {
    // Fails when the transport is gone, times out when the client stopped
    // reading; either way there is nothing left to do.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.close(Some(answer))).await;
}

/// The answer to a client's close frame: its own reason echoed, or 1000
/// when it gave none.
pub(crate) fn echo(reason: Option<CloseReason>) -> CloseReason {
    reason.unwrap_or_else(|| self::reason(CloseCode::Normal, ""))
}

/// The close frame for a client that broke the WebSocket protocol.
pub(crate) fn protocol_error() -> CloseReason {
    reason(CloseCode::Protocol, "websocket protocol error")
}

/// A close frame's reason; an empty `description` is left out.
pub(crate) fn reason(code: CloseCode, description: &str) -> CloseReason {
    CloseReason {
        code,
        description: (!description.is_empty()).then(|| description.to_string()),
    }
}
