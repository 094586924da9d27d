//! `db::history` reads stored versions in one native call, before the run's
//! memory check can look: one call reads no more than the run may hold.
//! (Its own test binary: the bytes a run allocates are read from jemalloc's
//! count for the running thread.)

mod common;

use common::Circle;
use engine::{ErrorKind, Limits, Outcome, RunControl, SCRIPT_STACK_SIZE, ScriptError};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Runs `script` on a thread of its own, as the worker does, and counts the
/// bytes the run allocated.
fn run_counting(c: &Circle, script: &str) -> (Result<Outcome, ScriptError>, u64) {
    let allocated = || {
        tikv_jemalloc_ctl::thread::allocatedp::read()
            .expect("jemalloc thread.allocatedp")
            .get()
    };
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(SCRIPT_STACK_SIZE)
            .spawn_scoped(s, || {
                let before = allocated();
                let ran = c.engine.run(script, &RunControl::default());
                (ran, allocated() - before)
            })
            .expect("spawn script thread")
            .join()
            .expect("script thread must not panic")
    })
}

#[test]
fn a_history_past_the_memory_limit_is_refused_before_it_is_read_whole() {
    let c = Circle::with_limits(Limits {
        max_memory_bytes: 4 << 20,
        ..Limits::default()
    });
    // 200 versions of 128 KiB: 25 MiB stored, never compacted.
    let value = format!("\"{}\"", "x".repeat(128 << 10));
    let db = c.engine.db();
    let id = db.insert(value.as_bytes()).expect("insert");
    for _ in 1..200 {
        db.update(id, value.as_bytes()).expect("update");
    }
    let (ran, allocated) = run_counting(&c, &format!("db::history({id}, 1000).len()"));
    let e = ran.expect_err("past the memory limit");
    assert_eq!(e.kind, ErrorKind::Limit, "{e:?}");
    assert!(e.message.contains("db::history"), "{}", e.message);
    assert!(
        allocated < 16 << 20,
        "the call allocated {} MiB under a 4 MiB limit",
        allocated >> 20
    );
    // Fewer versions, within the limit, are read.
    let out = c.ok(&format!("db::history({id}, 8).len()"));
    assert_eq!(out.output, "8");
}

/// The bound above counts the stored JSON bytes, but a script holds what
/// they decode to: an array of small maps (`{"":0}`, 7 bytes of JSON each)
/// decodes to some hundreds of bytes per map. One `db::history` call within
/// the byte count must not build many times the run's memory limit.
#[test]
fn a_history_of_values_that_decode_large_stays_within_the_memory_limit() {
    let c = Circle::with_limits(Limits {
        max_memory_bytes: 4 << 20,
        ..Limits::default()
    });
    // 30 versions of 112 KiB of `[{"":0},…]`: 3.3 MiB stored, under the
    // 4 MiB a history call may read.
    let maps = vec![r#"{"":0}"#; 16 << 10].join(",");
    let value = format!("[{maps}]");
    let db = c.engine.db();
    let id = db.insert(value.as_bytes()).expect("insert");
    for _ in 1..30 {
        db.update(id, value.as_bytes()).expect("update");
    }
    let (ran, allocated) = run_counting(&c, &format!("db::history({id}, 30).len()"));
    let e = ran.expect_err("past the memory limit");
    assert_eq!(e.kind, ErrorKind::Limit, "{e:?}");
    assert!(
        allocated < 32 << 20,
        "the call allocated {} MiB under a 4 MiB limit ({e:?})",
        allocated >> 20
    );
    assert!(e.message.contains("db::history"), "{}", e.message);
}

/// The array `db::history` returns is one value, under the limits of one:
/// versions whose strings, arrays or maps together pass them fail the call
/// naming it (ask for fewer versions), not as an anonymous string limit.
#[test]
fn a_history_past_the_size_limits_of_one_value_fails_naming_db_history() {
    let c = Circle::new();
    // Six versions of 200 KB: 1.2 MB of strings against 1 MiB.
    let db = c.engine.db();
    let value = format!("\"{}\"", "x".repeat(200_000));
    let id = db.insert(value.as_bytes()).expect("insert");
    for _ in 1..6 {
        db.update(id, value.as_bytes()).expect("update");
    }
    let e = c.fails(
        &format!("let h = db::history({id}, 6);\nh.len()"),
        ErrorKind::Limit,
    );
    assert_eq!(
        e.message,
        format!(
            "db::history of record {id} holds 1200000 string bytes or more once read, past the \
             limit of 1048576 in one value; ask for fewer versions"
        )
    );
    assert_eq!((e.line, e.column), (Some(1), Some(13)), "{e:?}");
    assert_eq!(c.ok(&format!("db::history({id}, 5).len()")).output, "5");
    // Maps: 40 versions of 4,000 entries against 100,000 in all.
    let entries: Vec<String> = (0..4_000).map(|i| format!("\"k{i}\":1")).collect();
    let many = format!("{{{}}}", entries.join(","));
    let id = db.insert(many.as_bytes()).expect("insert");
    for _ in 1..40 {
        db.update(id, many.as_bytes()).expect("update");
    }
    let e = c.fails(&format!("db::history({id}, 40).len()"), ErrorKind::Limit);
    assert!(
        e.message
            .contains("holds 104000 map entries or more once read"),
        "{e:?}"
    );
    assert_eq!(c.ok(&format!("db::history({id}, 20).len()")).output, "20");
}
