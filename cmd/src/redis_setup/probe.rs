//! The RESP probe: whether anything at an address answers a PING like a
//! Redis, and waiting while a Redis still loads its data. Plain blocking
//! sockets: callers run it off the async threads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::bail;

/// What answered a PING.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A Redis that can be used (PONG, or NOAUTH from a password-protected
    /// one: any answer but LOADING means a Redis is there; the client then
    /// says whether it can use it).
    There,
    /// A Redis that is still reading its data (`-LOADING`): there, not ready.
    Loading,
}

/// What answers a PING at `addr`, or why nothing did.
pub fn ping(addr: &SocketAddr) -> Result<Answer, String> {
    let mut stream =
        TcpStream::connect_timeout(addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    let wait = Duration::from_secs(2);
    stream
        .set_read_timeout(Some(wait))
        .map_err(|e| e.to_string())?;
    stream.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
    let deadline = Instant::now() + wait;
    // Enough of the reply to tell `-LOADING` from anything else, however
    // the bytes arrive.
    let mut buf = [0u8; 8];
    let mut n = 0;
    while n < buf.len() && !buf[..n].contains(&b'\n') {
        match stream.read(&mut buf[n..]) {
            // A signal (a SIGHUP or SIGTERM during start-up) cut the wait
            // short: it goes on until the deadline, for the signal is no
            // answer of Redis.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted && Instant::now() < deadline => {
                let left = deadline.saturating_duration_since(Instant::now());
                stream
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .map_err(|e| e.to_string())?;
            }
            Ok(0) if n == 0 => {
                return Err("connected but the connection was closed without a reply".to_string());
            }
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if n == 0 => return Err(format!("connected but got no reply: {e}")),
            Err(_) => break,
        }
    }
    Ok(if buf[..n].starts_with(b"-LOADING") {
        Answer::Loading
    } else {
        Answer::There
    })
}

/// The process id the Redis at `addr` reports (`INFO server`'s
/// `process_id`); `None` when it does not answer INFO (a password-protected
/// one answers NOAUTH) or the reply holds no such line.
pub fn server_pid(addr: &SocketAddr) -> Option<u32> {
    let mut stream = TcpStream::connect_timeout(addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"INFO server\r\n").ok()?;
    // The section is a bulk string of a few KiB; its process_id line comes
    // early, so reading stops once a whole one has arrived.
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while reply.len() < 64 << 10 {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if !reply.starts_with(b"$") {
            return None;
        }
        if let Some(pid) = process_id(&reply) {
            return Some(pid);
        }
    }
    None
}

/// The `process_id:<n>` line of an INFO reply, once the whole line is there.
fn process_id(reply: &[u8]) -> Option<u32> {
    let text = String::from_utf8_lossy(reply);
    let (_, rest) = text.split_once("\nprocess_id:")?;
    let (pid, _) = rest.split_once("\r\n")?;
    pid.parse().ok()
}

/// Whether the server at `addr` answers a plain-text PING with a RESP
/// reply (`+PONG`, or an error such as `-NOAUTH`): a plain Redis, which a
/// `rediss://` URL cannot speak to. A TLS port answers with a TLS alert or
/// closes, and is not one.
pub fn answers_plain_resp(addr: &SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(addr, Duration::from_millis(500)) else {
        return false;
    };
    let mut first = [0u8; 1];
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .and_then(|()| stream.write_all(b"PING\r\n"))
        .and_then(|()| stream.read_exact(&mut first))
        .is_ok_and(|()| matches!(first[0], b'+' | b'-'))
}

/// How long a Redis may go on loading its data before the start gives up
/// (a big append-only file takes a while).
pub const LOAD_DEADLINE: Duration = Duration::from_secs(300);

/// Waits while the Redis at `addr` answers LOADING; an error if it still
/// does after [`LOAD_DEADLINE`] or stops answering, [`Stopped`](super::Stopped)
/// once `stop` is set.
pub fn wait_loaded(addr: &SocketAddr, stop: &AtomicBool) -> anyhow::Result<()> {
    let deadline = Instant::now() + LOAD_DEADLINE;
    let mut said = false;
    loop {
        super::check(stop)?;
        match ping(addr) {
            Ok(Answer::There) => return Ok(()),
            Ok(Answer::Loading) if Instant::now() < deadline => {
                if !said {
                    log::info!("redis at {addr} is loading its data; waiting for it");
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(Answer::Loading) => bail!(
                "redis at {addr} was still loading its data after {LOAD_DEADLINE:?}. Fix: \
                 start it yourself, wait until it has loaded, then start again"
            ),
            Err(e) => bail!("redis at {addr} stopped answering while it loaded its data: {e}"),
        }
    }
}
