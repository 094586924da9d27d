//! The memory a run holds is bounded: a script that piles up values, each
//! within its own size limit, ends with a `limit` error once what it holds
//! passes `Limits::max_memory_bytes`, writes nothing, and the next script
//! runs fine. (Its own test binary: the bound is counted by jemalloc, which
//! must be the process's allocator, as it is the orchestrator's.)

mod common;

use common::Circle;
use engine::{ErrorKind, Limits};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn limited(max_memory_bytes: usize) -> Limits {
    Limits {
        max_memory_bytes,
        ..Limits::default()
    }
}

/// `n` arrays of 900,000 elements (about 14 MiB each), each kept in its own
/// variable; the script's value is their total length.
fn arrays(n: usize) -> String {
    let mut script = String::new();
    for i in 0..n {
        script.push_str(&format!("let a{i} = []; a{i}.pad(900000, 0);\n"));
    }
    let total: Vec<String> = (0..n).map(|i| format!("a{i}.len()")).collect();
    script.push_str(&total.join(" + "));
    script
}

#[test]
fn a_script_piling_up_arrays_stops_at_the_memory_limit_and_writes_nothing() {
    let c = Circle::with_limits(limited(64 << 20));
    let e = c.fails(&format!("db::insert(1);\n{}", arrays(30)), ErrorKind::Limit);
    assert!(
        e.message.contains("more memory than its limit of 64 MiB"),
        "{e:?}"
    );
    // Stopped within one operation of passing 64 MiB: at the fifth or
    // sixth array of 14 MiB, not the thirtieth.
    let line = e.line.expect("a line");
    assert!((5..=8).contains(&line), "stopped at line {line}: {e:?}");
    assert_eq!(c.ok("db::next_id()").output, "1", "nothing was written");
    // What the stopped run held is freed: the same script under the limit
    // runs, again and again.
    for _ in 0..3 {
        assert_eq!(c.ok(&arrays(3)).output, "2700000");
    }
    c.still_works();
}

#[test]
fn strings_kept_in_variables_stop_at_the_memory_limit() {
    let c = Circle::with_limits(limited(32 << 20));
    // A 512 KiB string, then a new one per line, each in its own variable:
    // every one within the string size limit.
    let mut script = String::from("let s = \"x\"; for i in 0..19 { s += s; }\n");
    for i in 0..200 {
        script.push_str(&format!("let v{i} = s + \"{i}\";\n"));
    }
    script.push_str("v199.len()");
    let e = c.fails(&script, ErrorKind::Limit);
    assert!(e.message.contains("limit of 32 MiB"), "{e:?}");
    // Each string takes 512 KiB to 1 MiB (a concatenation allocates room
    // to grow), so 32 to 64 of them pass 32 MiB; line 2 holds the first.
    let line = e.line.expect("a line");
    assert!((33..=66).contains(&line), "stopped at line {line}: {e:?}");
    c.still_works();
}

#[test]
fn without_a_memory_limit_the_same_script_runs() {
    let c = Circle::with_limits(limited(0));
    assert_eq!(c.ok(&arrays(6)).output, "5400000");
}
