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

#[test]
fn ordering_many_references_to_big_strings_stops_near_the_time_limit() {
    // `order` and `order_desc` sort a copy of the array with the same
    // comparisons as `sort` (the script of the test above), in one native
    // call.
    for call in ["b.order().len()", "b.order_desc().len()"] {
        let script = format!(
            "let base = \"x\"; for i in 0..19 {{ base += base; }}\n\
             let ss = []; ss.pad(16, 0); for k in 0..16 {{ ss[k] = base + (k + 10); }}\n\
             let b = []; b.pad(120000, 0);\n\
             for i in 0..120000 {{ b[i] = ss[(i * 7) % 16]; }}\n\
             {call}"
        );
        let (_dir, engine) = circle();
        let start = Instant::now();
        let ran = run_within(&engine, &script);
        let elapsed = start.elapsed();
        let e = ran
            .unwrap_or_else(|| panic!("{call} still ran after {elapsed:?} (time limit {LIMIT:?})"))
            .expect_err("over the string limit");
        assert!(
            matches!(e.kind, ErrorKind::Limit | ErrorKind::Timeout),
            "{call}: {e:?}"
        );
    }
}

#[test]
fn parsing_json_of_a_map_with_many_keys_stops_near_the_time_limit() {
    // 90,000 keys in one object (990 KB, within the string limit): Rhai's
    // `parse_json` looks each key up among the keys before it, 4 billion
    // comparisons in one native call. The text is made in 600 iterations.
    let script = "let t = \"\"; for j in 100..400 { t += `\"P${j}\":0,`; }\n\
                  let s = \"{\"; for p in 100..400 { let u = t; u.replace(\"P\", `${p}`); s += u; }\n\
                  s += \"\\\"z\\\":0}\";\n\
                  parse_json(s).len()";
    let (_dir, engine) = circle();
    let start = Instant::now();
    let ran = run_within(&engine, script);
    let elapsed = start.elapsed();
    let ran = ran
        .unwrap_or_else(|| panic!("parse_json still ran after {elapsed:?} (time limit {LIMIT:?})"));
    match ran {
        Ok(o) => assert_eq!(o.output, "90001"),
        Err(e) => assert_eq!(e.kind, ErrorKind::Timeout, "{e:?}"),
    }
    let next = run_within(&engine, "parse_json(`{\"a\": [1, 2.5, null, \"x\"]}`)");
    assert_eq!(
        next.expect("the circle's next script ran")
            .expect("ok")
            .output,
        "#{\"a\": [1, 2.5, (), \"x\"]}"
    );
}

fn allocated_by_this_thread() -> u64 {
    tikv_jemalloc_ctl::thread::allocatedp::read()
        .expect("jemalloc thread.allocatedp")
        .get()
}

/// Runs `script` (named `call` in messages) on `c`, whose memory limit is
/// `memory`: it must end with a limit error, having allocated less than
/// four times the limit in all, and the circle must go on.
fn stops_at_the_memory_limit(c: &Circle, script: &str, call: &str, memory: usize) {
    let (ran, spent) = std::thread::scope(|sc| {
        std::thread::Builder::new()
            .stack_size(SCRIPT_STACK_SIZE)
            .spawn_scoped(sc, || {
                let before = allocated_by_this_thread();
                let ran = c.engine.run(script, &RunControl::default());
                (ran, allocated_by_this_thread() - before)
            })
            .expect("spawn")
            .join()
            .expect("no panic")
    });
    let e = ran.expect_err(call);
    assert_eq!(e.kind, ErrorKind::Limit, "{call}: {e:?}");
    assert!(
        spent < 4 * memory as u64,
        "{call}: the run allocated {spent} bytes in one call, memory limit {memory}"
    );
    c.still_works();
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
        stops_at_the_memory_limit(&c, &script, call, MEMORY);
    }
}

#[test]
fn padding_an_array_with_a_map_cannot_copy_its_keys_far_past_the_memory_limit() {
    const MEMORY: usize = 32 << 20;
    let c = Circle::with_limits(Limits {
        max_memory_bytes: MEMORY,
        ..Limits::default()
    });
    // A map of 6 keys of 1 MiB each (6 MiB; Rhai's size limits count a
    // map's entries and the strings in its values, not its keys). `pad`
    // checks the sizes its copies add, so 40 copies pass, but each copy
    // holds its keys anew: 240 MiB in one call. (16,000 copies pass the
    // size checks too: 96 GiB.)
    let setup = "let t = \"x\"; for i in 0..20 { t += t; }\n\
                 let m = #{}; for i in 0..6 { let k = t; k.pop(); k += i; m[k] = i; }\n";
    for call in ["a.pad(40, m)", "a.pad(40, [m])"] {
        let script = format!("{setup}let a = [];\n{call};\na.len()");
        stops_at_the_memory_limit(&c, &script, call, MEMORY);
    }
    // Padding with a map of short keys is stock Rhai's.
    assert_eq!(
        c.ok("let a = [1]; a.pad(3, #{ k: [1, 2] }); a").output,
        "[1, #{\"k\": [1, 2]}, #{\"k\": [1, 2]}]"
    );
    c.fails("let a = []; a.pad(2000000, #{ k: 1 }); 1", ErrorKind::Limit);
}

#[test]
fn parse_json_reads_data_and_runs_no_code() {
    // Stock Rhai's `parse_json` compiles its text as a script expression
    // and evaluates it: function calls in the "JSON" run, `db::` writes
    // included (text compiled while the script runs, what the sandbox
    // refuses `eval` for).
    let c = Circle::new();
    let e = c
        .run("let m = parse_json(`{\"a\": db::insert(5)}`); m.a")
        .expect_err("not JSON");
    assert_eq!(e.kind, ErrorKind::Runtime, "{e:?}");
    assert_eq!(c.ok("db::next_id()").output, "1", "nothing was written");
    c.fails("parse_json(`{\"a\": 1 + 1}`)", ErrorKind::Runtime);
    c.fails("parse_json(`[1, 2]`)", ErrorKind::Runtime);
    assert_eq!(
        c.ok("parse_json(`{\"a\": {\"b\": [true, -1, 1e3, \"\\u00e9\"]}}`)")
            .output,
        "#{\"a\": #{\"b\": [true, -1, 1000.0, \"é\"]}}"
    );
}
