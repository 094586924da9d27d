//! Guards against values nested too deeply, or too large as text, to print,
//! compare or convert.
//!
//! Rhai puts no bound on how deeply arrays and maps nest, and its `Display`,
//! `Debug`, `==` and JSON conversion of nested values recurse through its
//! whole function-call machinery, several kilobytes of native stack per level:
//! `let v = (); for i in 0..3000 { v = [v]; } v.to_string()` would overflow
//! the script thread's stack and abort the process without these guards. The functions that
//! recurse are shadowed here, in the engine's global namespace (searched
//! before any package), by versions that first measure the nesting depth
//! iteratively and refuse a value deeper than [`MAX_NESTING`] levels with a
//! `limit` error. Values within the bound are handled with a recursion of at
//! most [`MAX_NESTING`] levels.
//!
//! Printing functions cannot fail (Rhai falls back to the recursive `Display`
//! when `to_string` fails, e.g. in string interpolation), so for them the
//! refusal is recorded in the run (see [`crate::context::stop_with`]): they
//! return an empty string and the very next operation, or the end of the
//! script, fails the run. They also refuse an array or map whose text is
//! sure to pass the string size (counted before any of it is written), and
//! empty a refused container: Rhai re-checks the sizes of a printed value
//! after the call and renders its whole text when that check fails.

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, NativeCallContext};

use crate::context::{self, NESTING_TOKEN, STRING_TOKEN};

/// Deepest nesting of arrays and maps that scripts may print, compare or
/// convert to text, and that a result may have.
pub const MAX_NESTING: usize = 256;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// Whether any of `items`, found at depth `depth`, nests deeper than
/// [`MAX_NESTING`]. Recurses at most [`MAX_NESTING`] levels (a few dozen
/// bytes of stack each) whatever the value's depth: safe on any value.
fn too_deep<'a>(items: impl Iterator<Item = &'a Dynamic>, depth: usize) -> bool {
    for value in items {
        if let Ok(a) = value.as_array_ref() {
            if depth >= MAX_NESTING || too_deep(a.iter(), depth + 1) {
                return true;
            }
        } else if let Ok(m) = value.as_map_ref()
            && (depth >= MAX_NESTING || too_deep(m.values(), depth + 1))
        {
            return true;
        }
    }
    false
}

/// Whether `value` nests arrays or maps deeper than [`MAX_NESTING`].
pub fn value_too_deep(value: &Dynamic) -> bool {
    too_deep(std::iter::once(value), 0)
}

fn message() -> String {
    format!(
        "a value nests arrays or maps deeper than {MAX_NESTING} levels, \
         too deep to print, compare or convert to text"
    )
}

/// The error of a refused value; uncatchable, like every limit.
fn refusal() -> Box<EvalAltResult> {
    context::stop_with(NESTING_TOKEN);
    EvalAltResult::ErrorTerminated(NESTING_TOKEN.into(), rhai::Position::NONE).into()
}

/// Which text of a value [`text_over`] bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `to_string`, `to_debug`, `print`: a function pointer as `Fn(name)`.
    Printed,
    /// Rhai's `to_json`, which also writes what a closure captured.
    Json,
    /// The JSON a value is stored as: a blob or a function pointer is
    /// refused there by its path (kind `value`), so it counts one byte.
    Stored,
}

/// Why the text of a container holding `items` is refused, if it is: it
/// nests too deeply, or it is sure to be longer than `max` bytes (0: no
/// bound), which is known before a byte of it is written.
fn refusal_of<'a>(
    items: impl Iterator<Item = &'a Dynamic> + Clone,
    max: usize,
    form: Form,
) -> Option<&'static str> {
    if too_deep(items.clone(), 1) {
        return Some(NESTING_TOKEN);
    }
    // Rhai's `to_json` follows what closures captured with no bound and no
    // cycle check (`m.f = || m` is infinitely deep): the count that passes
    // [`MAX_NESTING`] there refuses it, also with no string limit.
    let bound = match max {
        0 if form == Form::Json => usize::MAX,
        0 => return None,
        n => n,
    };
    let mut total = 0;
    if !text_over(items, bound, form, 1, &mut total) {
        None
    } else if total > bound {
        Some(STRING_TOKEN)
    } else {
        Some(NESTING_TOKEN)
    }
}

/// The text of a refused container: `""`, with the run marked to fail at
/// its next operation. `empty` empties the container first: the run ends
/// before the script can look at it again (and its writes are dropped), and
/// Rhai checks the sizes of a printed value after the call, rendering its
/// whole text as a fallback when that check fails, so a container past the
/// size limits must not reach that check whole.
fn refused(token: &'static str, at: rhai::Position, empty: impl FnOnce()) -> ImmutableString {
    context::stop_at(token, at);
    empty();
    ImmutableString::new()
}

/// Whether the text of `items` (as `to_string`, `to_debug` and JSON write
/// them, separated) passes `max` bytes, `total` counting from what came
/// before: a lower bound in every one of those forms (each string's bytes
/// plus its quotes, each key's bytes plus its quotes and colon, two bytes of
/// brackets per container, a blob's bytes, a function pointer's name plus
/// two bytes (one name of up to a string's limit, shared by a million
/// elements, is a TiB of text), one byte for every other value
/// and between two items; in [`Form::Json`] a closure's captured values
/// too, in [`Form::Stored`] one byte for a blob or a function pointer),
/// given up as soon as it
/// passes. A map of a thousand references to one string of 512 KiB is half
/// a GiB of text, built in one operation, before any limit could look.
/// Values deeper than `depth` [`MAX_NESTING`] go uncounted (the bound stays
/// a lower one), so the recursion is bounded whatever a closure captured;
/// in [`Form::Json`] reaching one ends the count as `true` (its caller tells
/// this from a passed `max` by `total`).
fn text_over<'a>(
    items: impl Iterator<Item = &'a Dynamic>,
    max: usize,
    form: Form,
    depth: usize,
    total: &mut usize,
) -> bool {
    if depth > MAX_NESTING {
        // Uncounted, except in JSON, which Rhai writes however deep.
        return form == Form::Json;
    }
    for (i, value) in items.enumerate() {
        if i > 0 {
            *total = total.saturating_add(1);
        }
        // A cell being written right now: the value this walk started from,
        // reached again through a closure's capture (`m.f = || m;
        // m.to_json()`, `m` locked while its method runs). Reading it would
        // panic, and Rhai would write it without end.
        if value.is_locked() {
            return true;
        }
        if let Ok(a) = value.as_array_ref() {
            *total = total.saturating_add(2);
            if text_over(a.iter(), max, form, depth + 1, total) {
                return true;
            }
        } else if let Ok(m) = value.as_map_ref() {
            *total = total.saturating_add(2);
            for (j, (key, item)) in m.iter().enumerate() {
                *total = total.saturating_add(key.len() + 3 + usize::from(j > 0));
                if text_over(std::iter::once(item), max, form, depth + 1, total) {
                    return true;
                }
            }
        } else if let Ok(s) = value.as_immutable_string_ref() {
            *total = total.saturating_add(s.len() + 2);
        } else if form != Form::Stored
            && let Some(blob) = value.read_lock::<rhai::Blob>()
        {
            *total = total.saturating_add(blob.len().max(1));
        } else if form != Form::Stored
            && let Some(f) = value.read_lock::<rhai::FnPtr>()
        {
            // Its name is written whole: `Fn(name)`, or `"name"` in JSON.
            *total = total.saturating_add(f.fn_name().len() + 2);
            if form == Form::Json && text_over(f.iter_curry(), max, form, depth + 1, total) {
                return true;
            }
        } else {
            *total = total.saturating_add(1);
        }
        if *total > max {
            return true;
        }
    }
    false
}

/// Whether `value`'s text (as the script's `to_string` or JSON writes it)
/// is sure to be longer than `max` bytes, known without writing it: for a
/// result or a stored value past its limit, whose text would otherwise be
/// built whole before its length is compared. `false` for a value that is
/// no array or map; parts deeper than [`MAX_NESTING`] go uncounted (such a
/// value is refused elsewhere).
pub fn text_surely_over(value: &Dynamic, max: usize) -> bool {
    (value.is_array() || value.is_map())
        && text_over(std::iter::once(value), max, Form::Printed, 0, &mut 0)
}

/// Why the message of a thrown `value` is not written: Rhai's own text of
/// an array or map (its `Display`, unlike the script's `to_string`) writes
/// what each closure in it captured, with no bound on how deeply closures
/// capture closures (`v = #{ f: || w }` in a loop nests hundreds of
/// thousands of levels in one second, and writing it overflows the stack).
/// [`NESTING_TOKEN`] for a value nesting deeper than [`MAX_NESTING`], also
/// through closures; [`STRING_TOKEN`] for one whose text is sure to pass
/// `max` bytes (0: no bound); `None` when its text may be written.
pub fn thrown_refusal(value: &Dynamic, max: usize) -> Option<&'static str> {
    if value_too_deep(value) {
        return Some(NESTING_TOKEN);
    }
    if !(value.is_array() || value.is_map()) {
        return None;
    }
    // The JSON count is a lower bound of that text too: it counts what
    // closures captured, and refuses past `MAX_NESTING` levels of them.
    refusal_of(std::iter::once(value), max, Form::Json)
}

/// [`text_surely_over`] for the JSON `value` would be stored as: a blob or
/// a function pointer in it counts one byte, as its own refusal (kind
/// `value`, naming its path) comes first.
pub fn stored_surely_over(value: &Dynamic, max: usize) -> bool {
    (value.is_array() || value.is_map())
        && text_over(std::iter::once(value), max, Form::Stored, 0, &mut 0)
}

/// Equality with Rhai's semantics for values within the bound: arrays and
/// maps element by element, anything else by the script's `==`.
fn equal(ctx: &NativeCallContext, a: &Dynamic, b: &Dynamic) -> Res<bool> {
    if let (Ok(x), Ok(y)) = (a.as_array_ref(), b.as_array_ref()) {
        return arrays_equal(ctx, &x, &y);
    }
    if let (Ok(x), Ok(y)) = (a.as_map_ref(), b.as_map_ref()) {
        return maps_equal(ctx, &x, &y);
    }
    if a.type_id() != b.type_id() && (a.is_array() || a.is_map() || b.is_array() || b.is_map()) {
        return Ok(false);
    }
    match ctx.call_native_fn::<bool>("==", (a.clone(), b.clone())) {
        Ok(eq) => Ok(eq),
        Err(e) if matches!(*e, EvalAltResult::ErrorFunctionNotFound(..)) => Ok(false),
        Err(e) => Err(e),
    }
}

fn arrays_equal(ctx: &NativeCallContext, x: &Array, y: &Array) -> Res<bool> {
    if x.len() != y.len() {
        return Ok(false);
    }
    for (a, b) in x.iter().zip(y.iter()) {
        if !equal(ctx, a, b)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn maps_equal(ctx: &NativeCallContext, x: &Map, y: &Map) -> Res<bool> {
    if x.len() != y.len() {
        return Ok(false);
    }
    for (k, a) in x.iter() {
        match y.get(k) {
            Some(b) if equal(ctx, a, b)? => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

fn check_arrays(x: &Array, y: &Array) -> Res<()> {
    if too_deep(x.iter(), 1) || too_deep(y.iter(), 1) {
        return Err(refusal());
    }
    Ok(())
}

fn check_maps(x: &Map, y: &Map) -> Res<()> {
    if too_deep(x.values(), 1) || too_deep(y.values(), 1) {
        return Err(refusal());
    }
    Ok(())
}

/// Writes `a` as stock Rhai's `to_string` of an array writes it: each
/// element in its `to_debug` form.
fn write_array(engine: &Engine, a: &Array, out: &mut String) {
    out.push('[');
    for (i, item) in a.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_debug(engine, item, out);
    }
    out.push(']');
}

/// Writes `m` as stock Rhai's `to_string` of a map writes it: each key quoted,
/// each value in its `to_debug` form.
fn write_map(engine: &Engine, m: &Map, out: &mut String) {
    use std::fmt::Write;
    out.push_str("#{");
    for (i, (key, item)) in m.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write!(out, "{key:?}: ").expect("writing to a String cannot fail");
        write_debug(engine, item, out);
    }
    out.push('}');
}

/// Writes `value` in the form of the standard packages' `to_debug`: a char
/// bare, a function pointer as `Fn(name)`, anything else in its debug form
/// with Rust type names mapped to script ones.
fn write_debug(engine: &Engine, value: &Dynamic, out: &mut String) {
    use std::fmt::Write;
    if let Ok(a) = value.as_array_ref() {
        write_array(engine, &a, out);
    } else if let Ok(m) = value.as_map_ref() {
        write_map(engine, &m, out);
    } else if let Ok(c) = value.as_char() {
        out.push(c);
    } else if value.is_fnptr() {
        write!(out, "{value}").expect("writing to a String cannot fail");
    } else if let Some(fault) = value.read_lock::<crate::fault::DbFault>() {
        // As its registered `to_debug` writes it, which stock Rhai calls
        // for each element.
        out.push_str(&fault.debug_text());
    } else {
        let text = format!("{value:?}");
        out.push_str(engine.map_type_name(&text));
    }
}

/// The text stock Rhai's `to_string`, `print` and `debug` give `value` when
/// it is an array or a map, `None` for any other value. The caller has
/// checked that `value` nests no deeper than [`MAX_NESTING`]: the recursion
/// follows its nesting.
pub fn container_text(engine: &Engine, value: &Dynamic) -> Option<String> {
    let mut out = String::new();
    if let Ok(a) = value.as_array_ref() {
        write_array(engine, &a, &mut out);
    } else if let Ok(m) = value.as_map_ref() {
        write_map(engine, &m, &mut out);
    } else {
        return None;
    }
    Some(out)
}

/// Shadows the recursive functions of the array and map packages.
pub fn register(engine: &mut Engine) {
    for name in ["to_string", "print", "to_debug", "debug"] {
        engine.register_fn(name, |ctx: NativeCallContext, a: &mut Array| {
            if let Some(token) = refusal_of(a.iter(), ctx.engine().max_string_size(), Form::Printed)
            {
                return refused(token, ctx.call_position(), || a.clear());
            }
            let mut out = String::new();
            write_array(ctx.engine(), a, &mut out);
            ImmutableString::from(out)
        });
        engine.register_fn(name, |ctx: NativeCallContext, m: &mut Map| {
            if let Some(token) =
                refusal_of(m.values(), ctx.engine().max_string_size(), Form::Printed)
            {
                return refused(token, ctx.call_position(), || m.clear());
            }
            let mut out = String::new();
            write_map(ctx.engine(), m, &mut out);
            ImmutableString::from(out)
        });
    }
    engine.register_fn("to_json", |ctx: NativeCallContext, m: &mut Map| {
        if let Some(token) = refusal_of(m.values(), ctx.engine().max_string_size(), Form::Json) {
            return refused(token, ctx.call_position(), || m.clear());
        }
        ImmutableString::from(rhai::format_map_as_json(m))
    });
    engine.register_fn("==", |ctx: NativeCallContext, x: &mut Array, y: Array| {
        check_arrays(x, &y)?;
        arrays_equal(&ctx, x, &y)
    });
    engine.register_fn("!=", |ctx: NativeCallContext, x: &mut Array, y: Array| {
        check_arrays(x, &y)?;
        arrays_equal(&ctx, x, &y).map(|eq| !eq)
    });
    engine.register_fn("==", |ctx: NativeCallContext, x: &mut Map, y: Map| {
        check_maps(x, &y)?;
        maps_equal(&ctx, x, &y)
    });
    engine.register_fn("!=", |ctx: NativeCallContext, x: &mut Map, y: Map| {
        check_maps(x, &y)?;
        maps_equal(&ctx, x, &y).map(|eq| !eq)
    });
}

/// The message of a run stopped by [`NESTING_TOKEN`].
pub fn refusal_message() -> String {
    message()
}
