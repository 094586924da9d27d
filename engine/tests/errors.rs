//! Errors carry a precise kind, a message and the line and column of the
//! failing expression, including inside `db::` calls and script functions.

mod common;

use common::Circle;
use engine::{ErrorKind, ScriptError};

fn pos(e: &ScriptError) -> (Option<u32>, Option<u32>) {
    (e.line, e.column)
}

#[test]
fn syntax_error_reports_where_parsing_failed() {
    let c = Circle::new();
    let e = c.fails("let x = 1;\nlet y = ;", ErrorKind::Syntax);
    assert_eq!(e.line, Some(2));
    assert!(e.column.is_some());
    assert!(
        !e.message.contains("line"),
        "position is not repeated in the message: {e:?}"
    );
}

#[test]
fn runtime_error_reports_its_position() {
    let c = Circle::new();
    let e = c.fails("let x = 1;\nlet y = x + \"a\" * 2;", ErrorKind::Runtime);
    assert_eq!(e.line, Some(2));
    let e = c.fails("let a = [1];\n\n   a[5]", ErrorKind::Runtime);
    // Rhai places an indexing error at the index.
    assert_eq!(pos(&e), (Some(3), Some(6)));
}

#[test]
fn thrown_value_is_the_message() {
    let c = Circle::new();
    let e = c.fails("\n  throw \"custom failure\";", ErrorKind::Runtime);
    assert_eq!(e.message, "custom failure");
    assert_eq!(pos(&e), (Some(2), Some(3)));
}

#[test]
fn error_inside_a_script_function_keeps_the_inner_position() {
    let c = Circle::new();
    let script = "fn inner(x) {\n    x.no_such_method()\n}\nfn outer(x) {\n  inner(x)\n}\nouter(1)";
    let e = c.fails(script, ErrorKind::Runtime);
    assert_eq!(e.line, Some(2), "{e:?}");
    assert!(
        e.message.contains("'inner'") && e.message.contains("'outer'"),
        "{e:?}"
    );
}

#[test]
fn db_error_inside_a_script_function_points_at_the_db_call() {
    let c = Circle::new();
    let script = "fn save(id) {\n  let v = 1;\n  db::update(id, v)\n}\nsave(99)";
    let e = c.fails(script, ErrorKind::Database);
    assert_eq!(pos(&e), (Some(3), Some(7)));
    assert!(e.message.contains("record 99 not found"), "{e:?}");
    assert!(e.message.contains("'save'"), "{e:?}");
}

#[test]
fn value_error_points_at_the_db_call() {
    let c = Circle::new();
    let e = c.fails(
        "let f = Fn(\"x\");\n\n db::insert(#{ f: f })",
        ErrorKind::Value,
    );
    assert_eq!(pos(&e), (Some(3), Some(6)));
}

#[test]
fn rhai_limit_inside_a_function_points_at_the_outermost_call() {
    // Rhai moves uncatchable errors to the outermost call site.
    let c = Circle::with_limits(engine::Limits {
        max_operations: 10_000,
        ..engine::Limits::default()
    });
    let e = c.fails("fn spin() {\n  loop { }\n}\nspin()", ErrorKind::Limit);
    assert_eq!(pos(&e), (Some(4), Some(1)), "{e:?}");
}

#[test]
fn db_limit_inside_a_function_points_at_the_db_call() {
    let c = Circle::with_limits(engine::Limits {
        max_value_bytes: 10,
        ..engine::Limits::default()
    });
    let e = c.fails(
        "fn save(v) {\n   db::insert(v)\n}\nsave(\"longer than ten bytes\")",
        ErrorKind::Limit,
    );
    assert_eq!(pos(&e), (Some(2), Some(8)), "{e:?}");
}

#[test]
fn kinds_have_stable_wire_names() {
    let names: Vec<&str> = [
        ErrorKind::Syntax,
        ErrorKind::Runtime,
        ErrorKind::Database,
        ErrorKind::Value,
        ErrorKind::Limit,
        ErrorKind::Timeout,
        ErrorKind::Cancelled,
        ErrorKind::Internal,
    ]
    .iter()
    .map(|k| k.as_str())
    .collect();
    assert_eq!(
        names,
        [
            "syntax",
            "runtime",
            "database",
            "value",
            "limit",
            "timeout",
            "cancelled",
            "internal"
        ]
    );
}

#[test]
fn a_repeated_script_is_compiled_once_and_a_failing_one_is_not_cached() {
    let c = Circle::new();
    for _ in 0..3 {
        c.ok("let x = 2; x * 21");
    }
    assert_eq!(c.engine.cached_scripts(), 1);
    c.fails("let = ;", ErrorKind::Syntax);
    assert_eq!(c.engine.cached_scripts(), 1);
    // A cached script still sees fresh data on every run.
    c.ok("db::insert(1)");
    assert_eq!(c.ok("db::next_id()").output, "2");
    c.ok("db::insert(1)");
    assert_eq!(c.ok("db::next_id()").output, "3");
}

#[test]
fn a_db_call_with_the_wrong_arguments_says_how_the_function_is_called() {
    let c = Circle::new();
    for (script, message) in [
        (
            "let x = 1;\ndb::get(\"abc\")",
            "db::get called with (string); it takes db::get(id), id an integer",
        ),
        (
            "db::history(1)",
            "db::history called with (integer); it takes db::history(id, n), id and n integers",
        ),
        (
            "db::insert()",
            "db::insert called with (); it takes db::insert(value)",
        ),
        (
            "db::delete(#{a: 1})",
            "db::delete called with (map); it takes db::delete(id), id an integer",
        ),
        (
            "Fn(\"db::insert\").call(5)",
            "db::insert cannot be called through a function pointer; call it by name: \
             db::insert(value)",
        ),
        (
            "db::nope(1)",
            "db::nope does not exist; the db module has insert, get, update, delete, exists, \
             history, next_id",
        ),
    ] {
        let e = c.fails(script, ErrorKind::Runtime);
        assert_eq!(e.message, message, "{script}");
        assert!(e.line.is_some() && e.column.is_some(), "{e:?}");
    }
    let e = c.fails("\n db::get(1.5)", ErrorKind::Runtime);
    assert_eq!(pos(&e), (Some(2), Some(6)), "{e:?}");
    // Any other function keeps Rhai's message.
    let e = c.fails("no_such_function(1)", ErrorKind::Runtime);
    assert!(
        e.message
            .starts_with("Function not found: no_such_function"),
        "{e:?}"
    );
}

#[test]
fn a_db_call_with_the_wrong_arguments_says_the_same_caught_or_not() {
    let c = Circle::new();
    for call in [
        "db::get(\"abc\")",
        "db::get()",
        "db::get(1, 2)",
        "db::insert()",
        "db::insert(1, 2, 3)",
        "db::update(\"x\", 1)",
        "db::update(1)",
        "db::delete(#{a: 1})",
        "db::exists([1])",
        "db::history(1, \"x\")",
        "db::history(1.5, 2)",
        "db::next_id(1)",
    ] {
        let uncaught = c.fails(call, ErrorKind::Runtime);
        assert!(
            uncaught.message.starts_with("db::") && uncaught.message.contains("; it takes db::"),
            "{call}: {uncaught:?}"
        );
        let caught = c
            .ok(&format!(
                "let r = (); try {{ {call} }} catch (e) {{ r = [e.kind, e.message] }}; r"
            ))
            .output;
        assert_eq!(
            caught,
            format!("[\"runtime\", {:?}]", uncaught.message),
            "{call}"
        );
    }
    // The right calls are untouched by the fallbacks.
    assert_eq!(
        c.ok("let id = db::insert(#{a: 1}); db::update(id, 2); db::get(id)")
            .output,
        "2"
    );
    assert_eq!(c.ok("db::history(1, 5).len()").output, "2");
}

#[test]
fn a_caught_db_error_has_the_line_and_position_of_its_call_as_rhai_errors_do() {
    let c = Circle::new();
    let script = "let seen = [];\ntry {\n    db::update(99, 1);\n} catch (e) {\n    seen.push([e.kind, e.line, e.position]);\n}\ntry { 1 / 0 } catch (e) { seen.push([e.line, e.position]); }\nseen";
    assert_eq!(
        c.ok(script).output,
        r#"[["database", 3, 9], [7, 9]]"#,
        "a db error and a Rhai error caught alike"
    );
}

/// A value too large or too deep to turn into text is refused by the
/// call that would write it (`print`, `to_string`, interpolation), and the
/// error is shown at that call: not at the statement after it, nor nowhere
/// when the call ends the script or a function.
#[test]
fn a_value_refused_as_text_is_reported_at_the_call_that_would_write_it() {
    let c = Circle::new();
    let big = "let a = []; a.pad(600000, 1);";
    let e = c.fails(
        &format!("{big}\nprint(a);\nlet x = 5;\nx"),
        ErrorKind::Limit,
    );
    assert_eq!(pos(&e), (Some(2), Some(1)), "{e:?}");
    let e = c.fails(&format!("{big} print(a)"), ErrorKind::Limit);
    assert_eq!(pos(&e), (Some(1), Some(31)), "{e:?}");
    let e = c.fails(&format!("{big}\nlet s = `<${{a}}>`; 1"), ErrorKind::Limit);
    assert_eq!(e.line, Some(2), "{e:?}");
    let deep = "let v = 1; for i in 0..257 { v = [v]; }";
    let e = c.fails(
        &format!("{deep} let s = v.to_string(); 1"),
        ErrorKind::Limit,
    );
    assert_eq!(pos(&e), (Some(1), Some(51)), "{e:?}");
    let e = c.fails(
        &format!("fn show(a) {{ print(a) }}\n{big}\nshow(a); 1"),
        ErrorKind::Limit,
    );
    assert_eq!(pos(&e), (Some(1), Some(14)), "{e:?}");
    c.still_works();
}

/// A caught `db::` error prints as its `to_debug` inside an array or a map
/// too, as stock Rhai prints each element of one.
#[test]
fn a_caught_db_error_prints_the_same_inside_an_array_or_a_map() {
    let c = Circle::new();
    let out = c.ok(
        "let r = (); try { db::update(999999, 1); } catch (e) { r = e; }\n\
         [to_debug(r), [r], #{e: r}].to_string()",
    );
    let debug = "DbError(database: record 999999 not found)";
    assert_eq!(
        out.output,
        format!(r#"["{debug}", [{debug}], #{{"e": {debug}}}]"#),
        "{out:?}"
    );
}

/// Rhai counts lines and columns in 16 bits, and a script within the size
/// limit can have more of either: where the count ran out, the error says
/// nothing of where it is rather than a wrong place.
#[test]
fn a_place_past_what_rhai_counts_is_left_out_not_shown_wrong() {
    let c = Circle::new();
    let e = c.fails(
        &format!("{}undefined_v", "\n".repeat(70_000)),
        ErrorKind::Runtime,
    );
    assert_eq!(pos(&e), (None, None), "{e:?}");
    let e = c.fails(
        &format!("{}let = 1;", " ".repeat(100_000)),
        ErrorKind::Syntax,
    );
    assert_eq!(pos(&e), (Some(1), None), "{e:?}");
    let e = c.fails(&format!("{}1/0", "\n".repeat(65_000)), ErrorKind::Runtime);
    assert_eq!(pos(&e), (Some(65_001), Some(2)), "{e:?}");
    let caught = c.ok(&format!(
        "{}let p = (); try {{ db::update(999999, 1); }} catch (e) {{ p = [e.line, e.position]; }} p",
        "\n".repeat(70_000)
    ));
    assert_eq!(caught.output, "[(), ()]", "{caught:?}");
}
