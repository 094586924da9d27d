//! [`Proxy`]: a TCP proxy in front of a server that a test can freeze, to
//! cut a client off as a network partition does: nothing is forwarded
//! either way, and no connection is closed (the client's requests just go
//! unanswered), or freeze only the replies, to lose them after the server
//! acted on the requests, or cut every connection and refuse new ones, as
//! a server that died does.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

/// A TCP proxy on a free loopback port, forwarding to `127.0.0.1:<target>`
/// until frozen. Dropping it stops forwarding and closes every connection.
pub struct Proxy {
    port: u16,
    frozen: Arc<AtomicBool>,
    replies_frozen: Arc<AtomicBool>,
    /// Raised by each cut: a connection made before it ends.
    cuts: Arc<AtomicU64>,
    refusing: Arc<AtomicBool>,
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
        let cuts = Arc::new(AtomicU64::new(0));
        let refusing = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, r, c, refuse, s) = (
            Arc::clone(&frozen),
            Arc::clone(&replies_frozen),
            Arc::clone(&cuts),
            Arc::clone(&refusing),
            Arc::clone(&stop),
        );
        thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let accepted = listener.accept();
                // Read before the refusal is looked at: a cut after that
                // look ends this connection too.
                let cut_at = c.load(Ordering::SeqCst);
                match accepted {
                    // Closed at once, as by a server that is not there.
                    Ok((client, _)) if refuse.load(Ordering::SeqCst) => {
                        let _ = client.shutdown(Shutdown::Both);
                    }
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        for (from, to, replies) in [
                            (client.try_clone(), server.try_clone(), false),
                            (server.try_clone(), client.try_clone(), true),
                        ] {
                            if let (Ok(from), Ok(to)) = (from, to) {
                                let (f, c, s) = (Arc::clone(&f), Arc::clone(&c), Arc::clone(&s));
                                let r = replies.then(|| Arc::clone(&r));
                                thread::spawn(move || {
                                    let ends = Ends {
                                        stop: &s,
                                        cuts: &c,
                                        cut_at,
                                    };
                                    pump(from, to, (&f, r.as_deref()), &ends);
                                });
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
            cuts,
            refusing,
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

    /// Forwards again (replies too), and takes new connections again
    /// after [`Proxy::cut_and_refuse`].
    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
        self.replies_frozen.store(false, Ordering::SeqCst);
        self.refusing.store(false, Ordering::SeqCst);
    }

    /// Closes every connection open now, both ways, with what they had not
    /// forwarded yet unsent; new ones are made as before.
    pub fn cut(&self) {
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }

    /// [`Proxy::cut`], and closes each new connection as soon as it is
    /// accepted, until [`Proxy::thaw`]: the client sees its server die.
    pub fn cut_and_refuse(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        self.cut();
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

/// What ends a connection's pumps: the proxy dropped, or cut after the
/// connection was made.
struct Ends<'a> {
    stop: &'a AtomicBool,
    cuts: &'a AtomicU64,
    cut_at: u64,
}

impl Ends<'_> {
    fn ended(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.cuts.load(Ordering::SeqCst) != self.cut_at
    }
}

/// Copies `from` to `to` while neither `frozen` flag is set (the second, if
/// any, freezes this direction alone); while one is, reads nothing (the bytes
/// wait in the kernel's buffers) and holds what a read that was under way
/// when it was set got.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    frozen: (&AtomicBool, Option<&AtomicBool>),
    ends: &Ends<'_>,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 16 * 1024];
    let mut held = 0;
    while !ends.ended() {
        let (all, this_way) = frozen;
        if all.load(Ordering::SeqCst) || this_way.is_some_and(|f| f.load(Ordering::SeqCst)) {
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        if held > 0 {
            if to.write_all(&buf[..held]).is_err() {
                break;
            }
            held = 0;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            // Written at the next turn, unless a freeze came meanwhile.
            Ok(n) => held = n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
