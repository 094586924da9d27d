//! [`Batch`]: an atomic group of writes, and the borrowed form of one write
//! that the commit path takes.
//!
//! Layering: the bottom of the crate (it imports nothing of it); `commit`
//! and `db` use it.

/// One write, borrowed, as the commit path sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OpRef<'a> {
    Insert(&'a [u8]),
    Set(u32, &'a [u8]),
    Update(u32, &'a [u8]),
    Delete(u32),
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Vec<u8>),
    Set(u32, Vec<u8>),
    Update(u32, Vec<u8>),
    Delete(u32),
}

/// An atomic group of writes. See [`OurDb::commit`](crate::OurDb::commit).
///
/// Operations apply in order; the batch is validated as a whole before
/// anything is written, and becomes visible and durable all together or not
/// at all.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let db = ourdb::OurDb::open(dir.path(), ourdb::Config::default())?;
/// let mut batch = ourdb::Batch::new();
/// batch.expect_next_id(1).insert(b"a".to_vec()).insert(b"b".to_vec());
/// batch.update(1, b"a2".to_vec());
/// assert_eq!(db.commit(batch)?, vec![1, 2]);
/// assert_eq!(db.get(1)?, Some(b"a2".to_vec()));
/// # Ok::<(), ourdb::Error>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<Op>,
    expect_next_id: Option<u32>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }
    /// Fail the commit with [`Error::Conflict`](crate::Error::Conflict) unless
    /// the store's next id is `id` when the commit starts.
    pub fn expect_next_id(&mut self, id: u32) -> &mut Self {
        self.expect_next_id = Some(id);
        self
    }
    /// Insert a new record (incremental mode); gets the next id at commit.
    pub fn insert(&mut self, value: Vec<u8>) -> &mut Self {
        self.ops.push(Op::Insert(value));
        self
    }
    /// Create or replace `id` (key-value mode), or replace a live `id` (incremental mode).
    pub fn set(&mut self, id: u32, value: Vec<u8>) -> &mut Self {
        self.ops.push(Op::Set(id, value));
        self
    }
    /// Replace a live `id`; the commit fails with `NotFound` otherwise.
    pub fn update(&mut self, id: u32, value: Vec<u8>) -> &mut Self {
        self.ops.push(Op::Update(id, value));
        self
    }
    /// Delete `id` (no-op when it is not live).
    pub fn delete(&mut self, id: u32) -> &mut Self {
        self.ops.push(Op::Delete(id));
        self
    }
    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn expected_next_id(&self) -> Option<u32> {
        self.expect_next_id
    }

    pub(crate) fn op_refs(&self) -> impl Iterator<Item = OpRef<'_>> {
        self.ops.iter().map(|op| match op {
            Op::Insert(v) => OpRef::Insert(v),
            Op::Set(id, v) => OpRef::Set(*id, v),
            Op::Update(id, v) => OpRef::Update(*id, v),
            Op::Delete(id) => OpRef::Delete(*id),
        })
    }
}
