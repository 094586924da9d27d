//! Rhai values to and from the JSON bytes stored in OurDB.
//!
//! Only values that come back exactly as they went in are accepted: unit,
//! bool, int, float (finite), string, array and object map. Anything else is
//! refused with the path of the offending part (`value.tags[2]`) instead of
//! being converted into something else.

use rhai::{Array, Dynamic, FLOAT, INT, ImmutableString, Map};
use serde_json::Value;

/// Deepest nesting of arrays and maps accepted in a stored value. Below
/// serde_json's own recursion limit (128), so everything written reads back.
pub const MAX_VALUE_DEPTH: usize = 64;

/// Size bounds a stored value must respect (the script's Rhai limits; zero
/// means unbounded). Rhai does not check a map grown by `m[k] = v` until it is
/// passed on, and qualified `db::` calls do not check their arguments, so
/// values are checked here.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bounds {
    /// Longest string, in bytes.
    pub max_string: usize,
    /// Largest array, in elements.
    pub max_array: usize,
    /// Largest map, in entries.
    pub max_map: usize,
}

/// Why a value cannot be stored; `path` names the offending part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Whether a size bound (rather than the type) is the reason.
    pub over_limit: bool,
    /// Where in the value, e.g. `value.tags[2]`.
    pub path: String,
    /// What is wrong, e.g. `is a function pointer, which cannot be stored`.
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.path, self.reason)
    }
}

/// Encodes `value` as JSON bytes, or says which part cannot be stored.
pub fn encode(value: &Dynamic, bounds: &Bounds) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::with_capacity(64);
    write_json(value, bounds, 0, &mut out).map_err(|mut r| {
        r.path.insert_str(0, "value");
        r
    })?;
    Ok(out)
}

/// Decodes JSON bytes written by [`encode`] back into a Rhai value.
pub fn decode(bytes: &[u8]) -> Result<Dynamic, String> {
    let json: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    from_json(json)
}

/// A refusal at the current part; containers prefix their segment to
/// `path` on the way out, so the path costs nothing unless a value is refused.
fn refuse(reason: impl Into<String>) -> Refusal {
    Refusal {
        over_limit: false,
        path: String::new(),
        reason: reason.into(),
    }
}

fn too_large(what: &str, len: usize, max: usize) -> Refusal {
    Refusal {
        over_limit: true,
        path: String::new(),
        reason: format!("is {what} of {len}, over the limit of {max}"),
    }
}

fn over(len: usize, max: usize) -> bool {
    max > 0 && len > max
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(out, s).expect("writing a string to a Vec cannot fail");
}

/// Writes `value` as JSON into `out`. Integers stay integers; floats are
/// written by serde_json (ryu), which always marks them as floats ("1.0").
fn write_json(
    value: &Dynamic,
    bounds: &Bounds,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), Refusal> {
    if let Ok(i) = value.as_int() {
        out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
    } else if value.is_string() {
        let s = value.as_immutable_string_ref().expect("checked is_string");
        if over(s.len(), bounds.max_string) {
            return Err(too_large("a string of length", s.len(), bounds.max_string));
        }
        write_str(s.as_str(), out);
    } else if value.is_float() {
        let f = value.as_float().expect("checked is_float");
        if !f.is_finite() {
            return Err(refuse(format!(
                "is the float {f}, which JSON cannot hold (only finite numbers can be stored)"
            )));
        }
        serde_json::to_writer(&mut *out, &f).expect("writing a float to a Vec cannot fail");
    } else if value.is_bool() {
        let b = value.as_bool().expect("checked is_bool");
        out.extend_from_slice(if b { b"true" } else { b"false" });
    } else if value.is_unit() {
        out.extend_from_slice(b"null");
    } else if value.is_array() {
        let array = value.as_array_ref().expect("checked is_array");
        check_depth(depth)?;
        if over(array.len(), bounds.max_array) {
            return Err(too_large("an array of size", array.len(), bounds.max_array));
        }
        out.push(b'[');
        for (i, item) in array.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json(item, bounds, depth + 1, out).map_err(|mut r| {
                r.path.insert_str(0, &format!("[{i}]"));
                r
            })?;
        }
        out.push(b']');
    } else if value.is_map() {
        let map = value.as_map_ref().expect("checked is_map");
        check_depth(depth)?;
        if over(map.len(), bounds.max_map) {
            return Err(too_large("a map of size", map.len(), bounds.max_map));
        }
        out.push(b'{');
        for (i, (key, item)) in map.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(key.as_str(), out);
            out.push(b':');
            write_json(item, bounds, depth + 1, out).map_err(|mut r| {
                r.path.insert_str(0, &key_segment(key));
                r
            })?;
        }
        out.push(b'}');
    } else {
        return Err(refuse(unsupported(value)));
    }
    Ok(())
}

fn check_depth(depth: usize) -> Result<(), Refusal> {
    if depth >= MAX_VALUE_DEPTH {
        return Err(refuse(format!(
            "nests arrays or maps deeper than {MAX_VALUE_DEPTH} levels, which cannot be stored"
        )));
    }
    Ok(())
}

/// `.key` for identifier-like keys, `["odd key"]` otherwise; a key of more
/// than [`KEY_SHOWN`] characters by its start and its length (a message
/// naming it stays short, also once escaped).
fn key_segment(key: &str) -> String {
    if key.chars().nth(KEY_SHOWN).is_some() {
        let start: String = key.chars().take(KEY_SHOWN).collect();
        return format!("[{start:?}… ({} bytes)]", key.len());
    }
    let plain = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        format!(".{key}")
    } else {
        format!("[{key:?}]")
    }
}

/// The most characters of a map key a path shows.
const KEY_SHOWN: usize = 40;

fn unsupported(value: &Dynamic) -> String {
    let what = if value.is_fnptr() {
        "a function pointer".to_string()
    } else if value.is_timestamp() {
        "a timestamp".to_string()
    } else if value.is_blob() {
        "a blob".to_string()
    } else if value.is_char() {
        "a character (convert it with to_string() to store text)".to_string()
    } else if value.is::<crate::fault::DbFault>() {
        "a DbError (store its .kind or .message)".to_string()
    } else if value.is::<std::ops::Range<INT>>() || value.is::<std::ops::RangeInclusive<INT>>() {
        "a range".to_string()
    } else {
        format!("a value of type '{}'", short_type_name(value.type_name()))
    };
    format!(
        "is {what}, which cannot be stored (storable: (), bool, int, float, string, array, object map)"
    )
}

/// A Rust type name without its module paths (`a::b::Thing<c::D>` →
/// `Thing<D>`): the rest says nothing to a script's author.
fn short_type_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut word = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            word.clear();
        } else if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            out.push_str(&word);
            word.clear();
            out.push(c);
        }
    }
    out.push_str(&word);
    out
}

pub(crate) fn from_json(json: Value) -> Result<Dynamic, String> {
    Ok(match json {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(b),
        Value::Number(n) => {
            // An integer past the script integer range is a float, as in
            // stock Rhai: serde_json reads one that fits 64 unsigned bits
            // as `u64`, a larger one as `f64`; both convert alike.
            if let Some(i) = n.as_i64() {
                Dynamic::from_int(i as INT)
            } else {
                let f = n.as_f64().expect("a JSON number is an i64, u64 or f64");
                Dynamic::from_float(f as FLOAT)
            }
        }
        Value::String(s) => Dynamic::from(ImmutableString::from(s)),
        Value::Array(items) => {
            let array: Array = items.into_iter().map(from_json).collect::<Result<_, _>>()?;
            Dynamic::from_array(array)
        }
        Value::Object(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                map.insert(k.into(), from_json(v)?);
            }
            Dynamic::from_map(map)
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_type_name_loses_its_module_paths() {
        assert_eq!(
            super::short_type_name("core::ops::range::Range<i64>"),
            "Range<i64>"
        );
        assert_eq!(
            super::short_type_name("alloc::vec::Vec<a::b::C, d::E>"),
            "Vec<C, E>"
        );
        assert_eq!(super::short_type_name("Plain"), "Plain");
    }
}
