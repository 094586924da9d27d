//! `circles_orchestrator status`: asks a running orchestrator's admin
//! endpoint for its snapshot (`GET /api/status`) and prints the table once,
//! like `pm2 ls`, or the JSON as it came. A plain HTTP/1.1 GET over a std
//! socket: one request, `Connection: close`, no client library.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use super::args::parse_addr;
use crate::cli::{StatusArgs, Token};
use crate::render::{header_line, table};
use crate::status::{Header, Snapshot};
use anyhow::{Context, bail};

/// How long connecting and each read or write may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read.
const MAX_ANSWER: u64 = 64 << 20;

/// Prints the snapshot; exit code 0, or an error (exit 1) when nothing
/// answers or the answer is not a snapshot.
pub fn status(args: &StatusArgs) -> anyhow::Result<i32> {
    if args.admin.trim().eq_ignore_ascii_case("off") {
        return Err(crate::UsageError(
            "status asks a running orchestrator's admin endpoint, and --admin (or \
             CIRCLES_ADMIN) says off: give the address the orchestrator serves it on"
                .to_string(),
        )
        .into());
    }
    let addr = parse_addr(&args.admin)?;
    let body = get(addr, "/api/status", args.token.as_ref())?;
    if args.json {
        println!("{}", body.trim_end());
        return Ok(0);
    }
    // The snapshot's state names are `&'static str`; this command prints
    // once and exits, so its one answer may live as long as the process.
    let body: &'static str = Box::leak(body.into_boxed_str());
    let snap: Snapshot = serde_json::from_str(body).with_context(|| {
        format!("http://{addr}/api/status did not answer a status snapshot; is it an orchestrator?")
    })?;
    let header = Header {
        redis_url: snap.redis_url.clone(),
        redis_managed: snap.redis_managed,
        data_dir: snap.data_dir.clone(),
        log_file: None,
        admin: snap.admin.clone(),
        redis_restarts: Arc::new(AtomicU32::new(snap.redis_restarts)),
        started: Instant::now()
            .checked_sub(Duration::from_secs(snap.uptime_secs))
            .unwrap_or_else(Instant::now),
        reload: Arc::default(),
    };
    println!("{}", header_line(&header, &snap));
    println!("{}", table::build(&snap.circles, false));
    Ok(0)
}

/// `GET path` from the admin endpoint at `addr`: the body of a 200, or an
/// error saying what answered (or that nothing did) and what to do.
pub fn get(addr: SocketAddr, path: &str, token: Option<&Token>) -> anyhow::Result<String> {
    let url = format!("http://{addr}{path}");
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| {
        anyhow::anyhow!(
            "nothing answers at http://{addr} ({e}): is an orchestrator running with \
             --admin {addr}? Give its admin address with --admin (or CIRCLES_ADMIN)"
        )
    })?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {}\r\n", t.reveal()))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n{auth}\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("cannot send the request to {url}"))?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .with_context(|| format!("cannot read the answer of {url}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .with_context(|| format!("{url} answered something that is not HTTP"))?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{url} answered something that is not HTTP"))?;
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        bail!("{url} answered in chunks, which this command does not read");
    }
    match code {
        200 => Ok(body.to_string()),
        401 => bail!(
            "{url} wants the admin token: pass --token (or CIRCLES_ADMIN_TOKEN), the token \
             whose SHA-256 the orchestrator got with --admin-token-sha256"
        ),
        other => bail!("{url} answered HTTP {other}: {}", body.trim()),
    }
}
