//! systemd's service notifications (`Type=notify` or `Type=notify-reload`,
//! `WatchdogSec=`), spoken by hand: one datagram per state change to the
//! socket `NOTIFY_SOCKET` names (a path, or an abstract name written `@…`).
//!
//! The orchestrator says `READY=1` once every circle of the file started
//! (its ports bound, its workers running or standing by), `RELOADING=1`
//! (with `MONOTONIC_USEC`) when a reload starts and `READY=1` again when it
//! ends, applied or refused, and `STOPPING=1` when a stop signal came; each
//! `READY=1` carries a `STATUS=` line. With `WATCHDOG_USEC` set (for this
//! process: `WATCHDOG_PID` absent or its pid) the async runtime sends
//! `WATCHDOG=1` every half of it, so a runtime that no longer runs its
//! tasks gets the process restarted.
//!
//! Without `NOTIFY_SOCKET` nothing is sent. A socket that cannot be written
//! is logged once, and the service runs on. The managed redis-server is
//! started without these variables (`redis_setup`): it would otherwise speak
//! for this process.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The variables that are this process's alone: a child must not see them.
pub const VARIABLES: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Where notifications go, once [`init`] found a `NOTIFY_SOCKET`.
static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();

struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// A failed send was logged.
    warned: AtomicBool,
}

/// Reads `NOTIFY_SOCKET` (once; later calls change nothing).
pub fn init() {
    NOTIFIER.get_or_init(|| {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let made = address(name.as_encoded_bytes())
            .and_then(|addr| UnixDatagram::unbound().map(|socket| (socket, addr)));
        match made {
            Ok((socket, addr)) => Some(Notifier {
                socket,
                addr,
                warned: AtomicBool::new(false),
            }),
            Err(e) => {
                log::warn!(
                    "NOTIFY_SOCKET {}: cannot notify systemd there: {e}",
                    name.to_string_lossy()
                );
                None
            }
        }
    });
}

/// The socket address `NOTIFY_SOCKET` names: `@name` is Linux's abstract
/// namespace, anything else a path.
fn address(name: &[u8]) -> std::io::Result<SocketAddr> {
    match name.strip_prefix(b"@") {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(abstract_name)
        }
        None if name.is_empty() => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is empty",
        )),
        None => {
            use std::os::unix::ffi::OsStrExt as _;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(name))
        }
    }
}

/// Sends `state` (lines `KEY=value`), if there is a socket to send it to.
fn notify(state: &str) {
    let Some(Some(n)) = NOTIFIER.get() else {
        return;
    };
    if let Err(e) = n.socket.send_to_addr(state.as_bytes(), &n.addr)
        && !n.warned.swap(true, Ordering::Relaxed)
    {
        log::warn!("notifying systemd failed: {e}; later failures are not logged");
    }
}

/// The longest `STATUS=` value sent: systemd reads a notification into a
/// buffer of PIPE_BUF (4096) bytes and ignores a longer one whole, its
/// `READY=1` included; a reload's summary names every circle it touched.
const MAX_STATUS_BYTES: usize = 1024;

/// `status`, cut at a character boundary to [`MAX_STATUS_BYTES`] (`…` marks the cut).
fn bounded(status: &str) -> std::borrow::Cow<'_, str> {
    if status.len() <= MAX_STATUS_BYTES {
        return status.into();
    }
    let mut end = MAX_STATUS_BYTES - '…'.len_utf8();
    while !status.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &status[..end]).into()
}

/// Every circle started (again): serving, and what `status` says.
pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={}", bounded(status)));
}

/// A reload of circles.json starts.
pub fn reloading() {
    notify(&format!(
        "RELOADING=1\nSTATUS=reloading circles.json\nMONOTONIC_USEC={}",
        monotonic_usec()
    ));
}

/// A stop signal came: the drain starts.
pub fn stopping(signal: &str) {
    notify(&format!(
        "STOPPING=1\nSTATUS={signal} received: shutting down"
    ));
}

/// CLOCK_MONOTONIC in microseconds, as systemd reads it.
fn monotonic_usec() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when it is set
/// for this process and a socket is there.
pub fn watchdog_every() -> Option<Duration> {
    if !matches!(NOTIFIER.get(), Some(Some(_))) {
        return None;
    }
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// Sends `WATCHDOG=1` every `every`, for as long as the runtime runs it.
pub async fn watchdog(every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        notify("WATCHDOG=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_at_sign_names_an_abstract_socket_and_anything_else_a_path() {
        use std::os::linux::net::SocketAddrExt as _;
        let a = address(b"@circles/notify").expect("abstract");
        assert_eq!(a.as_abstract_name(), Some(&b"circles/notify"[..]));
        let p = address(b"/run/systemd/notify").expect("path");
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        assert!(address(b"").is_err());
    }

    #[test]
    fn a_long_status_is_cut_at_a_character_boundary_to_fit_what_systemd_reads() {
        assert_eq!(bounded("serving 3 circles"), "serving 3 circles");
        let long = "é".repeat(3000);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_STATUS_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
    }
}
