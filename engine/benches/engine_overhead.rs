//! Per-run overhead of `CircleEngine::run` (sandbox, AST cache, transaction,
//! db binding, output capture, commit) over a bare Rhai evaluation of the same
//! pre-compiled AST on a plain `Engine`.
//!
//! Run with `cargo bench -p engine`. Prints ns/run for both and the ratio, for
//! a trivial script and for a script with 10 db writes (OurDB in Flush and in
//! Sync durability). The bare engine gets a no-op `db::insert` so both sides
//! evaluate the same AST.
//!
//! Then, for the trivial script, the cost of the parts of a run the engine
//! cannot drop, each measured on its own: the evaluation with the sandbox's
//! limits and per-operation callback, the two clock reads (deadline, run
//! time), the result rendered as an owned string, the run lock, the cancel
//! flag's reference count. They are set against the room a run would have
//! if the whole run had to stay within 1.5× the bare evaluation.

use std::sync::Arc;
use std::time::Instant;

use engine::{CircleEngine, Limits, RunControl, SCRIPT_STACK_SIZE};
use ourdb::{Config, Durability, OurDb};
use rhai::{Dynamic, Engine, INT, Module};

const TRIVIAL: &str = "40 + 2";
const TEN_WRITES: &str =
    "let last = 0; for i in 0..10 { last = db::insert(#{ n: i, name: \"item\" }); } last";

/// ns/run of `a` and `b`, measured in alternating rounds of `iters` runs so
/// both see the same machine load; the fastest round of each counts (the
/// machine is shared, so slower rounds measure other processes).
fn measure_pair(
    rounds: usize,
    iters: usize,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> (f64, f64) {
    for _ in 0..iters.min(1_000) {
        a();
        b();
    }
    let round = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        t.elapsed().as_nanos() as f64 / iters as f64
    };
    let (mut best_a, mut best_b) = (f64::MAX, f64::MAX);
    for _ in 0..rounds {
        best_a = best_a.min(round(&mut a));
        best_b = best_b.min(round(&mut b));
    }
    (best_a, best_b)
}

/// Best ns per call of `f` over `rounds` rounds of `iters` calls.
fn measure(rounds: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    best
}

/// The parts of a trivial run that are required (see the module docs).
fn parts(rounds: usize, iters: usize) {
    use std::hint::black_box;
    let bare = bare_engine();
    let ast = bare.compile(TRIVIAL).expect("bench script compiles");
    // The sandbox's bounds and a per-operation callback that counts in a
    // thread-local, as the engine's does.
    let mut bounded = bare_engine();
    set_sandbox_bounds(&mut bounded, &Limits::default());
    thread_local! {
        static OPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    bounded.on_progress(|_| {
        OPS.with(|o| {
            o.set(o.get() + 1);
            (o.get() == u64::MAX).then_some(Dynamic::UNIT)
        })
    });
    let clock = quanta::Clock::new();
    let lock = std::sync::Mutex::new(());
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Bare and bounded alternate, as in `compare`, so both see the same load.
    let (bare_ns, bounded_ns) = measure_pair(
        rounds,
        iters,
        || {
            let _ = black_box(bare.eval_ast::<Dynamic>(&ast).expect("bare eval"));
        },
        || {
            let _ = black_box(bounded.eval_ast::<Dynamic>(&ast).expect("bounded eval"));
        },
    );
    let rows = [
        ("sandbox bounds + per-op callback", bounded_ns - bare_ns),
        (
            "two clock reads",
            measure(rounds, iters, || {
                black_box(clock.now());
                black_box(clock.now());
            }),
        ),
        (
            "result as an owned string",
            measure(rounds, iters, || {
                black_box(itoa::Buffer::new().format(black_box(42 as INT)).to_owned());
            }),
        ),
        (
            "run lock taken and released",
            measure(rounds, iters, || {
                let guard = lock.try_lock().expect("uncontended");
                black_box(&guard);
            }),
        ),
        (
            "cancel flag Arc cloned and dropped",
            measure(rounds, iters, || {
                black_box(Arc::clone(&flag));
            }),
        ),
    ];
    println!("required parts of a trivial run (bare eval {bare_ns:.0} ns):");
    let mut total = 0.0;
    for (label, ns) in rows {
        total += ns;
        println!("  {label:<36} {ns:>6.1} ns");
    }
    println!(
        "  {:<36} {total:>6.1} ns = {:.2}x bare; a whole run within 1.5x bare leaves {:.0} ns for all of them",
        "sum",
        total / bare_ns,
        bare_ns * 0.5
    );
}

/// The Rhai bounds the engine's sandbox sets from `limits` (engine/src/sandbox.rs,
/// `apply_bounds`); the engine keeps its Rhai engine to itself, so the bench
/// sets the same bounds on its own.
fn set_sandbox_bounds(engine: &mut Engine, limits: &Limits) {
    engine
        .set_max_operations(0)
        .set_max_call_levels(limits.max_call_depth)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size);
}

fn bare_engine() -> Engine {
    let mut engine = Engine::new();
    let mut db = Module::new();
    let counter = std::sync::Mutex::new(0 as INT);
    db.set_native_fn("insert", move |_v: Dynamic| {
        let mut n = counter.lock().expect("bench counter");
        *n += 1;
        Ok(*n)
    });
    engine.register_static_module("db", db.into());
    engine
}

fn circle(durability: Durability) -> (tempfile::TempDir, CircleEngine) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        durability,
        ..Config::default()
    };
    let db = Arc::new(OurDb::open(dir.path(), config).expect("open ourdb"));
    (dir, CircleEngine::new(db, Limits::default()))
}

fn compare(label: &str, script: &str, durability: Durability, rounds: usize, iters: usize) {
    compare_with(
        label,
        script,
        durability,
        rounds,
        iters,
        &RunControl::default(),
    );
}

/// [`compare`] with the engine's runs under `control`.
fn compare_with(
    label: &str,
    script: &str,
    durability: Durability,
    rounds: usize,
    iters: usize,
    control: &RunControl,
) {
    let bare = bare_engine();
    let ast = bare.compile(script).expect("bench script compiles");
    let (_dir, engine) = circle(durability);
    let (bare_ns, ours_ns) = measure_pair(
        rounds,
        iters,
        || {
            let v = bare.eval_ast::<Dynamic>(&ast).expect("bare eval");
            let _ = std::hint::black_box(v);
        },
        || {
            let o = engine.run(script, control).expect("engine run");
            let _ = std::hint::black_box(o);
        },
    );
    // Both ways of reading "overhead": the whole run against bare, and the
    // added cost (engine - bare) against bare.
    println!(
        "{label:<34} bare {bare_ns:>12.0} ns/run   engine {ours_ns:>12.0} ns/run   ratio {:.2}x   added {:>10.0} ns = {:.2}x bare",
        ours_ns / bare_ns,
        ours_ns - bare_ns,
        (ours_ns - bare_ns) / bare_ns
    );
}

/// How long scripts take to end under the default limits (the default
/// deadline is 10 s; hostile scripts must end well before it).
fn defaults() {
    let (_dir, engine) = circle(Durability::Flush);
    let control = RunControl::default();
    let scripts = [
        (
            "fib(25) recursive",
            "fn fib(n) { if n < 2 { n } else { fib(n - 1) + fib(n - 2) } } fib(25)",
        ),
        (
            "sieve to 100,000",
            "let n = 100000; let s = []; s.pad(n + 1, true); let c = 0; for i in 2..=n { if s[i] { c += 1; let j = i * i; while j <= n { s[j] = false; j += i; } } } c",
        ),
        ("hostile: infinite loop", "let x = 0; loop { x += 1; }"),
        ("hostile: unbounded recursion", "fn f(n) { f(n + 1) } f(0)"),
        (
            "hostile: string doubling",
            "let s = \"x\"; loop { s += s; }",
        ),
        (
            "hostile: giant array",
            "let a = []; a.pad(1000000000, 0); a.len()",
        ),
        (
            "hostile: map growth",
            "let m = #{}; for i in 0..10000000 { m[`k${i}`] = i; } m",
        ),
        (
            "hostile: print flood",
            "loop { print(\"spam spam spam\"); }",
        ),
    ];
    for (label, script) in scripts {
        let t = Instant::now();
        let result = engine.run(script, &control);
        let took = t.elapsed();
        let what = match result {
            Ok(o) => format!("ok {}", o.output),
            Err(e) => format!("{} error: {}", e.kind.as_str(), e.message),
        };
        println!("{label:<30} {:>9.1} ms   {what}", took.as_secs_f64() * 1e3);
    }
}

fn main() {
    // Scripts run on a thread with the stack the engine requires, like the worker.
    std::thread::Builder::new()
        .stack_size(SCRIPT_STACK_SIZE)
        .spawn(|| {
            let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
            let (r, n) = if quick { (3, 200) } else { (21, 20_000) };
            compare("trivial (40 + 2)", TRIVIAL, Durability::Flush, r, n);
            // As the worker runs every task that carries a deadline (the
            // server's do): the deadline comes as an instant of the engine's
            // clock, built by the worker from the task's time left.
            let with_deadline = RunControl {
                deadline: Some(engine::clock::after(std::time::Duration::from_secs(3600))),
                ..RunControl::default()
            };
            compare_with(
                "trivial, with a task deadline",
                TRIVIAL,
                Durability::Flush,
                r,
                n,
                &with_deadline,
            );
            parts(r, n);
            compare(
                "10 db writes, Flush durability",
                TEN_WRITES,
                Durability::Flush,
                r,
                (n / 20).max(1),
            );
            compare(
                "10 db writes, Sync durability",
                TEN_WRITES,
                Durability::Sync,
                r.min(5),
                (n / 400).max(1),
            );
            if !quick {
                defaults();
            }
        })
        .expect("spawn bench thread")
        .join()
        .expect("bench thread");
}
