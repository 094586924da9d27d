//! A circle's WebSocket JSON-RPC server (DESIGN.md §4).
//!
//! `GET /ws` upgrades to a WebSocket that speaks JSON-RPC 2.0 in text frames.
//! Its one method, `play`, hands a script to the circle's worker through the
//! task broker ([`client::Client::run_with`] for a request,
//! [`client::Client::submit_watched`] for a notification); this crate never
//! runs a script itself. In the crate graph it sits beside `worker`, on top of `client`, and
//! below `cmd`, which serves every circle from one [`run_many`] host.
//!
//! Main items: [`run_many`] (serve many circles' bound listeners, each with
//! its own limits and counters, on one shared actix server until a
//! cancellation token fires, then drain), [`CircleServer`] (one circle of a
//! host), [`run`] / [`run_with`] (the same for one circle), [`ServerConfig`] (limits, with
//! defaults from [`ServerConfig::new`]), [`ServerTiming`] (heartbeat and
//! drain), [`ServerStatus`] (live counters for the status table), and the
//! JSON-RPC error codes in [`codes`].
//!
//! A host runs on one actix worker thread (plus actix's accept thread) however
//! many circles it serves, and installs no signal handlers: idle circles cost
//! no threads and no timer wake-ups of their own.
//!
//! Modules, from the top down (each uses only those below it):
//! - `host`: [`run_many`], [`run`], [`run_with`], [`CircleServer`]: the actix
//!   server and its shutdown; [`run_many_pausable`] and a circle's own token
//!   ([`CircleServer::with_token`]) let an owner hand circles to another host
//!   or close one circle's sockets while the others carry on;
//! - `pause`: [`Pause`], the request to stop accepting;
//! - `upgrade`: the `GET /ws` handler (origin, token, connection limit,
//!   frame guard);
//! - `connection`: one socket's read loop, its heartbeat and its close;
//! - `dispatch`: JSON-RPC admission (script and in-flight limits) and the
//!   running of requests, notifications and batches;
//! - `reader`: reading ahead while a notification is pushed or waits for a
//!   slot, and the connection's calls in flight;
//! - `play`: the `play` method through [`client::Client`], and its replies;
//! - `outbox`: the replies queued for a socket, kept within
//!   [`MAX_UNSENT_BYTES`] (a client that does not read is not read either);
//! - `end`: why a connection ends and the close frame that says so;
//! - `rpc`: JSON-RPC parsing and every reply the server builds;
//! - `circle`: what every connection of one circle shares;
//! - `auth`: bearer tokens of circles with principals, and the slow-down of
//!   addresses that keep failing (HTTP 429);
//! - `tls`: [`TlsConfig`], a certificate and key checked once into the
//!   rustls configuration every `wss://` listener shares;
//! - `sight`: [`WorkerSight`], whether a circle has a live worker as the
//!   owner last saw it (read by `play`); `no_worker`: the look a request
//!   makes itself when it says none, and the -32002 then;
//! - `fragments`, `frame_guard`, `origin`, `config`, `status`: message
//!   reassembly, frame-length checks, the origin allow-list, limits and
//!   timings, live counters.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use server_ws::{ServerConfig, ServerStatus};
//! use tokio_util::sync::CancellationToken;
//!
//! let client = client::Client::connect("redis://127.0.0.1:6379").await?;
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let config = ServerConfig::new("Alpha", "alpha");
//! let status = Arc::new(ServerStatus::default());
//! let token = CancellationToken::new();
//! let server = tokio::spawn(server_ws::run(config, listener, client, status, token.clone()));
//! // … clients send {"jsonrpc":"2.0","id":1,"method":"play","params":{"script":"40 + 2"}}
//! token.cancel();
//! server.await??;
//! # Ok(()) }
//! ```
//!
//! Many circles, one thread ([`run_many`]):
//!
//! ```no_run
//! # async fn demo(client: client::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use server_ws::{CircleServer, ServerConfig, ServerStatus, ServerTiming};
//! use tokio_util::sync::CancellationToken;
//!
//! let circles = vec![
//!     CircleServer::new(
//!         ServerConfig::new("Alpha", "alpha"),
//!         std::net::TcpListener::bind("127.0.0.1:8081")?,
//!         Arc::new(ServerStatus::default()),
//!     ),
//!     CircleServer::new(
//!         ServerConfig::new("Beta", "beta"),
//!         std::net::TcpListener::bind("127.0.0.1:8082")?,
//!         Arc::new(ServerStatus::default()),
//!     ),
//! ];
//! let token = CancellationToken::new();
//! let host = tokio::spawn(server_ws::run_many(circles, ServerTiming::default(), client, token.clone()));
//! token.cancel();
//! host.await??;
//! # Ok(()) }
//! ```

mod acked;
mod auth;
mod circle;
mod config;
mod connection;
mod dispatch;
mod end;
mod fragments;
mod frame_guard;
#[doc(hidden)]
pub mod fuzzing;
mod host;
mod listen;
mod local;
mod no_worker;
mod origin;
mod outbox;
mod pause;
mod peers;
mod play;
mod reader;
mod rpc;
mod sight;
mod status;
mod strict;
mod tls;
mod upgrade;

pub use auth::{
    MAX_FAILURES as AUTH_MAX_FAILURES, MAX_TRACKED as AUTH_MAX_TRACKED, WINDOW as AUTH_WINDOW,
    bearer_header, bearer_token,
};
pub use config::{
    DEFAULT_DELIVERED_TTL, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_SCRIPT_BYTES, DEFAULT_TASK_TIMEOUT, MAX_BATCH_ITEMS,
    MAX_UNSENT_BYTES, Principal, ServerConfig, ServerTiming,
};
pub use host::{
    CircleServer, HOST_WORKERS, prepare_listener, run, run_many, run_many_pausable, run_with,
};
pub use origin::{
    AuthorityHost, authority_host, is_allowed as origin_allowed, of_request as request_origin,
};
pub use pause::Pause;
pub use peers::{Budget, Peers, UNCOUNTED, serve_bounded};
pub use sight::WorkerSight;
pub use status::ServerStatus;
pub use tls::TlsConfig;

/// The JSON-RPC error codes this server answers with (DESIGN.md §4).
pub mod codes {
    pub use crate::rpc::{
        BROKER_UNAVAILABLE, FORBIDDEN, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST,
        LIMIT_EXCEEDED, METHOD_NOT_FOUND, PARSE_ERROR, SCRIPT_FAILED, TIMED_OUT,
    };
}

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
    /// The shared server of several circles ([`run_many`]) failed.
    #[error("websocket host of {circles} circles: {source}")]
    Host {
        /// How many circles it served.
        circles: usize,
        /// The cause.
        source: std::io::Error,
    },
    /// A TLS certificate or key file ([`TlsConfig::from_pem_files`]) cannot
    /// be used: `problem` says why (it never quotes the key).
    #[error("{} {problem}", file.display())]
    Tls {
        /// The file at fault.
        file: std::path::PathBuf,
        /// What is wrong with it, as the end of a sentence naming the file.
        problem: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
