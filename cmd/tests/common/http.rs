//! Raw HTTP/1.1 to the admin endpoint over a std socket: one request,
//! `Connection: close`, the status code and body read back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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
