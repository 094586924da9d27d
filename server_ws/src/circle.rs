//! What every connection of one circle shares, and the circles of one host
//! by the address they listen on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use client::SubmitOptions;
use tokio_util::sync::CancellationToken;

use crate::auth::Limiter;
use crate::config::{ServerConfig, ServerTiming};
use crate::status::ServerStatus;

/// What every connection of one circle shares. An authenticated connection
/// gets its own copy whose `submit` names its principal.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) timing: ServerTiming,
    pub(crate) client: client::Client,
    pub(crate) status: Arc<ServerStatus>,
    pub(crate) token: CancellationToken,
    pub(crate) submit: SubmitOptions,
    /// Failed upgrades per client address (circles with principals).
    pub(crate) limiter: Arc<Limiter>,
    /// The connections of every circle of this host (a paused host stops
    /// once it holds none).
    pub(crate) host_open: Arc<ServerStatus>,
}

/// The circles of one host, by the local address of their listener.
pub(crate) type Routes = HashMap<SocketAddr, Arc<Shared>>;
