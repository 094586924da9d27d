//! A closure stored in what it captures forms a reference cycle; the end of
//! each run breaks it, so the memory a run allocated is freed whatever its
//! closures did. (Its own test binary, alone in its process: the memory is
//! read from jemalloc's process-wide count.)

mod common;

use common::Circle;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bytes the process holds, as jemalloc counts them.
fn allocated() -> i64 {
    tikv_jemalloc_ctl::epoch::advance().expect("jemalloc epoch");
    tikv_jemalloc_ctl::stats::allocated::read().expect("jemalloc stats") as i64
}

/// Each script ties an array of 200,000 elements (about 3 MiB) into a cycle
/// through a closure, in a different way.
const CYCLES: &[(&str, &str)] = &[
    (
        "a map holding a closure that captures the map",
        "let a = #{}; let b = []; b.pad(200000, 0); a.big = b; a.f = || a; a.big.len()",
    ),
    (
        "an array holding a closure that captures the array",
        "let b = []; b.pad(200000, 0); let a = [b, 0]; let f = || a; a[1] = f; a[0].len()",
    ),
    (
        "a cycle made inside a function and never returned",
        "fn make() { let a = #{}; let b = []; b.pad(200000, 0); a.big = b; a.f = || a; a.big.len() }\n\
         make()",
    ),
    (
        "two closures capturing each other's maps",
        "let a = #{}; let b = #{}; let big = []; big.pad(200000, 0); a.big = big;\n\
         a.f = || b; b.g = || a; a.big.len()",
    ),
    (
        "a cycle in a script that then fails",
        "let a = #{}; let b = []; b.pad(200000, 0); a.big = b; a.f = || a; throw \"stop\"",
    ),
];

#[test]
fn closure_cycles_free_their_memory_when_the_run_ends() {
    let c = Circle::new();
    let mut leaks = Vec::new();
    for (what, script) in CYCLES {
        // Two runs first, so that lasting allocations (the compiled script
        // in the cache, the thread's state) are made before counting.
        for _ in 0..2 {
            let _ = c.run(script);
        }
        let before = allocated();
        for _ in 0..20 {
            match c.run(script) {
                Ok(o) => assert_eq!(o.output, "200000", "{what}"),
                Err(e) => assert!(e.message.contains("stop"), "{what}: {e:?}"),
            }
        }
        let grown = allocated() - before;
        // Leaked, 20 runs would hold 20 arrays of 3 MiB.
        if grown >= 8 << 20 {
            leaks.push(format!(
                "{what}: the process holds {grown} more bytes after 20 runs"
            ));
        }
    }
    assert!(leaks.is_empty(), "{leaks:#?}");
    c.still_works();
}

#[test]
fn closures_sharing_a_variable_still_see_each_others_writes() {
    let c = Circle::new();
    // The cells are emptied only after the result is rendered.
    assert_eq!(
        c.ok("let n = 0; let inc = || { n += 1; n }; inc.call(); inc.call(); let m = #{ n: n, f: || n }; m.f.call() + m.n")
            .output,
        "4"
    );
    assert_eq!(
        c.ok("let a = #{ x: 1 }; a.f = || a.x; let g = a.f; g.call()")
            .output,
        "1"
    );
    // A cell returned as the result is rendered whole.
    assert_eq!(c.ok("let x = [1, 2]; let f = || x; x").output, "[1, 2]");
}
