//! `circles_orchestrator play`: send one script to a running circle over
//! WebSocket JSON-RPC (DESIGN §4) and print what it returned.
//!
//! Prints what the script printed (if the server returns it), then the output,
//! on stdout, and exits 0. A script error prints its code, kind, message and
//! position on stderr and exits 1; so does a connection failure. A usage
//! mistake (no script, unknown circle, a `--url` that is not `ws://` or
//! `wss://`, a `--host` that is not a host) exits 2.
//!
//! With `--token` (or `CIRCLES_TOKEN`) the upgrade carries
//! `Authorization: Bearer <token>`; a refusal (401, 429) exits 1 saying what
//! to do. The token never appears in any output.
//!
//! `wss://` URLs are verified against the system's root certificates plus,
//! with `--ca`, the certificates of that file. Without `--url`, play cannot
//! know whether the orchestrator serves TLS: it connects with `wss://` when
//! `--ca` is given and `ws://` otherwise (an orchestrator whose certificate
//! a public CA signed is reached with `--url wss://…`). A certificate that
//! is not trusted exits 1 saying so and how to fix it.

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{IsTerminal, Read};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::UsageError;
use crate::cli::{PlayArgs, Token};
use crate::status::ws_url;

/// Runs `play`; returns the process exit code.
pub fn play(args: PlayArgs) -> anyhow::Result<i32> {
    let script = read_script(&args)?;
    if script.trim().is_empty() {
        return Err(UsageError("the script is empty".to_string()).into());
    }
    let url = target_url(&args)?;
    if args.ca.is_some() && url.starts_with("ws://") {
        return Err(UsageError(format!(
            "--ca trusts a CA for wss:// only, and {} is ws:// (no TLS): give the circle's \
             wss:// URL, or leave --ca out",
            shown_url(&url)
        ))
        .into());
    }
    let tls = crate::tls::client_config(args.ca.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let reply = runtime.block_on(async {
        tokio::time::timeout(
            args.timeout,
            exchange(&url, &script, args.token.as_ref(), tls),
        )
        .await
        .map_err(|_| anyhow!("no reply from {url} within {:?}", args.timeout))?
    })?;
    if args.json {
        crate::stdout::write("the reply", &format!("{reply}\n"))?;
        return Ok(if reply.get("error").is_some() { 1 } else { 0 });
    }
    print_reply(&reply)
}

/// Reads at most the largest script a circle runs (the engine's bound,
/// which no option raises) of UTF-8 text from `from`; a longer one is an
/// error of kind `FileTooLarge`. A file or stdin past it (`-f /dev/zero`,
/// an endless pipe, a log given by mistake) is refused once that much is
/// read, not read into memory to its end.
/// The length is checked before the text: a cut that falls inside a
/// character is no reason to call a long script not UTF-8.
fn read_bounded(from: impl Read) -> std::io::Result<String> {
    let max = engine::Limits::default().max_script_bytes;
    let mut bytes = Vec::new();
    from.take(u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("a circle runs scripts of at most {max} bytes, and this one is longer"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn read_script(args: &PlayArgs) -> anyhow::Result<String> {
    if let Some(path) = &args.file {
        return std::fs::File::open(path)
            .and_then(read_bounded)
            .map_err(|e| {
                UsageError(format!(
                    "cannot read the script file {}: {e}{}",
                    path.display(),
                    not_text(&e)
                ))
                .into()
            });
    }
    match args.script.as_deref() {
        Some("-") => read_stdin(),
        Some(s) => Ok(s.to_string()),
        None if !std::io::stdin().is_terminal() => read_stdin(),
        None => Err(UsageError(
            "no script: give it as an argument (play '40 + 2'), with -f FILE, or on stdin (play -)"
                .to_string(),
        )
        .into()),
    }
}

fn read_stdin() -> anyhow::Result<String> {
    match read_bounded(std::io::stdin()) {
        Ok(script) => Ok(script),
        // Bad input, as for a script file: a usage error.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::FileTooLarge
            ) =>
        {
            Err(UsageError(format!(
                "cannot read the script from stdin: {e}{}",
                not_text(&e)
            ))
            .into())
        }
        Err(e) => Err(anyhow!(e).context("cannot read the script from stdin")),
    }
}

/// What to add to a read error that says the script is not UTF-8.
fn not_text(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::InvalidData {
        " (a script is UTF-8 text)"
    } else {
        ""
    }
}

fn target_url(args: &PlayArgs) -> anyhow::Result<String> {
    if let Some(url) = &args.url {
        return checked_url(url).map_err(|why| {
            UsageError(format!(
                "--url {} is not a WebSocket URL: {why} (e.g. ws://127.0.0.1:8081/ws)",
                shown_url(url)
            ))
            .into()
        });
    }
    let circles = crate::config::load(&args.config).map_err(|e| {
        UsageError(format!(
            "{e}\n(play finds circles in --config, or takes --url ws://host:port/ws or wss://…)"
        ))
    })?;
    let circle = match &args.circle {
        Some(key) => crate::config::pick_circle(&circles, key, &args.config)?,
        None => circles
            .first()
            .ok_or_else(|| UsageError(format!("{} has no circle", args.config.display())))?,
    };
    let scheme = if args.ca.is_some() { "wss" } else { "ws" };
    let url = ws_url(scheme, &args.host, circle.port);
    checked_host_url(&url, circle.port).map_err(|why| {
        UsageError(format!(
            "--host {} is not a host name or address: {why} (e.g. --host 127.0.0.1, \
             --host ::1, --host example.com)",
            shown_host(&args.host)
        ))
        .into()
    })
}

/// `url`, made of `--host` and a circle's `port`, as [`checked_url`] checks
/// it, and naming that port and the path `/ws`: a `/`, `?` or `#` in the
/// host would move the port into the path and connect to port 80 instead.
fn checked_host_url(url: &str, port: u16) -> Result<String, String> {
    let checked = checked_url(url)?;
    let parsed = url::Url::parse(&checked).map_err(|e| e.to_string())?;
    let whole = parsed.port_or_known_default() == Some(port)
        && parsed.path() == "/ws"
        && parsed.query().is_none()
        && parsed.fragment().is_none();
    if !whole {
        return Err(format!(
            "it holds a character a host cannot have, and {url} would not reach port {port}"
        ));
    }
    Ok(checked)
}

/// A `--host` for messages, quoted: one with a user or password not shown.
fn shown_host(host: &str) -> String {
    if host.contains('@') {
        "(a host with a user or password, not shown)".to_string()
    } else {
        format!("{host:?}")
    }
}

/// `url` as `play` connects to it (the scheme in lower case), or why it
/// cannot: only `ws://` and `wss://`, a host, a port that is a number up to
/// 65535, and no user or password (the token goes in `--token`, and a URL
/// is printed in errors). A bad port is refused here: the WebSocket client
/// would otherwise connect to port 80, bearer token and all.
fn checked_url(url: &str) -> Result<String, String> {
    // The URL standard drops tabs and line breaks anywhere, so `ws://\t/ws`
    // would reach the host check as `ws://ws/`: refused whole instead.
    if url.chars().any(char::is_control) {
        return Err("it contains a control character".to_string());
    }
    let lower = url.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("ws://")
        .or_else(|| lower.strip_prefix("wss://"))
    else {
        return Err("it does not start with ws:// or wss://".to_string());
    };
    // The URL standard reads `ws:///ws` as host `ws`: a slash where the
    // host goes is no host.
    if rest.starts_with(['/', '\\']) {
        return Err("it names no host".to_string());
    }
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("it names no host".to_string());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("it carries a user or password; pass a token with --token".to_string());
    }
    let checked = parsed.to_string();
    checked
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    Ok(checked)
}

/// `url` with any user and password shown as `***`, for messages: as
/// given when it carries neither.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) if parsed.username().is_empty() && parsed.password().is_none() => {
            url.to_string()
        }
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            let shown = parsed.to_string();
            match shown.split_once("://") {
                Some((scheme, rest)) => format!("{scheme}://***@{rest}"),
                None => shown,
            }
        }
        Err(_) if url.contains('@') => "(a URL with a user or password, not shown)".to_string(),
        Err(_) => url.to_string(),
    }
}

async fn exchange(
    url: &str,
    script: &str,
    token: Option<&Token>,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> anyhow::Result<Value> {
    let mut request = url
        .into_client_request()
        .with_context(|| format!("{url} is not a WebSocket URL (ws://host:port/ws)"))?;
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.reveal()))
            .map_err(|_| anyhow!("the token has characters a header cannot carry"))?;
        value.set_sensitive(true);
        request.headers_mut().insert("authorization", value);
    }
    let connector = tokio_tungstenite::Connector::Rustls(tls);
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector));
    let (mut ws, _) = match connecting.await {
        Ok(connected) => connected,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            bail!(refused(url, response.status().as_u16(), token.is_some()))
        }
        Err(e) => {
            if let Some(said) = crate::tls::handshake_failure(url, &e) {
                bail!(said);
            }
            let hint = if url.starts_with("ws://") {
                "is the orchestrator running? if it serves TLS (--tls-cert), use wss:// \
                 (--url wss://…, or --ca PEM)"
            } else {
                "is the orchestrator running?"
            };
            return Err(anyhow::Error::new(e).context(format!("cannot connect to {url} ({hint})")));
        }
    };
    let request =
        json!({"jsonrpc": "2.0", "id": 1, "method": "play", "params": {"script": script}});
    ws.send(Message::text(request.to_string()))
        .await
        .with_context(|| format!("cannot send the request to {url}"))?;
    while let Some(message) = ws.next().await {
        let message = message.with_context(|| format!("connection to {url} failed"))?;
        match message {
            Message::Text(text) => {
                let reply: Value = serde_json::from_str(&text)
                    .with_context(|| format!("{url} sent something that is not JSON: {text}"))?;
                if reply.get("id") == Some(&json!(1)) || reply.get("id") == Some(&Value::Null) {
                    let _ = ws.close(None).await;
                    return Ok(reply);
                }
            }
            Message::Close(Some(frame)) => bail!(
                "{url} closed the connection: {} (code {})",
                frame.reason,
                u16::from(frame.code)
            ),
            Message::Close(None) => bail!("{url} closed the connection without saying why"),
            _ => {}
        }
    }
    bail!("{url} closed the connection without replying")
}

/// What to say when the server answers the upgrade with HTTP `status`.
fn refused(url: &str, status: u16, sent_token: bool) -> String {
    match (status, sent_token) {
        (401, false) => format!(
            "{url} refused the connection: HTTP 401 Unauthorized; the circle is protected: \
             pass its token with --token TOKEN or the CIRCLES_TOKEN environment variable"
        ),
        (401, true) => format!(
            "{url} refused the connection: HTTP 401 Unauthorized; the token is not valid \
             for this circle: check --token or CIRCLES_TOKEN"
        ),
        (429, _) => format!(
            "{url} refused the connection: HTTP 429 Too Many Requests; too many failed \
             attempts from this address: wait a minute, then try again with a valid \
             --token or CIRCLES_TOKEN"
        ),
        (404, _) => format!(
            "{url} refused the connection: HTTP 404 Not Found; a circle serves its \
             WebSocket at the path /ws (ws://HOST:PORT/ws)"
        ),
        (status, _) => format!("{url} refused the connection: HTTP {status}"),
    }
}

/// Prints a reply; returns the exit code (an error only when stdout fails,
/// see [`crate::stdout::write`]).
fn print_reply(reply: &Value) -> anyhow::Result<i32> {
    if let Some(result) = reply.get("result") {
        let mut text = String::new();
        for key in ["printed", "prints", "stdout"] {
            if let Some(printed) = result.get(key).and_then(Value::as_str)
                && !printed.is_empty()
            {
                text.push_str(printed);
                if !printed.ends_with('\n') {
                    text.push('\n');
                }
                break;
            }
        }
        match result.get("output") {
            Some(Value::String(s)) => text.push_str(s),
            Some(other) => text.push_str(&other.to_string()),
            None => text.push_str(&result.to_string()),
        }
        text.push('\n');
        crate::stdout::write("the result", &text)?;
        return Ok(0);
    }
    let Some(error) = reply.get("error") else {
        crate::stdout::tell(&format!("unexpected reply: {reply}\n"));
        return Ok(1);
    };
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("(no message)");
    let data = error.get("data");
    let field = |k: &str| data.and_then(|d| d.get(k)).filter(|v| !v.is_null());
    let mut line = format!("error {code}");
    if let Some(kind) = field("kind").and_then(Value::as_str) {
        line.push_str(&format!(" ({kind})"));
    }
    match (field("line"), field("column")) {
        (Some(l), Some(c)) => line.push_str(&format!(" at line {l}, column {c}")),
        (Some(l), None) => line.push_str(&format!(" at line {l}")),
        _ => {}
    }
    crate::stdout::tell(&format!("{line}: {message}\n"));
    Ok(1)
}
