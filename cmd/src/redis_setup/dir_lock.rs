//! The managed redis-server's directory is one orchestrator's: it holds an
//! exclusive lock on `<data-dir>/redis/orchestrator.lock` while it manages
//! the server there, so that a second orchestrator on the same data dir (on
//! another `--redis-url` port) starts no second server on the same
//! append-only file ([`DirInUse`]); on the same address it uses the first's
//! server once it answers (`wait_other`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The lock file in the managed server's directory.
const DIR_LOCK: &str = "orchestrator.lock";

/// The managed server's directory is another orchestrator's: its
/// redis-server keeps its append-only file there.
#[derive(Debug)]
pub struct DirInUse {
    /// The directory.
    pub dir: PathBuf,
    /// The address the other orchestrator's server listens on, as its
    /// lock file says (empty when it does not).
    pub addr: String,
}

impl std::fmt::Display for DirInUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is in use by the managed redis-server of another circles_orchestrator with \
             the same data dir",
            self.dir.display()
        )?;
        if !self.addr.is_empty() {
            write!(f, " (it listens on {})", self.addr)?;
        }
        f.write_str(
            "; two redis-servers would write one append-only file. Fix: pass that \
             orchestrator's --redis-url to use its Redis, or pass another --data-dir",
        )
    }
}

impl std::error::Error for DirInUse {}

/// Takes the exclusive lock of the managed server's directory `dir` and
/// writes `addr` in its lock file (for the message of a second one).
pub(super) fn lock_dir(dir: &Path, addr: SocketAddr) -> anyhow::Result<std::fs::File> {
    let path = dir.join(DIR_LOCK);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => {
            // Only for messages: a failed write leaves the lock held.
            let _ = file
                .set_len(0)
                .and_then(|()| (&file).write_all(addr.to_string().as_bytes()));
            Ok(file)
        }
        Err(fs4::TryLockError::WouldBlock) => {
            // The holder writes its address right after it took the lock.
            let deadline = Instant::now() + Duration::from_secs(1);
            let holder = loop {
                let mut text = String::new();
                let _ = (&file).seek(SeekFrom::Start(0));
                let _ = (&file).take(64).read_to_string(&mut text);
                let text: String = text.trim().chars().filter(|c| !c.is_control()).collect();
                if !text.is_empty() || Instant::now() > deadline {
                    break text;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            Err(DirInUse {
                dir: dir.to_path_buf(),
                addr: holder,
            }
            .into())
        }
        Err(fs4::TryLockError::Error(e)) => {
            Err(anyhow::Error::new(e).context(format!("cannot lock {}", path.display())))
        }
    }
}

/// The directory of the lock file `lock` ([`lock_dir`]) where it is now:
/// renamed, or a directory above it (the working directory of a relative
/// `--data-dir`), as `/proc` names the open file; `dir`, the path resolved
/// at start, where that cannot be read.
pub(super) fn dir_now(lock: &std::fs::File, dir: &Path) -> PathBuf {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::read_link(format!("/proc/self/fd/{}", lock.as_raw_fd()));
    let file = file.unwrap_or_default();
    let now = file.parent().filter(|now| now.is_dir());
    now.map_or_else(|| dir.to_path_buf(), Path::to_path_buf)
}
