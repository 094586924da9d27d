//! A single native call of the standard packages cannot run past the time
//! limit nor allocate past the memory limit: Rhai's per-operation callback
//! does not run inside one, so each of these would otherwise hold the
//! circle's worker (and its run lock) or the process's memory. (Its own test
//! binary: the bytes a run allocates are read from jemalloc's count for the
//! running thread.)

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Circle;
use engine::{
    CircleEngine, ErrorKind, Limits, Outcome, RunControl, SCRIPT_STACK_SIZE, ScriptError,
};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const LIMIT: Duration = Duration::from_secs(1);

fn quick() -> Limits {
    Limits {
        timeout: LIMIT,
        ..Limits::default()
    }
}

/// Runs `script` on a script thread of its own and waits at most 5 times
/// the time limit for it: `None` when it is still running then (the thread
/// is left behind).
fn run_within(engine: &Arc<CircleEngine>, script: &str) -> Option<Result<Outcome, ScriptError>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (engine, script) = (engine.clone(), script.to_string());
    std::thread::Builder::new()
        .stack_size(SCRIPT_STACK_SIZE)
        .spawn(move || {
            let _ = tx.send(engine.run(&script, &RunControl::default()));
        })
        .expect("spawn script thread");
    rx.recv_timeout(5 * LIMIT).ok()
}

fn circle() -> (tempfile::TempDir, Arc<CircleEngine>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = CircleEngine::new(common::open(dir.path(), ourdb::Durability::Flush), quick());
    (dir, Arc::new(engine))
}

#[test]
fn padding_a_string_with_an_empty_string_ends_and_the_circle_goes_on() {
    let (_dir, engine) = circle();
    let start = Instant::now();
    let ran = run_within(&engine, "let s = \"a\"; s.pad(10, \"\"); s.len()");
    assert!(
        ran.is_some(),
        "s.pad(10, \"\") still running after {:?} (time limit {LIMIT:?})",
        start.elapsed()
    );
    let next = run_within(&engine, "40 + 2");
    assert_eq!(
        next.expect("the circle's next script ran")
            .expect("ok")
            .output,
        "42"
    );
}

#[test]
fn sorting_many_references_to_big_strings_stops_near_the_time_limit() {
    // 120,000 references to 16 strings of 512 KiB that differ only in
    // their last bytes, interleaved: a few hundred KiB of memory and
    // a few hundred thousand operations, but a sort compares hundreds of thousands of
    // pairs of 512 KiB strings in one native call, with no operation
    // between them.
    let script = "let base = \"x\"; for i in 0..19 { base += base; }\n\
                  let ss = []; ss.pad(16, 0); for k in 0..16 { ss[k] = base + (k + 10); }\n\
                  let b = []; b.pad(120000, 0);\n\
                  for i in 0..120000 { b[i] = ss[(i * 7) % 16]; }\n\
                  b.sort();\nb.len()";
    let (_dir, engine) = circle();
    let start = Instant::now();
    let ran = run_within(&engine, script);
    let elapsed = start.elapsed();
    let e = ran
        .unwrap_or_else(|| panic!("the sort still ran after {elapsed:?} (time limit {LIMIT:?})"))
        .expect_err("over the string limit");
    eprintln!("sort run ended after {elapsed:?}: {e:?}");
    assert!(
        matches!(e.kind, ErrorKind::Limit | ErrorKind::Timeout),
        "{e:?}"
    );
}

fn allocated_by_this_thread() -> u64 {
    tikv_jemalloc_ctl::thread::allocatedp::read()
        .expect("jemalloc thread.allocatedp")
        .get()
}

#[test]
fn replace_cannot_build_a_string_far_past_the_memory_limit() {
    const MEMORY: usize = 16 << 20;
    let c = Circle::with_limits(Limits {
        max_memory_bytes: MEMORY,
        ..Limits::default()
    });
    // 2,048 matches, each replaced by 128 KiB: a 256 MiB string, 16 times
    // the memory limit, from a script holding 130 KiB (made by doubling:
    // `pad` grows a string a character at a time).
    let setup = "let s = \"a\"; for i in 0..11 { s += s; }\n\
                 let t = \"x\"; for i in 0..17 { t += t; }\n";
    for call in ["s.replace(\"a\", t)", "s.replace('a', t)"] {
        let script = format!("{setup}{call};\ns.len()");
        let (ran, spent) = std::thread::scope(|sc| {
            std::thread::Builder::new()
                .stack_size(SCRIPT_STACK_SIZE)
                .spawn_scoped(sc, || {
                    let before = allocated_by_this_thread();
                    let ran = c.engine.run(&script, &RunControl::default());
                    (ran, allocated_by_this_thread() - before)
                })
                .expect("spawn")
                .join()
                .expect("no panic")
        });
        let e = ran.expect_err(call);
        assert_eq!(e.kind, ErrorKind::Limit, "{call}: {e:?}");
        assert!(
            spent < 4 * MEMORY as u64,
            "{call}: the run allocated {spent} bytes in one call, memory limit {MEMORY}"
        );
        c.still_works();
    }
}
