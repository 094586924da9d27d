//! Probe: how deep can a script nest arrays within the default limits, and
//! how long does it take. `cargo run -p engine --release --example depth_probe -- N`
use std::sync::Arc;
use std::time::Instant;

use engine::{CircleEngine, Limits, RunControl};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let stack: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 30);
    let dir = tempfile::tempdir().expect("dir");
    let db = Arc::new(ourdb::OurDb::open(dir.path(), ourdb::Config::default()).expect("db"));
    let engine = CircleEngine::new(db, Limits::default());
    for script in [
        format!("let v = (); for i in 0..{n} {{ v = [v]; }} 1"),
        format!("let v = (); for i in 0..{n} {{ v = [v.take()]; }} 1"),
        format!("let v = (); for i in 0..{n} {{ let w = #{{}}; w.x = v.take(); v = w; }} 1"),
        format!("let v = (); for i in 0..{n} {{ let w = []; w.push(v.take()); v = w; }} 1"),
        format!("let v = (); for i in 0..{n} {{ v = [v.take()]; }} let w = v; 1"),
    ] {
        let t = Instant::now();
        let r = std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(stack)
                .spawn_scoped(s, || engine.run(&script, &RunControl::default()))
                .expect("spawn")
                .join()
                .expect("join")
        });
        println!(
            "{:>8.1} ms {:?}  {}",
            t.elapsed().as_secs_f64() * 1e3,
            r.map(|o| o.output).map_err(|e| e.message),
            &script[..60.min(script.len())]
        );
    }
}
