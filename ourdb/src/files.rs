//! The database directory: its lock and its numbered data files.
//!
//! Layering: at the bottom, above `format` (it writes the file header);
//! everything that opens, creates or names a file goes through here.
//!
//! ```text
//! <dir>/LOCK                 held with an exclusive flock while open, and
//!                            so is <dir> itself (its own fd)
//! <dir>/data-00000000.odb    data files, numbered without gaps from 0 or
//! <dir>/data-00000001.odb    from the last generation start (compaction)
//! <dir>/checkpoint           the index as of a position in the data files
//! <dir>/data-00000002.tmp    data file 2 being created,
//! <dir>/checkpoint.tmp       a checkpoint being written,
//! <dir>/compaction.tmp       a compaction's output being written
//!                            (each removed on open)
//! ```
//!
//! A data file is created under a `.tmp` name with its header written and
//! synced, then renamed into place and the directory synced, so every data
//! file that exists has a complete header. The checkpoint and compaction's
//! output are written the same way.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Mode;
use crate::error::{Error, Result};
use crate::format::{FileHeader, encode_file_header};

const LOCK_NAME: &str = "LOCK";
const DATA_PREFIX: &str = "data-";
const DATA_SUFFIX: &str = ".odb";
const CHECKPOINT_NAME: &str = "checkpoint";
const COMPACTION_TMP: &str = "compaction.tmp";

/// One data file, shared by the writer and readers (positional I/O only).
#[derive(Debug)]
pub(crate) struct DataFile {
    pub path: PathBuf,
    pub file: File,
}

/// Path of data file `n` in `dir`.
pub(crate) fn data_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{DATA_PREFIX}{n:08}{DATA_SUFFIX}"))
}

/// How long [`lock_dir`] waits for a lock held elsewhere before it gives up:
/// a probe ([`in_use`]) holds it for a moment, and so does a handle that is
/// closing as another opens.
const LOCK_PATIENCE: Duration = Duration::from_millis(100);

/// An open database's hold on its directory: an exclusive flock on
/// `<dir>/LOCK` and one on the directory itself, so deleting the LOCK file
/// while the database is open does not let a second handle in. Both are
/// released when this is dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
    /// `None` on a filesystem without flock on directories: the LOCK file
    /// alone guards the database there.
    _dir: Option<File>,
}

/// Creates `dir` if needed and takes its exclusive locks (the LOCK file's,
/// then the directory's), waiting up to [`LOCK_PATIENCE`] for a holder to
/// let them go.
pub(crate) fn lock_dir(dir: &Path) -> Result<DirLock> {
    fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating database directory {}", dir.display()), e))?;
    let path = dir.join(LOCK_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(format!("opening lock file {}", path.display()), e))?;
    let deadline = Instant::now() + LOCK_PATIENCE;
    let locked = || Error::Locked {
        dir: dir.to_path_buf(),
    };
    match lock_by(&file, deadline) {
        Ok(true) => {}
        Ok(false) => return Err(locked()),
        Err(e) => return Err(Error::io(format!("locking {}", path.display()), e)),
    }
    let dir_lock = File::open(dir).and_then(|d| lock_by(&d, deadline).map(|got| (d, got)));
    let held = match dir_lock {
        Ok((d, true)) => Some(d),
        Ok((_, false)) => return Err(locked()),
        Err(e) => {
            log::warn!(
                "cannot flock database directory {} itself ({e}); only {} guards it, \
                 so deleting that file while the database is open would let a second \
                 handle open it",
                dir.display(),
                path.display()
            );
            None
        }
    };
    Ok(DirLock {
        _file: file,
        _dir: held,
    })
}

/// Takes `file`'s exclusive flock, trying until `deadline`: `Ok(false)`
/// when another holder still has it then.
fn lock_by(file: &File, deadline: Instant) -> std::io::Result<bool> {
    loop {
        match fs4::FileExt::try_lock(file) {
            Ok(()) => return Ok(true),
            Err(fs4::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(fs4::TryLockError::WouldBlock) => return Ok(false),
            Err(fs4::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Whether another handle (in this process or another) holds either of
/// `dir`'s locks ([`DirLock`]): its database is open there. A directory
/// that does not exist is not in use. Takes each free lock for a moment
/// ([`lock_dir`] waits that moment out).
pub(crate) fn in_use(dir: &Path) -> Result<bool> {
    let path = dir.join(LOCK_NAME);
    // Held until the directory is probed too, like an open holds both.
    let _file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => match fs4::FileExt::try_lock(&file) {
            Ok(()) => Some(file),
            Err(fs4::TryLockError::WouldBlock) => return Ok(true),
            Err(fs4::TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", path.display()), e));
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(Error::io(
                format!("opening lock file {}", path.display()),
                e,
            ));
        }
    };
    // A directory that cannot be opened or flocked has no directory lock
    // to find (an open falls back to the LOCK file alone there).
    let Ok(d) = File::open(dir) else {
        return Ok(false);
    };
    Ok(matches!(
        fs4::FileExt::try_lock(&d),
        Err(fs4::TryLockError::WouldBlock)
    ))
}

/// Removes the `.tmp` files of writes that did not finish: a data file
/// being created, a checkpoint or a compaction's output being written.
pub(crate) fn remove_temp_files(dir: &Path) -> Result<()> {
    for entry in read_dir(dir)? {
        let path = entry?;
        if path.extension().is_some_and(|e| e == "tmp") {
            log::warn!("removing {} {}", temp_file_kind(&path), path.display());
            fs::remove_file(&path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        }
    }
    Ok(())
}

/// What a `.tmp` file in the directory is, by its name (see
/// [`prepare_data_file`], [`write_atomically`], [`compaction_tmp_path`]).
fn temp_file_kind(path: &Path) -> &'static str {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name == COMPACTION_TMP {
        "unfinished compaction output"
    } else if path.file_stem() == Some(CHECKPOINT_NAME.as_ref()) {
        "unfinished checkpoint"
    } else if name.starts_with(DATA_PREFIX) {
        "unfinished data file"
    } else {
        "leftover temporary file"
    }
}

fn read_dir(dir: &Path) -> Result<impl Iterator<Item = Result<PathBuf>>> {
    let ctx = dir.display().to_string();
    let rd = fs::read_dir(dir).map_err(|e| Error::io(format!("listing {ctx}"), e))?;
    Ok(rd.map(move |e| {
        e.map(|e| e.path())
            .map_err(|e| Error::io(format!("listing {ctx}"), e))
    }))
}

/// Path of the checkpoint in `dir`.
pub(crate) fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_NAME)
}

/// Removes the checkpoint of `dir`, durably.
pub(crate) fn remove_checkpoint(dir: &Path) -> Result<()> {
    let path = checkpoint_path(dir);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

/// Path compaction writes its output to before the output gets a number.
pub(crate) fn compaction_tmp_path(dir: &Path) -> PathBuf {
    dir.join(COMPACTION_TMP)
}

/// Numbers of the data files in `dir`, ascending (gaps are checked by
/// [`check_numbering`] once superseded files are known).
pub(crate) fn list_data_files(dir: &Path) -> Result<Vec<u32>> {
    let mut nums = Vec::new();
    for path in read_dir(dir)? {
        let path = path?;
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(num) = name
            .strip_prefix(DATA_PREFIX)
            .and_then(|n| n.strip_suffix(DATA_SUFFIX))
        {
            let n: u32 = num.parse().map_err(|_| {
                Error::corrupt(&path, 0, "data file name does not hold a file number")
            })?;
            nums.push(n);
        }
    }
    nums.sort_unstable();
    Ok(nums)
}

/// Checks that `nums` runs from `first` upwards without a gap; the error
/// names the first missing file.
pub(crate) fn check_numbering(dir: &Path, nums: &[u32], first: u32) -> Result<()> {
    for (i, &have) in nums.iter().enumerate() {
        let want = first + i as u32;
        if have != want {
            return Err(Error::corrupt(
                &data_path(dir, want),
                0,
                "data file is missing (numbering has a gap)",
            ));
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` crash-safely: a `.tmp` file, fsynced, renamed
/// over `path`, the directory fsynced. A crash leaves the old or the new file.
/// A write that fails removes the `.tmp`: on a full disk it holds the room
/// the commits need.
pub(crate) fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f =
        File::create(&tmp).map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e));
    if let Err(e) = written {
        drop(f);
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    install(dir, &tmp, path)
}

/// Renames `from` to `to` and makes the rename durable.
pub(crate) fn install(dir: &Path, from: &Path, to: &Path) -> Result<()> {
    rename(from, to)?;
    sync_dir(dir)
}

/// Renames `from` to `to` (durable only once the directory is synced).
pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| {
        Error::io(
            format!("renaming {} to {}", from.display(), to.display()),
            e,
        )
    })
}

/// Removes data files a generation start supersedes, then syncs the directory.
pub(crate) fn remove_data_files(dir: &Path, nums: impl IntoIterator<Item = u32>) -> Result<()> {
    for n in nums {
        let path = data_path(dir, n);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }
    sync_dir(dir)
}

/// Creates data file `n` with its header, atomically, and returns it open for
/// reading and writing. `sync_markers`: its writer writes sync markers (the
/// header says so, see `format`).
pub(crate) fn create_data_file(
    dir: &Path,
    n: u32,
    mode: Mode,
    prev_len: u64,
    sync_markers: bool,
) -> Result<File> {
    let (f, tmp) = prepare_data_file(dir, n, mode, prev_len, sync_markers)?;
    install(dir, &tmp, &data_path(dir, n))?;
    Ok(f)
}

/// Writes data file `n`'s header, synced, under its `.tmp` name (which open
/// deletes); returns the file and that name, for [`install`] to put in place.
pub(crate) fn prepare_data_file(
    dir: &Path,
    n: u32,
    mode: Mode,
    prev_len: u64,
    sync_markers: bool,
) -> Result<(File, std::path::PathBuf)> {
    let tmp = data_path(dir, n).with_extension("tmp");
    let ctx = |what: &str| format!("{what} data file {}", tmp.display());
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io(ctx("creating"), e))?;
    f.write_all(&encode_file_header(FileHeader {
        mode,
        file_no: n,
        prev_len,
        generation_start: false,
        sync_markers,
    }))
    .map_err(|e| Error::io(ctx("writing header of"), e))?;
    f.sync_all().map_err(|e| Error::io(ctx("syncing"), e))?;
    Ok((f, tmp))
}

/// Opens an existing data file for reading and writing.
pub(crate) fn open_data_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening data file {}", path.display()), e))
}

/// Makes file creations and renames in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}
