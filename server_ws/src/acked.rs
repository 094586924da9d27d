//! What a connection's peer has acknowledged at the TCP level: a sign of
//! life while a large reply drains.
//!
//! The kernel takes a reply of megabytes into the socket's send buffer at
//! once, so the response body sees nothing of how the client reads it, and
//! the heartbeat's pings wait behind it: a client on a slow link that reads
//! all the time answers no ping for as long as the reply takes. The bytes
//! its TCP stack acknowledged (`TCP_INFO`'s `tcpi_bytes_acked`) grow as it
//! reads (its receive window opens only then), so the heartbeat counts them
//! as the client being heard from.
//!
//! A listener's `on_connect` keeps the accepted socket's descriptor number
//! with the connection's data, which actix drops with the connection (and
//! the socket); the WebSocket task holds it weakly and looks only while
//! actix still has it. Both run on the one thread of the host's actix
//! worker, so the socket cannot close while the task looks, and no
//! descriptor is added per connection.

use std::any::Any;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Weak};

use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;

/// An accepted socket's descriptor, in the connection's data.
struct Socket(RawFd);

/// For a listener's `on_connect`: keeps the accepted socket's descriptor
/// (plain or TLS) with the connection's data.
pub(crate) fn on_connect(conn: &dyn Any, data: &mut Extensions) {
    if let Some(tcp) = tcp_of(conn) {
        data.insert(Arc::new(Socket(tcp.as_raw_fd())));
    }
}

/// The TCP socket of an accepted connection, plain or TLS.
pub(crate) fn tcp_of(conn: &dyn Any) -> Option<&TcpStream> {
    if let Some(tcp) = conn.downcast_ref::<TcpStream>() {
        Some(tcp)
    } else {
        conn.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>()
            .map(|tls| tls.get_ref().0)
    }
}

/// A connection's view of its socket's acknowledged bytes.
pub(crate) struct Acked(Weak<Socket>);

impl Acked {
    /// The socket `req` came in on, as [`on_connect`] kept it.
    pub(crate) fn of(req: &actix_web::HttpRequest) -> Acked {
        Acked(
            req.conn_data::<Arc<Socket>>()
                .map_or_else(Weak::new, Arc::downgrade),
        )
    }

    /// Bytes the peer has acknowledged so far; `None` once actix let the
    /// connection go, or where the kernel does not say.
    pub(crate) fn bytes(&self) -> Option<u64> {
        let socket = self.0.upgrade()?;
        tcp_bytes_acked(socket.0)
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn tcp_bytes_acked(fd: RawFd) -> Option<u64> {
    // SAFETY: `getsockopt` writes at most `len` bytes into `info`, a
    // zero-initialised `tcp_info` (plain integers, valid when zero) that
    // outlives the call, and reports how many it wrote in `len`. The kernel
    // checks `fd` itself (a closed one is an error, not undefined behaviour);
    // it is the connection's open socket (see the module docs).
    let (rc, len, info) = unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        );
        (rc, len, info)
    };
    // A kernel older than the field (4.2) writes less.
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + 8;
    (rc == 0 && len as usize >= needed).then_some(info.tcpi_bytes_acked)
}

#[cfg(not(target_os = "linux"))]
fn tcp_bytes_acked(_fd: RawFd) -> Option<u64> {
    None
}
