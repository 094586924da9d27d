//! A compaction copies a record with a long history of large values in
//! bounded memory: it never holds all of the record's kept versions at
//! once. (Its own test binary: the allocator below counts every
//! allocation of the process.)

use ourdb::{Config, Durability, OurDb};
use peakmem_alloc::{INSTRUMENTED_SYSTEM, PeakMemAlloc, PeakMemAllocTrait};

/// The system allocator, counting the peak of the bytes in use.
#[global_allocator]
static ALLOCATOR: &PeakMemAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

#[test]
fn a_record_keeping_sixteen_versions_of_a_mebibyte_is_compacted_in_a_few_mebibytes() {
    const VALUE: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        durability: Durability::Flush,
        max_file_size: 256 << 20,
        max_value_size: VALUE,
        history: 16,
        ..Config::default()
    };
    let db = OurDb::open(dir.path(), cfg.clone()).unwrap();
    let version = |v: u8| vec![v; VALUE];
    let id = db.insert(&version(0)).unwrap();
    for v in 1..24 {
        db.update(id, &version(v)).unwrap();
    }
    ALLOCATOR.reset_peak_memory();
    db.compact().unwrap();
    let peak_mib = ALLOCATOR.get_peak_memory() as f64 / f64::from(1 << 20);
    println!("compacting 16 kept versions of 1 MiB took at most {peak_mib:.2} MiB more");
    // Its kept versions alone are 16 MiB. The copy holds at most 1 MiB of
    // them, one more value read again, a frame being built and sealed
    // (about 1 MiB each) and its write buffer (4 MiB and a frame).
    assert!(peak_mib < 12.0, "compaction held {peak_mib:.2} MiB");
    let want: Vec<Vec<u8>> = (8..24).rev().map(version).collect();
    assert_eq!(db.history(id, usize::MAX).unwrap(), want);
    db.close().unwrap();
    let db = OurDb::open(dir.path(), cfg).unwrap();
    assert_eq!(db.history(id, usize::MAX).unwrap(), want);
}
