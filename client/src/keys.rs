//! Every Redis key and channel name of the protocol. No other module or crate
//! builds a key string; change a name here and the whole system follows.
//!
//! Queue names come from [`crate::queue_name`] and contain only `[a-z0-9_]`, so
//! the `:` separators below are never ambiguous.

/// Prefix of a task's details hash; the task id follows.
pub const TASK_DETAILS_PREFIX: &str = "rhai_task_details:";

/// `rhai_tasks:<queue>`: LIST of task ids. Submitters `LPUSH`, workers take
/// from the right, so the queue is FIFO.
pub fn tasks(queue: &str) -> String {
    format!("rhai_tasks:{queue}")
}

/// `rhai_task_details:<task_id>`: HASH of one task (fields in [`crate::fields`]).
pub fn task_details(task_id: &str) -> String {
    format!("{TASK_DETAILS_PREFIX}{task_id}")
}

/// How every processing list's key starts; see [`processing`].
pub const PROCESSING_PREFIX: &str = "rhai_processing:";

/// `rhai_processing:<queue>:<worker_id>`: LIST of the ids a worker has taken
/// off the queue and not yet finished (at most its claim batch). A task is
/// never only in a worker's memory: it is here until its result is written.
pub fn processing(queue: &str, worker_id: &str) -> String {
    format!("{PROCESSING_PREFIX}{queue}:{worker_id}")
}

/// How the ids of the workers of process `pid` start: `<pid>-`. A worker id
/// is this prefix and a random part, unique per process start (the
/// predecessor check of a restart reads a dead process's workers by it).
pub fn worker_id_prefix(pid: u32) -> String {
    format!("{pid}-")
}

/// `rhai_worker_heartbeat:<queue>:<worker_id>`: STRING (last beat, ms since
/// the epoch) with a TTL. Its absence means the worker is dead.
pub fn heartbeat(queue: &str, worker_id: &str) -> String {
    format!("rhai_worker_heartbeat:{queue}:{worker_id}")
}

/// `rhai_workers:<queue>`: SET of the ids of workers that registered for the
/// queue and have not deregistered (or been reaped).
pub fn workers(queue: &str) -> String {
    format!("rhai_workers:{queue}")
}

/// `rhai_stats:<queue>`: HASH of counters: `processed`, `failed`,
/// `lastHeartbeat` (ms since the epoch).
pub fn stats(queue: &str) -> String {
    format!("rhai_stats:{queue}")
}

/// `rhai_queue_owner:<queue>`: STRING, the queue's lease:
/// `<token>|<pid>|<host>|<data dir>` (see [`crate::Lease`]), with the
/// heartbeat's TTL. The holder renews it with each beat, only while it
/// still holds its own lease (the whole value); another database's worker
/// takes it only once it expired, with a fresh token from [`queue_fence`]. A
/// claim by a worker with a lease checks the whole value in Redis, so a worker
/// whose lease was taken
/// claims nothing more. Two circles that share a queue name on one Redis, or
/// two hosts with one circle, never run its tasks at once. Written only by
/// our workers; third-party workers do not need it.
pub fn queue_owner(queue: &str) -> String {
    format!("rhai_queue_owner:{queue}")
}

/// `rhai_gateway_heartbeat:<queue>:<gateway_id>`: STRING
/// `<pid>|<host>|<ws url>` of a process that serves the circle's WebSocket
/// endpoint, with the gateway heartbeat's TTL, refreshed by every beat. Its
/// absence means that gateway is gone (see [`crate::Gateway`]).
pub fn gateway_heartbeat(queue: &str, gateway_id: &str) -> String {
    format!("rhai_gateway_heartbeat:{queue}:{gateway_id}")
}

/// `rhai_gateways:<queue>`: SET of the ids of the gateways that announced
/// themselves for the queue. A gateway removes itself on a clean shutdown;
/// a reader removes a member whose [`gateway_heartbeat`] key is gone.
pub fn gateways(queue: &str) -> String {
    format!("rhai_gateways:{queue}")
}

/// `rhai_queue_fence:<queue>`: STRING counter (never expires), `INCR`ed each
/// time [`queue_owner`] changes hands; the new value is the lease's fencing
/// token. Made, the first time or after a Redis that restarted empty, from
/// Redis' clock in milliseconds, past the tokens a lost counter gave (a
/// counter restored behind, from an older snapshot or a lagging replica
/// promoted, can still give one again).
pub fn queue_fence(queue: &str) -> String {
    format!("rhai_queue_fence:{queue}")
}

/// `rhai_task_replies:<client_id>`: pub/sub channel on which a worker
/// publishes the result of every task that named it in `replyTo`.
pub fn reply_channel(client_id: &str) -> String {
    format!("rhai_task_replies:{client_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_the_original_names() {
        assert_eq!(tasks("alpha_circle"), "rhai_tasks:alpha_circle");
        assert_eq!(task_details("abc"), "rhai_task_details:abc");
        assert_eq!(gateways("alpha"), "rhai_gateways:alpha");
        assert_eq!(
            gateway_heartbeat("alpha", "g1"),
            "rhai_gateway_heartbeat:alpha:g1"
        );
    }
}
