//! env_logger set-up. Logs go to stderr, except in live mode where they go to a
//! file (default `<data-dir>/orchestrator.log`) so they can never corrupt the
//! table. `RUST_LOG` works as usual; the default shows our crates at `info`
//! and everything else at `warn`.
//!
//! The live-mode file is opened for appending, so `logrotate`'s
//! `copytruncate` works, and [`reopen`] (each SIGHUP) opens its path again,
//! so `logrotate`'s default of moving the file and signalling works too.
//!
//! Lines are written by a thread of their own ([`queue`]): a stderr nobody
//! reads or a slow log file holds that thread, never one that logs. At exit
//! [`flush`] writes what is queued, waiting at most a second, and
//! [`tell_at_exit`] the error the process exits with, as long again.
//!
//! Two formats (`--log-format`): `text`, env_logger's own line (the ids a
//! line is about are in its message), and `json`, one object per line for
//! log shippers ([`json_line`]): `timestamp` (RFC 3339, UTC, milliseconds),
//! `level`, `target`, `message`, then every key-value pair the call attached
//! (`circle`, `queue`, `task`, `worker`, … where known).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use log::kv::{Error as KvError, Key, Value, VisitSource};

pub mod queue;

const DEFAULT_FILTER: &str =
    "warn,circles_orchestrator=info,ourdb=info,engine=info,client=info,worker=info,server_ws=info";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// env_logger's line: `[timestamp LEVEL target] message`.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, message and the
    /// line's fields (`circle`, `task`, …).
    Json,
}

/// `TERM=dumb`: a terminal that cannot move its cursor nor switch screens
/// (Emacs `M-x shell`), which gets the plain output and no colours.
pub fn dumb_terminal() -> bool {
    std::env::var_os("TERM").is_some_and(|t| t == "dumb")
}

/// Installs the logger; `file` sends logs there instead of stderr.
pub fn init(file: Option<&Path>, format: LogFormat) -> anyhow::Result<()> {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_FILTER));
    match format {
        // The message already names what the line is about; the fields would
        // say it twice.
        LogFormat::Text => {
            builder.format_key_values(env_logger::fmt::hidden_kv_format);
        }
        LogFormat::Json => {
            builder.format(|buf, record| {
                let line = json_line(&buf.timestamp_millis().to_string(), record);
                writeln!(buf, "{line}")
            });
        }
    }
    // A dumb terminal shows colour codes as text (env_logger colours a
    // terminal's lines, also a dumb one when `CI` is set).
    if dumb_terminal() {
        builder.write_style(env_logger::WriteStyle::Never);
    } else if file.is_none() && std::env::var_os("RUST_LOG_STYLE").is_none_or(|s| s == "auto") {
        // The lines reach stderr through the queue, which env_logger takes
        // for a pipe it never colours: its own choice for stderr, made here.
        builder.write_style(anstream::AutoStream::choice(&std::io::stderr()).into());
    }
    let out: Box<dyn Write + Send> = if let Some(path) = file {
        if let Some(parent) = path.parent() {
            // A file in the way is a usage error naming it, as for the data dir.
            crate::circles::create_dir(parent, "the log directory")?;
        }
        if path.is_dir() {
            return Err(crate::UsageError(format!(
                "the log file {} is a directory; give --log-file a file in it",
                path.display()
            ))
            .into());
        }
        let f =
            open(path).with_context(|| format!("cannot open the log file {}", path.display()))?;
        let file = LOG_FILE.get_or_init(|| LogFile {
            path: path.to_owned(),
            file: Mutex::new(f),
        });
        Box::new(Appender(file))
    } else {
        Box::new(std::io::stderr())
    };
    builder.target(env_logger::Target::Pipe(Box::new(Queued(start_writer(
        out,
    )?))));
    builder.try_init().context("cannot install the logger")?;
    log_panics();
    Ok(())
}

static QUEUE: OnceLock<queue::Queue> = OnceLock::new();

/// Starts the thread that writes the queued lines to `out`.
fn start_writer(mut out: Box<dyn Write + Send>) -> anyhow::Result<&'static queue::Queue> {
    let queue = QUEUE.get_or_init(|| queue::Queue::new(queue::CAPACITY));
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            let report = |n: u64| {
                log::warn!(
                    "{n} log lines were dropped: their destination blocked (stderr not \
                     read, or a slow log file) while {} MiB of lines waited",
                    queue::CAPACITY >> 20
                );
            };
            queue.write_to(&mut out, &report)
        })
        .context("cannot start the log's writer thread")?;
    Ok(queue)
}

/// How long the exit waits for the log's last lines, and then for its
/// error message, when their destination blocks.
const EXIT_BOUND: Duration = Duration::from_secs(1);

/// Writes what is queued for the log, waiting at most [`EXIT_BOUND`] for a
/// destination that blocks; without a logger, nothing.
pub fn flush() {
    if let Some(queue) = QUEUE.get() {
        queue.flush(EXIT_BOUND);
    }
}

/// Writes `text` (the error a command exits with) to stderr, waiting at
/// most [`EXIT_BOUND`]: a stderr nobody reads (a full pipe, a stalled
/// journal) holds the log's writer thread in its write, and stderr's lock
/// with it, so the write is left to a thread of its own, which the exit
/// ends.
pub fn tell_at_exit(text: &str) {
    let (done, written) = std::sync::mpsc::channel();
    let message = text.to_owned();
    let telling = std::thread::Builder::new()
        .name("exit-message".into())
        .spawn(move || {
            crate::stdout::tell(&message);
            let _ = done.send(());
        });
    match telling {
        Ok(_) => {
            let _ = written.recv_timeout(EXIT_BOUND);
        }
        Err(_) => crate::stdout::tell(text),
    }
}

/// The logger's writer: each line env_logger formats goes to the queue.
struct Queued(&'static queue::Queue);

impl Write for Queued {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The live-mode log file and the path it is reopened at.
struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

static LOG_FILE: OnceLock<LogFile> = OnceLock::new();

fn open(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The logger's writer: whichever file [`reopen`] last opened.
struct Appender(&'static LogFile);

impl Write for Appender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut file = self.0.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let mut file = self.0.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut file = self.0.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.flush()
    }
}

/// Opens the live-mode log file's path again, once the lines queued so far
/// are written (after `logrotate` moved the file away, lines go to a new
/// file there; a directory deleted with it is
/// made again, as at start); without a log file, nothing. A path that
/// cannot be opened keeps the file it had, and says so there.
pub fn reopen() {
    let Some(log) = LOG_FILE.get() else {
        return;
    };
    // The lines logged before the signal go to the file they were logged
    // for (a file that blocks holds them back at most this long).
    if let Some(queue) = QUEUE.get() {
        queue.flush(Duration::from_millis(500));
    }
    let opened = match open(&log.path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => log
            .path
            .parent()
            .map_or(Err(e.into()), |dir| {
                crate::circles::create_dir(dir, "the log directory")
            })
            .and_then(|()| Ok(open(&log.path)?)),
        opened => opened.map_err(anyhow::Error::from),
    };
    match opened {
        Ok(new) => {
            *log.file.lock().unwrap_or_else(PoisonError::into_inner) = new;
            log::info!("log file {} opened again", log.path.display());
        }
        Err(e) => log::warn!(
            "cannot open the log file {} again: {e}; logs go on to the file it had",
            log.path.display()
        ),
    }
}

/// Sends the panics of every thread but `main` to the log, one line each
/// (JSON lines stay JSON, and `RUST_BACKTRACE`'s backtraces stay out of
/// it): one inside a script's run (Rhai or std panicking on what a script
/// did, such as a `sort` comparer that is not a total order; caught, it
/// fails that script alone) at debug level, any other at error level (its
/// component is restarted). A panic of `main` ends the program and is
/// printed as usual.
fn log_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("main") {
            // The lines logged before it come first.
            flush();
            previous(info);
        } else if engine::script_running() {
            log::debug!("a script's run panicked (caught: that script fails): {info}");
        } else {
            log::error!("panic (the component is restarted): {info}");
        }
    }));
}

/// One JSON log line (without its newline): the fixed fields first, then the
/// record's key-value pairs (a pair never replaces a fixed field). Values are
/// written as text except numbers and booleans; serde_json escapes them.
pub fn json_line(timestamp: &str, record: &log::Record<'_>) -> String {
    let mut object = serde_json::Map::new();
    object.insert("timestamp".into(), timestamp.into());
    object.insert("level".into(), record.level().as_str().into());
    object.insert("target".into(), record.target().into());
    object.insert("message".into(), record.args().to_string().into());
    let mut fields = Fields(&mut object);
    // A visitor that never fails: the Result is always Ok.
    let _ = record.key_values().visit(&mut fields);
    serde_json::Value::Object(object).to_string()
}

struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), KvError> {
        let value = if let Some(n) = value.to_u64() {
            n.into()
        } else if let Some(n) = value.to_i64() {
            n.into()
        } else if let Some(b) = value.to_bool() {
            b.into()
        } else {
            value.to_string().into()
        };
        self.0.entry(key.as_str().to_string()).or_insert(value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(kvs: &[(&str, &str)], message: std::fmt::Arguments<'_>) -> serde_json::Value {
        let record = log::Record::builder()
            .level(log::Level::Warn)
            .target("worker::take")
            .args(message)
            .key_values(&kvs)
            .build();
        serde_json::from_str(&json_line("2026-01-02T03:04:05.678Z", &record))
            .expect("a log line is JSON")
    }

    #[test]
    fn a_json_line_has_the_fixed_fields_and_the_records_pairs_escaped() {
        let v = line(
            &[("task", "t-1"), ("circle", "Al\"pha\n")],
            format_args!("task {} \"quoted\"\n", "t-1"),
        );
        assert_eq!(v["timestamp"], "2026-01-02T03:04:05.678Z");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "worker::take");
        assert_eq!(v["message"], "task t-1 \"quoted\"\n");
        assert_eq!(v["task"], "t-1");
        assert_eq!(v["circle"], "Al\"pha\n");
    }

    #[test]
    fn a_pair_never_replaces_a_fixed_field() {
        let v = line(&[("message", "forged")], format_args!("real"));
        assert_eq!(v["message"], "real");
    }
}
