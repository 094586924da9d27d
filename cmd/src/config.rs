//! circles.json (DESIGN §2): phase two of the two-phase configuration. The file
//! is parsed as JSON first (syntax errors carry line and column), then each
//! element is decoded strictly (unknown fields are errors) and the whole set is
//! checked for duplicates. Every message names the file and the element.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::principals::{self, PrincipalEntry};

/// One circle of circles.json, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircleConfig {
    /// Unique id; the database lives in `<data-dir>/<id>/`.
    pub id: u32,
    /// Display name; its queue name must be unique too.
    pub name: String,
    /// WebSocket port (not 0).
    pub port: u16,
    /// Who may connect (`principals`); empty for an open circle.
    pub principals: Vec<server_ws::Principal>,
    /// The circle's own Redis (`redis`): all its keys live there and
    /// nowhere else. `None`: the orchestrator's `--redis-url`.
    pub redis: Option<client::RedisUrl>,
}

/// One circle as written in circles.json; `principals` stay raw so each is
/// decoded on its own and an error names it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CircleEntry<'a> {
    id: u32,
    name: String,
    port: u16,
    /// `None`: left out; `Some(None)`: written as `null`, which is refused
    /// (an open circle leaves the field out: a `null` may be a template's
    /// hole, not a choice).
    #[serde(borrow, default, deserialize_with = "present")]
    principals: Option<Option<Vec<&'a serde_json::value::RawValue>>>,
    #[serde(default, deserialize_with = "present")]
    redis: Option<Option<String>>,
}

/// A field that is there, `null` included (`Some(None)`); with
/// `#[serde(default)]` one left out is `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl CircleConfig {
    /// The circle as messages name it: `circle "Alpha" (id 1)`.
    pub fn who(&self) -> String {
        format!(
            "circle {} (id {})",
            crate::names::quoted(&self.name),
            self.id
        )
    }

    /// The circle's Redis queue name (DESIGN §3).
    pub fn queue(&self) -> String {
        client::queue_name(&self.name)
    }
}

/// A rejected circles.json. Maps to exit code 2.
#[derive(Debug)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// What is wrong, naming the element.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Vec<CircleConfig>, ConfigError> {
    let text = read_bounded(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            // A relative path: where it was looked for (under systemd
            // without WorkingDirectory=, in /).
            let cwd = std::env::current_dir().ok().filter(|_| path.is_relative());
            let looked = cwd.map_or_else(String::new, |cwd| {
                format!("looked for in the working directory {}; ", cwd.display())
            });
            format!(
                " ({looked}give the circles file as the CONFIG argument, to play as --config \
                 FILE, or create ./circles.json: \
                 [{{\"id\": 1, \"name\": \"Alpha\", \"port\": 8081}}])"
            )
        } else {
            String::new()
        };
        ConfigError {
            file: path.to_path_buf(),
            problem: format!("cannot read the circles file: {e}{hint}"),
        }
    })?;
    parse(&text).map_err(|problem| ConfigError {
        file: path.to_path_buf(),
        problem,
    })
}

/// The largest circles file read: far above 100,000 circles with a few
/// principals each, and a file that never ends (`/dev/zero`, an endless
/// pipe) is refused once this much is read, not read into memory to its end.
pub const MAX_FILE_BYTES: u64 = 128 << 20;

/// The text of the circles file at `path`, at most [`MAX_FILE_BYTES`] of it.
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!(
                "it is longer than {} MiB, the most a circles file may hold",
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The circle `key` picks, as `--circles`, `token new --circle` and `play
/// --circle` take it: the one whose id or exact name is `key`, else the one
/// whose name is `key` ignoring ASCII case; `Ok(None)` when none is. A key
/// that is one circle's id and another's name picks neither: `Err` names
/// both.
pub fn find_circle<'a>(
    circles: &'a [CircleConfig],
    key: &str,
) -> Result<Option<&'a CircleConfig>, String> {
    let exact: Vec<&CircleConfig> = circles
        .iter()
        .filter(|c| c.name == key || c.id.to_string() == key)
        .collect();
    let found = if exact.is_empty() {
        circles
            .iter()
            .filter(|c| c.name.eq_ignore_ascii_case(key))
            .collect()
    } else {
        exact
    };
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => {
            let named: Vec<String> = many.iter().map(|c| c.who()).collect();
            Err(format!(
                "{key:?} could mean {}; pick one by a name or id only it has",
                named.join(" or ")
            ))
        }
    }
}

/// The one circle `key` picks in the circles file `file` (see
/// [`find_circle`]), or a usage error: none is (the error lists the known
/// ones), or two could be.
pub fn pick_circle<'a>(
    circles: &'a [CircleConfig],
    key: &str,
    file: &Path,
) -> Result<&'a CircleConfig, crate::UsageError> {
    match find_circle(circles, key) {
        Ok(Some(circle)) => Ok(circle),
        Ok(None) => {
            let known: Vec<String> = circles
                .iter()
                .map(|c| format!("{:?} (id {})", c.name, c.id))
                .collect();
            Err(crate::UsageError(format!(
                "no circle named or numbered {key:?} in {}; known: {}",
                file.display(),
                known.join(", ")
            )))
        }
        Err(e) => Err(crate::UsageError(format!("{}: {e}", file.display()))),
    }
}

/// Validates the text of a circles file; the error is the problem without the file name.
/// A control character the file holds (serde quotes an unknown field's name
/// as written) is shown escaped: the message reaches terminals.
pub fn parse(text: &str) -> Result<Vec<CircleConfig>, String> {
    parse_text(text).map_err(|problem| crate::names::escaped(&problem).into_owned())
}

fn parse_text(text: &str) -> Result<Vec<CircleConfig>, String> {
    // Some editors start a UTF-8 file with a byte order mark; JSON has none.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        // Empty or cut short: most likely seen while it is written.
        let early = if e.is_eof() {
            " (the file ends early: is it still being written? try again once it is whole)"
        } else {
            ""
        };
        format!("invalid JSON: {e}{early}")
    })?;
    let serde_json::Value::Array(elements) = value else {
        return Err(format!(
            "expected a JSON array of circles, found {}",
            kind_of(&value)
        ));
    };
    if elements.is_empty() {
        return Err("the array of circles is empty: define at least one circle".to_string());
    }
    // Each element is decoded from its own text, not from the parsed value:
    // a parsed object keeps only the last of two equal keys, so a duplicated
    // field would pass silently.
    let raws: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut circles = Vec::with_capacity(elements.len());
    for (index, (element, raw)) in elements.iter().zip(&raws).enumerate() {
        if !element.is_object() {
            return Err(format!(
                "circle at index {index}: expected an object {{\"id\", \"name\", \"port\"}}, found {}",
                kind_of(element)
            ));
        }
        let entry = serde_json::from_str::<CircleEntry>(raw.get()).map_err(|e| {
            format!(
                "{}: {}",
                describe_raw(index, element),
                in_file(text, raw, &e)
            )
        })?;
        let null = |field: &str, instead: &str| {
            format!(
                "{}: \"{field}\" is null; leave the field out {instead}",
                describe_raw(index, element)
            )
        };
        let principals = match entry.principals {
            None => Vec::new(),
            Some(None) => return Err(null("principals", "for an open circle")),
            Some(Some(raws)) => decode_principals(text, &raws)
                .and_then(principals::validate)
                .map_err(|problem| format!("{}: {problem}", describe_raw(index, element)))?,
        };
        let redis = match &entry.redis {
            None => None,
            Some(None) => return Err(null("redis", "to use --redis-url")),
            Some(Some(url)) => Some(redis_url(url).map_err(|problem| {
                format!(
                    "{}: \"redis\": {} {problem}",
                    describe_raw(index, element),
                    client::url::redact(url)
                )
            })?),
        };
        circles.push(CircleConfig {
            id: entry.id,
            name: entry.name,
            port: entry.port,
            principals,
            redis,
        });
    }
    check_values_and_duplicates(&circles)?;
    Ok(circles)
}

/// A Redis URL a circle or the orchestrator can use: `redis://` or
/// `rediss://` with a host and port, or `redis+sentinel://`. The error says
/// why not (without credentials) and shows the accepted forms.
pub fn redis_url(url: &str) -> Result<client::RedisUrl, String> {
    let problem = match client::RedisUrl::parse(url) {
        Err(client::Error::InvalidUrl { reason, .. }) => reason,
        Err(other) => other.to_string(),
        Ok(parsed) if parsed.host_port().is_none() && !parsed.is_sentinel() => {
            "no host and port".to_string()
        }
        // No Redis listens there (a redis-server given it listens nowhere).
        Ok(parsed) if parsed.host_port().is_some_and(|(_, port)| port == 0) => {
            "port 0, on which no Redis listens".to_string()
        }
        Ok(parsed) => return Ok(parsed),
    };
    Err(format!(
        "is not a redis:// URL ({problem}); for example redis://127.0.0.1:6379, \
         rediss://127.0.0.1:6380 for Redis over TLS, or \
         redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster for the primary that Redis \
         Sentinel names"
    ))
}

/// Decodes each principal of a circle strictly; an error names the
/// principal by index (and name, where it has one) and its place in the file.
fn decode_principals(
    text: &str,
    raws: &[&serde_json::value::RawValue],
) -> Result<Vec<PrincipalEntry>, String> {
    raws.iter()
        .enumerate()
        .map(|(index, raw)| {
            serde_json::from_str::<PrincipalEntry>(raw.get()).map_err(|e| {
                let value: serde_json::Value =
                    serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null);
                let here = match value.get("name").and_then(|n| n.as_str()) {
                    Some(name) => principals::describe(index, name),
                    None => format!("principal at index {index}"),
                };
                format!("{here}: {}", in_file(text, raw, &e))
            })
        })
        .collect()
}

fn check_values_and_duplicates(circles: &[CircleConfig]) -> Result<(), String> {
    let mut ids = HashMap::new();
    let mut ports = HashMap::new();
    let mut names = HashMap::new();
    let mut queues = HashMap::new();
    for (index, circle) in circles.iter().enumerate() {
        let here = describe(index, circle);
        if circle.name.trim().is_empty() {
            return Err(format!("{here}: the name is empty"));
        }
        let length = circle.name.chars().count();
        if length > MAX_NAME_CHARS {
            return Err(format!(
                "{here}: the name is {length} characters long; a name has at most \
                 {MAX_NAME_CHARS} (it is a column of the status table and, as the queue name, \
                 part of every Redis key of the circle)"
            ));
        }
        if let Some(c) = circle.name.chars().find(|&c| crate::names::garbles(c)) {
            return Err(format!(
                "{here}: the name contains the control character {c:?} (names are shown in \
                 the status table and log lines, where it would garble the terminal)"
            ));
        }
        if circle.port == 0 {
            return Err(format!(
                "{here}: port 0 is not allowed (choose a fixed port, 1-65535)"
            ));
        }
        let queue = circle.queue();
        if queue.is_empty() {
            return Err(format!(
                "{here}: the name gives an empty queue name (a queue name keeps only the ASCII \
                 letters and digits a-z, 0-9 of the name, and this one has none)"
            ));
        }
        if let Some(first) = ids.insert(circle.id, index) {
            return Err(format!(
                "{here}: duplicate id {} (also used by {})",
                circle.id,
                describe(first, &circles[first])
            ));
        }
        if let Some(first) = ports.insert(circle.port, index) {
            return Err(format!(
                "{here}: duplicate port {} (also used by {})",
                circle.port,
                describe(first, &circles[first])
            ));
        }
        if let Some(first) = names.insert(circle.name.clone(), index) {
            return Err(format!(
                "{here}: duplicate name \"{}\" (also used by {})",
                circle.name,
                describe(first, &circles[first])
            ));
        }
        if let Some(first) = queues.insert(queue.clone(), index) {
            return Err(format!(
                "{here}: duplicate queue name \"{queue}\" (the name of {} gives the same queue)",
                describe(first, &circles[first])
            ));
        }
    }
    Ok(())
}

/// The longest circle name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

fn describe(index: usize, circle: &CircleConfig) -> String {
    // Debug-quoted: a name is shown escaped, so a control character in it
    // cannot act on the terminal that shows the error. One too long to be
    // a name is shown by its start.
    let name = &circle.name;
    let shown = match name.char_indices().nth(MAX_NAME_CHARS) {
        Some((cut, _)) => format!("{:?}…", &name[..cut]),
        None => format!("{name:?}"),
    };
    format!("circle at index {index} (id {}, name {shown})", circle.id)
}

/// The most characters of serde's account of an element it refused.
const MAX_PROBLEM_CHARS: usize = 300;

/// `text` (something the file holds, shown in a message) cut after `max`
/// characters, `…` marking the cut: a huge file makes no huge message.
fn start_of(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Names an element that did not decode, with whatever id and name it has
/// (each shown by its start).
fn describe_raw(index: usize, element: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    if let Some(id) = element.get("id") {
        parts.push(format!("id {}", start_of(&id.to_string(), MAX_NAME_CHARS)));
    }
    if let Some(name) = element.get("name") {
        parts.push(format!(
            "name {}",
            start_of(&name.to_string(), MAX_NAME_CHARS)
        ));
    }
    if parts.is_empty() {
        format!("circle at index {index}")
    } else {
        format!("circle at index {index} ({})", parts.join(", "))
    }
}

/// The message of `e`, an error in decoding `raw` (a slice of `text`), with
/// its position in the whole file rather than in the element.
fn in_file(text: &str, raw: &serde_json::value::RawValue, e: &serde_json::Error) -> String {
    let message = e.to_string();
    let local = format!(" at line {} column {}", e.line(), e.column());
    let Some(bare) = message.strip_suffix(&local) else {
        return start_of(&message, MAX_PROBLEM_CHARS);
    };
    // serde quotes the value it refused, which may be as long as the file.
    let bare = start_of(bare, MAX_PROBLEM_CHARS);
    // `raw` borrows from `text`: its offset is the distance between the two.
    let offset = (raw.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
    let before = &text[..offset.min(text.len())];
    let start_line = before.matches('\n').count() + 1;
    // serde_json counts columns in bytes.
    let start_column = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
    let (line, column) = if e.line() <= 1 {
        (start_line, start_column + e.column().saturating_sub(1))
    } else {
        (start_line + e.line() - 1, e.column())
    };
    format!("{bare} at line {line} column {column}")
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
