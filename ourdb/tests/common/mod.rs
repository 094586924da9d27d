//! What several OurDB test files read straight off the disk, with the
//! layout of ARCHITECTURE.md ("OurDB on disk").
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The data files of `dir`, in order.
pub fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "odb"))
        .collect();
    v.sort();
    v
}

/// The last data file of `dir`.
pub fn last_data_file(dir: &Path) -> PathBuf {
    data_files(dir).pop().expect("a data file")
}

/// Offset and payload length of each frame of a data file (32-byte header;
/// magic "ODBF", payload length u32, crc u32, payload), up to the first that
/// does not start with the magic. A payload of 8 bytes is a frame without
/// ops: a sync marker.
pub fn frames(path: &Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 32;
    let mut out = Vec::new();
    while at + 12 <= bytes.len() && &bytes[at..at + 4] == b"ODBF" {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push((at as u64, len as u64));
        at += 12 + len;
    }
    out
}

/// A logger that keeps every record at warn level and above, with the
/// thread that logged it (a test binary may run its tests side by side).
pub mod logs {
    use std::sync::Mutex;
    use std::thread::ThreadId;

    struct Capture(Mutex<Vec<(ThreadId, log::Level, String)>>);

    impl log::Log for Capture {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= log::Level::Warn
        }
        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                self.0.lock().unwrap().push((
                    std::thread::current().id(),
                    record.level(),
                    record.args().to_string(),
                ));
            }
        }
        fn flush(&self) {}
    }

    static LOG: Capture = Capture(Mutex::new(Vec::new()));

    /// Installs the logger (once per test binary).
    pub fn capture() {
        let _ = log::set_logger(&LOG);
        log::set_max_level(log::LevelFilter::Warn);
    }

    /// What this thread logged at `level`, in order.
    pub fn logged(level: log::Level) -> Vec<String> {
        let me = std::thread::current().id();
        LOG.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, l, _)| *t == me && *l == level)
            .map(|(_, _, m)| m.clone())
            .collect()
    }
}

/// Sets the soft limit of `resource` (`libc::RLIMIT_*`) of this test
/// process; returns the one before. A write past `RLIMIT_FSIZE` then fails
/// with EFBIG: SIGXFSZ is ignored, so it does not end the process.
#[allow(unsafe_code)]
pub fn set_soft_limit(resource: libc::__rlimit_resource_t, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `signal` installs the ignore disposition (no handler code);
    // the rlimit calls only read or write the `rlimit` passed by pointer,
    // which lives on this stack frame for the whole call.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::getrlimit(resource, &mut old), 0);
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(resource, &new), 0);
    }
    old.rlim_cur
}
