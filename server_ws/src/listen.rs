//! How a host serves one of its listeners: each connection the worker takes
//! is admitted by [`Peers`] first, before its TLS handshake on a `wss://`
//! listener, then spoken to as HTTP/1.1 by the host's app.
//!
//! actix-web's `HttpServer` runs its `on_connect` hook only once a TLS
//! handshake is done, and actix-tls lets a worker have at most 256
//! handshakes in flight. A connection that never finishes its handshake
//! (or never starts it) would be counted against neither its address's
//! bound nor the budget, and one address holding 256 such connections
//! would keep the listener from accepting anyone else's. So the host
//! builds each listener's actix-server service itself, from the parts
//! `HttpServer::listen` and `HttpServer::listen_rustls_0_23` use, with the
//! same settings, wrapped by [`admitted`]: a connection is counted when the
//! worker takes it, its count held until its service ends (the handshake
//! failed or timed out, or the connection closed), and one past twice its
//! address's bound or past the budget is dropped at once, unanswered. The
//! handshakes in flight are then bounded by the host's accepted
//! connections (actix-tls's own limit is lifted, see [`listen`]).
//!
//! A connection past its address's bound but below twice it is served, to
//! be answered 503 ([`serve_bounded`](crate::serve_bounded)): the listener
//! notes its socket ([`Pending`]) until the connection's
//! `on_connect` (after any handshake) takes the note into the connection's
//! data as [`OverBound`].

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_http::body::{BoxBody, MessageBody};
use actix_http::{Extensions, HttpServiceBuilder, KeepAlive, Request, Response, TlsAcceptorConfig};
use actix_server::{GracefulShutdownSignal, ServerBuilder};
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt as _, apply_fn_factory,
    map_config,
};
use actix_web::dev::AppConfig;
use actix_web::rt::net::TcpStream;

use crate::peers::{OverBound, PeerSlot, Peers};
use crate::tls::TlsConfig;

/// actix's `client_request_timeout` (actix-web's default): a connection
/// whose request head has not come in this long after it was taken (after
/// its TLS handshake) is closed.
const CLIENT_REQUEST: Duration = Duration::from_secs(5);

/// actix's `client_disconnect_timeout`. After a response (a closed
/// WebSocket, a 403/503) actix lingers, reading until the client hangs up,
/// for up to this long before closing the TCP connection. A client that
/// waits for the server's TCP close after the close handshake (RFC 6455 has
/// the server close first; Python's `websockets` does) spent the whole
/// second of actix-web's default in `close()` (0.7-1.0 s measured). Zero
/// turns lingering off: the server closes as soon as the response is out
/// (0.000 s measured). (A short non-zero timeout is worse: after it fires
/// actix never closes, and the client hits its own 10 s close timeout.)
/// Every request here is a bodiless GET, so no unread request data can turn
/// the close into a reset.
const CLIENT_DISCONNECT: Duration = Duration::ZERO;

/// One circle's bound socket, as the host adds it to its server.
pub(crate) struct Listener {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) socket: TcpListener,
    /// `Some`: served as `wss://` through rustls.
    pub(crate) tls: Option<TlsConfig>,
}

/// Adds `listener` to `server`, its connections admitted by `peers` and
/// served by the apps `app` makes (one per worker), with the [`AppConfig`]
/// actix-web would give them (its local address: how the app routes a
/// request to its circle). Lifts actix-tls's limit on handshakes in flight,
/// process-wide: every worker's accepted connections are bounded by its
/// server's `max_concurrent_connections` instead.
pub(crate) fn listen<F, I, S, B>(
    server: ServerBuilder,
    listener: Listener,
    app: F,
    peers: &Arc<Peers>,
) -> std::io::Result<ServerBuilder>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let Listener {
        addr, socket, tls, ..
    } = listener;
    let shutdown = server.graceful_shutdown_signal();
    let peers = Arc::clone(peers);
    // The name actix-web gives a listener's service (actix-server logs it).
    let name = format!("actix-web-service-{addr}");
    let config = move |secure: bool| {
        let host = addr.to_string();
        // `AppConfig::new` is actix-web's own; this is its public twin.
        move |()| AppConfig::__priv_test_new(secure, host.clone(), addr)
    };
    match tls {
        None => server.listen(name, socket, move || {
            let pending = Pending::default();
            let http = http(&shutdown, &pending)
                .local_addr(addr)
                .finish(map_config(app_of(&app), config(false)))
                .tcp();
            admitted(http, Arc::clone(&peers), pending)
        }),
        Some(tls) => {
            actix_tls::accept::max_concurrent_tls_connect(usize::MAX);
            let rustls = tls.rustls();
            server.listen(name, socket, move || {
                let pending = Pending::default();
                let http = http(&shutdown, &pending)
                    .finish(map_config(app_of(&app), config(true)))
                    // actix-tls's handshake timeout (3 s), as actix-web's.
                    .rustls_0_23_with_config(rustls.clone(), TlsAcceptorConfig::default());
                admitted(http, Arc::clone(&peers), pending)
            })
        }
    }
}

/// One app of `app`, its errors turned into responses as actix-web does.
fn app_of<F, I, S>(
    app: &F,
) -> impl ServiceFactory<
    Request,
    Config = AppConfig,
    Response = S::Response,
    Error = Response<BoxBody>,
    InitError = S::InitError,
> + use<F, I, S>
where
    F: Fn() -> I,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig>,
    S::Error: Into<actix_web::Error>,
{
    app()
        .into_factory()
        .map_err(|e| e.into().error_response().into())
}

/// The HTTP/1.1 service of a listener's connections (`T`: plain or TLS),
/// with actix-web's settings and the host's: keep-alive and request timeout
/// as actix-web's defaults, [`CLIENT_DISCONNECT`], Nagle off, and
/// `on_connect` ([`on_connect`]).
fn http<T: 'static, S>(
    shutdown: &GracefulShutdownSignal,
    pending: &Pending,
) -> HttpServiceBuilder<T, S>
where
    S: ServiceFactory<Request, Config = ()>,
    S::Error: Into<Response<BoxBody>> + 'static,
    S::InitError: fmt::Debug,
    <S::Service as Service<Request>>::Future: 'static,
{
    let shutdown = shutdown.clone();
    let pending = pending.clone();
    HttpServiceBuilder::default()
        // A graceful stop closes idle keep-alive connections, and the
        // others once their request is answered.
        .graceful_shutdown_signal(move || {
            let shutdown = shutdown.clone();
            async move { shutdown.notified().await }
        })
        .keep_alive(KeepAlive::default())
        .client_request_timeout(CLIENT_REQUEST)
        .client_disconnect_timeout(CLIENT_DISCONNECT)
        .h1_allow_half_closed(true)
        // Each reply is sent at once. With Nagle's algorithm a reply written
        // while the one before it is unacknowledged waits for that
        // acknowledgement, which a client with nothing more to send delays
        // (40 ms on Linux): a client with two requests in flight would wait
        // that long for every second reply.
        .tcp_nodelay(true)
        .on_connect_ext(move |io: &T, data: &mut Extensions| on_connect(io, data, &pending))
}

/// A connection's `on_connect`, once it speaks HTTP (after its TLS
/// handshake): keeps its socket's descriptor (`acked`), and marks it
/// [`OverBound`] when [`admitted`] noted it past its address's bound.
fn on_connect(io: &dyn Any, data: &mut Extensions, pending: &Pending) {
    crate::acked::on_connect(io, data);
    if pending.0.borrow().is_empty() {
        return;
    }
    if let Some(tcp) = crate::acked::tcp_of(io)
        && pending.0.borrow_mut().remove(&tcp.as_raw_fd())
    {
        data.insert(OverBound);
    }
}

/// The sockets (by descriptor) of one listener's connections that are past
/// their address's bound and not yet at their `on_connect`. One per listener
/// and worker, on the worker's thread. A descriptor names one connection
/// while its stream is open, and its note goes in the same poll as the
/// stream ([`Held`]); a peer address could name a reset connection and the
/// one that reconnected from its port.
#[derive(Clone, Default)]
struct Pending(Rc<RefCell<HashSet<RawFd>>>);

/// A connection's admission, held as long as its service runs: its place in
/// its address's count and in the budget, and its note in [`Pending`] while
/// it is past its address's bound (gone once it has come to `on_connect`).
struct Held {
    _slot: PeerSlot,
    noted: Option<(Pending, RawFd)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((pending, fd)) = &self.noted {
            pending.0.borrow_mut().remove(fd);
        }
    }
}

/// `service` for the connections `peers` admits; one it does not (past
/// twice its address's bound, past the budget, or already gone) is dropped
/// at once, unanswered.
fn admitted<SF>(
    service: SF,
    peers: Arc<Peers>,
    pending: Pending,
) -> impl ServiceFactory<
    TcpStream,
    Config = (),
    Response = (),
    Error = SF::Error,
    InitError = SF::InitError,
>
where
    SF: ServiceFactory<TcpStream, Config = (), Response = ()>,
    <SF::Service as Service<TcpStream>>::Future: 'static,
{
    apply_fn_factory(service, move |io: TcpStream, service: &SF::Service| {
        // Not admitted: `io` is dropped here, with the closure holding it.
        let serving = admit(&peers, &pending, &io).map(|held| (held, service.call(io)));
        async move {
            match serving {
                Some((_held, serving)) => serving.await,
                None => Ok(()),
            }
        }
    })
}

/// Counts `io` under its peer's address; `None` when it is not to be
/// served.
fn admit(peers: &Arc<Peers>, pending: &Pending, io: &TcpStream) -> Option<Held> {
    let peer = io.peer_addr().ok()?;
    let (slot, within) = peers.admit(peer.ip());
    if !within {
        return None;
    }
    let noted = slot.over().then(|| {
        let fd = io.as_raw_fd();
        pending.0.borrow_mut().insert(fd);
        (pending.clone(), fd)
    });
    Some(Held { _slot: slot, noted })
}
