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
    #[serde(borrow, default)]
    principals: Option<Vec<&'a serde_json::value::RawValue>>,
    #[serde(default)]
    redis: Option<String>,
}

impl CircleConfig {
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
    let text = std::fs::read_to_string(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (give the circles file as the CONFIG argument, or create ./circles.json: \
             [{\"id\": 1, \"name\": \"Alpha\", \"port\": 8081}])"
        } else {
            ""
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

/// Validates the text of a circles file; the error is the problem without the file name.
pub fn parse(text: &str) -> Result<Vec<CircleConfig>, String> {
    // Some editors start a UTF-8 file with a byte order mark; JSON has none.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
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
        let principals = match entry.principals {
            None => Vec::new(),
            Some(raws) => decode_principals(text, &raws)
                .and_then(principals::validate)
                .map_err(|problem| format!("{}: {problem}", describe_raw(index, element)))?,
        };
        let redis = match &entry.redis {
            None => None,
            Some(url) => Some(redis_url(url).map_err(|problem| {
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
        if let Some(c) = circle.name.chars().find(|c| c.is_control()) {
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

/// Names an element that did not decode, with whatever id and name it has.
fn describe_raw(index: usize, element: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    if let Some(id) = element.get("id") {
        parts.push(format!("id {id}"));
    }
    if let Some(name) = element.get("name") {
        parts.push(format!("name {name}"));
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
        return message;
    };
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
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text).expect_err("must be rejected")
    }

    #[test]
    fn a_circle_may_name_its_own_redis_in_any_accepted_form() {
        let circles = parse(
            r#"[{"id": 1, "name": "A", "port": 1},
                {"id": 2, "name": "B", "port": 2, "redis": "redis://:pw@10.0.0.5:6390/1"},
                {"id": 3, "name": "C", "port": 3,
                 "redis": "redis+sentinel://10.0.0.1,10.0.0.2:26380/mymaster"}]"#,
        )
        .expect("valid");
        assert_eq!(circles[0].redis, None);
        let b = circles[1].redis.as_ref().expect("B has its own");
        assert_eq!(b.to_string(), "redis://10.0.0.5:6390/1");
        assert!(circles[2].redis.as_ref().is_some_and(|u| u.is_sentinel()));
    }

    #[test]
    fn a_bad_redis_of_a_circle_names_the_circle_and_hides_the_password() {
        for (url, says) in [
            ("http://u:hunter2@h:1", "is not a redis:// URL"),
            ("unix:///tmp/r.sock?pass=hunter2", "no host and port"),
            ("redis+sentinel://u:hunter2@h:26379", "no service name"),
            ("redis+sentinel://:hunter2@h:0/m", "port \"0\""),
        ] {
            let text = format!(r#"[{{"id": 7, "name": "Beta", "port": 1, "redis": "{url}"}}]"#);
            let e = err(&text);
            assert!(e.contains("circle at index 0 (id 7, name \"Beta\")"), "{e}");
            assert!(e.contains("\"redis\""), "{e}");
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e = err(r#"[{"id": 1, "name": "A", "port": 1, "redis": 5}]"#);
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn a_duplicated_field_is_refused_with_its_position_in_the_file() {
        let text = "[\n {\"id\": 1, \"name\": \"A\", \"port\": 8081, \"port\": 9}\n]";
        let e = err(text);
        assert!(e.contains("circle at index 0"), "{e}");
        assert!(e.contains("duplicate field `port`"), "{e}");
        // The second "port" key's closing quote is at line 2, column 44 of
        // the file (the element starts at column 2: the position is the
        // file's, not the element's).
        assert!(e.ends_with("at line 2 column 44"), "{e}");
        // Columns count bytes, as serde_json's do, also past non-ASCII text.
        let e = err(r#"[{"id":1,"name":"ééé","port":1}, {"id":2,"name":"b","port":2,"port":3}]"#);
        assert!(e.ends_with("at line 1 column 70"), "{e}");
        let e = err("[{\"id\": 1, \"name\": \"A\", \"name\": \"B\", \"port\": 1}]");
        assert!(
            e.contains("duplicate field `name`") && e.contains("line 1"),
            "{e}"
        );
    }

    #[test]
    fn principals_decode_to_name_hash_and_role_and_are_optional() {
        let hash = "ab".repeat(32);
        let circles = parse(&format!(
            r#"[{{"id":1,"name":"A","port":1}},{{"id":2,"name":"B","port":2,"principals":[{{"name":"ann","token_sha256":"{hash}","role":"read"}}]}}]"#
        ))
        .expect("valid");
        assert!(circles[0].principals.is_empty());
        let p = &circles[1].principals[0];
        assert_eq!(p.name, "ann");
        assert_eq!(p.token_sha256, [0xab; 32]);
        assert_eq!(p.role, client::Role::Read);
        let e = err(&format!(
            "[{{\"id\":1,\"name\":\"A\",\"port\":1,\"principals\":[\n {{\"name\":\"ann\",\"token_sha256\":\"{hash}\",\"role\":\"read\",\"rol\":1}}]}}]"
        ));
        assert!(
            e.contains("principal at index 0") && e.contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn a_byte_order_mark_before_the_json_is_accepted() {
        let circles = parse("\u{feff}[{\"id\": 1, \"name\": \"A\", \"port\": 1}]").expect("BOM");
        assert_eq!(circles[0].name, "A");
    }

    #[test]
    fn a_name_over_the_length_limit_is_refused_and_shown_by_its_start() {
        let at_limit = "n".repeat(MAX_NAME_CHARS);
        parse(&format!(
            r#"[{{"id": 1, "name": "{at_limit}", "port": 1}}]"#
        ))
        .expect("at the limit");
        // Counted in characters, not bytes.
        let wide = format!("c{}", "円".repeat(MAX_NAME_CHARS - 1));
        parse(&format!(r#"[{{"id": 1, "name": "{wide}", "port": 1}}]"#)).expect("wide characters");
        let long = format!("{}{}", "n".repeat(MAX_NAME_CHARS), "x".repeat(99_900));
        let e = err(&format!(r#"[{{"id": 1, "name": "{long}", "port": 1}}]"#));
        assert!(
            e.contains("the name is 100000 characters long; a name has at most 100"),
            "{e}"
        );
        assert!(e.contains(&format!("name \"{at_limit}\"…")), "{e}");
        assert!(
            e.len() < 600,
            "the message shows the name by its start: {} bytes",
            e.len()
        );
    }

    #[test]
    fn a_name_with_a_control_character_is_refused() {
        for name in ["a\\nb", "red\\u001b[31m", "tab\\there"] {
            let e = err(&format!(r#"[{{"id": 1, "name": "{name}", "port": 1}}]"#));
            assert!(e.contains("control character"), "{name}: {e}");
            assert!(
                !e.chars().any(char::is_control),
                "the message shows the name escaped: {e:?}"
            );
        }
        // Letters of any script are fine.
        parse(r#"[{"id": 1, "name": "Ćircle ünïcode 円", "port": 1}]"#).expect("unicode name");
    }

    #[test]
    fn valid_file_gives_every_circle_in_order() {
        let circles = parse(
            r#"[{"id":1,"name":"Alpha","port":8081},{"id":2,"name":"Beta Circle","port":8082}]"#,
        )
        .expect("valid");
        assert_eq!(circles.len(), 2);
        assert_eq!(circles[1].name, "Beta Circle");
        assert_eq!(circles[1].port, 8082);
    }

    #[test]
    fn invalid_json_reports_line_and_column() {
        let e = err("[\n {\"id\": 1,, }\n]");
        assert!(e.contains("invalid JSON") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn element_errors_name_the_index_and_what_is_known_of_the_circle() {
        let e = err(r#"[{"id":1,"name":"A","port":1},{"id":2,"name":"B"}]"#);
        assert!(
            e.contains("index 1") && e.contains("id 2") && e.contains("`port`"),
            "{e}"
        );
        let e = err(r#"[{"id":"one","name":"A","port":1}]"#);
        assert!(e.contains("index 0") && e.contains("invalid type"), "{e}");
        let e = err(r#"[{"id":1,"name":"A","port":1,"prot":2}]"#);
        assert!(e.contains("unknown field `prot`"), "{e}");
        let e = err(r#"[{"id":1,"name":"A","port":70000}]"#);
        assert!(e.contains("index 0") && e.contains("70000"), "{e}");
    }

    #[test]
    fn value_rules_and_duplicates_are_rejected_naming_both_circles() {
        let e = err(r#"[{"id":1,"name":"","port":1}]"#);
        assert!(e.contains("name is empty"), "{e}");
        let e = err(r#"[{"id":1,"name":"A","port":0}]"#);
        assert!(e.contains("port 0"), "{e}");
        let e = err(r#"[{"id":1,"name":"A","port":1},{"id":1,"name":"B","port":2}]"#);
        assert!(
            e.contains("duplicate id 1") && e.contains("\"A\"") && e.contains("\"B\""),
            "{e}"
        );
        let e = err(r#"[{"id":1,"name":"A","port":1},{"id":2,"name":"B","port":1}]"#);
        assert!(e.contains("duplicate port 1"), "{e}");
        let e = err(r#"[{"id":1,"name":"A","port":1},{"id":2,"name":"A","port":2}]"#);
        assert!(e.contains("duplicate name \"A\""), "{e}");
        let e = err(
            r#"[{"id":1,"name":"Alpha Circle","port":1},{"id":2,"name":"alpha-circle","port":2}]"#,
        );
        assert!(e.contains("duplicate queue name \"alpha_circle\""), "{e}");
        assert!(err("[]").contains("empty"));
        assert!(err("{}").contains("expected a JSON array"));
    }
}
