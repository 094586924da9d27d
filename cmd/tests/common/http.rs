//! Raw HTTP/1.1 to the admin endpoint over a std socket: one request,
//! `Connection: close`, the status code and body read back; or an event
//! stream, its answer's head read and its events left to the caller.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// An HTTP answer: status code and body.
pub struct Answer {
    pub code: u16,
    pub body: String,
}

/// `method path` at `addr` with extra header lines (`"Name: value"`) and no
/// body.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[&str]) -> Answer {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let length = if method == "GET" {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    send(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}{length}Connection: close\r\n\r\n"
        ),
    )
}

/// Sends the raw `request` to `addr` and reads the answer to its end: the
/// status code and body.
pub fn send(addr: SocketAddr, request: &str) -> Answer {
    try_send(addr, request).unwrap_or_else(|e| panic!("{e}"))
}

/// [`send`], saying what went wrong instead of panicking: no connection,
/// or no HTTP answer (the endpoint closed the connection unanswered).
pub fn try_send(addr: SocketAddr, request: &str) -> Result<Answer, String> {
    let mut stream =
        TcpStream::connect(addr).map_err(|e| format!("connect to the admin endpoint: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(90)))
        .expect("timeout");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer ({read:?}): {raw:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status code: {raw:?}"))?;
    Ok(Answer {
        code,
        body: body.to_string(),
    })
}

/// `GET path` at `addr` with extra header lines.
pub fn get(addr: SocketAddr, path: &str, headers: &[&str]) -> Answer {
    request(addr, "GET", path, headers)
}

/// The admin address the status header names.
pub fn admin_addr(stdout: &str) -> SocketAddr {
    let url = stdout
        .split(" | ")
        .find_map(|part| part.trim().strip_prefix("admin http://"))
        .unwrap_or_else(|| panic!("no admin URL in the header:\n{stdout}"));
    url.split_whitespace()
        .next()
        .expect("an address")
        .parse()
        .expect("a socket address")
}

/// An event stream (`GET /api/events`) from the address `from` to the admin
/// endpoint at `to`, its answer's head read: the status code, and the
/// connection with the events still unread.
pub fn stream_from(from: impl Into<IpAddr>, to: SocketAddr) -> (u16, TcpStream) {
    stream_with(from, to, |_| {})
}

/// [`stream_from`] on a socket `prepare` set up before it connects.
pub fn stream_with(
    from: impl Into<IpAddr>,
    to: SocketAddr,
    prepare: impl FnOnce(&socket2::Socket),
) -> (u16, TcpStream) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((from.into(), 0)).into())
        .expect("bind the client's address");
    prepare(&socket);
    socket.connect(&to.into()).expect("connect");
    let mut stream = TcpStream::from(socket);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET /api/events HTTP/1.1\r\nHost: {to}\r\n\r\n").expect("send");
    let head = read_head(&mut stream);
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status code: {head}"));
    (code, stream)
}

/// An HTTP answer's status line and headers, read byte by byte so that
/// what follows them (a stream's events, a WebSocket's frames) stays unread.
pub fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Starts `config` with its admin endpoint on a free port (and `extra`);
/// the orchestrator, every circle serving, and the admin address.
pub fn start_with_admin(
    sandbox: &super::Sandbox,
    config: &std::path::Path,
    redis: &testkit::RedisServer,
    extra: &[&str],
) -> (super::Orchestrator, SocketAddr) {
    let mut args = vec!["--admin", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut o = super::Orchestrator::start(sandbox, config, &redis.url(), &args);
    o.wait_table();
    let addr = admin_addr(&o.stdout());
    (o, addr)
}
