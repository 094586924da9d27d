//! The thread that writes the log. A line logged is queued here and written
//! by this thread, never by the thread that logged it: a stderr nobody reads
//! (a pipe whose reader stopped reading, a terminal stopped with Ctrl-S, a
//! stalled journal) or a log file on a slow disk holds this thread alone,
//! not a circle's worker nor the async runtime. The queue holds at most
//! [`CAPACITY`] bytes of lines; a line that finds it full is dropped and
//! counted, and once a write goes through again the count is reported
//! (`on_dropped`). [`Queue::flush`] waits, bounded, until every queued line
//! is written (at exit).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The most bytes of lines waiting to be written: 4 MiB, some 20,000 lines,
/// minutes of a busy orchestrator's `info` lines.
pub const CAPACITY: usize = 4 << 20;

/// Lines waiting for the writer thread.
pub struct Queue {
    capacity: usize,
    state: Mutex<State>,
    /// A line was queued (the writer waits on it).
    queued: Condvar,
    /// A batch was written (`flush` waits on it).
    written: Condvar,
}

#[derive(Default)]
struct State {
    lines: VecDeque<Vec<u8>>,
    /// Bytes queued or being written.
    bytes: usize,
    /// Lines dropped since the writer last took a batch.
    dropped: u64,
    /// The writer holds a batch it has not finished writing.
    writing: bool,
}

impl Queue {
    /// An empty queue that holds at most `capacity` bytes of lines.
    pub fn new(capacity: usize) -> Queue {
        Queue {
            capacity,
            state: Mutex::new(State::default()),
            queued: Condvar::new(),
            written: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `line`, or drops it when it does not fit beside the lines
    /// waiting (a line longer than the capacity is queued only alone).
    /// Never blocks on the destination.
    pub fn push(&self, line: &[u8]) {
        let mut state = self.lock();
        if state.bytes > 0 && state.bytes + line.len() > self.capacity {
            state.dropped += 1;
            return;
        }
        state.bytes += line.len();
        state.lines.push_back(line.to_vec());
        drop(state);
        self.queued.notify_one();
    }

    /// The writer thread's loop: writes every queued line to `out`, in
    /// order, batch by batch; after a batch taken with lines dropped before
    /// it, calls `on_dropped` with their count. Write errors are ignored,
    /// as a logger must (a reader gone away, a full disk). Never returns.
    pub fn write_to(&self, out: &mut dyn Write, on_dropped: &dyn Fn(u64)) -> ! {
        loop {
            let (batch, dropped) = {
                let mut state = self.lock();
                while state.lines.is_empty() {
                    state = self
                        .queued
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                state.writing = true;
                let dropped = std::mem::take(&mut state.dropped);
                (std::mem::take(&mut state.lines), dropped)
            };
            let mut bytes = 0;
            for line in &batch {
                let _ = out.write_all(line);
                bytes += line.len();
            }
            let _ = out.flush();
            self.lock().bytes -= bytes;
            // After the batch's room is given back, so that the report
            // finds room (or, dropped too, counts in the next one).
            if dropped > 0 {
                on_dropped(dropped);
            }
            self.lock().writing = false;
            self.written.notify_all();
        }
    }

    /// Waits until every line queued so far is written, at most `timeout`
    /// (a destination that blocks keeps its lines). Returns whether it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !state.lines.is_empty() || state.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .written
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use super::*;

    /// A pipe whose 64 KiB are written already and not read: the next write
    /// blocks until the test reads.
    fn full_pipe() -> (std::fs::File, std::fs::File) {
        let (r, w) = rustix::pipe::pipe().expect("pipe");
        let mut w = std::fs::File::from(w);
        w.write_all(&[b'.'; 65536]).expect("fill the pipe");
        (std::fs::File::from(r), w)
    }

    /// A writer thread on `queue` into `out`; a dropped count becomes a
    /// line of its own, as the logger's warning does.
    fn writer(queue: &Arc<Queue>, mut out: std::fs::File) {
        let q = Arc::clone(queue);
        std::thread::spawn(move || {
            let notice = |n: u64| q.push(format!("dropped {n}\n").as_bytes());
            q.write_to(&mut out, &notice)
        });
    }

    /// Reads the 64 KiB of filler from `r` (the writer goes on), waits until
    /// the queue is written, and returns what the writer wrote.
    fn written(mut r: std::fs::File, queue: &Queue) -> String {
        let mut filler = vec![0; 65536];
        r.read_exact(&mut filler).expect("the filler");
        assert!(queue.flush(Duration::from_secs(10)), "written once read");
        // All of it sits in the pipe now, less than one read's worth.
        let mut buf = vec![0; 65536];
        let n = r.read(&mut buf).expect("read");
        String::from_utf8(buf[..n].to_vec()).expect("utf-8")
    }

    #[test]
    fn a_destination_that_blocks_never_blocks_the_thread_that_logs() {
        let queue = Arc::new(Queue::new(1 << 20));
        let (r, w) = full_pipe();
        writer(&queue, w);
        let started = Instant::now();
        for i in 0..1000 {
            queue.push(format!("line {i}\n").as_bytes());
        }
        // The lines wait in the queue, all of them: far below the capacity.
        assert!(
            !queue.flush(Duration::from_millis(100)),
            "nothing could be written yet"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "pushing took {:?}",
            started.elapsed()
        );
        // The reader comes back: every line, in order, none dropped.
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(written(r, &queue), expected);
    }

    #[test]
    fn a_full_queue_drops_the_newest_lines_and_says_how_many_once_writing_goes_on() {
        // Room for 10 lines of 8 bytes beside the one being written.
        let queue = Arc::new(Queue::new(88));
        let (r, w) = full_pipe();
        writer(&queue, w);
        queue.push(b"first 0\n");
        // The writer takes the first line and blocks writing it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !queue.lock().writing {
            assert!(Instant::now() < deadline, "the writer never took the line");
            std::thread::sleep(Duration::from_millis(5));
        }
        for i in 0..25 {
            queue.push(format!("line {i:02}\n").as_bytes());
        }
        let kept: String = (0..10).map(|i| format!("line {i:02}\n")).collect();
        assert_eq!(written(r, &queue), format!("first 0\n{kept}dropped 15\n"));
    }

    #[test]
    fn a_line_longer_than_the_capacity_is_written_when_it_comes_alone() {
        let queue = Arc::new(Queue::new(16));
        let (r, w) = full_pipe();
        writer(&queue, w);
        let long = format!("{}\n", "x".repeat(100));
        queue.push(long.as_bytes());
        assert_eq!(written(r, &queue), long);
    }
}
