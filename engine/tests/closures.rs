//! Closures called from native functions (`map`, `filter`, `sort`, ...) are
//! bound like any other code: their operations count against the operation
//! limit, and the deadline and cancel flag stop them. Rhai runs such a closure
//! on a copy of its operation count that is thrown away when the closure
//! returns, so without the engine's own count a short closure would never be
//! stopped.

mod common;

use std::time::Duration;

use common::{Circle, run_with};
use engine::{ErrorKind, Limits, RunControl};

/// Every native array function that calls a function pointer, each with a
/// short closure, applied to the array `a`.
const CALLERS: &[&str] = &[
    "a.map(|x| x + 1)",
    "a.filter(|x| x > 0)",
    "a.reduce(|s, x| s + x, 0)",
    "a.reduce_rev(|s, x| s + x, 0)",
    "a.all(|x| x > 0)",
    "a.some(|x| x < 0)",
    "a.index_of(|x| x < 0)",
    "a.find(|x| x < 0)",
    "a.find_map(|x| ())",
    "a.for_each(|| this + 1)",
    "a.sort(|x, y| x - y)",
    "a.dedup(|x, y| false)",
    "a.zip(a, |x, y| x + y)",
    "a.drain(|x| x < 0)",
    "a.retain(|x| x > 0)",
];

#[test]
fn closures_called_from_map_count_against_the_operation_limit() {
    let c = Circle::with_limits(Limits {
        max_operations: 100_000,
        ..Limits::default()
    });
    // 400,000 one-operation closures: 400,000 operations and more.
    let e = c.fails(
        "let a = [];\na.pad(400000, 1);\nlet b = a.map(|x| x + 1);\nb.len()",
        ErrorKind::Limit,
    );
    assert!(e.message.contains("100000 operations"), "{e:?}");
    c.still_works();
}

#[test]
fn closures_nested_in_closures_count_against_the_operation_limit() {
    let c = Circle::with_limits(Limits {
        max_operations: 100_000,
        ..Limits::default()
    });
    let e = c.fails(
        "let a = []; a.pad(5000, 1); let c = []; c.pad(5000, 1);\n\
         let b = a.map(|x| c.map(|y| y + 1).len());\nb.len()",
        ErrorKind::Limit,
    );
    assert!(e.message.contains("100000 operations"), "{e:?}");
    c.still_works();
}

#[test]
fn every_native_caller_of_a_closure_counts_against_the_operation_limit() {
    let c = Circle::with_limits(Limits {
        max_operations: 20_000,
        ..Limits::default()
    });
    for call in CALLERS {
        let script = format!("let a = []; a.pad(200, 1);\nloop {{ {call}; }}");
        let e = c.fails(&script, ErrorKind::Limit);
        assert!(e.message.contains("20000 operations"), "{call}: {e:?}");
    }
    c.still_works();
}

#[test]
fn a_sort_that_crosses_the_operation_limit_as_the_last_statement_fails_and_writes_nothing() {
    // `sort` swallows its comparator's errors, so the operation limit must
    // stay decided once crossed, not only fail the operation that crossed it.
    let c = Circle::with_limits(Limits {
        max_operations: 20_000,
        ..Limits::default()
    });
    let script = "db::insert(1);\nlet a = []; for i in 0..2000 { a.push(2000 - i); }\n\
                  a.sort(|x, y| x - y);";
    let e = c.fails(script, ErrorKind::Limit);
    assert!(e.message.contains("20000 operations"), "{e:?}");
    assert_eq!(c.ok("db::next_id()").output, "1", "nothing was committed");
    c.still_works();
}

#[test]
fn every_native_caller_of_a_closure_stops_at_the_time_limit() {
    let c = Circle::with_limits(Limits {
        max_operations: 0,
        timeout: Duration::from_millis(100),
        ..Limits::default()
    });
    for call in CALLERS {
        let script = format!("let a = []; a.pad(200, 1);\nloop {{ {call}; }}");
        let e = c.fails(&script, ErrorKind::Timeout);
        assert!(e.message.contains("time limit of 100ms"), "{call}: {e:?}");
    }
    c.still_works();
}

#[test]
fn a_long_map_stops_at_the_tasks_deadline() {
    let c = Circle::with_limits(Limits {
        max_operations: 0,
        ..Limits::default()
    });
    let control = RunControl {
        deadline: Some(engine::clock::after(Duration::from_millis(100))),
        ..RunControl::default()
    };
    let script = "let a = []; a.pad(100000, 1);\nloop { let b = a.map(|x| x + 1); }";
    let e = run_with(&c.engine, script, &control).expect_err("must time out");
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(
        e.message.starts_with("script ran past the task's deadline"),
        "{e:?}"
    );
    c.still_works();
}

#[test]
fn cancel_stops_a_loop_of_maps_over_a_large_array() {
    let c = Circle::unbounded();
    let script = "db::insert(1);\nlet a = []; a.pad(100000, 1);\n\
                  loop { print(\"round\"); let b = a.map(|x| x + 1); }";
    let e = c.run_and_cancel(script);
    assert_eq!(e.kind, ErrorKind::Cancelled, "{e:?}");
    // Stopped inside the loop (line 3) or, if the flag won the race,
    // before the script started; the loop never ends by itself.
    assert!(matches!(e.line, Some(3) | None), "{e:?}");
    assert_eq!(c.ok("db::next_id()").output, "1");
    c.still_works();
}
