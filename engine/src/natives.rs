//! Standard-package functions that do unbounded work inside one native
//! call, where Rhai's per-operation callback (the time limit, the cancel
//! flag, the memory bound) never runs, shadowed by versions bounded before
//! they start; and those that ignore their comparator's errors (`sort`,
//! `order`, `dedup` with a comparator), shadowed by versions that end with
//! a bound the comparator hits. Each gives stock Rhai's result wherever
//! stock Rhai ends within the limits, except `parse_json`, which reads JSON
//! and nothing else (see there).

use std::cmp::Ordering;

use rhai::{
    Array, Dynamic, Engine, EvalAltResult, FnPtr, INT, ImmutableString, Map, NativeCallContext,
};

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

/// Rhai's count of the sizes the items of an array or the values of a map
/// add to a value (array elements, a blob's bytes among them; map
/// entries; string bytes), as its own size check counts them; the
/// container's own elements or entries are not counted.
pub(crate) fn sizes<'a>(items: impl Iterator<Item = &'a Dynamic>) -> (usize, usize, usize) {
    let (mut a, mut m, mut s) = (0usize, 0usize, 0usize);
    for item in items {
        let (x, y, z) = if let Ok(array) = item.as_array_ref() {
            let (x, y, z) = sizes(array.iter());
            (x.saturating_add(array.len()), y, z)
        } else if let Ok(map) = item.as_map_ref() {
            let (x, y, z) = sizes(map.values());
            (x, y.saturating_add(map.len()), z)
        } else if let Some(blob) = item.read_lock::<rhai::Blob>() {
            (1 + blob.len(), 0, 0)
        } else if let Ok(text) = item.as_immutable_string_ref() {
            (0, 0, text.len())
        } else {
            (0, 0, 0)
        };
        a = a.saturating_add(x);
        m = m.saturating_add(y);
        s = s.saturating_add(z);
    }
    (a, m, s)
}

/// `pad(array, len, item)` with an array or map `item`: stock Rhai checks
/// the sizes its copies add, but not the keys of the maps in it, which
/// each copy holds anew (a map of 6 keys of 1 MiB passes for 16,000
/// copies: 96 GiB in one call). Here the copies are made one by one and
/// the run's memory is checked after each.
fn pad_array(ctx: NativeCallContext, array: &mut Array, len: INT, item: Dynamic) -> Res<()> {
    let Ok(len) = usize::try_from(len) else {
        return Ok(());
    };
    if len <= array.len() {
        return Ok(());
    }
    let engine = ctx.engine();
    if engine.max_array_size() > 0 {
        let pad = len - array.len();
        let (a, m, s) = sizes(array.iter());
        let a = a.saturating_add(array.len());
        let (ax, mx, sx) = sizes(std::iter::once(&item));
        let total = |now: usize, each: usize| now.saturating_add(each.saturating_mul(pad));
        let over = |size: usize, max: usize| max > 0 && size > max;
        let what = if over(total(s, sx), engine.max_string_size()) {
            Some("Length of string")
        } else if over(total(a, ax + 1), engine.max_array_size()) {
            Some("Size of array/BLOB")
        } else if over(total(m, mx), engine.max_map_size()) {
            Some("Size of object map")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(EvalAltResult::ErrorDataTooLarge(what.into(), rhai::Position::NONE).into());
        }
    }
    // No `reserve`: with no array limit, `len` may be anything.
    while array.len() < len {
        array.push(item.clone());
        if crate::context::over_memory() {
            crate::context::stop_with(crate::context::MEMORY_TOKEN);
            return Err(EvalAltResult::ErrorTerminated(
                crate::context::MEMORY_TOKEN.into(),
                rhai::Position::NONE,
            )
            .into());
        }
    }
    Ok(())
}

/// `order()` and `order_desc()`: [`sort`] on a copy, which is returned.
fn order(ctx: NativeCallContext, array: &mut Array, desc: bool) -> Res<Array> {
    let mut copy = array.clone();
    sort(ctx, &mut copy, desc)?;
    Ok(copy)
}

/// Whether `err`, unwrapped from the function calls it came through, is a
/// bound the engine enforces (sizes, call depth, operations, time, memory,
/// `db::` limits), which no native function may swallow.
fn is_bound(err: &EvalAltResult) -> bool {
    use EvalAltResult as E;
    match err {
        E::ErrorInFunctionCall(_, _, inner, _) | E::ErrorInModule(_, inner, _) => is_bound(inner),
        E::ErrorTooManyOperations(_)
        | E::ErrorStackOverflow(_)
        | E::ErrorDataTooLarge(..)
        | E::ErrorTooManyModules(_)
        | E::ErrorTooManyVariables(_)
        | E::ErrorTerminated(..) => true,
        _ => false,
    }
}

/// Calls a comparator of [`sort_by`] or [`dedup_by`] unless an earlier call
/// hit a bound (kept in `hit`): `None` for a failed call, whose error is
/// kept in `hit` when it is a bound.
fn compare(
    ctx: &NativeCallContext,
    comparer: &FnPtr,
    args: [Dynamic; 2],
    hit: &mut Option<Box<EvalAltResult>>,
) -> Option<Dynamic> {
    if hit.is_some() {
        return None;
    }
    match comparer.call_raw(ctx, None, args) {
        Ok(v) => Some(v),
        Err(e) => {
            if is_bound(&e) {
                *hit = Some(e);
            }
            None
        }
    }
}

/// `sort(comparer)`, `sort_by(comparer)` (and `sort("name")`, the
/// deprecated form naming the function): stock Rhai's sort by a function
/// (an integer or a boolean says the order; any other result, or an error,
/// orders the two by type), except that a bound the comparer hits ends the
/// sort with it: stock Rhai takes it for an order by type, so a comparator
/// could swallow the string, map and call-depth limits and the script go on.
fn sort_by(ctx: NativeCallContext, array: &mut Array, comparer: FnPtr) -> Res<()> {
    if array.len() <= 1 {
        return Ok(());
    }
    let mut hit = None;
    // `slice::sort_by` may panic on a comparer that is no total order.
    let sorted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        array.sort_by(|x, y| {
            let order = compare(&ctx, &comparer, [x.clone(), y.clone()], &mut hit).and_then(|v| {
                v.as_int()
                    .or_else(|_| v.as_bool().map(|less| if less { -1 } else { 1 }))
                    .ok()
            });
            match order {
                Some(v) => v.cmp(&0),
                None => x.type_id().cmp(&y.type_id()),
            }
        });
    }));
    if let Some(e) = hit {
        return Err(e);
    }
    sorted.map_err(|_| {
        EvalAltResult::ErrorRuntime("error in comparer for sorting".into(), rhai::Position::NONE)
            .into()
    })
}

/// `order(comparer)`, `order_by(comparer)`: [`sort_by`] on a copy, which
/// is returned.
fn order_by(ctx: NativeCallContext, array: &mut Array, comparer: FnPtr) -> Res<Array> {
    let mut copy = array.clone();
    sort_by(ctx, &mut copy, comparer)?;
    Ok(copy)
}

/// `dedup(comparer)` (and `dedup("name")`): stock Rhai's (an element goes when the comparer says
/// `true` of the one kept before it and itself; any other result, or an
/// error, keeps it), except that a bound the comparer hits ends it with
/// that bound, as in [`sort_by`].
fn dedup_by(ctx: NativeCallContext, array: &mut Array, comparer: FnPtr) -> Res<()> {
    let mut hit = None;
    array.dedup_by(|x, y| {
        compare(&ctx, &comparer, [y.clone(), x.clone()], &mut hit)
            .and_then(|v| v.as_bool().ok())
            .unwrap_or(false)
    });
    hit.map_or(Ok(()), Err)
}

/// `parse_json(text)`: the object map of a JSON object, read in time
/// linear in the text. Stock Rhai parses the text as a script expression,
/// looking each key of an object up among the keys before it: a 1 MiB
/// object of 90,000 keys is billions of comparisons in one call, outside
/// the time limit (and its expressions, `db::` calls included, are run).
/// Text that is no JSON object is an error; a key given twice keeps its
/// last value (stock Rhai refuses it).
fn parse_json(json: &str) -> Res<Map> {
    let refused = |message: String| -> Box<EvalAltResult> {
        EvalAltResult::ErrorRuntime(message.into(), rhai::Position::NONE).into()
    };
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| refused(format!("invalid JSON: {e}")))?;
    if !value.is_object() {
        return Err(refused("invalid JSON: not an object".into()));
    }
    crate::value::from_json(value)
        .map_err(|e| refused(format!("invalid JSON: {e}")))?
        .try_cast::<Map>()
        .ok_or_else(|| refused("invalid JSON: not an object".into()))
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
    engine.register_fn("order", |ctx: NativeCallContext, a: &mut Array| {
        order(ctx, a, false)
    });
    engine.register_fn("order_desc", |ctx: NativeCallContext, a: &mut Array| {
        order(ctx, a, true)
    });
    for name in ["sort", "sort_by"] {
        engine.register_fn(name, sort_by);
    }
    for name in ["order", "order_by"] {
        engine.register_fn(name, order_by);
    }
    engine.register_fn("dedup", dedup_by);
    // The deprecated forms naming the comparator, which stock Rhai still has.
    engine.register_fn(
        "sort",
        |ctx: NativeCallContext, a: &mut Array, name: &str| -> Res<()> {
            sort_by(ctx, a, FnPtr::new(name)?)
        },
    );
    engine.register_fn(
        "dedup",
        |ctx: NativeCallContext, a: &mut Array, name: &str| -> Res<()> {
            dedup_by(ctx, a, FnPtr::new(name)?)
        },
    );
    engine.register_fn("parse_json", parse_json);
    engine.register_fn(
        "pad",
        |ctx: NativeCallContext, a: &mut Array, len: INT, item: Array| {
            pad_array(ctx, a, len, Dynamic::from_array(item))
        },
    );
    engine.register_fn(
        "pad",
        |ctx: NativeCallContext, a: &mut Array, len: INT, item: Map| {
            pad_array(ctx, a, len, Dynamic::from_map(item))
        },
    );
}
