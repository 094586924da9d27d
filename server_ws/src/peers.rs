//! Connections per client address, over every circle of a host: one
//! address may hold at most as many as all the host's circles would take
//! upgraded ([`ServerConfig::max_connections`](crate::ServerConfig) each)
//! plus [`PENDING_PER_ADDRESS`] on their way in. Past that, the address's
//! next requests are answered 503 and their connections closed; past twice
//! that, its connections are closed at once, unanswered (one that sends
//! nothing would otherwise hold its place until the request timeout).
//!
//! Without it, one client that never gets past the upgrade (no token, a
//! path that is not served, a refused origin) could hold connections with
//! HTTP keep-alive until the process ran out of file descriptors, and then
//! no circle of the host, nor the admin endpoint, could accept one. Every
//! refusal also closes its connection ([`serve_bounded`]), so keep-alive
//! holds none; a connection that sends nothing is closed by actix's request
//! timeout (5 s), or on a TLS listener by its TLS handshake timeout (3 s).
//! Addresses count as the failed-token limiter counts them: IPv4 as is,
//! IPv6 by its /64.
//!
//! The orchestrator's admin endpoint counts its own connections the same
//! way, with its own bound.
//!
//! Many addresses together, each below its bound, could still take every
//! descriptor: each server's connections also count against a [`Budget`]
//! (the orchestrator sizes one for its hosts and one for its admin
//! endpoint from its open files limit). A connection past its budget is
//! closed at once, unanswered: a 503 would keep its descriptor until a
//! request came, up to the request timeout, and clients that connect fast
//! enough would hold every descriptor that way.
//!
//! A host counts a connection when its worker takes it, before its TLS
//! handshake, and holds the count until the connection's service ends
//! (`listen.rs`); the admin endpoint, plain HTTP, counts it in
//! its `on_connect` ([`Peers::on_connect`]), which actix runs as its worker
//! takes it. The connections the accept thread took and the worker has not
//! yet are bounded by actix's `max_concurrent_connections`, set to the
//! budget plus [`UNCOUNTED`] ([`Peers::accepted_max`]).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::HttpResponse;
use actix_web::dev::{Extensions, Service, ServiceRequest, ServiceResponse};
use actix_web::http::{ConnectionType, StatusCode, header};

/// Connections an address may hold beyond what the circles take upgraded:
/// upgrades in progress, and refused requests on their way out.
pub const PENDING_PER_ADDRESS: usize = 64;

/// Connections a server may have accepted beyond its [`Budget`]: those
/// its worker has not yet counted (a burst the accept thread took at once)
/// or not yet closed.
pub const UNCOUNTED: usize = 64;

/// How often a spent [`Budget`] may say so in the log.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Connections one or more actix servers hold together, whatever their
/// addresses: a share of the process's file descriptors. The connection
/// that would take one more than `max` is closed at once, unanswered.
pub struct Budget {
    /// What holds these connections, for the log.
    what: &'static str,
    max: AtomicUsize,
    open: AtomicUsize,
    /// When the log last said the budget was spent.
    warned: Mutex<Option<Instant>>,
}

impl Budget {
    /// At most `max` connections together; `what` names their servers in
    /// the log ("the circles' hosts").
    pub fn new(what: &'static str, max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            what,
            max: AtomicUsize::new(max),
            open: AtomicUsize::new(0),
            warned: Mutex::new(None),
        })
    }

    /// No bound but the per-address one: for a host outside the
    /// orchestrator, which sizes no budget.
    pub fn unbounded() -> Arc<Budget> {
        Budget::new("a host", usize::MAX)
    }

    /// Changes the bound; connections open past a lowered one stay open.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// The connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts one more connection; `false` when it is past the bound.
    fn take(&self) -> bool {
        let max = self.max();
        if self.open.fetch_add(1, Ordering::Relaxed) < max {
            return true;
        }
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *warned = Some(Instant::now());
            log::warn!(
                "{} hold {max} connections, all the process's file descriptors allow them: \
                 new connections are closed at once until some close",
                self.what
            );
        }
        false
    }

    fn give_back(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The open connections of each address, for one actix server: a host's
/// listeners admit each connection (`listen.rs`), the admin
/// endpoint's `on_connect` calls [`Peers::on_connect`], and the app's
/// `wrap_fn` [`serve_bounded`].
pub struct Peers {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    /// What the server's connections count against with other servers'.
    budget: Arc<Budget>,
}

/// One accepted connection's place in its address's count and its
/// budget, given back when dropped: held by the host's listener for as long
/// as the connection's service runs (`listen.rs`), or kept in
/// the connection's data by [`Peers::on_connect`] (actix drops it with the
/// connection).
pub(crate) struct PeerSlot {
    peers: Arc<Peers>,
    key: IpAddr,
    /// The address held `max` connections already when this one came, or
    /// the budget was spent.
    over: bool,
}

impl Peers {
    /// At most `max` connections per address, and all of them within
    /// `budget`.
    pub fn new(max: usize, budget: Arc<Budget>) -> Arc<Peers> {
        Arc::new(Peers {
            max,
            open: Mutex::default(),
            budget,
        })
    }

    /// For the server's actix `max_connections` (with one worker): its
    /// budget's bound now plus [`UNCOUNTED`].
    pub fn accepted_max(&self) -> usize {
        self.budget.max().saturating_add(UNCOUNTED)
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For the `on_connect` of a plain HTTP server (the admin endpoint; a
    /// host admits its connections before that, `listen.rs`): counts the
    /// connection under its peer's address and marks it for a 503
    /// ([`serve_bounded`]) when the address is past its bound; shuts the
    /// socket when it is not admitted (actix then reads its end and drops
    /// it, and its descriptor, at once).
    pub fn on_connect(self: &Arc<Self>, conn: &dyn Any, data: &mut Extensions) {
        let Some(tcp) = crate::acked::tcp_of(conn) else {
            return;
        };
        let Ok(peer) = tcp.peer_addr() else { return };
        let (slot, within) = self.admit(peer.ip());
        if !within {
            // Nothing to do if it fails: the socket is already gone.
            let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Both);
        }
        if slot.over {
            data.insert(OverBound);
        }
        data.insert(slot);
    }

    /// Counts a connection from `ip`; `false` beside it when the budget is
    /// spent, or when its address holds twice its bound already: such a
    /// connection is closed at once, unanswered. (Past its bound an address
    /// is answered 503, but a connection that sends nothing holds its place
    /// until actix's request timeout: one address reconnecting fast enough
    /// would fill the budget with them and shut every other address out.)
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> (PeerSlot, bool) {
        let key = crate::auth::key(ip);
        let budgeted = self.budget.take();
        let (over, flooding) = {
            let mut open = self.open();
            let n = open.entry(key).or_default();
            *n += 1;
            (*n > self.max, *n > self.max.saturating_mul(2))
        };
        let within = budgeted && !flooding;
        let slot = PeerSlot {
            peers: Arc::clone(self),
            key,
            over: over || !within,
        };
        (slot, within)
    }

    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> usize {
        self.open().get(&crate::auth::key(ip)).copied().unwrap_or(0)
    }
}

/// For an app's `wrap_fn`: serves `req` through `srv`, unless its
/// connection is past its address's bound ([`Peers`]), which gets 503 with
/// `Retry-After` and the body "too many connections from this address".
/// Every answer whose status `keep_open` refuses closes its connection:
/// keep-alive must not let a client hold sockets it gets nothing through.
pub fn serve_bounded<S>(
    req: ServiceRequest,
    srv: &S,
    keep_open: fn(StatusCode) -> bool,
) -> impl Future<Output = Result<ServiceResponse, actix_web::Error>> + use<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = actix_web::Error>,
{
    let over = req.conn_data::<OverBound>().is_some();
    let served = if over { Err(req) } else { Ok(srv.call(req)) };
    async move {
        let mut res = match served {
            Ok(serving) => serving.await?,
            Err(req) => req.into_response(
                HttpResponse::ServiceUnavailable()
                    .insert_header((header::RETRY_AFTER, "1"))
                    .body("too many connections from this address\n"),
            ),
        };
        if !keep_open(res.status()) {
            res.response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
        }
        Ok(res)
    }
}

impl PeerSlot {
    /// Its address held its bound already when it came, or it is past the
    /// budget: it is to be answered 503 ([`OverBound`]).
    pub(crate) fn over(&self) -> bool {
        self.over
    }
}

/// In a connection's data: the connection is past its address's bound, and
/// [`serve_bounded`] answers its requests 503.
pub(crate) struct OverBound;

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.peers.budget.give_back();
        let mut open = self.peers.open();
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_past_its_bound_is_over_and_every_slot_gives_its_place_back() {
        let peers = Peers::new(2, Budget::unbounded());
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let slots: Vec<PeerSlot> = (0..3).map(|_| peers.admit(ip).0).collect();
        let over: Vec<bool> = slots.iter().map(|s| s.over).collect();
        assert_eq!(over, [false, false, true]);
        // Another address, and the same /64 of IPv6 as one address.
        assert!(!peers.admit("10.0.0.2".parse().expect("ip")).0.over);
        let a = peers.admit("2001:db8::1".parse().expect("ip")).0;
        let b = peers.admit("2001:db8::2".parse().expect("ip")).0;
        assert!(!a.over && !b.over);
        assert!(peers.admit("2001:db8::3".parse().expect("ip")).0.over);
        drop((a, b));
        assert_eq!(peers.held(ip), 3);
        drop(slots);
        assert_eq!(peers.held(ip), 0);
        assert!(peers.open().is_empty(), "no entry left for a gone address");
    }

    #[test]
    fn an_address_at_twice_its_bound_is_closed_at_once_within_the_budget() {
        let peers = Peers::new(2, Budget::new("test server", 100));
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let admitted: Vec<(PeerSlot, bool)> = (0..5).map(|_| peers.admit(ip)).collect();
        let within: Vec<bool> = admitted.iter().map(|(_, w)| *w).collect();
        assert_eq!(within, [true, true, true, true, false]);
        assert!(peers.admit("10.0.0.2".parse().expect("ip")).1);
    }

    #[test]
    fn past_its_budget_a_connection_is_refused_whatever_its_address_and_its_place_comes_back() {
        let budget = Budget::new("test servers", 3);
        let host = Peers::new(2, Arc::clone(&budget));
        let admin = Peers::new(2, Arc::clone(&budget));
        let slots: Vec<(PeerSlot, bool)> = (1..=3)
            .map(|i| host.admit(IpAddr::from([10, 0, 0, i])))
            .collect();
        assert!(slots.iter().all(|(slot, within)| *within && !slot.over));
        // A fourth address, at either server: past the budget they share.
        let (slot, within) = admin.admit("10.0.0.4".parse().expect("ip"));
        assert!(!within && slot.over);
        drop(slot);
        assert_eq!(budget.open(), 3);
        drop(slots);
        assert_eq!(budget.open(), 0);
        assert!(host.admit("10.0.0.4".parse().expect("ip")).1);
        budget.set_max(0);
        assert!(!admin.admit("10.0.0.5".parse().expect("ip")).1);
    }
}
