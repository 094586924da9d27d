//! Every sandbox bound against a hostile script: each ends in its precise
//! error kind, and the next script on the same engine runs fine.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Circle, run_with};
use engine::{ErrorKind, Limits, RunControl};

/// Limits small enough that hostile scripts end quickly in a debug build;
/// the defaults' own behaviour is measured in release by the benchmark.
fn tight() -> Limits {
    Limits {
        max_operations: 200_000,
        ..Limits::default()
    }
}

#[test]
fn infinite_loop_ends_at_the_operations_limit() {
    let c = Circle::with_limits(tight());
    let e = c.fails("let x = 0;\nloop { x += 1; }", ErrorKind::Limit);
    assert!(e.message.contains("200000 operations"), "{e:?}");
    assert_eq!(e.line, Some(2));
    c.still_works();
}

#[test]
fn unbounded_recursion_ends_at_the_call_depth_limit_without_aborting() {
    // Default limits: the default call depth must fit the script stack in
    // debug builds too (this test runs in debug).
    let c = Circle::new();
    let e = c.fails("fn down(n) { down(n + 1) }\ndown(0)", ErrorKind::Limit);
    assert!(e.message.contains("64 nested function calls"), "{e:?}");
    c.still_works();
}

#[test]
fn recursion_with_heavy_frames_at_the_depth_limit_does_not_overflow_the_stack() {
    let c = Circle::new();
    let script = "fn deep(n, a, b, c) { let x = [a, b, c, #{k: [n, n, n]}]; \
                  let y = if n % 2 == 0 { deep(n + 1, x, b, c) } else { deep(n + 1, a, x, c) }; y }\n\
                  deep(0, [1], [2], [3])";
    c.fails(script, ErrorKind::Limit);
    c.still_works();
}

#[test]
fn recursion_through_deeply_nested_expressions_does_not_overflow_the_stack() {
    // Worst case for the native stack: every call level sits under an
    // expression nested as deep as the parser allows.
    let c = Circle::new();
    let mut tried = 0;
    for depth in (1..=engine::Limits::default().max_expr_depth).rev() {
        let body = format!("{}f(n + 1){}", "1 + (".repeat(depth), ")".repeat(depth));
        let script = format!("fn f(n) {{ {body} }}\nf(0)");
        let e = c.fails(&script, ErrorKind::Limit);
        if e.message.contains("expression nesting") {
            continue;
        }
        assert!(e.message.contains("nested function calls"), "{e:?}");
        tried = depth;
        break;
    }
    assert!(tried > 10, "the deepest expression that parses was tried");
    c.still_works();
}

#[test]
fn string_doubling_ends_at_the_string_size_limit() {
    let c = Circle::with_limits(tight());
    let e = c.fails("let s = \"x\";\nloop { s += s; }", ErrorKind::Limit);
    assert!(e.message.contains("string"), "{e:?}");
    c.still_works();
}

#[test]
fn giant_array_ends_at_the_array_size_limit() {
    let c = Circle::with_limits(tight());
    let e = c.fails(
        "let a = [];\na.pad(100000000, 0);\na.len()",
        ErrorKind::Limit,
    );
    assert!(e.message.contains("array"), "{e:?}");
    assert_eq!(e.line, Some(2));
    c.still_works();
}

#[test]
fn giant_map_literal_is_refused_at_the_map_size_limit() {
    let c = Circle::with_limits(Limits {
        max_map_size: 100,
        ..tight()
    });
    let entries: Vec<String> = (0..200).map(|i| format!("k{i}: {i}")).collect();
    let script = format!("let m = #{{ {} }};\nm.len()", entries.join(", "));
    let e = c.fails(&script, ErrorKind::Limit);
    assert!(e.message.contains("map"), "{e:?}");
    c.still_works();
}

#[test]
fn map_grown_at_runtime_ends_at_the_map_size_limit() {
    let c = Circle::with_limits(Limits {
        max_map_size: 100,
        ..tight()
    });
    // Rhai checks the map when it is next used or returned.
    c.fails(
        "let m = #{};\nfor i in 0..1000 { m[`k${i}`] = i; }\nm.len()",
        ErrorKind::Limit,
    );
    c.fails(
        "let m = #{};\nfor i in 0..1000 { m[`k${i}`] = i; }\nm",
        ErrorKind::Limit,
    );
    c.fails(
        "let m = #{};\nfor i in 0..1000 { m[`k${i}`] = i; }\ndb::insert(m)",
        ErrorKind::Limit,
    );
    c.fails(
        "let m = #{};\nfor i in 0..1000 { m[`k${i}`] = i; }\n[[m]]",
        ErrorKind::Limit,
    );
    c.still_works();
}

#[test]
fn deeply_nested_result_is_a_limit_error_not_a_crash() {
    let c = Circle::with_limits(tight());
    c.fails(
        "let a = [];\nfor i in 0..2000 { a = [a]; }\na",
        ErrorKind::Limit,
    );
    c.still_works();
}

#[test]
fn print_flood_is_captured_up_to_the_cap() {
    let c = Circle::with_limits(Limits {
        max_output_bytes: 1000,
        ..tight()
    });
    let o = c.ok("for i in 0..10000 { print(`line ${i}`); debug(i); }\n\"done\"");
    assert_eq!(o.output, "done");
    assert!(o.printed_truncated);
    assert!(o.printed.len() <= 1000, "{}", o.printed.len());
    assert!(
        o.printed.starts_with("line 0\n0\nline 1\n1\n"),
        "{}",
        o.printed
    );
    // The cut shows in the text itself.
    assert!(
        o.printed.ends_with("\n[output truncated at 1000 bytes]\n"),
        "{}",
        o.printed
    );
}

#[test]
fn printed_output_is_cut_after_whole_lines() {
    let c = Circle::with_limits(Limits {
        max_output_bytes: 1000,
        ..tight()
    });
    let o = c.ok("for i in 0..10000 { print(`line ${i}`); }");
    let kept = o
        .printed
        .strip_suffix("[output truncated at 1000 bytes]\n")
        .unwrap_or_else(|| panic!("no marker: {}", o.printed));
    assert!(o.printed.len() <= 1000, "{}", o.printed.len());
    let lines: Vec<&str> = kept.lines().collect();
    assert!(lines.len() > 50, "{kept}");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("line {i}"), "a line cut short: {kept}");
    }
    // A first line longer than the cap: its start, and a marker saying so.
    let c = Circle::with_limits(Limits {
        max_output_bytes: 64,
        ..tight()
    });
    let o = c.ok("let s = \"\"; s.pad(200, 'x'); print(s);");
    assert!(o.printed_truncated);
    assert!(o.printed.len() <= 64, "{}", o.printed);
    let (start, marker) = o.printed.split_once('\n').expect("two lines");
    assert!(
        !start.is_empty() && start.bytes().all(|b| b == b'x'),
        "{}",
        o.printed
    );
    assert_eq!(
        marker,
        "[output truncated at 64 bytes, within the line above]\n"
    );
    // A first line that fits alone but not beside the marker: a part of it,
    // not of the line after it.
    let o = c.ok("let a = \"\"; a.pad(50, 'a'); let b = \"\"; b.pad(20, 'b'); print(a); print(b);");
    assert!(o.printed.len() <= 64, "{}", o.printed);
    let (start, marker) = o.printed.split_once('\n').expect("two lines");
    assert!(
        !start.is_empty() && start.bytes().all(|b| b == b'a'),
        "{}",
        o.printed
    );
    assert_eq!(
        marker,
        "[output truncated at 64 bytes, within the line above]\n"
    );
    // Lines of two-byte characters, cut at every length: whole lines only.
    for max in 40..80 {
        let c = Circle::with_limits(Limits {
            max_output_bytes: max,
            ..tight()
        });
        let o = c.ok("for i in 0..20 { print(\"éé\"); }");
        assert!(
            o.printed_truncated && o.printed.len() <= max,
            "{max}: {}",
            o.printed
        );
        let kept = o
            .printed
            .strip_suffix(&format!("[output truncated at {max} bytes]\n"))
            .unwrap_or_else(|| panic!("{max}: {}", o.printed));
        assert!(kept.lines().all(|l| l == "éé"), "{max}: {kept}");
    }
}

#[test]
fn output_within_the_cap_carries_no_truncation_line() {
    let c = Circle::with_limits(Limits {
        max_output_bytes: 14,
        ..tight()
    });
    let o = c.ok("print(\"ab\"); print(\"cd\");");
    assert_eq!(o.printed, "ab\ncd\n");
    assert!(!o.printed_truncated);
    let o = c.ok("print(\"a long line of text that does not fit\");");
    assert!(o.printed_truncated);
    assert_eq!(o.printed, "[output truncated at 14 bytes]\n");
}

#[test]
fn endless_print_loop_ends_at_the_operations_limit() {
    let c = Circle::with_limits(tight());
    c.fails("loop { print(\"spam\"); }", ErrorKind::Limit);
    c.still_works();
}

#[test]
fn result_larger_than_the_output_limit_is_a_limit_error() {
    let c = Circle::with_limits(Limits {
        max_output_bytes: 100,
        ..tight()
    });
    let e = c.fails("let a = []; a.pad(1000, 7); a", ErrorKind::Limit);
    assert!(e.message.contains("output limit"), "{e:?}");
    c.still_works();
}

#[test]
fn eval_is_refused_when_compiling() {
    let c = Circle::new();
    let e = c.fails("let x = 1;\neval(\"x + 1\")", ErrorKind::Syntax);
    assert!(e.message.contains("eval"), "{e:?}");
    assert_eq!(e.line, Some(2));
    c.fails("Fn(\"eval\").call(\"1\")", ErrorKind::Syntax);
    c.still_works();
}

#[test]
fn curry_is_refused_so_a_function_pointer_cannot_double_its_size() {
    // `f = f.curry(f)` doubles the value each time, inside one operation and
    // outside every size limit: 30 rounds ask for gigabytes.
    let c = Circle::new();
    let e = c.fails(
        "let f = Fn(\"abs\");\nfor i in 0..1000 { f = f.curry(f); }\ntype_of(f)",
        ErrorKind::Syntax,
    );
    assert_eq!(e.line, Some(2), "{e:?}");
    let e = c.fails("curry(Fn(\"abs\"), 1)", ErrorKind::Syntax);
    assert!(e.message.contains("curry"), "{e:?}");
    let e = c.run("let f = Fn(\"curry\"); f.call(Fn(\"abs\"), 1)");
    assert!(e.is_err(), "a pointer to curry does not curry: {e:?}");
    // Closures still capture what they use.
    assert_eq!(c.ok("let k = 2; [1, 2].map(|x| x * k)").output, "[2, 4]");
    assert_eq!(
        c.ok("let n = 0; let inc = || n += 1; inc.call(); inc.call(); n")
            .output,
        "2"
    );
    c.still_works();
}

#[test]
fn import_is_refused_when_compiling() {
    let c = Circle::new();
    let e = c.fails("import \"/etc/passwd\" as p;\n1", ErrorKind::Syntax);
    assert!(e.message.contains("import"), "{e:?}");
    c.still_works();
}

#[test]
fn sleep_is_refused_and_does_not_block() {
    let c = Circle::new();
    for script in ["sleep(1000)", "sleep(3600.0)"] {
        let e = c.fails(script, ErrorKind::Runtime);
        assert!(e.message.contains("sleep is not available"), "{e:?}");
    }
    c.still_works();
}

#[test]
fn oversize_database_value_is_a_limit_error_and_writes_nothing() {
    let c = Circle::with_limits(Limits {
        max_value_bytes: 1000,
        ..tight()
    });
    let e = c.fails(
        "db::insert(\"small\");\nlet big = \"\"; for i in 0..200 { big += \"0123456789\"; }\ndb::insert(big)",
        ErrorKind::Limit,
    );
    assert!(e.message.contains("1000 bytes"), "{e:?}");
    assert_eq!(e.line, Some(3));
    assert_eq!(c.ok("db::next_id()").output, "1");
    c.still_works();
}

#[test]
fn oversize_value_cannot_be_caught_by_the_script() {
    let c = Circle::with_limits(Limits {
        max_value_bytes: 10,
        ..tight()
    });
    c.fails(
        "try { db::insert(\"far too long for ten bytes\") } catch (e) { 0 }",
        ErrorKind::Limit,
    );
}

#[test]
fn too_many_writes_is_a_limit_error_and_writes_nothing() {
    let c = Circle::with_limits(Limits {
        max_writes: 5,
        ..tight()
    });
    assert_eq!(
        c.ok("for i in 0..5 { db::insert(i); } db::next_id()")
            .output,
        "6"
    );
    let e = c.fails("for i in 0..6 { db::insert(i); }", ErrorKind::Limit);
    assert!(e.message.contains("5 database writes"), "{e:?}");
    assert_eq!(c.ok("db::next_id()").output, "6");
}

#[test]
fn huge_script_is_refused_before_compiling() {
    let c = Circle::with_limits(Limits {
        max_script_bytes: 10_000,
        ..tight()
    });
    let script = "1 + ".repeat(5_000) + "1";
    let e = c.fails(&script, ErrorKind::Limit);
    assert!(e.message.contains("10000 bytes"), "{e:?}");
    c.still_works();
}

#[test]
fn deeply_nested_expression_is_refused_when_compiling() {
    let c = Circle::new();
    let script = format!("{}1{}", "(".repeat(500), ")".repeat(500));
    let e = c.fails(&script, ErrorKind::Limit);
    assert!(e.message.contains("nesting"), "{e:?}");
    c.still_works();
}

#[test]
fn deadline_stops_a_script_that_stays_under_the_operations_limit() {
    let c = Circle::with_limits(Limits {
        timeout: Duration::from_millis(200),
        max_operations: 0,
        ..Limits::default()
    });
    let e = c.fails("let x = 0;\nloop { x += 1; }", ErrorKind::Timeout);
    assert_eq!(e.line, Some(2));
    assert_eq!(e.message, "script ran past its time limit of 200ms");
    c.still_works();
}

#[test]
fn compilation_counts_against_the_deadline() {
    let c = Circle::with_limits(Limits {
        timeout: Duration::from_nanos(1),
        ..Limits::default()
    });
    let script = "let x = 1;\n".repeat(10_000);
    c.fails(&script, ErrorKind::Timeout);
}

#[test]
fn run_control_deadline_stops_a_script() {
    let c = Circle::with_limits(Limits {
        max_operations: 0,
        ..Limits::default()
    });
    let control = RunControl {
        deadline: Some(engine::clock::after(Duration::from_millis(100))),
        ..RunControl::default()
    };
    let e = run_with(&c.engine, "loop { }", &control).expect_err("must time out");
    assert_eq!(e.kind, ErrorKind::Timeout);
    // The task's deadline, not the engine's 10 s time limit, stopped it.
    assert_eq!(e.message, "script ran past the task's deadline");
    let past = RunControl {
        deadline: Some(engine::clock::now()),
        ..RunControl::default()
    };
    let e = run_with(&c.engine, "42", &past).expect_err("deadline already passed");
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert_eq!(e.message, "script ran past the task's deadline");
    c.still_works();
}

#[test]
fn cancel_from_another_thread_stops_a_running_script_and_writes_nothing() {
    let c = Circle::unbounded();
    let e = c.run_and_cancel("db::insert(1);\nloop { }");
    assert_eq!(e.kind, ErrorKind::Cancelled);
    // Cancelled inside the loop (line 2) or, if the flag won the race,
    // before the script started; never anywhere else.
    assert!(matches!(e.line, Some(2) | None), "{e:?}");
    assert_eq!(c.ok("db::next_id()").output, "1");
    c.still_works();
}

#[test]
fn cancel_set_before_the_run_stops_it_at_once() {
    let c = Circle::new();
    let control = RunControl::default();
    control.cancel.store(true, Ordering::SeqCst);
    let e = run_with(&c.engine, "db::insert(1)", &control).expect_err("cancelled");
    assert_eq!(e.kind, ErrorKind::Cancelled);
    assert_eq!(c.ok("db::next_id()").output, "1");
}

#[test]
fn default_limits_let_ordinary_heavy_scripts_finish() {
    let c = Circle::new();
    let fib = "fn fib(n) { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } }\nfib(25)";
    assert_eq!(c.ok(fib).output, "75025");
    let sieve = "let n = 100000; let s = []; s.pad(n + 1, true); let count = 0;\n\
                 for i in 2..=n { if s[i] { count += 1; let j = i * i; \
                 while j <= n { s[j] = false; j += i; } } }\ncount";
    assert_eq!(c.ok(sieve).output, "9592");
}

#[test]
fn the_size_limits_count_a_value_in_total_and_the_message_says_so() {
    // Two hundred strings of 10,000 bytes: none too long, 2 MB together.
    let c = Circle::new();
    let e = c.fails(
        "let s = \"\"; s.pad(10000, 'x'); let a = []; for i in 0..200 { a += [s]; } a.len()",
        ErrorKind::Limit,
    );
    assert!(
        e.message
            .contains("all the strings in one array or map together"),
        "{e:?}"
    );
    c.still_works();
}

#[test]
fn blobs_end_at_the_array_size_limit() {
    // Rhai counts a blob's bytes as array elements.
    let c = Circle::with_limits(Limits {
        max_array_size: 1000,
        ..tight()
    });
    for script in [
        "let b = blob(1);\nloop { b += b; }",
        "let b = blob(1);\nloop { b.append(b); }",
        "let b = blob();\nb.pad(1000000000, 0);",
        "blob(1000000000).len()",
        "let b = blob(600);\nlet c = b + b;",
        "let b = blob(600);\n[b, b]",
        "let s = \"x\";\ns.pad(600, 'x');\nlet b = s.to_blob();\nb.append(s);",
    ] {
        let e = c.fails(script, ErrorKind::Limit);
        assert!(
            e.message
                .contains("arrays and blobs exceed the limit of 1000 elements"),
            "{script}: {e:?}"
        );
    }
    assert_eq!(c.ok("blob(1000).len()").output, "1000");
    c.still_works();
}

#[test]
fn timestamp_arithmetic_out_of_range_is_an_error_not_a_crash() {
    let c = Circle::with_limits(tight());
    for script in [
        "timestamp() + 1e300",
        "timestamp() - 1e300",
        "timestamp() + 9223372036854775807",
        "timestamp() - 9223372036854775807",
        "let t = timestamp(); t += 9223372036854775807; t",
        "let t = timestamp(); t -= 1e300; t",
        "timestamp() + (1.0 / 0.0)",
        "timestamp() - (-1.0 / 0.0)",
        "timestamp() + (0.0 / 0.0)",
    ] {
        match c.run(script) {
            Ok(o) => assert_eq!(o.output, "<timestamp>", "{script}"),
            Err(e) => assert_eq!(e.kind, ErrorKind::Runtime, "{script}: {e:?}"),
        }
    }
    c.still_works();
}

#[test]
fn export_works_at_the_top_level_as_in_stock_rhai_and_modules_stay_impossible() {
    let c = Circle::new();
    assert_eq!(c.ok("let x = 40;\nexport x as foo;\nx + 2").output, "42");
    assert_eq!(c.ok("let x = 1;\nexport x as foo;").output, "");
    // As in stock Rhai, only at the top level.
    c.fails("fn f() { let x = 1; export x; }\n1", ErrorKind::Syntax);
    let e = c.fails(
        "export const X = 1;\nimport \"self\" as m;\nm::X",
        ErrorKind::Syntax,
    );
    assert!(e.message.contains("'import' is not available"), "{e:?}");
    c.still_works();
}

/// A `db::` limit raised in a comparator that `sort` or `dedup` swallows
/// still ends the run as that limit, and nothing is written.
#[test]
fn a_db_limit_inside_a_sort_or_dedup_comparator_still_fails_the_run() {
    let c = Circle::new();
    let e = c.fails(
        "let s = \"\"; s.pad(300000, 'x');\n\
         [2, 1].sort(|a, b| { db::insert(s); 0 });\n\
         \"the limit was swallowed\"",
        ErrorKind::Limit,
    );
    assert!(e.message.contains("per database value"), "{e:?}");
    assert_eq!(e.line, Some(2), "the position of the db call: {e:?}");

    let c = Circle::with_limits(Limits {
        max_writes: 1,
        ..Limits::default()
    });
    for script in [
        "db::insert(1);\n[2, 1].sort(|a, b| { db::insert(2); 0 });\n\"swallowed\"",
        "db::insert(1);\n[1, 1].dedup(|a, b| { db::insert(3); false });\n\"swallowed\"",
    ] {
        c.fails(script, ErrorKind::Limit);
        assert_eq!(c.ok("db::next_id()").output, "1", "the failed run wrote");
    }
}

/// A bound Rhai itself enforces (string size, map size, call depth) that a
/// comparator of `sort`, `sort_by`, `order`, `order_by` or `dedup` hits ends
/// the run as that limit, as it does in `map` or `filter`: stock Rhai takes
/// a failed comparison for an order by type, which would let the script go
/// on (and commit) as if the bound had not been hit. A comparator's other
/// errors keep stock Rhai's order by type.
#[test]
fn a_rhai_bound_inside_a_sort_or_dedup_comparator_still_fails_the_run() {
    let c = Circle::with_limits(Limits {
        max_string_size: 1_000,
        max_map_size: 100,
        max_call_depth: 20,
        ..Limits::default()
    });
    let string = "let s = \"x\"; loop { s += s; }";
    let map = "let m = #{}; for i in 0..200 { m[\"k\" + i] = i; } m.len() > 0";
    for (body, says) in [
        (string, "string"),
        (map, "map"),
        ("deep(x, y)", "nested function calls"),
    ] {
        for call in [
            format!("a.sort(|x, y| {{ {body} }})"),
            format!("a.sort_by(|x, y| {{ {body} }})"),
            format!("let b = a.order(|x, y| {{ {body} }})"),
            format!("let b = a.order_by(|x, y| {{ {body} }})"),
            format!("a.dedup(|x, y| {{ {body} }})"),
            "a.sort(Fn(\"deep\"))".to_string(),
            "a.sort(\"deep\")".to_string(),
            "a.dedup(\"deep\")".to_string(),
        ] {
            let script = format!(
                "fn deep(a, b) {{ deep(a, b) }}\ndb::insert(1);\nlet a = [3, 1, 2, 2];\n{call};\na"
            );
            let e = c.fails(&script, ErrorKind::Limit);
            let says = if call.contains("\"deep\"") {
                "nested function calls"
            } else {
                says
            };
            assert!(e.message.contains(says), "{call}: {e:?}");
            assert_eq!(
                c.ok("db::next_id()").output,
                "1",
                "{call}: the failed run wrote"
            );
        }
    }
    // Stock Rhai's order by type for a comparator's own error.
    let out = c.ok("let a = [3, 1, 2]; a.sort(|x, y| { throw \"no\" }); a.len()");
    assert_eq!(out.output, "3");
    let out = c.ok("let a = [1, 1, 2]; a.dedup(|x, y| { throw \"no\" }); a.len()");
    assert_eq!(out.output, "3");
    let out = c.ok("let a = [3, 1, 2]; a.sort(|x, y| x - y); a");
    assert_eq!(out.output, "[1, 2, 3]");
    let out = c.ok("let a = [3, 1, 2]; a.sort(|x, y| x > y); a");
    assert_eq!(out.output, "[3, 2, 1]");
    let out = c.ok("let a = [1, 1, 2, 4]; a.dedup(|x, y| y - x < 2); a");
    assert_eq!(out.output, "[1, 4]");
    c.still_works();
}

/// One native call (a sort of a long array) can run well past the time
/// limit between two of the looks the operations take at it: a run that
/// ended past its deadline commits nothing.
#[test]
fn a_run_that_ended_past_its_time_limit_commits_nothing() {
    let timeout = Duration::from_millis(300);
    let c = Circle::with_limits(Limits {
        timeout,
        ..Limits::default()
    });
    match c.run("let a = []; a.pad(1000000, 0); for i in 0..40 { a.sort(); } db::insert(1)") {
        Ok(o) => assert!(o.elapsed <= timeout, "ran {:?} and committed", o.elapsed),
        Err(e) => assert_eq!(e.kind, ErrorKind::Timeout, "{e:?}"),
    }
    assert_eq!(c.ok("db::next_id()").output, "1", "nothing written");
}
