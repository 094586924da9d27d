//! A circle's WebSocket JSON-RPC server (DESIGN.md §4).
//!
//! API CONTRACT STUB — the server_ws owner replaces the bodies; cmd codes
//! against these signatures.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Errors that stop a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding or serving failed.
    #[error("websocket server for circle {circle}: {source}")]
    Io {
        /// The circle's name.
        circle: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Configuration of one circle's server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The circle's display name.
    pub circle_name: String,
    /// The circle's queue name.
    pub queue: String,
    /// How long a `play` waits for its result.
    pub task_timeout: Duration,
    /// Largest accepted message, in bytes.
    pub max_message_bytes: usize,
    /// Requests in flight per connection.
    pub max_in_flight: usize,
    /// Connections per circle.
    pub max_connections: usize,
    /// Extra allowed `Origin`s besides absent and loopback ones.
    pub allowed_origins: Vec<String>,
}

/// Live counters for the status table. Shared with `Arc`.
#[derive(Debug, Default)]
pub struct ServerStatus {}

impl ServerStatus {
    /// Connected WebSocket clients.
    pub fn connections(&self) -> usize {
        unimplemented!()
    }
}

/// Serves `listener` until `token` is cancelled; closes every socket with 1001
/// and returns after draining.
pub async fn run(
    config: ServerConfig,
    listener: std::net::TcpListener,
    client: client::Client,
    status: Arc<ServerStatus>,
    token: CancellationToken,
) -> Result<()> {
    let _ = (config, listener, client, status, token);
    unimplemented!()
}
