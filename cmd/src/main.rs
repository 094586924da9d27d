//! `circles_orchestrator`: runs every circle of a circles.json — per circle an
//! OurDB, a Rhai engine bound to it, a worker taking its tasks from Redis and
//! a WebSocket JSON-RPC server — with a live status table, and a `play`
//! companion that sends a script to a running circle.
//!
//! It sits on top of the crate graph (`ourdb` ← `engine` ← `worker`,
//! `client` ← `server_ws`); nothing depends on it. Modules: [`cli`] (parsing
//! the options), [`settings`] (resolving and checking them into one value),
//! [`config`] (circles.json validation), [`redis_setup`] (finding Redis, or
//! starting a managed redis-server), [`circles`] (opening databases and
//! binding ports), [`gateway`] (announcing the circles served and watching
//! their workers' liveness), [`supervisor`] (restart with backoff), [`monitor`]
//! (managed Redis, counters), [`status`] and [`render`] (the table),
//! [`orchestrator`] (start-up, reload and shutdown), [`reload`] (the handle
//! that asks for a reload), [`roster`] (the circles shown), [`role`] (`--role`
//! and `--circles`), [`admin`] (the HTTP admin endpoint and the `status` and
//! `reload` commands that ask it), [`play`],
//! [`token`] and [`principals`] (who may connect to a circle), [`tls`] (CA
//! files and `play`'s TLS client), [`stdout`] (what the companion commands
//! print, its write failures checked).
//!
//! ```text
//! $ circles_orchestrator circles.json            # serve every circle
//! $ circles_orchestrator play '40 + 2'           # 42, from the first circle
//! $ circles_orchestrator play --circle Beta -f script.rhai
//! $ circles_orchestrator reload                  # re-read circles.json
//! ```
//!
//! Exit codes: 0 clean shutdown, 1 runtime failure, 2 bad configuration or usage.
//! A companion command whose stdout cannot be written exits 1 saying so; one
//! whose reader went away (`| head`) exits with the code it would have had.

use std::process::ExitCode;

/// jemalloc instead of the system allocator: a task's path through the
/// gateway and the worker allocates and frees many small buffers across
/// threads (frames, JSON, Redis replies, Rhai values). Measured side by
/// side (`loadgen --capacity`, `cargo bench -p cmd --bench scale`): about
/// 10 % less CPU per task in the gateway and the worker than glibc's
/// allocator, for 0.46 instead of 0.31 MiB of RSS per idle circle;
/// mimalloc saved as much CPU but cost 2.5 MiB per circle (its heaps are
/// per thread, and every circle has one). Built with background threads on
/// (the `background_threads` feature in Cargo.toml), which give freed pages
/// back to the system on their own schedule: without them jemalloc purges
/// only while the program allocates, so an idle process kept the peak of
/// its last burst; `_RJEM_MALLOC_CONF=background_thread:false` turns them
/// off.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod admin;
pub mod circles;
pub mod cli;
pub mod clients;
pub mod config;
pub mod gateway;
pub mod logging;
pub mod monitor;
pub mod names;
pub mod orchestrator;
pub mod play;
pub mod principals;
pub mod redis_setup;
pub mod reload;
pub mod render;
pub mod role;
pub mod roster;
pub mod settings;
pub mod status;
pub mod stdout;
pub mod supervisor;
pub mod systemd;
pub mod tls;
pub mod token;

/// A usage mistake: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn exit_code_of(error: &anyhow::Error) -> u8 {
    let usage = error.chain().any(|e| {
        e.is::<config::ConfigError>()
            || e.is::<UsageError>()
            || e.downcast_ref::<reload::ReloadError>()
                .is_some_and(|r| r.kind == reload::ReloadErrorKind::InvalidConfig)
    });
    if usage { 2 } else { 1 }
}

fn main() -> ExitCode {
    // clap exits 2 on a usage error and 0 for --help/--version.
    let cli = cli::parse();
    tls::install_provider();
    let result = match cli.command {
        Some(cli::Command::Play(args)) => play::play(args),
        Some(cli::Command::Token(cli::TokenCommand::New(args))) => token::new(&args).map(|()| 0),
        Some(cli::Command::Token(cli::TokenCommand::Admin)) => token::admin().map(|()| 0),
        Some(cli::Command::Status(args)) => admin::ask::status(&args),
        Some(cli::Command::Reload(args)) => admin::ask::reload(&args),
        None => {
            // The companion commands keep the default actions (Ctrl-C ends a
            // `play`); the orchestrator stops cleanly from its first moment.
            orchestrator::hook_early_signals();
            orchestrator::run(cli.run).map(|()| 0)
        }
    };
    // The last lines logged, before the error below or the exit.
    logging::flush();
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            let mut message = format!("circles_orchestrator: error: {error}\n");
            for cause in error.chain().skip(1) {
                message.push_str(&format!("  caused by: {cause}\n"));
            }
            logging::tell_at_exit(&message);
            ExitCode::from(exit_code_of(&error))
        }
    }
}
