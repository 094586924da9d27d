//! Memory follows the records stored, not a configured maximum: many open
//! databases are cheap. (Its own test binary, so no other test's
//! allocations blur the RSS reading.)

use ourdb::{Config, OurDb};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[test]
fn two_hundred_open_empty_databases_cost_less_than_fifty_mib() {
    let root = tempfile::tempdir().unwrap();
    let before = rss_kib();
    let dbs: Vec<OurDb> = (0..200)
        .map(|i| OurDb::open(root.path().join(i.to_string()), Config::default()).unwrap())
        .collect();
    for db in &dbs {
        assert_eq!(db.get(1).unwrap(), None);
    }
    let grown_mib = rss_kib().saturating_sub(before) as f64 / 1024.0;
    println!("200 open empty databases added {grown_mib:.2} MiB of RSS");
    assert!(
        grown_mib < 50.0,
        "200 empty databases took {grown_mib:.1} MiB"
    );
}
