//! Compiling a script is bounded like running it. Rhai's optimizer
//! (`OptimizationLevel::Simple`, the default) propagates constants: every
//! use of `const a = [..]` gets its own deep copy of the array, in the
//! compilation, which neither the time limit, the operation limit nor the
//! memory limit can interrupt. A script of `k` elements and `m` uses costs
//! `k * m` values: at the 256 KiB script limit (k = 65,536, m = 32,768)
//! that is 2e9 values, tens of GB and minutes, before the first operation.
//! (Its own test binary: memory is counted by jemalloc.)

mod common;

use common::Circle;
use engine::{ErrorKind, Limits};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `const a = [0, 0, ...]` of `k` elements, then `m` statements `b = a;`.
fn const_fanout(k: usize, m: usize) -> String {
    let elems = vec!["0"; k].join(",");
    format!(
        "const a = [{elems}];\nlet b = 0;\n{}\nb.len()",
        "b=a;".repeat(m)
    )
}

fn allocated() -> usize {
    tikv_jemalloc_ctl::epoch::advance().expect("epoch");
    tikv_jemalloc_ctl::stats::allocated::read().expect("allocated")
}

#[test]
fn a_small_script_copying_a_constant_array_stays_within_the_memory_limit() {
    let c = Circle::with_limits(Limits {
        max_memory_bytes: 32 << 20,
        ..Limits::default()
    });
    let script = const_fanout(4096, 2048);
    let before = allocated();
    let result = c.run(&script);
    let after = allocated();
    let grown = after.saturating_sub(before);
    // A 16 KiB script may not leave the process holding more than its
    // run's memory limit (the compiled script is kept in the cache).
    assert!(
        grown < 32 << 20 || matches!(&result, Err(e) if e.kind == ErrorKind::Limit),
        "a 16 KiB script left {} MiB allocated under a 32 MiB limit ({:?})",
        grown >> 20,
        result.map(|o| o.output).map_err(|e| (e.kind, e.message))
    );
}

/// `let a=0;` then `||0;` (a closure, a function of the script's) over 30%
/// of `bytes`, then `a;` to the end: Rhai's parser looks every variable
/// reference up among all functions defined so far, so the compilation
/// costs closures × references (some 10 s in a release build at the
/// 256 KiB script limit).
fn closures_then_references(bytes: usize) -> String {
    let mut s = String::from("let a=0;");
    while s.len() * 10 < bytes * 3 {
        s.push_str("||0;");
    }
    while s.len() + 2 <= bytes {
        s.push_str("a;");
    }
    s
}

#[test]
fn a_slow_compilation_stops_at_the_time_limit() {
    let timeout = std::time::Duration::from_millis(500);
    let c = Circle::with_limits(Limits {
        timeout,
        ..Limits::default()
    });
    // 128 KiB, half the script limit: unbounded, its compilation takes some
    // 20 s in a debug build; stopped at the deadline, about the 500 ms.
    let script = closures_then_references(128 << 10);
    let t = std::time::Instant::now();
    let e = c.fails(&script, ErrorKind::Timeout);
    let took = t.elapsed();
    assert!(
        took < timeout * 8,
        "a run limited to {timeout:?} took {took:?} ({})",
        e.message
    );
    c.still_works();
}
