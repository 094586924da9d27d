//! Rhai values to and from the JSON bytes stored in OurDB.
//!
//! Only values that come back exactly as they went in are accepted: unit,
//! bool, int, float (finite), string, array and object map. Anything else is
//! refused with the path of the offending part (`value.tags[2]`) instead of
//! being converted into something else.

use rhai::{Array, Dynamic, FLOAT, INT, ImmutableString, Map};
use serde_json::{Number, Value};

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
    let mut path = String::from("value");
    let json = to_json(value, bounds, &mut path, 0)?;
    Ok(serde_json::to_vec(&json).expect("a serde_json::Value always serializes"))
}

/// Decodes JSON bytes written by [`encode`] back into a Rhai value.
pub fn decode(bytes: &[u8]) -> Result<Dynamic, String> {
    let json: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    from_json(json)
}

fn refuse(path: &str, reason: impl Into<String>) -> Refusal {
    Refusal {
        over_limit: false,
        path: path.to_string(),
        reason: reason.into(),
    }
}

fn too_large(path: &str, what: &str, len: usize, max: usize) -> Refusal {
    Refusal {
        over_limit: true,
        path: path.to_string(),
        reason: format!("is {what} of {len}, over the limit of {max}"),
    }
}

fn over(len: usize, max: usize) -> bool {
    max > 0 && len > max
}

fn to_json(
    value: &Dynamic,
    bounds: &Bounds,
    path: &mut String,
    depth: usize,
) -> Result<Value, Refusal> {
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::Number(Number::from(i)));
    }
    if let Ok(f) = value.as_float() {
        return match Number::from_f64(f) {
            Some(n) => Ok(Value::Number(n)),
            None => Err(refuse(
                path,
                format!(
                    "is the float {f}, which JSON cannot hold (only finite numbers can be stored)"
                ),
            )),
        };
    }
    if let Ok(s) = value.as_immutable_string_ref() {
        if over(s.len(), bounds.max_string) {
            return Err(too_large(
                path,
                "a string of length",
                s.len(),
                bounds.max_string,
            ));
        }
        return Ok(Value::String(s.as_str().to_string()));
    }
    if value.is_array() {
        let array = value.as_array_ref().expect("checked is_array");
        check_depth(path, depth)?;
        if over(array.len(), bounds.max_array) {
            return Err(too_large(
                path,
                "an array of size",
                array.len(),
                bounds.max_array,
            ));
        }
        let mut out = Vec::with_capacity(array.len());
        for (i, item) in array.iter().enumerate() {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            out.push(to_json(item, bounds, path, depth + 1)?);
            path.truncate(len);
        }
        return Ok(Value::Array(out));
    }
    if value.is_map() {
        let map = value.as_map_ref().expect("checked is_map");
        check_depth(path, depth)?;
        if over(map.len(), bounds.max_map) {
            return Err(too_large(path, "a map of size", map.len(), bounds.max_map));
        }
        let mut out = serde_json::Map::new();
        for (key, item) in map.iter() {
            let len = path.len();
            push_key(path, key);
            out.insert(key.to_string(), to_json(item, bounds, path, depth + 1)?);
            path.truncate(len);
        }
        return Ok(Value::Object(out));
    }
    Err(refuse(path, unsupported(value)))
}

fn check_depth(path: &str, depth: usize) -> Result<(), Refusal> {
    if depth >= MAX_VALUE_DEPTH {
        return Err(refuse(
            path,
            format!(
                "nests arrays or maps deeper than {MAX_VALUE_DEPTH} levels, which cannot be stored"
            ),
        ));
    }
    Ok(())
}

fn push_key(path: &mut String, key: &str) {
    let plain = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str(&format!("[{key:?}]"));
    }
}

fn unsupported(value: &Dynamic) -> String {
    let what = if value.is_fnptr() {
        "a function pointer".to_string()
    } else if value.is_timestamp() {
        "a timestamp".to_string()
    } else if value.is_blob() {
        "a blob".to_string()
    } else if value.is_char() {
        "a character (convert it with to_string() to store text)".to_string()
    } else {
        format!("a value of type '{}'", value.type_name())
    };
    format!(
        "is {what}, which cannot be stored (storable: (), bool, int, float, string, array, object map)"
    )
}

fn from_json(json: Value) -> Result<Dynamic, String> {
    Ok(match json {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Dynamic::from_int(i as INT)
            } else if n.is_f64() {
                Dynamic::from_float(n.as_f64().expect("checked is_f64") as FLOAT)
            } else {
                return Err(format!(
                    "the number {n} is outside the script integer range"
                ));
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
