//! One script's transaction: an in-memory overlay of its writes over the
//! circle's OurDB, turned into one [`ourdb::Batch`] when the script succeeds.
//!
//! Invariants:
//! - Reads consult the overlay first, so a script sees its own writes.
//! - Ids for inserts are predicted as `next_id at first insert + inserts so far`;
//!   the batch carries `expect_next_id` so a wrong prediction is a conflict at
//!   commit, never a record under an id the script did not see.
//! - Nothing reaches the database before [`Txn::commit`]; dropping a `Txn`
//!   discards every write.

use std::collections::HashMap;

use ourdb::{Batch, OurDb};

/// A failed database call; the kind tells the engine how to report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnError {
    /// The database refused or failed (missing record, I/O, conflict…).
    Database(String),
    /// A sandbox bound (writes per script, value size).
    Limit(String),
}

#[derive(Debug)]
enum Op {
    Insert(Vec<u8>),
    Update(u32, Vec<u8>),
    Delete(u32),
}

/// Above this many entries a finished run's buffers are freed, not reused.
const KEEP_CAPACITY: usize = 64;

/// What the script has done to one id.
#[derive(Debug)]
enum Pending {
    /// Live, with the versions this script wrote (oldest first) and whether
    /// the database's history lies beneath them.
    Live {
        versions: Vec<usize>,
        inherits: bool,
    },
    /// Deleted by this script.
    Deleted,
}

/// The overlay of one run.
#[derive(Debug)]
pub struct Txn {
    max_writes: usize,
    ops: Vec<Op>,
    pending: HashMap<u32, Pending>,
    /// `next_id` of the database when the script first needed it.
    base_id: Option<u32>,
    inserts: u32,
}

impl Txn {
    /// An empty transaction allowing at most `max_writes` writes.
    pub fn new(max_writes: usize) -> Self {
        Txn {
            max_writes,
            ops: Vec::new(),
            pending: HashMap::new(),
            base_id: None,
            inserts: 0,
        }
    }

    fn base(&mut self, db: &OurDb) -> u32 {
        *self.base_id.get_or_insert_with(|| db.next_id())
    }

    fn check_write(&self) -> Result<(), TxnError> {
        if self.ops.len() >= self.max_writes {
            return Err(TxnError::Limit(format!(
                "script exceeded the limit of {} database writes",
                self.max_writes
            )));
        }
        Ok(())
    }

    /// The id the next insert of this script will get.
    pub fn next_id(&mut self, db: &OurDb) -> Result<u32, TxnError> {
        let base = self.base(db);
        base.checked_add(self.inserts)
            .ok_or_else(|| TxnError::Database("id space exhausted".into()))
    }

    /// Inserts `value`; returns the id it will have once committed.
    pub fn insert(&mut self, db: &OurDb, value: Vec<u8>) -> Result<u32, TxnError> {
        self.check_write()?;
        let id = self.next_id(db)?;
        self.inserts += 1;
        self.ops.push(Op::Insert(value));
        let index = self.ops.len() - 1;
        self.pending.insert(
            id,
            Pending::Live {
                versions: vec![index],
                inherits: false,
            },
        );
        Ok(id)
    }

    /// Replaces a live `id`.
    pub fn update(&mut self, db: &OurDb, id: u32, value: Vec<u8>) -> Result<(), TxnError> {
        self.check_write()?;
        let index = self.ops.len();
        match self.pending.get_mut(&id) {
            Some(Pending::Live { versions, .. }) => versions.push(index),
            Some(Pending::Deleted) => return Err(not_found(id)),
            None => {
                if !db_exists(db, id)? {
                    return Err(not_found(id));
                }
                self.pending.insert(
                    id,
                    Pending::Live {
                        versions: vec![index],
                        inherits: true,
                    },
                );
            }
        }
        self.ops.push(Op::Update(id, value));
        Ok(())
    }

    /// Deletes `id`; returns whether it was live. Deleting a missing id is
    /// not a write.
    pub fn delete(&mut self, db: &OurDb, id: u32) -> Result<bool, TxnError> {
        let live = match self.pending.get(&id) {
            Some(Pending::Live { .. }) => true,
            Some(Pending::Deleted) => false,
            None => db_exists(db, id)?,
        };
        if !live {
            return Ok(false);
        }
        self.check_write()?;
        self.pending.insert(id, Pending::Deleted);
        self.ops.push(Op::Delete(id));
        Ok(true)
    }

    /// The current value of `id` as this script sees it.
    pub fn get(&self, db: &OurDb, id: u32) -> Result<Option<Vec<u8>>, TxnError> {
        match self.pending.get(&id) {
            Some(Pending::Live { versions, .. }) => {
                let last = *versions.last().expect("a live entry has a version");
                Ok(Some(self.value_at(last).to_vec()))
            }
            Some(Pending::Deleted) => Ok(None),
            None => db.get(id).map_err(|e| db_error(db, e)),
        }
    }

    /// Whether `id` is live as this script sees it.
    pub fn exists(&self, db: &OurDb, id: u32) -> Result<bool, TxnError> {
        match self.pending.get(&id) {
            Some(Pending::Live { .. }) => Ok(true),
            Some(Pending::Deleted) => Ok(false),
            None => db_exists(db, id),
        }
    }

    /// Up to `depth` versions of `id`, newest first, this script's included;
    /// a [`TxnError::Limit`] once the stored versions read pass `max_bytes`
    /// (one call reads no more than the run may hold).
    pub fn history(
        &self,
        db: &OurDb,
        id: u32,
        depth: usize,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, TxnError> {
        let stored = |depth: usize| {
            db.history_within(id, depth, max_bytes)
                .map_err(|e| db_error(db, e))?
                .ok_or_else(|| {
                    TxnError::Limit(format!(
                        "db::history of record {id} reads more than the script's memory limit \
                         of {max_bytes} bytes; ask for fewer versions"
                    ))
                })
        };
        match self.pending.get(&id) {
            Some(Pending::Live { versions, inherits }) => {
                let mut out: Vec<Vec<u8>> = versions
                    .iter()
                    .rev()
                    .take(depth)
                    .map(|&i| self.value_at(i).to_vec())
                    .collect();
                if *inherits && out.len() < depth {
                    out.extend(stored(depth - out.len())?);
                }
                Ok(out)
            }
            Some(Pending::Deleted) => Ok(Vec::new()),
            None => stored(depth),
        }
    }

    fn value_at(&self, index: usize) -> &[u8] {
        match &self.ops[index] {
            Op::Insert(v) | Op::Update(_, v) => v,
            Op::Delete(_) => unreachable!("versions only index inserts and updates"),
        }
    }

    /// Starts over for a new run, keeping allocations of a modest size.
    #[inline]
    pub fn reset(&mut self, max_writes: usize) {
        self.max_writes = max_writes;
        self.base_id = None;
        self.inserts = 0;
        if !(self.ops.is_empty() && self.pending.is_empty()) {
            self.discard();
        }
    }

    /// Drops every write, freeing buffers grown past [`KEEP_CAPACITY`].
    fn discard(&mut self) {
        self.ops.clear();
        self.pending.clear();
        if self.ops.capacity() > KEEP_CAPACITY {
            self.ops = Vec::new();
        }
        if self.pending.capacity() > KEEP_CAPACITY {
            self.pending = HashMap::new();
        }
    }

    /// Commits every write as one batch and leaves the transaction empty;
    /// durable when this returns with `sync`, after the next `OurDb::sync`
    /// without it. A script without writes commits nothing.
    #[inline]
    pub fn commit(&mut self, db: &OurDb, sync: bool) -> Result<usize, TxnError> {
        if self.ops.is_empty() {
            return Ok(0);
        }
        self.commit_batch(db, sync)
    }

    /// [`Txn::commit`] of at least one write.
    fn commit_batch(&mut self, db: &OurDb, sync: bool) -> Result<usize, TxnError> {
        let writes = self.ops.len();
        self.pending.clear();
        let mut batch = Batch::new();
        let expected_first = self.base_id;
        if self.inserts > 0 {
            batch.expect_next_id(expected_first.expect("an insert read the base id"));
        }
        for op in self.ops.drain(..) {
            match op {
                Op::Insert(v) => batch.insert(v),
                Op::Update(id, v) => batch.update(id, v),
                Op::Delete(id) => batch.delete(id),
            };
        }
        let committed = if sync {
            db.commit(batch)
        } else {
            db.commit_unsynced(batch)
        };
        let ids = committed.map_err(|e| match e {
            ourdb::Error::ValueTooLarge { size, max } => TxnError::Limit(format!(
                "value of {size} bytes exceeds the database's limit of {max} bytes"
            )),
            ourdb::Error::BatchTooLarge { size } => TxnError::Limit(format!(
                "the script's writes total {size} bytes, more than one database commit can hold"
            )),
            ourdb::Error::Conflict { expected, actual } => TxnError::Database(format!(
                "another writer changed the database during the script (expected next id {expected}, found {actual}); nothing was written"
            )),
            other => db_error(db, other),
        })?;
        if let (Some(first), Some(&got)) = (expected_first, ids.first())
            && got != first
        {
            // expect_next_id makes this impossible; say so loudly if it happens.
            log::error!("ourdb assigned id {got} where {first} was predicted");
        }
        Ok(writes)
    }
}

fn not_found(id: u32) -> TxnError {
    TxnError::Database(format!("record {id} not found"))
}

fn db_exists(db: &OurDb, id: u32) -> Result<bool, TxnError> {
    db.exists(id).map_err(|e| db_error(db, e))
}

fn db_error(db: &OurDb, e: ourdb::Error) -> TxnError {
    TxnError::Database(format!("database error: {}", told(db, &e)))
}

/// `e` as a script (and so the client) is told it: the database's
/// directory, which names the server's file system, shown as `…`. A fault
/// of the storage itself (damaged data, an I/O error) is logged in full,
/// for the operator.
pub(crate) fn told(db: &OurDb, e: &ourdb::Error) -> String {
    let full = e.to_string();
    if matches!(e, ourdb::Error::Corrupt { .. } | ourdb::Error::Io { .. }) {
        log::error!("database {}: {full}", db.path().display());
    }
    let dir = db.path().display().to_string();
    if dir.is_empty() {
        return full;
    }
    full.replace(&dir, "…")
}
