//! What only tests need of a [`Client`] (feature `test-support`): submit a
//! task without a waiter, wait for any task by id, read a task once, count
//! the waiters. Production submits with [`Client::submit_watched`] or
//! [`Client::run_with`], which register their waiter before the push.

use std::time::Duration;

use super::{Client, Landed};
use crate::{Outcome, Result, SubmitOptions};

impl Client {
    /// Writes the task hash and pushes its id (one MULTI/EXEC); returns the
    /// id. Nobody waits for it until [`Client::wait`].
    pub async fn submit(
        &self,
        queue: &str,
        script: &str,
        options: &SubmitOptions,
    ) -> Result<String> {
        let task_id = uuid::Uuid::new_v4().to_string();
        let _landed = self.push(queue, &task_id, script, options).await?;
        Ok(task_id)
    }

    /// Waits for any task to end (one submitted elsewhere too), up to
    /// `timeout`, reading its hash first.
    pub async fn wait(&self, task_id: &str, timeout: Duration) -> Result<Outcome> {
        let (guard, rx) = self.inner.registry.register(task_id);
        let outcome = self
            .await_outcome(
                task_id,
                timeout,
                super::wait::after(timeout),
                rx,
                true,
                Landed::Queued,
            )
            .await;
        drop(guard);
        outcome
    }

    /// Reads the task hash once: its outcome, or `None` while it is not
    /// finished.
    pub async fn check(&self, task_id: &str) -> Result<Option<Outcome>> {
        self.read_outcome(task_id).await
    }

    /// Whether the reply listener is subscribed (its health).
    pub fn listening(&self) -> bool {
        self.inner.health.borrow().up
    }

    /// Waiters currently registered (task ids).
    pub fn waiting(&self) -> usize {
        self.inner.registry.len()
    }
}
