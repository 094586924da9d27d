//! [`Proxy`]: a TCP proxy in front of a server that a test can freeze, to
//! cut a client off as a network partition does: nothing is forwarded
//! either way, and no connection is closed (the client's requests just go
//! unanswered), or freeze only the replies, to lose them after the server
//! acted on the requests.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// A TCP proxy on a free loopback port, forwarding to `127.0.0.1:<target>`
/// until frozen. Dropping it stops forwarding and closes every connection.
pub struct Proxy {
    port: u16,
    frozen: Arc<AtomicBool>,
    replies_frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Starts forwarding to `127.0.0.1:<target>`.
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let replies_frozen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, r, s) = (
            Arc::clone(&frozen),
            Arc::clone(&replies_frozen),
            Arc::clone(&stop),
        );
        thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        for (from, to, replies) in [
                            (client.try_clone(), server.try_clone(), false),
                            (server.try_clone(), client.try_clone(), true),
                        ] {
                            if let (Ok(from), Ok(to)) = (from, to) {
                                let (f, s) = (Arc::clone(&f), Arc::clone(&s));
                                let r = replies.then(|| Arc::clone(&r));
                                thread::spawn(move || pump(from, to, (&f, r.as_deref()), &s));
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            frozen,
            replies_frozen,
            stop,
        }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/` (for a proxy in front of Redis).
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops forwarding, both ways, on every connection (new ones too),
    /// closing none.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Forwards again (replies too).
    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
        self.replies_frozen.store(false, Ordering::SeqCst);
    }

    /// Forwards requests to the server but none of its replies: the server
    /// acts on every request, and the client hears nothing back (a reply
    /// lost on the way), until [`Proxy::thaw`].
    pub fn freeze_replies(&self) {
        self.replies_frozen.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` while neither `frozen` flag is set (the second, if
/// any, freezes this direction alone); while one is, reads nothing (the bytes
/// wait in the kernel's buffers).
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    frozen: (&AtomicBool, Option<&AtomicBool>),
    stop: &AtomicBool,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        let (all, this_way) = frozen;
        if all.load(Ordering::SeqCst) || this_way.is_some_and(|f| f.load(Ordering::SeqCst)) {
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
