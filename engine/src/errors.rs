//! Rhai's errors mapped onto [`ScriptError`]: a precise kind, a message
//! without Rhai's position suffix, and the line and column of the failing
//! expression (the innermost one when the error came from inside a script
//! function).

use rhai::{EvalAltResult, LexError, ParseError, ParseErrorType, Position};

use crate::context::{
    CANCEL_TOKEN, MEMORY_TOKEN, NESTING_TOKEN, OPERATIONS_TOKEN, STRING_TOKEN, TASK_DEADLINE_TOKEN,
    TIMEOUT_TOKEN,
};
use crate::fault::DbFault;
use crate::{ErrorKind, Limits, ScriptError};

fn at(kind: ErrorKind, message: String, pos: Position) -> ScriptError {
    let (line, column) = crate::fault::place(pos);
    ScriptError {
        kind,
        message,
        line,
        column,
    }
}

/// A script the sandbox refuses when it compiles, for `message`, at `pos`.
pub fn refused(message: &str, pos: Position) -> ScriptError {
    at(ErrorKind::Syntax, message.to_owned(), pos)
}

/// A compilation failure of `script`.
pub fn from_parse(err: &ParseError, script: &str, limits: &Limits) -> ScriptError {
    let ParseError(kind, pos) = err;
    let (kind, message) = parse_kind(kind, limits);
    // A refused name used as a method (`f.curry(1)`) fails as a missing
    // property name: the refusal is found at the error's position.
    let message = word_at(script, *pos)
        .and_then(crate::sandbox::refusal_message)
        .unwrap_or(message);
    at(kind, message, *pos)
}

/// The identifier starting at `pos` in `script` (Rhai counts lines and
/// columns from 1, in characters).
fn word_at(script: &str, pos: Position) -> Option<&str> {
    let line = script.lines().nth(pos.line()?.checked_sub(1)?)?;
    let start = line
        .char_indices()
        .nth(pos.position()?.checked_sub(1)?)
        .map(|(i, _)| i)?;
    let rest = &line[start..];
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

fn parse_kind(err: &ParseErrorType, limits: &Limits) -> (ErrorKind, String) {
    match err {
        ParseErrorType::ExprTooDeep => (
            ErrorKind::Limit,
            format!(
                "expression nesting exceeds the limit of {} levels",
                limits.max_expr_depth
            ),
        ),
        ParseErrorType::LiteralTooLarge(what, max) => (
            ErrorKind::Limit,
            format!(
                "{} in a literal exceeds the limit of {max}",
                what.to_lowercase()
            ),
        ),
        // A refused keyword (`eval`, `import`) is an improper symbol to the
        // tokenizer; a refused function name (`curry`) is a reserved one.
        ParseErrorType::Reserved(s) | ParseErrorType::BadInput(LexError::ImproperSymbol(s, _)) => {
            match crate::sandbox::refusal_message(s) {
                Some(message) => (ErrorKind::Syntax, message),
                None => (ErrorKind::Syntax, err.to_string()),
            }
        }
        other => (ErrorKind::Syntax, other.to_string()),
    }
}

/// A failure while evaluating.
pub fn from_eval(err: EvalAltResult, limits: &Limits) -> ScriptError {
    // Unwrap calls into script functions down to the error that started it,
    // remembering the functions for the message.
    let mut err = err;
    let mut functions: Vec<String> = Vec::new();
    let mut outer_pos = Position::NONE;
    loop {
        match err {
            EvalAltResult::ErrorInFunctionCall(name, _, inner, pos) => {
                functions.push(name);
                if outer_pos.is_none() {
                    outer_pos = pos;
                }
                err = *inner;
            }
            EvalAltResult::ErrorInModule(_, inner, pos) => {
                if outer_pos.is_none() {
                    outer_pos = pos;
                }
                err = *inner;
            }
            other => {
                err = other;
                break;
            }
        }
    }
    let mut pos = err.take_position();
    if pos.is_none() {
        pos = outer_pos;
    }
    if let EvalAltResult::ErrorTerminated(token, _) | EvalAltResult::ErrorRuntime(token, _) = &err
        && let Some(fault) = fault_of(token)
        && !fault.pos.is_none()
    {
        pos = fault.pos;
    }
    let (kind, mut message) = eval_kind(err, limits);
    if let Some(innermost) = functions.last() {
        message.push_str(&format!(" (in function '{}'", shown_name(innermost)));
        for caller in functions.iter().rev().skip(1) {
            message.push_str(&format!(", called from '{}'", shown_name(caller)));
        }
        message.push(')');
    }
    // Rhai's own messages hold names the script chose (a function pointer's
    // up to the string limit): the message, too, stays within the output limit.
    let message = cut(message, limits.max_output_bytes, "message");
    at(kind, message, pos)
}

/// The most characters of a function name a message shows.
const NAME_SHOWN: usize = 40;

/// `name`, or its start and its length when longer than [`NAME_SHOWN`]
/// characters: a call chain names up to the call depth of them.
fn shown_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.chars().nth(NAME_SHOWN).is_none() {
        return name.into();
    }
    let start: String = name.chars().take(NAME_SHOWN).collect();
    format!("{start}… ({} bytes)", name.len()).into()
}

fn operations_message(limits: &Limits) -> String {
    format!(
        "script exceeded the limit of {} operations",
        limits.max_operations
    )
}

fn strings_message(limits: &Limits) -> String {
    format!(
        "strings exceed the limit of {} bytes (one string, or all the strings in one array \
         or map together)",
        limits.max_string_size
    )
}

fn memory_message(limits: &Limits) -> String {
    let max = limits.max_memory_bytes;
    let shown = if max % (1 << 20) == 0 {
        format!("{} MiB", max >> 20)
    } else {
        format!("{max} bytes")
    };
    format!("script held more memory than its limit of {shown}")
}

/// "an array of N elements" or "a map of N entries", for a message about
/// `value`'s text without writing it.
fn container_words(value: &rhai::Dynamic) -> String {
    if let Ok(a) = value.as_array_ref() {
        format!("an array of {} elements", a.len())
    } else if let Ok(m) = value.as_map_ref() {
        format!("a map of {} entries", m.len())
    } else {
        "a value".to_owned()
    }
}

/// A thrown value's `text` as its message, cut to at most `max` bytes (0:
/// whole) with a word saying how long it was.
fn within(text: String, max: usize) -> String {
    cut(text, max, "thrown value's text")
}

/// `text` cut to at most `max` bytes (0: whole), ending with a word saying
/// that `what` was cut and how long it was.
fn cut(mut text: String, max: usize, what: &str) -> String {
    if max == 0 || text.len() <= max {
        return text;
    }
    let tail = format!("… (cut: the {what} is {} bytes)", text.len());
    let mut end = max.saturating_sub(tail.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    if tail.len() <= max {
        text.push_str(&tail);
    }
    text
}

/// The message of a run stopped by `Limits::timeout`.
pub fn time_limit_message(limits: &Limits) -> String {
    format!("script ran past its time limit of {:?}", limits.timeout)
}

/// The message of a run stopped by `RunControl::deadline` (the task's).
pub const TASK_DEADLINE_MESSAGE: &str = "script ran past the task's deadline";

fn fault_of(value: &rhai::Dynamic) -> Option<DbFault> {
    value.clone().try_cast::<DbFault>()
}

fn eval_kind(err: EvalAltResult, limits: &Limits) -> (ErrorKind, String) {
    use EvalAltResult as E;
    match err {
        E::ErrorTooManyOperations(_) => (ErrorKind::Limit, operations_message(limits)),
        E::ErrorStackOverflow(_) => (
            ErrorKind::Limit,
            format!(
                "script exceeded the limit of {} nested function calls",
                limits.max_call_depth
            ),
        ),
        // Rhai counts a value's sizes in total: the bytes of all strings in
        // an array or map (nested ones included) count against the string
        // limit, and so on. The message says so, or an array of small
        // strings would seem to hold one string that is too long.
        E::ErrorDataTooLarge(what, _) => {
            let lower = what.to_lowercase();
            let message = if lower.contains("string") {
                strings_message(limits)
            } else if lower.contains("array") || lower.contains("blob") {
                format!(
                    "arrays and blobs exceed the limit of {} elements (one array or blob, \
                     or all the arrays and blobs nested in one value together; a blob's \
                     bytes count as elements)",
                    limits.max_array_size
                )
            } else if lower.contains("map") {
                format!(
                    "object maps exceed the limit of {} entries (one map, or all the maps \
                     nested in one value together)",
                    limits.max_map_size
                )
            } else {
                format!("{lower} exceeds its bound")
            };
            (ErrorKind::Limit, message)
        }
        E::ErrorTooManyModules(_) => (
            ErrorKind::Limit,
            "script imports modules, which is not available".to_string(),
        ),
        E::ErrorTooManyVariables(_) => (
            ErrorKind::Limit,
            "script defines too many variables".to_string(),
        ),
        E::ErrorTerminated(token, _) => {
            if let Some(fault) = fault_of(&token) {
                return (fault.kind, fault.message);
            }
            let text = token.into_immutable_string().ok();
            match text.as_ref().map(|s| s.as_str()) {
                Some(TIMEOUT_TOKEN) => (ErrorKind::Timeout, time_limit_message(limits)),
                Some(TASK_DEADLINE_TOKEN) => {
                    (ErrorKind::Timeout, TASK_DEADLINE_MESSAGE.to_string())
                }
                Some(OPERATIONS_TOKEN) => (ErrorKind::Limit, operations_message(limits)),
                Some(MEMORY_TOKEN) => (ErrorKind::Limit, memory_message(limits)),
                Some(NESTING_TOKEN) => (ErrorKind::Limit, crate::nesting::refusal_message()),
                Some(STRING_TOKEN) => (
                    ErrorKind::Limit,
                    format!(
                        "{}; an array or map printed or converted to text counts as the \
                         string its text would be",
                        strings_message(limits)
                    ),
                ),
                Some(CANCEL_TOKEN) => (ErrorKind::Cancelled, "script was cancelled".to_string()),
                _ => (
                    ErrorKind::Internal,
                    "script terminated unexpectedly".to_string(),
                ),
            }
        }
        E::ErrorRuntime(value, _) => {
            if let Some(fault) = fault_of(&value) {
                return (fault.kind, fault.message);
            }
            let message = if value.is_unit() {
                "script threw ()".to_string()
            } else {
                match crate::nesting::thrown_refusal(&value, limits.max_output_bytes) {
                    // Rendering it would recurse once per level (closures
                    // capturing closures included).
                    Some(NESTING_TOKEN) => format!(
                        "script threw a value nesting arrays or maps deeper than {} levels",
                        crate::nesting::MAX_NESTING
                    ),
                    // Its text is never built: it could be far larger than
                    // the run's memory limit.
                    Some(_) => format!(
                        "script threw {}, its text longer than the output limit of {} bytes",
                        container_words(&value),
                        limits.max_output_bytes
                    ),
                    None => within(value.to_string(), limits.max_output_bytes),
                }
            };
            (ErrorKind::Runtime, message)
        }
        E::ErrorFunctionNotFound(signature, _) => {
            let message = crate::dbfns::not_found_message(&signature)
                .unwrap_or_else(|| format!("Function not found: {signature}"));
            (ErrorKind::Runtime, message)
        }
        E::ErrorParsing(kind, _) => parse_kind(&kind, limits),
        E::ErrorSystem(what, cause) => {
            log::error!("rhai system error: {what}: {cause}");
            (
                ErrorKind::Internal,
                "internal error in the script engine".to_string(),
            )
        }
        other => (ErrorKind::Runtime, other.to_string()),
    }
}
