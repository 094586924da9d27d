//! The per-thread run state's tests: the operation count, the deadline and
//! cancel checks, stops marked by functions.

use super::*;
use crate::clock;
use std::sync::atomic::Ordering;

fn ticks(n: u64) -> Vec<Option<&'static str>> {
    (0..n).map(|_| tick()).collect()
}

/// No bound but `max_operations` (0: none).
fn only_operations(max_operations: u64) -> Limits {
    Limits {
        max_output_bytes: 0,
        max_writes: 0,
        max_operations,
        max_memory_bytes: 0,
        ..Limits::default()
    }
}

/// A run of `limits` whose deadline is a minute away and that nobody cancels.
fn far_run(limits: &Limits) -> Installed {
    let far = clock::add(clock::now(), std::time::Duration::from_secs(60));
    install(
        &Caller::trusted(),
        far,
        TIMEOUT_TOKEN,
        &Arc::new(AtomicBool::new(false)),
        limits,
    )
}

#[test]
fn the_operation_limit_stops_the_first_operation_over_it_and_every_later_one() {
    let run = far_run(&only_operations(600));
    assert!(ticks(600).iter().all(Option::is_none));
    assert_eq!(ticks(3), vec![Some(OPERATIONS_TOKEN); 3]);
    drop(run);
    assert_eq!(tick(), None, "no limit outside a run");
}

#[test]
fn deadline_and_cancel_are_seen_at_each_check_and_stick() {
    let cancel = Arc::new(AtomicBool::new(false));
    let run = install(
        &Caller::trusted(),
        clock::now(),
        TASK_DEADLINE_TOKEN,
        &cancel,
        &only_operations(0),
    );
    let first = ticks(CHECK_EVERY_OPS);
    assert!(first[..first.len() - 1].iter().all(Option::is_none));
    assert_eq!(first.last(), Some(&Some(TASK_DEADLINE_TOKEN)));
    assert_eq!(ticks(2), vec![Some(TASK_DEADLINE_TOKEN); 2]);
    assert_eq!(stopped(), Some(TASK_DEADLINE_TOKEN));
    drop(run);
    assert_eq!(stopped(), None);

    let far = clock::add(clock::now(), std::time::Duration::from_secs(60));
    let run = install(
        &Caller::trusted(),
        far,
        TIMEOUT_TOKEN,
        &cancel,
        &only_operations(0),
    );
    assert!(ticks(CHECK_EVERY_OPS * 3).iter().all(Option::is_none));
    cancel.store(true, Ordering::Relaxed);
    let after = ticks(CHECK_EVERY_OPS);
    assert!(after[..after.len() - 1].iter().all(Option::is_none));
    assert_eq!(after.last(), Some(&Some(CANCEL_TOKEN)));
    drop(run);
}

#[test]
fn a_stop_marked_by_a_function_fails_the_next_operation() {
    let run = far_run(&only_operations(0));
    assert_eq!(tick(), None);
    stop_with(NESTING_TOKEN);
    stop_with(TIMEOUT_TOKEN);
    assert_eq!(
        ticks(2),
        vec![Some(NESTING_TOKEN); 2],
        "the first reason stays"
    );
    drop(run);
}

#[test]
fn the_largest_memory_limit_bounds_nothing() {
    let run = far_run(&Limits {
        max_memory_bytes: usize::MAX,
        ..only_operations(0)
    });
    let kept: Vec<u8> = vec![1; 1 << 20];
    assert!(ticks(1000).iter().all(Option::is_none));
    drop(kept);
    drop(run);
}
