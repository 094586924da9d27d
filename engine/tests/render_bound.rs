//! A map or array holding many references to one big string is small in
//! memory but huge as text: printing or converting it to text is refused
//! before its text is built. (Its own test binary: the bytes a run allocates
//! are read from jemalloc's count for the running thread.)

mod common;

use common::Circle;
use engine::{ErrorKind, Outcome, RunControl, SCRIPT_STACK_SIZE, ScriptError};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bytes this thread has allocated so far (freed ones included).
fn allocated_by_this_thread() -> u64 {
    tikv_jemalloc_ctl::thread::allocatedp::read()
        .expect("jemalloc thread.allocatedp")
        .get()
}

/// Runs `script` on a thread of its own, as the worker does, and counts the
/// bytes the run allocated.
fn run_counting(c: &Circle, script: &str) -> (Result<Outcome, ScriptError>, u64) {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(SCRIPT_STACK_SIZE)
            .spawn_scoped(s, || {
                let before = allocated_by_this_thread();
                let ran = c.engine.run(script, &RunControl::default());
                (ran, allocated_by_this_thread() - before)
            })
            .expect("spawn script thread")
            .join()
            .expect("script thread must not panic")
    })
}

/// 64 references to one 512 KiB string in a map: 32 MiB of text, 512 KiB
/// of strings in memory. Built with index assignments in `loop`, which
/// Rhai's own size check first looks at when the map is next used.
const MAP: &str = "let s = \"x\"; for i in 0..19 { s += s; }\n\
                   let m = #{}; let i = 0; loop { m[`k${i}`] = s; i += 1; if i >= 64 { break; } }\n";
/// The same in an array.
const ARRAY: &str = "let s = \"x\"; for i in 0..19 { s += s; }\n\
                     let a = []; a.pad(64, 0); let i = 0; loop { a[i] = s; i += 1; if i >= 64 { break; } }\n";

#[test]
fn text_past_the_string_limit_is_refused_before_it_is_built() {
    let c = Circle::new();
    let cases = [
        (MAP, "`${m}`"),
        (MAP, "m.to_string()"),
        (MAP, "m.to_debug()"),
        (MAP, "m.to_json()"),
        (MAP, "print(m)"),
        (MAP, "debug(m)"),
        (MAP, "\"\" + m"),
        (MAP, "`${[m]}`"),
        (ARRAY, "`${a}`"),
        (ARRAY, "a.to_string()"),
        (ARRAY, "print(a)"),
        (ARRAY, "\"\" + a"),
    ];
    for (setup, text) in cases {
        let script = format!("{setup}let t = {text};\nt.len()");
        let (ran, spent) = run_counting(&c, &script);
        let e = ran.expect_err(text);
        assert_eq!(e.kind, ErrorKind::Limit, "{text}: {e:?}");
        assert!(
            e.message
                .contains("strings exceed the limit of 1048576 bytes"),
            "{text}: {e:?}"
        );
        // Making the string by doubling allocates about 1 MiB; its text
        // would be 32 MiB (and twice that while it grows).
        assert!(
            spent < 8 << 20,
            "{text}: the run allocated {spent} bytes: its text was built"
        );
        c.still_works();
    }
}

/// Rhai's `to_json` writes the values a closure captured, and a blob's
/// bytes as numbers: a map of closures over one big string, or of one big
/// blob, is counted so.
#[test]
fn to_json_counts_what_closures_captured_and_the_bytes_of_blobs() {
    let c = Circle::new();
    let closures = "let s = \"x\"; for i in 0..19 { s += s; }\nlet f = || s;\n\
                    let m = #{}; let i = 0; loop { m[`k${i}`] = f; i += 1; if i >= 64 { break; } }\n\
                    m.to_json().len()";
    // 16 copies of a 200,000-byte blob: 3.2 MB held, 12.8 MB of JSON.
    let blobs = "let b = blob(200000, 255);\n\
                 let m = #{}; let i = 0; loop { m[`k${i}`] = b; i += 1; if i >= 16 { break; } }\n\
                 m.to_json().len()";
    for (what, script) in [("closures", closures), ("blobs", blobs)] {
        let (ran, spent) = run_counting(&c, script);
        let e = ran.expect_err(what);
        assert_eq!(e.kind, ErrorKind::Limit, "{what}: {e:?}");
        assert!(
            e.message.contains("printed or converted to text"),
            "{what}: {e:?}"
        );
        assert!(
            spent < 8 << 20,
            "{what}: the run allocated {spent} bytes: its text was built"
        );
    }
    // `to_string` writes a closure as `Fn(…)`, without what it captured.
    let shown = c.ok("let s = \"x\"; for i in 0..19 { s += s; }\nlet f = || s; let m = #{f: f}; `${m}`.len() < 100");
    assert_eq!(shown.output, "true");
}

/// The same map as the script's result or as a stored value: its length is
/// bounded before its text or JSON is written.
#[test]
fn a_result_or_stored_value_past_its_limit_is_refused_before_it_is_written() {
    let c = Circle::new();
    for (tail, says) in [
        (
            "m",
            "result of more than 1048576 bytes exceeds the output limit",
        ),
        ("let x = [m, 1]; x", "strings exceed the limit"),
        (
            "db::insert(m)",
            "value of more than 262144 bytes exceeds the limit of 262144 bytes per database value",
        ),
    ] {
        let (ran, spent) = run_counting(&c, &format!("{MAP}{tail}"));
        let e = ran.expect_err(tail);
        assert_eq!(e.kind, ErrorKind::Limit, "{tail}: {e:?}");
        assert!(e.message.contains(says), "{tail}: {e:?}");
        assert!(
            spent < 8 << 20,
            "{tail}: the run allocated {spent} bytes: its text was built"
        );
    }
    // Just under the limit, where the bound is the JSON's exact length
    // (250 strings of 1,040 bytes: 260,751 bytes), the value is stored.
    let near = c.ok(
        "let s = \"\"; s.pad(1040, \"x\"); let a = []; for i in 0..250 { a.push(s); } db::insert(a)",
    );
    assert_eq!(near.output, "1");
}

#[test]
fn text_within_the_string_limit_is_printed_whole() {
    let c = Circle::new();
    let small = c.ok("let m = #{a: \"xy\", b: [1, 2]}; `${m}`");
    assert_eq!(small.output, r#"#{"a": "xy", "b": [1, 2]}"#);
    // Two references to a 400,000-byte string: 800 KiB of text, under the limit.
    let ok = c.ok("let s = \"\"; s.pad(400000, \"x\"); let m = #{a: s, b: s}; `${m}`.len()");
    assert_eq!(ok.output, "800019");
}

/// A function pointer named by a 512 KiB identifier, 64 times in an array:
/// a few KiB in memory (Rhai's size checks do not look at function
/// pointers), 32 MiB as text, since every printer writes the name whole.
const POINTERS: &str = "let s = \"x\"; for i in 0..19 { s += s; }\n\
                        let f = Fn(s); let a = []; a.pad(64, f);\n";

#[test]
fn the_names_of_function_pointers_count_toward_the_text_before_it_is_built() {
    let c = Circle::new();
    for tail in [
        "print(a); 1",
        "debug(a); 1",
        "a.to_string().len()",
        "`${a}`.len()",
        "(\"\" + a).len()",
        "#{ a: a }.to_json().len()",
        "a",
    ] {
        let (ran, spent) = run_counting(&c, &format!("{POINTERS}{tail}"));
        let e = ran.expect_err(tail);
        assert_eq!(e.kind, ErrorKind::Limit, "{tail}: {e:?}");
        assert!(
            spent < 8 << 20,
            "{tail}: the run allocated {spent} bytes: its text was built"
        );
        c.still_works();
    }
    // Half a million of them: 256 GiB of text, refused as soon as counted
    // (a build of it would end the process with a failed allocation).
    let (ran, spent) = run_counting(
        &c,
        "let s = \"x\"; for i in 0..19 { s += s; }\n\
         let f = Fn(s); let a = []; a.pad(500000, f); print(a); 1",
    );
    assert_eq!(ran.expect_err("print").kind, ErrorKind::Limit);
    assert!(spent < 64 << 20, "the run allocated {spent} bytes");
    // Stored, the first is refused by its path (a function pointer cannot
    // be stored), before any of its text is written.
    let (ran, spent) = run_counting(&c, &format!("{POINTERS}db::insert(a)"));
    let e = ran.expect_err("db::insert");
    assert_eq!(e.kind, ErrorKind::Value, "{e:?}");
    assert!(
        e.message.starts_with("value[0] is a function pointer"),
        "{e:?}"
    );
    assert!(spent < 8 << 20, "the run allocated {spent} bytes");
    // A few short-named ones print whole.
    let shown = c.ok("let f = Fn(\"abs\"); let a = [f, f]; `${a}`");
    assert_eq!(shown.output, "[Fn(abs), Fn(abs)]");
}

/// A thrown value becomes the error's message: one whose text passes the
/// output limit is named, not written; a long one within it is cut there.
#[test]
fn a_thrown_value_gives_a_message_within_the_output_limit_without_building_its_text() {
    let c = Circle::new();
    let max = engine::Limits::default().max_output_bytes;
    let (ran, spent) = run_counting(
        &c,
        "let s = \"x\"; for i in 0..19 { s += s; }\n\
         let f = Fn(s); let a = []; a.pad(500000, f); throw a;",
    );
    let e = ran.expect_err("throw");
    assert_eq!(e.kind, ErrorKind::Runtime, "{e:?}");
    assert_eq!(
        e.message,
        format!(
            "script threw an array of 500000 elements, its text longer than the output limit of \
             {max} bytes"
        )
    );
    // The array and the copy `throw` makes of it take some 130 MB; its
    // text would be 256 GiB.
    assert!(spent < 512 << 20, "the run allocated {spent} bytes");

    // A million integers: counted as 3 MB of text at least, so named too.
    let e = c.fails(
        "let a = []; a.pad(1000000, -1000000000000000000); throw a;",
        ErrorKind::Runtime,
    );
    assert!(
        e.message
            .starts_with("script threw an array of 1000000 elements"),
        "{e:?}"
    );

    // 60,000 of them: 120,000 bytes counted, 1,320,000 written: cut at the limit.
    let e = c.fails(
        "let a = []; a.pad(60000, -1000000000000000000); throw a;",
        ErrorKind::Runtime,
    );
    assert!(e.message.len() <= max, "{} bytes", e.message.len());
    assert!(
        e.message.starts_with("[-1000000000000000000, "),
        "{}",
        &e.message[..40]
    );
    assert!(
        e.message
            .ends_with("… (cut: the thrown value's text is 1320000 bytes)"),
        "{}",
        &e.message[e.message.len() - 80..]
    );
    c.still_works();
}
