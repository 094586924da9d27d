//! What a worker remembers of the tasks it finished: enough to write a
//! result again, never to run a task again, when Redis lost a finish it had
//! acknowledged.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use client::broker::ClaimedAt;
use client::{FailureKind, Outcome};

/// The tasks this worker ran most recently whose finish Redis
/// acknowledged, or answered that the task was resolved elsewhere (a
/// failover to a replica that lacked its claim: the task ran here all the
/// same, its writes committed): the ids of those finished within [`Finished::KEEP_FOR`],
/// and at least the last [`Finished::MAX`] (at most [`Finished::MAX_IDS`]),
/// and the results of the newest of them within [`Finished::MAX_BYTES`].
/// By age, not by count alone: an old primary the sentinels promote again
/// before they made it a replica shows every task in flight at the first
/// failover unrun, however many ran since (over a thousand in a second
/// under load). A Redis that comes back
/// without an acknowledged finish (a restart from an older snapshot, a
/// failover to a replica the finish had not reached) still shows such a
/// task `processing` by this worker in its processing list: the look at
/// that list after the outage writes its kept result again, or, when the
/// result was not kept, ends it `worker_lost` (it ran, its writes are
/// committed), instead of running it a second time. Per circle, so its
/// bounds stay small: the ids a minute of its load finishes (about 200
/// bytes each, at most [`Finished::MAX_IDS`]), 256 KiB of results.
#[derive(Default)]
pub(crate) struct Finished {
    kept: VecDeque<Kept>,
    /// How many entries of `kept` each id has: [`Finished::get`] asks for
    /// every task a worker claims, and almost every one is new.
    ids: HashMap<String, u32>,
    /// Text bytes of the results kept.
    bytes: usize,
    /// How many entries at the front of `kept` hold no result (results go
    /// oldest first): the budget's next drop starts after them, so a push
    /// costs the same with a minute of ids kept as with a few.
    bare: usize,
}

/// One finished task: its id, its `createdAt` and the `startedAt` of the
/// claim it ran under, its result if kept.
struct Kept {
    id: String,
    at: ClaimedAt,
    /// Boxed: most entries hold none, and a minute of ids can be many.
    result: Option<Box<Outcome>>,
    /// When its finish was acknowledged.
    finished: Instant,
    /// Whether the worker counted it (completed or failed, in its row and
    /// metrics): not when its finish found it resolved elsewhere.
    counted: bool,
}

/// What [`Finished::get`] knows of a task that ran here.
pub(crate) struct Ran<'a> {
    /// Its `createdAt` and `startedAt` when it ran.
    pub(crate) at: ClaimedAt,
    /// Its result; `None` when it was not kept.
    pub(crate) result: Option<&'a Outcome>,
}

impl Finished {
    const MAX: usize = 1024;
    /// How long an id is kept at least (while under [`Finished::MAX_IDS`]):
    /// longer than the sentinels take to make a demoted primary a replica
    /// (they look at it every 10 s), with room to spare.
    const KEEP_FOR: Duration = Duration::from_secs(60);
    const MAX_IDS: usize = 1 << 17;
    const MAX_BYTES: usize = 256 << 10;

    fn size(outcome: &Outcome) -> usize {
        match outcome {
            Outcome::Completed(out) => out.output.len() + out.printed.len(),
            Outcome::Failed(f) => f.message.len(),
        }
    }

    /// Keeps `outcome` of a task created and claimed `at` (see [`Kept`]),
    /// `counted` or not (see [`Finished::count_once`]).
    pub(crate) fn push(&mut self, outcome: &Outcome, at: ClaimedAt, counted: bool) {
        self.push_counted(outcome, at, Instant::now(), counted);
    }

    /// Whether the run of `task_id` whose result is written again, claimed
    /// `at` (that claim, or a later one of the same push: see
    /// [`Finished::same_push`]), ran here without being counted (its finish
    /// found it resolved elsewhere), marking it counted: one task, one
    /// count. Another push of the id is another task, counted on its own.
    pub(crate) fn count_once(&mut self, task_id: &str, at: ClaimedAt) -> bool {
        if !self.ids.contains_key(task_id) {
            return false;
        }
        let mut found = false;
        for kept in self.kept.iter_mut().filter(|k| {
            k.id == task_id && !k.counted && (k.at == at || Finished::same_push(at, k.at))
        }) {
            kept.counted = true;
            found = true;
        }
        found
    }

    /// [`Finished::push`] of a counted task, its finish acknowledged at `now`.
    #[cfg(test)]
    fn push_at(&mut self, outcome: &Outcome, at: ClaimedAt, now: Instant) {
        self.push_counted(outcome, at, now, true);
    }

    fn push_counted(&mut self, outcome: &Outcome, at: ClaimedAt, now: Instant, counted: bool) {
        let size = Finished::size(outcome);
        let result = (size <= Finished::MAX_BYTES).then(|| Box::new(outcome.clone()));
        if result.is_some() {
            self.bytes += size;
        }
        let id = outcome.task_id().to_owned();
        *self.ids.entry(id.clone()).or_default() += 1;
        self.kept.push_back(Kept {
            id,
            at,
            result,
            finished: now,
            counted,
        });
        while self.kept.len() > Finished::MAX
            && self.kept.front().is_some_and(|old| {
                self.kept.len() > Finished::MAX_IDS
                    || now.duration_since(old.finished) >= Finished::KEEP_FOR
            })
            && let Some(old) = self.kept.pop_front()
        {
            self.bare = self.bare.saturating_sub(1);
            self.uncount(&old.id, 1);
            if let Some(result) = &old.result {
                self.bytes -= Finished::size(result);
            }
        }
        // Over the budget: the oldest results go, their ids stay.
        while self.bytes > Finished::MAX_BYTES {
            let Some(Kept { result, .. }) = self.kept.get_mut(self.bare) else {
                break;
            };
            if let Some(old) = result.take() {
                self.bytes -= Finished::size(&old);
            }
            self.bare += 1;
        }
    }

    /// Takes `n` entries of `id` off [`Finished::ids`].
    fn uncount(&mut self, id: &str, n: u32) {
        if let Some(count) = self.ids.get_mut(id) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.ids.remove(id);
            }
        }
    }

    /// Forgets `task_id`: what its list holds now is another run.
    pub(crate) fn forget(&mut self, task_id: &str) {
        let Some(n) = self.ids.get(task_id).copied() else {
            return;
        };
        self.uncount(task_id, n);
        let bytes = &mut self.bytes;
        self.kept.retain(|kept| {
            if kept.id != task_id {
                return true;
            }
            if let Some(old) = &kept.result {
                *bytes -= Finished::size(old);
            }
            false
        });
        self.bare = self.kept.iter().take_while(|k| k.result.is_none()).count();
    }

    /// What to write again for `task_id`, claimed just now and submitted
    /// at `created_ms`, when a run of that very task finished here and
    /// Redis acknowledged it, then lost both its claim and its finish (it
    /// shows the task queued): its kept result, or `worker_lost` when the
    /// result was not kept. `None` when it did not run here, or when the
    /// run under that id had another `createdAt` (a new task reusing the
    /// id). The caller rules out an id pushed again after it ended (its
    /// claim found an earlier outcome).
    pub(crate) fn again_queued(&self, task_id: &str, created_ms: Option<u64>) -> Option<Outcome> {
        let ran = self.get(task_id)?;
        (ran.at.created_ms == created_ms).then(|| Finished::kept_result(task_id, &ran))
    }

    /// What to write again for `task_id`, found in this worker's
    /// processing list after an outage with the `createdAt` and `startedAt`
    /// `at`, when that claim is of a run that finished here and whose
    /// acknowledged finish Redis lost: the first run here claimed at or
    /// after `at`, when it is that very claim, or a later claim of the same
    /// push (an old primary promoted again before it was made a replica
    /// shows the claim whose reply the failover cut; the task ran under the
    /// claim the worker made on the new primary). Its kept result, or
    /// `worker_lost`. `None` for a claim later than every run here (a task
    /// pushed again after they ended, claimed here, the claim's reply
    /// lost): it writes its own `startedAt`.
    pub(crate) fn again_claimed(&self, task_id: &str, at: ClaimedAt) -> Option<Outcome> {
        if !self.ids.contains_key(task_id) {
            return None;
        }
        let found = at.started_ms?;
        let kept = self
            .kept
            .iter()
            .filter(|kept| kept.id == task_id && kept.at.started_ms.is_some_and(|s| s >= found))
            .min_by_key(|kept| kept.at.started_ms)?;
        let ran = Ran {
            at: kept.at,
            result: kept.result.as_deref(),
        };
        (ran.at == at || Finished::same_push(at, ran.at))
            .then(|| Finished::kept_result(task_id, &ran))
    }

    /// Whether two claims of an id are of the same push: the same
    /// `createdAt` (a submitter's, which its retried submit keeps), or
    /// each a `createdAt` its claim wrote (a third party's task without
    /// one). A push of the id under a `createdAt` of its own is another
    /// task.
    fn same_push(a: ClaimedAt, b: ClaimedAt) -> bool {
        a.created_ms == b.created_ms
            || (a.created_ms == a.started_ms && b.created_ms == b.started_ms)
    }

    fn kept_result(task_id: &str, ran: &Ran<'_>) -> Outcome {
        ran.result.cloned().unwrap_or_else(|| lost_result(task_id))
    }

    /// Whether `task_id` ran here and its finish was acknowledged: then
    /// what is known of that run.
    pub(crate) fn get(&self, task_id: &str) -> Option<Ran<'_>> {
        if !self.ids.contains_key(task_id) {
            return None;
        }
        self.kept
            .iter()
            .rev()
            .find(|kept| kept.id == task_id)
            .map(|kept| Ran {
                at: kept.at,
                result: kept.result.as_deref(),
            })
    }
}

/// The end of a task that ran here and whose acknowledged result Redis
/// lost, when that result was not kept (see [`Finished`]).
pub(crate) fn lost_result(task_id: &str) -> Outcome {
    Outcome::Failed(client::TaskFailure {
        task_id: task_id.to_owned(),
        kind: FailureKind::WorkerLost,
        message: "the task ran and its result was written, but redis lost it (a restart from an \
                  older snapshot, or a failover); its writes are committed, and it is not run again"
            .to_owned(),
        line: None,
        column: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed(id: &str, output: &str) -> Outcome {
        Outcome::Completed(client::TaskOutput {
            task_id: id.to_owned(),
            output: output.to_owned(),
            printed: String::new(),
            run_time: None,
        })
    }

    /// A run created at `created_ms`, claimed 5 ms later.
    fn at(created_ms: Option<u64>) -> ClaimedAt {
        ClaimedAt {
            created_ms,
            started_ms: Some(created_ms.unwrap_or(0) + 5),
        }
    }

    /// The result `get` keeps for `id`: `Some(None)` for an id without its
    /// result.
    fn result<'a>(f: &'a Finished, id: &str) -> Option<Option<&'a Outcome>> {
        f.get(id).map(|ran| ran.result)
    }

    #[test]
    fn finished_keeps_the_last_ids_and_the_newest_results_within_its_budget() {
        let mut f = Finished::default();
        let t0 = Instant::now();
        let t1 = t0 + Finished::KEEP_FOR;
        let big = "x".repeat(100 << 10);
        f.push_at(&completed("a", &big), at(Some(1)), t0);
        f.push_at(&completed("b", &big), at(Some(2)), t0);
        f.push_at(&completed("c", &big), at(None), t0);
        // 300 KiB of results: the oldest goes, its id stays.
        assert_eq!(result(&f, "a"), Some(None));
        assert_eq!(f.get("a").map(|ran| ran.at.created_ms), Some(Some(1)));
        assert!(matches!(result(&f, "c"), Some(Some(Outcome::Completed(o))) if o.output == big));
        // One result past the whole budget is kept as an id only.
        f.push_at(&completed("huge", &"y".repeat(300 << 10)), at(Some(3)), t0);
        assert_eq!(result(&f, "huge"), Some(None));
        assert!(f.bytes <= Finished::MAX_BYTES, "{}", f.bytes);
        for n in 0..Finished::MAX {
            f.push_at(&completed(&format!("t{n}"), "1"), at(Some(n as u64)), t1);
        }
        assert!(f.get("c").is_none(), "past the last {} ids", Finished::MAX);
        assert!(f.get("t0").is_some());
        assert_eq!(f.bytes, Finished::MAX, "one byte of result each");
        // The index of ids follows what is kept: an id run twice is found
        // until forgotten, an id pushed out is not.
        assert_eq!(f.ids.len(), Finished::MAX);
        f.push_at(
            &completed("t5", "again"),
            at(Some(9)),
            t1 + Finished::KEEP_FOR,
        );
        assert_eq!(f.get("t5").map(|ran| ran.at.created_ms), Some(Some(9)));
        f.forget("t5");
        assert!(f.get("t5").is_none());
        assert_eq!(f.ids.len(), f.kept.len());
        assert!(f.get("t0").is_none(), "pushed out by t5's second run");
    }

    /// Past the budget each push drops the oldest result still kept, found
    /// after the entries already bare, never by a walk over all of them.
    #[test]
    fn the_budget_drops_results_oldest_first_from_where_the_last_drop_ended() {
        let mut f = Finished::default();
        let now = Instant::now();
        let kib = "x".repeat(1 << 10);
        for n in 0..2000u64 {
            f.push_at(&completed(&format!("t{n}"), &kib), at(Some(n)), now);
        }
        assert!(f.bytes <= Finished::MAX_BYTES, "{}", f.bytes);
        assert_eq!(f.kept.len(), 2000, "every id of the minute stays");
        let leading = f.kept.iter().take_while(|k| k.result.is_none()).count();
        assert_eq!(f.bare, leading);
        assert!(f.kept.iter().skip(f.bare).all(|k| k.result.is_some()));
        assert!(matches!(result(&f, "t1999"), Some(Some(_))));
        assert_eq!(result(&f, "t0"), Some(None));
        f.forget("t1999");
        assert_eq!(f.bare, leading, "a forget keeps the count of bare entries");
    }

    #[test]
    fn ids_finished_within_a_minute_stay_however_many_follow_up_to_the_cap() {
        let mut f = Finished::default();
        let t0 = Instant::now();
        f.push_at(&completed("first", "1"), at(Some(1)), t0);
        for n in 0..Finished::MAX * 4 {
            f.push_at(&completed(&format!("t{n}"), "1"), at(Some(2)), t0);
        }
        assert!(f.get("first").is_some(), "kept for its minute");
        // A minute later the count bound applies again.
        let later = t0 + Finished::KEEP_FOR;
        f.push_at(&completed("late", "1"), at(Some(3)), later);
        assert!(f.get("first").is_none());
        assert_eq!(f.kept.len(), Finished::MAX);
        assert!(f.get("late").is_some());
        // However young, no more than the cap.
        for n in 0..Finished::MAX_IDS {
            f.push_at(&completed(&format!("u{n}"), "1"), at(Some(4)), later);
        }
        assert_eq!(f.kept.len(), Finished::MAX_IDS);
        assert_eq!(f.ids.len(), Finished::MAX_IDS);
        assert!(f.get("u0").is_some() && f.get("late").is_none());
    }

    #[test]
    fn a_run_is_written_again_only_for_its_own_created_at_or_its_own_claim() {
        let mut f = Finished::default();
        f.push(&completed("job", "first"), at(Some(100)), true);
        let kept = Some(completed("job", "first"));
        // Queued again by a Redis restored from before its claim.
        assert_eq!(f.again_queued("job", Some(100)), kept);
        assert_eq!(f.again_queued("job", Some(101)), None, "a new task");
        // In the processing list after an outage: its own claim's hash.
        assert_eq!(f.again_claimed("job", at(Some(100))), kept);
        let later_claim = ClaimedAt {
            created_ms: Some(100),
            started_ms: Some(900),
        };
        assert_eq!(f.again_claimed("job", later_claim), None, "claimed again");
        // A claim before the run's whose reply was lost, shown by an old
        // primary promoted again: the same push, not run again; one of
        // another push (its own `createdAt`) runs.
        let earlier_claim = ClaimedAt {
            created_ms: Some(100),
            started_ms: Some(101),
        };
        assert_eq!(f.again_claimed("job", earlier_claim), kept);
        let other_push = ClaimedAt {
            created_ms: Some(99),
            started_ms: Some(101),
        };
        assert_eq!(f.again_claimed("job", other_push), None);
        // A third party's task without `createdAt`: each claim writes it.
        f.push(
            &completed("bare3", "y"),
            ClaimedAt {
                created_ms: Some(50),
                started_ms: Some(50),
            },
            true,
        );
        let its_first = ClaimedAt {
            created_ms: Some(40),
            started_ms: Some(40),
        };
        assert_eq!(
            f.again_claimed("bare3", its_first),
            Some(completed("bare3", "y"))
        );
        // Of two runs of an id, an earlier claim is answered by the first
        // run at or after it.
        f.push(
            &completed("job", "second"),
            ClaimedAt {
                created_ms: Some(800),
                started_ms: Some(900),
            },
            true,
        );
        assert_eq!(f.again_claimed("job", at(Some(100))), kept);
        assert_eq!(f.again_claimed("job", earlier_claim), kept);
        let second_push_earlier = ClaimedAt {
            created_ms: Some(800),
            started_ms: Some(850),
        };
        assert_eq!(
            f.again_claimed("job", second_push_earlier),
            Some(completed("job", "second"))
        );
        let no_start = ClaimedAt {
            created_ms: Some(100),
            started_ms: None,
        };
        assert_eq!(f.again_claimed("job", no_start), None);
        assert_eq!(f.again_claimed("other", at(Some(100))), None);
        // A run kept without a start of its own matches no claim.
        f.push(&completed("bare", "x"), ClaimedAt::default(), true);
        assert_eq!(f.again_claimed("bare", ClaimedAt::default()), None);
    }

    #[test]
    fn a_run_not_counted_is_counted_once_when_written_again() {
        let mut f = Finished::default();
        f.push(&completed("counted", "1"), at(Some(1)), true);
        f.push(&completed("elsewhere", "2"), at(Some(2)), false);
        assert!(
            !f.count_once("counted", at(Some(1))),
            "counted when first written"
        );
        assert!(!f.count_once("never-ran", at(Some(2))));
        assert!(f.count_once("elsewhere", at(Some(2))));
        assert!(!f.count_once("elsewhere", at(Some(2))), "once");
        // A second push of the id, counted: writing its result again counts
        // nothing, nor marks the first push's uncounted run.
        f.push(&completed("twice", "a"), at(Some(10)), false);
        f.push(&completed("twice", "b"), at(Some(20)), true);
        assert!(!f.count_once("twice", at(Some(20))));
        assert!(f.count_once("twice", at(Some(10))), "the first push's run");
    }
}
