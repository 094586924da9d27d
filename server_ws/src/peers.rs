//! Connections per client address, over every circle of a host: one
//! address may hold at most as many as all the host's circles would take
//! upgraded ([`ServerConfig::max_connections`](crate::ServerConfig) each)
//! plus [`PENDING_PER_ADDRESS`] on their way in. Past that, the address's
//! next requests are answered 503 and their connections closed.
//!
//! Without it, one client that never gets past the upgrade (no token, a
//! path that is not served, a refused origin) could hold connections with
//! HTTP keep-alive until the process ran out of file descriptors, and then
//! no circle of the host, nor the admin endpoint, could accept one. Every
//! refusal also closes its connection ([`serve_bounded`]), so keep-alive
//! holds none; a connection that sends nothing is closed by actix's request
//! timeout (5 s). Addresses count as the failed-token limiter counts them:
//! IPv4 as is, IPv6 by its /64.
//!
//! The orchestrator's admin endpoint counts its own connections the same
//! way, with its own bound.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use actix_web::HttpResponse;
use actix_web::dev::{Extensions, Service, ServiceRequest, ServiceResponse};
use actix_web::http::{ConnectionType, StatusCode, header};

/// Connections an address may hold beyond what the circles take upgraded:
/// upgrades in progress, and refused requests on their way out.
pub const PENDING_PER_ADDRESS: usize = 64;

/// The open connections of each address, for one actix server: its
/// `on_connect` calls [`Peers::on_connect`], its app's `wrap_fn`
/// [`serve_bounded`].
pub struct Peers {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One accepted connection's place in its address's count, kept in the
/// connection's data (actix drops it with the connection).
struct PeerSlot {
    peers: Arc<Peers>,
    key: IpAddr,
    /// The address held `max` connections already when this one came.
    over: bool,
}

impl Peers {
    /// At most `max` connections per address.
    pub fn new(max: usize) -> Arc<Peers> {
        Arc::new(Peers {
            max,
            open: Mutex::default(),
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For a listener's `on_connect`: counts the connection under its
    /// peer's address and records whether the address is past its bound.
    pub fn on_connect(self: &Arc<Self>, conn: &dyn Any, data: &mut Extensions) {
        let Some(tcp) = crate::acked::tcp_of(conn) else {
            return;
        };
        let Ok(peer) = tcp.peer_addr() else { return };
        data.insert(self.admit(peer.ip()));
    }

    /// Counts a connection from `ip`.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> PeerSlot {
        let key = crate::auth::key(ip);
        let over = {
            let mut open = self.open();
            let n = open.entry(key).or_default();
            *n += 1;
            *n > self.max
        };
        PeerSlot {
            peers: Arc::clone(self),
            key,
            over,
        }
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
    let over = req.conn_data::<PeerSlot>().is_some_and(|slot| slot.over);
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

impl Drop for PeerSlot {
    fn drop(&mut self) {
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
        let peers = Peers::new(2);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let slots: Vec<PeerSlot> = (0..3).map(|_| peers.admit(ip)).collect();
        let over: Vec<bool> = slots.iter().map(|s| s.over).collect();
        assert_eq!(over, [false, false, true]);
        // Another address, and the same /64 of IPv6 as one address.
        assert!(!peers.admit("10.0.0.2".parse().expect("ip")).over);
        let a = peers.admit("2001:db8::1".parse().expect("ip"));
        let b = peers.admit("2001:db8::2".parse().expect("ip"));
        assert!(!a.over && !b.over);
        assert!(peers.admit("2001:db8::3".parse().expect("ip")).over);
        drop((a, b));
        assert_eq!(peers.held(ip), 3);
        drop(slots);
        assert_eq!(peers.held(ip), 0);
        assert!(peers.open().is_empty(), "no entry left for a gone address");
    }
}
