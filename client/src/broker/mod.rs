//! The worker's side of the protocol: take, claim, finish, beat, reap.
//!
//! The `worker` crate drives these operations; the key names and scripts stay
//! in this crate. Two connections per worker: [`WorkerBroker`] for short
//! commands and [`BlockingPopper`] for `BLMOVE` alone (a blocking command
//! never shares a connection with other traffic).
//!
//! Files: `types` (what goes in and out: [`Claim`], [`ClaimedTask`],
//! [`BrokerOptions`]), `claim` (reading a claim script's reply, shared by
//! both connections), `worker` ([`WorkerBroker`]), `batch` (its batched claim and
//! finish), `popper`
//! ([`BlockingPopper`]). A finished task is reported as the same
//! [`crate::Outcome`] a submitter reads back.

mod batch;
mod claim;
mod popper;
mod types;
mod worker;

pub(crate) use claim::{Parsed, RawClaim, parse_claim, shown_reason, utf8};
pub use popper::BlockingPopper;
pub use types::{
    BatchFinish, BrokerOptions, Carried, Claim, ClaimedAt, ClaimedTask, Fence, MAX_CLAIM_BATCH,
    WORKER_LOST_MESSAGE,
};
pub use worker::WorkerBroker;
