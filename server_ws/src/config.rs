//! Configuration of one circle's server: limits and timings, with defaults.

use std::time::Duration;

/// Default [`ServerConfig::task_timeout`]: 30 s, the client's default wait.
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ServerConfig::delivered_ttl`]: a minute.
pub const DEFAULT_DELIVERED_TTL: Duration = Duration::from_secs(60);
/// Default [`ServerConfig::max_message_bytes`]: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Default [`ServerConfig::max_in_flight`]: 32 `play` calls per connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 32;
/// Default [`ServerConfig::max_connections`]: 64 sockets per circle.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default [`ServerConfig::max_script_bytes`]: 256 KiB, the engine's own default bound.
pub const DEFAULT_MAX_SCRIPT_BYTES: usize = 256 << 10;
/// Most elements a batch may have: a larger one gets one -32003 reply
/// (`"limit": "max_batch_items"`) and none of it runs. Geth's default for the
/// same limit; enough for any real batch (a batch of requests cannot have
/// more than [`ServerConfig::max_in_flight`] running at once anyway), and it
/// keeps the reply to a batch of junk near 100 KB instead of growing with the
/// message.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Most bytes of replies a connection keeps queued for its socket and not yet
/// taken by it (actix's 32 KiB write buffer and the kernel's send buffer come
/// on top). A reply that finds no room waits for it, and while one waits (or
/// there is no room) the connection reads no further message; a reply larger
/// than this goes out alone. So a client that does not read its replies costs
/// at most this, plus the replies of the calls it had in flight when reading
/// stopped ([`ServerConfig::max_in_flight`], a batch's replies counting as one
/// array), until it is dropped by the client timeout. A client that reads
/// loses nothing: the kernel's send buffer keeps its socket fed.
pub const MAX_UNSENT_BYTES: usize = 1 << 20;

/// Configuration of one circle's server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The circle's display name.
    pub circle_name: String,
    /// The circle's queue name.
    pub queue: String,
    /// How long a `play` waits for its result.
    pub task_timeout: Duration,
    /// `Some`: a task whose outcome reached this server before its deadline
    /// (and that was not cancelled) keeps its Redis hash this long rather
    /// than the worker's result TTL, and never longer than it
    /// ([`client::SubmitOptions::delivered_ttl`]). `None`: the result TTL.
    pub delivered_ttl: Option<Duration>,
    /// Largest accepted message, in bytes.
    pub max_message_bytes: usize,
    /// Requests in flight per connection.
    pub max_in_flight: usize,
    /// Connections per circle.
    pub max_connections: usize,
    /// Largest script accepted, in bytes; a larger one is refused with -32003
    /// before it reaches the broker (set it to the engine's `max_script_bytes`).
    pub max_script_bytes: usize,
    /// Extra allowed `Origin`s besides absent and loopback ones.
    pub allowed_origins: Vec<String>,
    /// Who may connect. Empty: the circle is open (anyone who reaches the
    /// port); otherwise an upgrade needs one of these principals' tokens.
    pub principals: Vec<Principal>,
    /// `Some`: the circle is served as `wss://` with this certificate (one
    /// [`crate::TlsConfig`] is shared by every circle that gets a clone).
    pub tls: Option<crate::TlsConfig>,
    /// `Some`: whether the circle has a live worker, as its owner keeps
    /// seeing it. A `play` on a circle with none is answered -32002 at once,
    /// without submitting, and one that times out while the circle has none
    /// is answered -32002 and its task cancelled. `None`: never refused.
    pub workers: Option<crate::WorkerSight>,
}

/// A principal of a circle (circles.json `principals`): its name, the
/// SHA-256 of its token (never the token) and its role.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    /// The name scripts see through `caller()`.
    pub name: String,
    /// SHA-256 of the bearer token.
    pub token_sha256: [u8; 32],
    /// What its scripts may do.
    pub role: client::Role,
}

impl std::fmt::Debug for Principal {
    /// The name and role only: a token's hash is not for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// A configuration for `circle_name` on `queue` with every limit at its default.
    pub fn new(circle_name: impl Into<String>, queue: impl Into<String>) -> ServerConfig {
        ServerConfig {
            circle_name: circle_name.into(),
            queue: queue.into(),
            task_timeout: DEFAULT_TASK_TIMEOUT,
            delivered_ttl: Some(DEFAULT_DELIVERED_TTL),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_script_bytes: DEFAULT_MAX_SCRIPT_BYTES,
            allowed_origins: Vec::new(),
            principals: Vec::new(),
            tls: None,
            workers: None,
        }
    }
}

/// Heartbeat and shutdown timings. [`crate::run`] uses [`ServerTiming::default`];
/// [`crate::run_with`] takes others (tests shorten them).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerTiming {
    /// How often the server pings each client. Default 10 s.
    pub heartbeat_interval: Duration,
    /// A client that sends nothing (not even a pong) for this long is dropped,
    /// and so is one that takes none of its replies for this long while the
    /// server has stopped reading it ([`crate::MAX_UNSENT_BYTES`]). Default 30 s.
    pub client_timeout: Duration,
    /// On shutdown, how long a connection waits for its in-flight requests to be
    /// answered before it closes with 1001. Default 5 s.
    pub drain_timeout: Duration,
}

impl Default for ServerTiming {
    fn default() -> Self {
        ServerTiming {
            heartbeat_interval: Duration::from_secs(10),
            client_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

impl ServerTiming {
    /// Timings with the given heartbeat interval and client timeout; the drain
    /// timeout stays at its default.
    pub fn heartbeat(interval: Duration, client_timeout: Duration) -> ServerTiming {
        ServerTiming {
            heartbeat_interval: interval,
            client_timeout,
            ..ServerTiming::default()
        }
    }

    /// These timings with `drain_timeout` replaced.
    pub fn with_drain_timeout(mut self, drain_timeout: Duration) -> ServerTiming {
        self.drain_timeout = drain_timeout;
        self
    }
}
