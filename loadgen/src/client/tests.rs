use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::echo::{Arrivals, start_logged};

/// Which side each request reached, in the order they arrived.
fn arrival_sides(logs: &[Arrivals]) -> Vec<usize> {
    let mut all: Vec<(Instant, usize)> = Vec::new();
    for (side, log) in logs.iter().enumerate() {
        let log = log.lock().expect("the echo servers are done");
        all.extend(log.iter().map(|&at| (at, side)));
    }
    all.sort();
    all.into_iter().map(|(_, side)| side).collect()
}

#[test]
fn one_side_runs_in_one_turn_and_several_take_turns_forth_then_back() {
    let (warmup, duration) = (Duration::from_secs(1), Duration::from_secs(1));
    assert_eq!(
        schedule(1, warmup, duration),
        [Turn {
            side: 0,
            settle: warmup,
            measured: duration
        }]
    );
    let turns = schedule(2, warmup, duration);
    let order: Vec<(usize, bool)> = turns
        .iter()
        .map(|t| (t.side, t.measured.is_zero()))
        .collect();
    // Warm-ups, then slice one forth, slice two back.
    let expected = [
        (0, true),
        (1, true),
        (0, false),
        (1, false),
        (1, false),
        (0, false),
    ];
    assert_eq!(order, expected);
    for side in 0..2 {
        let measured: Duration = turns
            .iter()
            .filter(|t| t.side == side)
            .map(|t| t.measured)
            .sum();
        assert_eq!(measured, duration);
    }
    assert!(
        turns[2..]
            .iter()
            .all(|t| t.settle == SETTLE && t.measured <= SLICE)
    );
    // A length that is no multiple of a slice: three slices of 0.4 s each.
    let odd = schedule(3, warmup, Duration::from_millis(1200));
    assert_eq!(odd.len(), 3 + 3 * 3);
    assert!(
        odd[3..]
            .iter()
            .all(|t| t.measured == Duration::from_millis(400))
    );
    let sides: Vec<usize> = odd[3..].iter().map(|t| t.side).collect();
    assert_eq!(sides, [0, 1, 2, 2, 1, 0, 0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interleaved_load_runs_one_side_at_a_time_in_turns() {
    let (a, a_log) = start_logged().expect("echo server a");
    let (b, b_log) = start_logged().expect("echo server b");
    let scripts = Arc::new(vec!["40 + 2".to_string()]);
    let pools = vec![
        Pool::open(&[a], 4).await.expect("pool a"),
        Pool::open(&[b], 4).await.expect("pool b"),
    ];
    // Two slices: warm-ups a, b; slice one a, b; slice two b, a.
    let measured = interleaved(pools, &scripts, Duration::from_millis(50), 2 * SLICE, None)
        .await
        .expect("interleaved load");
    let mut turns = arrival_sides(&[a_log.clone(), b_log.clone()]);
    turns.dedup();
    assert_eq!(turns, [0, 1, 0, 1, 0]);
    for (side, log) in [(0, &a_log), (1, &b_log)] {
        let m = &measured[side];
        let arrived = log.lock().expect("the echo servers are done").len();
        assert_eq!(m.errors, 0);
        assert!(!m.latencies.is_empty() && m.latencies.len() <= arrived);
        // Counted replies over the measured time of both slices.
        let per_second = m.latencies.len() as f64 / (2 * SLICE).as_secs_f64();
        assert!((m.throughput - per_second).abs() < 1e-6, "{m:?}");
        assert!(m.saturation.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metered_turn_covers_its_window_not_the_replies_drained_after_it() {
    let redis = testkit::RedisServer::start();
    let delay = Duration::from_millis(900);
    let url = crate::echo::start_slow(delay).expect("slow echo server");
    let scripts = Arc::new(vec!["40 + 2".to_string()]);
    let mut pool = Pool::open(&[url], 2).await.expect("pool");
    let turn = Turn {
        side: 0,
        settle: Duration::from_millis(100),
        measured: Duration::from_millis(300),
    };
    let started = Instant::now();
    let usage = metered(&mut pool, &scripts, &turn, redis.port())
        .await
        .expect("metered turn");
    // Each connection's one request ends after the window: the turn
    // lasts until those replies, the counters cover the window alone.
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    let wall = usage.wall();
    assert!(
        wall >= turn.measured - Duration::from_millis(50)
            && wall < turn.measured + Duration::from_millis(300),
        "metered {wall:?} for a window of {:?}",
        turn.measured
    );
    assert_eq!(pool.close().await.latencies.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_load_sends_each_request_to_every_side_in_turn() {
    let (a, a_log) = start_logged().expect("echo server a");
    let (b, b_log) = start_logged().expect("echo server b");
    let scripts = Arc::new(vec!["40 + 2".to_string()]);
    let measured = sequential_sides(&[a, b], &scripts, 2, 10)
        .await
        .expect("sequential load");
    let expected: Vec<usize> = (0..12).flat_map(|n| [n % 2, (n + 1) % 2]).collect();
    assert_eq!(arrival_sides(&[a_log, b_log]), expected);
    for m in &measured {
        assert_eq!((m.latencies.len(), m.errors), (10, 0));
    }
}
