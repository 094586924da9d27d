//! Standard-package functions that do unbounded work inside one native
//! call, where Rhai's per-operation callback (the time limit, the cancel
//! flag, the memory bound) never runs, shadowed by versions bounded before
//! they start. Each gives stock Rhai's result wherever stock Rhai ends
//! within the limits.

use std::cmp::Ordering;

use rhai::{Array, Dynamic, Engine, EvalAltResult, INT, ImmutableString, NativeCallContext};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// Rhai's own error for a string past the string size.
fn string_too_large() -> Box<EvalAltResult> {
    EvalAltResult::ErrorDataTooLarge("Length of string".into(), rhai::Position::NONE).into()
}

/// `pad(string, len, padding)`: stock Rhai loops forever on an empty
/// padding (it never grows the string); here an empty padding pads nothing.
fn pad(ctx: NativeCallContext, string: &mut ImmutableString, len: INT, padding: &str) -> Res<()> {
    if len <= 0 || padding.is_empty() {
        return Ok(());
    }
    let max = ctx.engine().max_string_size();
    let len = usize::try_from(len).map_err(|_| string_too_large())?;
    if max > 0 && len > max {
        return Err(string_too_large());
    }
    let mut chars = string.chars().count();
    if len <= chars {
        return Ok(());
    }
    let p = string.make_mut();
    let step = padding.chars().count();
    while chars < len {
        if chars + step <= len {
            p.push_str(padding);
            chars += step;
        } else {
            p.extend(padding.chars().take(len - chars));
            chars = len;
        }
    }
    if max > 0 && string.len() > max {
        return Err(string_too_large());
    }
    Ok(())
}

/// `replace`: refused before the new string is built when it would pass
/// the string size (stock Rhai builds it whole first: 1 MiB of matches
/// each replaced by 1 MiB is a TiB, in one call).
fn replace(
    ctx: &NativeCallContext,
    string: &mut ImmutableString,
    find: &str,
    with: &str,
) -> Res<()> {
    if string.is_empty() {
        return Ok(());
    }
    let max = ctx.engine().max_string_size();
    if max > 0 && with.len() > find.len() {
        let matches = string.matches(find).count();
        let grown = string.len() + matches.saturating_mul(with.len() - find.len());
        if grown > max {
            return Err(string_too_large());
        }
    }
    *string = string.replace(find, with).into();
    Ok(())
}

/// The bytes of the strings in `array`, nested ones included, as Rhai's
/// size check counts them.
fn string_bytes(array: &Array) -> usize {
    array.iter().fold(0usize, |total, v| {
        let more = if let Ok(s) = v.as_immutable_string_ref() {
            s.len()
        } else if let Ok(a) = v.as_array_ref() {
            string_bytes(&a)
        } else if let Ok(m) = v.as_map_ref() {
            let values: Array = m.values().cloned().collect();
            string_bytes(&values)
        } else {
            0
        };
        total.saturating_add(more)
    })
}

/// `sort()` and `sort_desc()`: an array whose strings pass the string size
/// (built by index assignments, which Rhai checks item by item) is refused
/// before it is sorted, as Rhai refuses it after the call: its comparisons
/// could otherwise read terabytes in one call.
fn sort(ctx: NativeCallContext, array: &mut Array, desc: bool) -> Res<()> {
    let max = ctx.engine().max_string_size();
    if max > 0 && string_bytes(array) > max {
        return Err(string_too_large());
    }
    if array.len() <= 1 {
        return Ok(());
    }
    let type_id = array[0].type_id();
    if array.iter().any(|a| a.type_id() != type_id) {
        return Err(EvalAltResult::ErrorFunctionNotFound(
            "elements of different types cannot be sorted".into(),
            rhai::Position::NONE,
        )
        .into());
    }
    let order: fn(&Dynamic, &Dynamic) -> Ordering = if array[0].is_int() {
        |a, b| {
            a.as_int()
                .unwrap_or_default()
                .cmp(&b.as_int().unwrap_or_default())
        }
    } else if array[0].is_char() {
        |a, b| {
            a.as_char()
                .unwrap_or_default()
                .cmp(&b.as_char().unwrap_or_default())
        }
    } else if array[0].is_float() {
        |a, b| {
            let (a, b) = (
                a.as_float().unwrap_or_default(),
                b.as_float().unwrap_or_default(),
            );
            a.partial_cmp(&b).unwrap_or(Ordering::Equal)
        }
    } else if array[0].is_string() {
        |a, b| match (a.as_immutable_string_ref(), b.as_immutable_string_ref()) {
            (Ok(a), Ok(b)) => a.as_str().cmp(b.as_str()),
            _ => Ordering::Equal,
        }
    } else if array[0].is_bool() {
        |a, b| {
            a.as_bool()
                .unwrap_or_default()
                .cmp(&b.as_bool().unwrap_or_default())
        }
    } else if array[0].is_unit() {
        return Ok(());
    } else {
        return Err(EvalAltResult::ErrorFunctionNotFound(
            format!("elements of {} cannot be sorted", array[0].type_name()),
            rhai::Position::NONE,
        )
        .into());
    };
    if desc {
        array.sort_by(|a, b| order(b, a));
    } else {
        array.sort_by(order);
    }
    Ok(())
}

/// Shadows the functions above on `engine`.
pub fn register(engine: &mut Engine) {
    engine.register_fn("pad", pad);
    engine.register_fn(
        "replace",
        |ctx: NativeCallContext, s: &mut ImmutableString, find: &str, with: &str| {
            replace(&ctx, s, find, with)
        },
    );
    engine.register_fn(
        "replace",
        |ctx: NativeCallContext, s: &mut ImmutableString, find: &str, with: char| {
            replace(&ctx, s, find, &with.to_string())
        },
    );
    engine.register_fn(
        "replace",
        |ctx: NativeCallContext, s: &mut ImmutableString, find: char, with: &str| {
            replace(&ctx, s, &find.to_string(), with)
        },
    );
    engine.register_fn(
        "replace",
        |ctx: NativeCallContext, s: &mut ImmutableString, find: char, with: char| {
            replace(&ctx, s, &find.to_string(), &with.to_string())
        },
    );
    engine.register_fn("sort", |ctx: NativeCallContext, a: &mut Array| {
        sort(ctx, a, false)
    });
    engine.register_fn("sort_desc", |ctx: NativeCallContext, a: &mut Array| {
        sort(ctx, a, true)
    });
}
