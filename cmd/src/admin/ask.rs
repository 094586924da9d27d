//! The companion commands that ask a running orchestrator through its admin
//! endpoint: `status` (`GET /api/status`: the table once, like `pm2 ls`, or
//! the JSON as it came) and `reload` (`POST /api/reload`: what changed, or
//! why nothing did). Both go through [`Endpoint`], one small HTTP/1.1
//! client: a std socket, one request, `Connection: close`, no client
//! library.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;

use super::args::parse_addr;
use crate::cli::{AdminTarget, ReloadArgs, StatusArgs, Token};
use crate::reload::{ReloadError, ReloadErrorKind, ReloadSummary};
use crate::render::{header_line, table};
use crate::status::{Header, Snapshot};

/// How long connecting and each write may take, and each read of a quick
/// answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `reload` waits for its answer: the orchestrator answers once the
/// removed and changed circles have drained (their `--shutdown-grace` plus a
/// margin), which this side cannot know.
const RELOAD_WAIT: Duration = Duration::from_secs(300);
/// The largest answer read.
const MAX_ANSWER: u64 = 64 << 20;

/// Prints the snapshot; exit code 0, or an error (exit 1) when nothing
/// answers or the answer is not a snapshot.
pub fn status(args: &StatusArgs) -> anyhow::Result<i32> {
    let endpoint = Endpoint::of(&args.target, "status")?;
    let body = endpoint.get("/api/status")?;
    let not_a_snapshot = || {
        format!(
            "{} did not answer a status snapshot; is it an orchestrator?",
            endpoint.url("/api/status")
        )
    };
    if args.json {
        // Printed as it came (fields a newer orchestrator adds included),
        // but only when it is a snapshot: a program reading it must never
        // get another page, or a cut one, with exit 0.
        let value: serde_json::Value = serde_json::from_str(&body).with_context(not_a_snapshot)?;
        if !value
            .get("circles")
            .is_some_and(serde_json::Value::is_array)
        {
            bail!("{}: it holds no \"circles\" array", not_a_snapshot());
        }
        crate::stdout::write("the status", &format!("{}\n", body.trim_end()))?;
        return Ok(0);
    }
    // The snapshot's state names are `&'static str`; this command prints
    // once and exits, so its one answer may live as long as the process.
    let body: &'static str = Box::leak(body.into_boxed_str());
    let snap: Snapshot = serde_json::from_str(body).with_context(not_a_snapshot)?;
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
    let table = table::build(&snap.circles, false);
    crate::stdout::write(
        "the status table",
        &format!("{}\n{table}\n", header_line(&header, &snap)),
    )?;
    Ok(0)
}

/// The body of a refused reload: `{"error": {"kind", "message"}}`.
#[derive(Deserialize)]
struct Refusal {
    error: ReloadError,
}

/// Asks for a reload and prints what changed (exit 0). A refusal is an
/// error whose chain holds the [`ReloadError`]: `main` exits 2 for an
/// invalid file (nothing changed) and 1 otherwise, as for nothing answering.
pub fn reload(args: &ReloadArgs) -> anyhow::Result<i32> {
    let endpoint = Endpoint::of(&args.target, "reload")?;
    let path = "/api/reload";
    let url = endpoint.url(path);
    let answer = endpoint.ask("POST", path, RELOAD_WAIT)?;
    match answer.code {
        200 => {
            let summary: ReloadSummary = serde_json::from_str(&answer.body).with_context(|| {
                format!(
                    "{url} did not answer a reload summary: {}",
                    answer.body.trim()
                )
            })?;
            crate::stdout::write(
                "the reload summary",
                &format!("reload applied: {summary}\n"),
            )?;
            Ok(0)
        }
        401 => Err(endpoint.wants_token(&url)),
        code @ (422 | 500 | 503) => {
            let Refusal { error } = serde_json::from_str(&answer.body)
                .with_context(|| format!("{url} answered HTTP {code}: {}", answer.body.trim()))?;
            let what = match error.kind {
                ReloadErrorKind::InvalidConfig => {
                    "the reload was refused: the circles file cannot be read or is invalid, \
                     and the running circles are unchanged"
                }
                ReloadErrorKind::CannotStart => "the reload was not applied in full",
                ReloadErrorKind::ShuttingDown => "the reload was refused",
            };
            Err(anyhow::Error::new(error).context(format!("{what} ({url})")))
        }
        code @ (404 | 405) => bail!(
            "{url} answered HTTP {code}: is it an orchestrator that can reload? Send it \
             SIGHUP instead"
        ),
        other => bail!("{url} answered HTTP {other}: {}", answer.body.trim()),
    }
}

/// A running orchestrator's admin endpoint, as a companion command reaches it.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    token: Option<Token>,
}

/// An HTTP answer: its status code and body.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub code: u16,
    /// The body, as text.
    pub body: String,
}

impl Endpoint {
    /// The endpoint `target` names, for `command`; `--admin off` is a usage
    /// error (exit 2).
    pub fn of(target: &AdminTarget, command: &str) -> anyhow::Result<Endpoint> {
        if target.admin.trim().eq_ignore_ascii_case("off") {
            return Err(crate::UsageError(format!(
                "{command} asks a running orchestrator's admin endpoint, and --admin (or \
                 CIRCLES_ADMIN) says off: give the address the orchestrator serves it on"
            ))
            .into());
        }
        Ok(Endpoint {
            addr: parse_addr(&target.admin)?,
            token: target.token.clone(),
        })
    }

    /// `http://ADDR/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path`: the body of a 200, or an error saying what answered (or
    /// that nothing did) and what to do.
    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        let answer = self.ask("GET", path, IO_TIMEOUT)?;
        match answer.code {
            200 => Ok(answer.body),
            401 => Err(self.wants_token(&self.url(path))),
            other => bail!(
                "{} answered HTTP {other}: {}",
                self.url(path),
                answer.body.trim()
            ),
        }
    }

    /// Sends `method path` (no body) with the token, if any, and reads the
    /// whole answer, waiting up to `wait` for it. An error when nothing
    /// answers or the answer is not HTTP; any status code is an answer.
    pub fn ask(&self, method: &str, path: &str, wait: Duration) -> anyhow::Result<Answer> {
        let addr = self.addr;
        let url = self.url(path);
        let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| {
            anyhow::anyhow!(
                "nothing answers at http://{addr} ({e}): is an orchestrator running with \
                 --admin {addr}? Give its admin address with --admin (or CIRCLES_ADMIN)"
            )
        })?;
        stream.set_read_timeout(Some(wait))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {}\r\n", t.reveal()))
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n{auth}\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .with_context(|| format!("cannot send the request to {url}"))?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .with_context(|| format!("cannot read the answer of {url}"))?;
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .with_context(|| format!("{url} answered something that is not HTTP"))?;
        let (head, body) = (
            String::from_utf8_lossy(&answer[..split]),
            &answer[split + 4..],
        );
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
        // An orchestrator that went away mid-answer (killed, crashed) closes
        // the connection before the length it announced: a cut answer is
        // no answer, not a shorter one.
        let announced = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        });
        if let Some(announced) = announced
            && body.len() < announced
        {
            bail!(
                "{url} closed the connection after {} of the {announced} bytes of its answer",
                body.len()
            );
        }
        Ok(Answer {
            code,
            body: String::from_utf8_lossy(body).into_owned(),
        })
    }

    /// The error of a 401 from `url`: which token to pass, and how.
    fn wants_token(&self, url: &str) -> anyhow::Error {
        let which = if self.token.is_some() {
            "the token given is not the one it asks for"
        } else {
            "no token was given"
        };
        anyhow::anyhow!(
            "{url} wants the admin token ({which}): pass --token (or CIRCLES_ADMIN_TOKEN), \
             the token whose SHA-256 the orchestrator got with --admin-token-sha256"
        )
    }
}
