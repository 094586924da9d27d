//! Values round-trip through the database exactly, and values that cannot
//! are refused with the path of the offending part.

mod common;

use common::Circle;
use engine::ErrorKind;

/// Stores `expr`, reads it back in a later script, and checks type and value.
fn round_trips(c: &Circle, expr: &str, type_name: &str) {
    let id = c.ok(&format!("db::insert({expr})")).output;
    let o = c.ok(&format!(
        "let v = db::get({id}); let w = {expr}; [type_of(v), v == w, v]"
    ));
    assert!(
        o.output.starts_with(&format!("[\"{type_name}\", true,")),
        "{expr} came back as {}",
        o.output
    );
}

#[test]
fn every_supported_type_round_trips_with_its_type() {
    let c = Circle::new();
    round_trips(&c, "()", "()");
    round_trips(&c, "true", "bool");
    round_trips(&c, "false", "bool");
    round_trips(&c, "0", "i64");
    round_trips(&c, "-42", "i64");
    round_trips(&c, "9223372036854775807", "i64");
    round_trips(&c, "-9223372036854775807 - 1", "i64");
    round_trips(&c, "1.0", "f64");
    round_trips(&c, "-0.5", "f64");
    round_trips(&c, "1.0e300", "f64");
    round_trips(&c, "0.1 + 0.2", "f64");
    round_trips(&c, "\"\"", "string");
    round_trips(&c, "\"héllo \\\"quoted\\\" \\n 🙂\"", "string");
    round_trips(&c, "[]", "array");
    round_trips(&c, "[1, 2.0, \"three\", (), [true]]", "array");
    round_trips(&c, "#{}", "map");
    round_trips(
        &c,
        "#{ name: \"Ada\", age: 36, score: 9.5, tags: [\"a\", \"b\"], inner: #{ ok: true, none: () }, \"odd key\": 1 }",
        "map",
    );
}

#[test]
fn values_captured_by_closures_store_like_any_other() {
    // A variable captured by a closure becomes a shared value inside Rhai.
    let c = Circle::new();
    let o = c.ok(
        "let n = 5; let s = \"x\"; let a = [1]; let m = #{ k: 1.5 }; let u = ();\n\
         let f = || [n, s, a, m, u];\n\
         [db::insert(n), db::insert(s), db::insert(a), db::insert(m), db::insert(u), db::insert(f.call())]",
    );
    assert_eq!(o.output, "[1, 2, 3, 4, 5, 6]");
    assert_eq!(
        c.ok("[db::get(1), db::get(2), db::get(3), db::get(4), db::get(5), db::get(6)]")
            .output,
        "[5, \"x\", [1], #{\"k\": 1.5}, (), [5, \"x\", [1], #{\"k\": 1.5}, ()]]"
    );
}

#[test]
fn one_point_zero_stays_a_float_and_one_stays_an_int() {
    let c = Circle::new();
    c.ok("db::insert([1, 1.0])");
    assert_eq!(
        c.ok("let v = db::get(1); [type_of(v[0]), type_of(v[1]), v[1]]")
            .output,
        "[\"i64\", \"f64\", 1.0]"
    );
}

#[test]
fn values_are_stored_as_plain_json() {
    let c = Circle::new();
    c.ok("db::insert(#{ a: [1, 2.5, \"x\", (), true] })");
    let bytes = c.engine.db().get(1).expect("read").expect("record 1");
    assert_eq!(
        String::from_utf8(bytes).expect("utf-8"),
        r#"{"a":[1,2.5,"x",null,true]}"#
    );
}

fn refused(c: &Circle, script: &str, path: &str, what: &str) {
    let e = c.fails(script, ErrorKind::Value);
    assert!(
        e.message.starts_with(path) && e.message.contains(what),
        "{script}: {}",
        e.message
    );
    assert!(e.line.is_some(), "{e:?}");
}

#[test]
fn unsupported_values_are_refused_naming_the_part_and_why() {
    let c = Circle::new();
    refused(&c, "db::insert(Fn(\"x\"))", "value ", "function pointer");
    refused(&c, "db::insert(|x| x + 1)", "value ", "function pointer");
    refused(
        &c,
        "db::insert(#{ tags: [1, 2, 'c'] })",
        "value.tags[2] ",
        "character",
    );
    refused(&c, "db::insert([0.0 / 0.0])", "value[0] ", "NaN");
    refused(&c, "db::insert(#{ x: 1.0 / 0.0 })", "value.x ", "inf");
    refused(
        &c,
        "db::insert(#{ \"odd key\": [-1.0 / 0.0] })",
        "value[\"odd key\"][0] ",
        "inf",
    );
    refused(&c, "db::insert(1..5)", "value ", "is a range, which");
    refused(&c, "db::insert([1..=5])", "value[0] ", "is a range, which");
    refused(
        &c,
        "let k; try { db::get(-1) } catch (e) { k = e; } db::insert(#{ err: k })",
        "value.err ",
        "is a DbError (store its .kind or .message), which",
    );
    refused(
        &c,
        "db::update(db::insert(1), [Fn(\"f\")])",
        "value[0] ",
        "function pointer",
    );
    // Nothing was written by any of them.
    assert_eq!(c.ok("db::next_id()").output, "1");
}

#[test]
fn timestamps_and_blobs_are_refused_when_stored_not_when_made() {
    let c = Circle::new();
    // Made, used and returned freely; rendered as stock Rhai's `to_string`.
    let o = c.ok("let t = timestamp(); let b = blob(2, 0x2a); b.push(1); print(t); [t.elapsed < 10.0, (t + 5) - t, b.len(), b.as_string()]");
    assert_eq!(o.output, "[true, 5.0, 3, \"**\\u{1}\"]");
    assert_eq!(o.printed, "<timestamp>\n");
    assert_eq!(c.ok("timestamp()").output, "<timestamp>");
    assert_eq!(c.ok("blob(3, 0x2a)").output, "[2a2a2a]");
    // Refused when stored, with the type named, by insert and by update.
    let e = c.fails("db::insert(#{ when: timestamp() })", ErrorKind::Value);
    assert!(
        e.message
            .contains("value.when is a timestamp, which cannot be stored"),
        "{e:?}"
    );
    let e = c.fails("db::insert(blob(3))", ErrorKind::Value);
    assert!(
        e.message
            .contains("value is a blob, which cannot be stored"),
        "{e:?}"
    );
    let e = c.fails(
        "let id = db::insert(1); db::update(id, [1, timestamp()])",
        ErrorKind::Value,
    );
    assert!(e.message.contains("value[1] is a timestamp"), "{e:?}");
    // Nothing was written by any of them.
    assert_eq!(c.ok("db::next_id()").output, "1");
}

#[test]
fn too_deeply_nested_value_is_refused() {
    let c = Circle::new();
    let e = c.fails(
        "let v = [];\nfor i in 0..100 { v = [v]; }\ndb::insert(v)",
        ErrorKind::Value,
    );
    assert!(e.message.contains("deeper than 64"), "{e:?}");
    c.ok("let v = []; for i in 0..60 { v = [v]; } db::insert(v)");
}

#[test]
fn final_values_render_as_text_and_unit_as_empty() {
    let c = Circle::new();
    assert_eq!(c.ok("40 + 2").output, "42");
    assert_eq!(c.ok("\"text\"").output, "text");
    assert_eq!(c.ok("1.5").output, "1.5");
    assert_eq!(c.ok("let x = 1;").output, "");
    assert_eq!(c.ok("()").output, "");
    assert_eq!(c.ok("[1, \"a\"]").output, "[1, \"a\"]");
    // Shared (closure-captured) values render the same.
    assert_eq!(c.ok("let s = \"text\"; let f = || s; s").output, "text");
    assert_eq!(c.ok("let n = 42; let f = || n; n").output, "42");
    let o = c.ok("print(\"hello\"); debug(\"dbg\"); 7");
    assert_eq!(o.printed, "hello\n\"dbg\"\n");
    assert!(!o.printed_truncated);
}

#[test]
fn a_caught_db_error_renders_as_its_message_as_to_string_does() {
    let c = Circle::new();
    let caught = "let k; try { db::get(-1) } catch (e) { k = e; }";
    let message = c.ok(&format!("{caught} k.to_string()")).output;
    assert!(message.contains("-1"), "{message}");
    assert_eq!(c.ok(&format!("{caught} k")).output, message);
    assert_eq!(c.ok(&format!("{caught} k.message")).output, message);
}

/// A blob inside an array or map is refused as any value that cannot be
/// stored: a catchable `value` error naming its path, also when its bytes
/// pass the value limit.
#[test]
fn a_large_blob_in_a_container_is_a_value_error_naming_its_path() {
    let c = Circle::new();
    for blob in ["blob(3)", "blob(300000)"] {
        let caught = c.ok(&format!(
            "let k = (); try {{ db::insert(#{{ data: {blob} }}); }} catch (e) {{ k = e.kind; }} k"
        ));
        assert_eq!(caught.output, "value", "{blob}");
    }
    let e = c.fails("db::insert([1, blob(300000)])", ErrorKind::Value);
    assert!(e.message.starts_with("value[1] is a blob"), "{e:?}");
}

/// A long map key is named by its start and length in a refusal's path,
/// so the message stays short also when every character of it is escaped.
#[test]
fn a_long_key_in_a_refusal_path_is_shortened() {
    let c = Circle::new();
    let e = c.fails(
        "let k = \"\"; k.pad(262000, '\\x01'); let m = #{}; m[k] = timestamp(); db::insert(m)",
        ErrorKind::Value,
    );
    assert!(
        e.message.len() < 500,
        "{} bytes: {}",
        e.message.len(),
        &e.message[..100]
    );
    assert!(
        e.message.starts_with(r#"value["\u{1}\u{1}"#)
            && e.message.contains("… (262000 bytes)] is a timestamp"),
        "{e:?}"
    );
    let caught = c.ok(
        "let k = \"\"; k.pad(262000, '\\x01'); let m = #{}; m[k] = timestamp();\n\
         let n = 0; try { db::insert(m); } catch (e) { n = e.message.len(); } n < 500",
    );
    assert_eq!(caught.output, "true");
}
