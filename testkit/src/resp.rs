//! A minimal blocking RESP2 client for fixtures: one command per connection,
//! so the fixtures need no Redis crate and no runtime.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Status(String),
    /// `-ERR …`.
    Error(String),
    /// `:1`.
    Int(i64),
    /// `$…`; `None` for the nil bulk string.
    Bulk(Option<String>),
    /// `*…`; `None` for the nil array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a status or bulk reply.
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Status(s) | Reply::Bulk(Some(s)) => Some(s),
            _ => None,
        }
    }

    /// The items of an array reply (empty for anything else).
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            _ => &[],
        }
    }

    /// A flat `[key, value, key, value …]` array reply's value for `key`.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.items()
            .chunks(2)
            .find(|pair| pair.first().and_then(Reply::text) == Some(key))
            .and_then(|pair| pair.get(1)?.text())
    }
}

/// Sends one command to the server on 127.0.0.1:`port` and reads its reply
/// (2 s timeouts); `Err` says what failed.
pub fn command(port: u16, args: &[&str]) -> Result<Reply, String> {
    command_as(port, None, args)
}

/// [`command`] after `AUTH password` when a password is given.
pub fn command_as(port: u16, password: Option<&str>, args: &[&str]) -> Result<Reply, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let timeout = Some(Duration::from_secs(2));
    stream
        .set_read_timeout(timeout)
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(timeout)
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    if let Some(password) = password {
        out.push_str(&encode(&["AUTH", password]));
    }
    out.push_str(&encode(args));
    stream
        .write_all(out.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    if password.is_some() {
        let auth = read_reply(&mut reader)?;
        if auth != Reply::Status("OK".into()) {
            return Err(format!("AUTH refused: {auth:?}"));
        }
    }
    read_reply(&mut reader)
}

fn encode(args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for arg in args {
        out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    out
}

fn read_reply(reader: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at_checked(1).ok_or("connection closed")?;
    let number = || {
        rest.parse::<i64>()
            .map_err(|e| format!("bad length {rest:?}: {e}"))
    };
    match kind {
        "+" => Ok(Reply::Status(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => Ok(Reply::Int(number()?)),
        "$" => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Reply::Bulk(None));
            };
            let mut buf = vec![0; len + 2];
            reader.read_exact(&mut buf).map_err(|e| e.to_string())?;
            buf.truncate(len);
            Ok(Reply::Bulk(Some(
                String::from_utf8_lossy(&buf).into_owned(),
            )))
        }
        "*" => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Reply::Array(None));
            };
            (0..len)
                .map(|_| read_reply(reader))
                .collect::<Result<Vec<_>, _>>()
                .map(|items| Reply::Array(Some(items)))
        }
        other => Err(format!("unexpected reply type {other:?}")),
    }
}
