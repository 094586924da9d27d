//! Command-line options (DESIGN §1), parsed by clap. Phase one of two: this
//! module only parses; [`crate::settings`] resolves, checks and defaults
//! what the options say, and nothing after it reads these types.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Runs every circle of a circles.json: an OurDB, a Rhai engine, a worker and a
/// WebSocket JSON-RPC server per circle, with a live status table.
///
/// `play` is recognised only as the first argument; a config file literally
/// named `play` is given as `./play`.
#[derive(Debug, Parser)]
#[command(
    name = "circles_orchestrator",
    version,
    args_conflicts_with_subcommands = true,
    args_override_self = true,
    after_help = "Exit codes: 0 clean shutdown, 1 runtime failure, 2 bad configuration or usage.\n\
                  Try a circle: circles_orchestrator play '40 + 2'"
)]
pub struct Cli {
    /// Options of the orchestrator itself.
    #[command(flatten)]
    pub run: RunArgs,
    /// A companion command instead of running the circles.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Companion commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send one script to a running circle over WebSocket and print its result.
    Play(PlayArgs),
    /// Access tokens of protected circles.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print the table of a running orchestrator once, from its admin endpoint.
    Status(StatusArgs),
    /// Make a running orchestrator re-read its circles.json, through its admin
    /// endpoint, and print what changed. Exit 2 when the file is invalid
    /// (nothing changed), 1 when a circle could not start.
    Reload(ReloadArgs),
}

/// `circles_orchestrator token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a principal: prints a fresh token once (line 1) and the JSON
    /// element to add to the circle's "principals" in circles.json (line 2).
    New(TokenNewArgs),
    /// Make a token for the admin endpoint: prints a fresh token once
    /// (line 1) and the option that makes the orchestrator ask for it
    /// (line 2: `--admin-token-sha256 <hex>`).
    Admin,
}

/// Options of `circles_orchestrator token new`.
#[derive(Debug, Args)]
pub struct TokenNewArgs {
    /// The circle by name or id.
    #[arg(long, value_name = "NAME_OR_ID")]
    pub circle: String,

    /// The principal's name (scripts see it through `caller()`).
    #[arg(long, value_name = "WHO")]
    pub name: String,

    /// What the principal's scripts may do: `read` or `write`.
    #[arg(long, value_parser = ["read", "write"])]
    pub role: String,

    /// The circles file the circle is in.
    #[arg(value_name = "CONFIG", default_value = "circles.json")]
    pub config: PathBuf,
}

/// How the status table is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// `live` when stdout is a terminal, `plain` otherwise.
    Auto,
    /// The table redrawn in place on the terminal.
    Live,
    /// The table once every circle has settled (up or visibly failing; at
    /// most 15 s after start), then one line per change.
    Plain,
    /// One JSON snapshot per line whenever something changes.
    Json,
}

/// OurDB commit durability (`--durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// Every commit fsynced before it is reported.
    Sync,
    /// Every commit written to the OS before it is reported.
    Flush,
}

/// Options of `circles_orchestrator [OPTIONS] [CONFIG]`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The circles file: a JSON array of {"id", "name", "port"}.
    #[arg(value_name = "CONFIG", default_value = "circles.json")]
    pub config: PathBuf,

    /// Redis URL of the task broker (`rediss://` for Redis over TLS;
    /// `redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]` for the
    /// primary Redis Sentinel names, followed across failovers).
    #[arg(
        long,
        env = "REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// With a rediss:// --redis-url: trust this CA (PEM) for Redis instead
    /// of the system's root certificates.
    #[arg(long, value_name = "PEM")]
    pub redis_ca: Option<PathBuf>,

    /// Where circle N keeps its database (DIR/N/) [default: ~/.hero/circles]
    #[arg(
        long,
        env = "CIRCLES_DATA_DIR",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub data_dir: Option<PathBuf>,

    /// What this process runs of each circle: `all` (server and worker),
    /// `gateway` (the WebSocket servers only: no database, no script), or
    /// `worker` (the databases and workers only: no port). Gateways and
    /// workers of one circle meet through --redis-url.
    #[arg(long, value_enum, default_value = "all")]
    pub role: crate::role::Role,

    /// Run only these circles of the circles file: ids or names,
    /// comma-separated (e.g. `1,Beta Circle`) [default: every circle].
    #[arg(long, value_name = "IDS_OR_NAMES", value_delimiter = ',')]
    pub circles: Option<Vec<String>>,

    /// A circle whose queue another orchestrator's worker holds (its lease
    /// in Redis) waits, shown as `standby`, and takes over once that lease
    /// expires, instead of refusing to start. Each circle's database is then
    /// opened only once its lease is held (safe on shared storage).
    #[arg(long)]
    pub standby: bool,

    /// Bind address of every WebSocket server.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Serve every circle as wss:// with this certificate chain (PEM: the
    /// server's certificate first, then any intermediates). Needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert. Needs --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve circles without principals (open to anyone who reaches the
    /// port) on a non-loopback --host too.
    #[arg(long)]
    pub allow_open: bool,

    /// How the status table is shown.
    #[arg(long, value_enum, default_value = "auto")]
    pub output: Output,

    /// Never start a managed redis-server, even when none answers on a loopback URL.
    #[arg(
        long,
        env = "CIRCLES_NO_MANAGED_REDIS",
        hide_env_values = true,
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub no_managed_redis: bool,

    /// How long a `play` request waits for its result (e.g. 30s, 500ms, 2m).
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub task_timeout: Duration,

    /// On shutdown, how long a running script may go on, once the servers drained
    /// (up to 5 s after the signal), before it is cancelled.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Wall-clock budget of one script run (engine limit; compilation included).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub script_timeout: Duration,

    /// Rhai operations one script may perform (engine limit).
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_operations: u64,

    /// Bytes of memory one script may hold at once (engine limit).
    #[arg(long, default_value_t = 256 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_script_memory: u64,

    /// How long finished task results stay in Redis.
    #[arg(long, default_value = "1h", value_parser = positive_duration)]
    pub result_ttl: Duration,

    /// How long a finished task's result stays in Redis once a WebSocket
    /// server got it for its client (tasks other programs push into Redis
    /// keep --result-ttl); at most --result-ttl [default: 1m, or --result-ttl
    /// when shorter]
    #[arg(long, value_name = "D", value_parser = positive_duration)]
    pub delivered_ttl: Option<Duration>,
    /// OurDB commit durability of every circle: `sync` fsyncs each commit
    /// before the reply (survives a power cut), `flush` only writes it to
    /// the OS (survives a crash of the process, not of the machine).
    #[arg(long, value_enum, default_value = "sync")]
    pub durability: Durability,

    /// An extra WebSocket `Origin` to accept besides absent and loopback ones,
    /// `scheme://host[:port]` as a browser sends it (repeatable).
    #[arg(long = "allowed-origin", value_name = "ORIGIN", value_parser = origin)]
    pub allowed_origins: Vec<String>,

    /// Largest WebSocket message accepted, in bytes.
    #[arg(long, default_value_t = server_ws::DEFAULT_MAX_MESSAGE_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_message_bytes: usize,

    /// Requests in flight per WebSocket connection.
    #[arg(long, default_value_t = server_ws::DEFAULT_MAX_IN_FLIGHT, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_in_flight: usize,

    /// WebSocket connections per circle.
    #[arg(long, default_value_t = server_ws::DEFAULT_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,

    /// Server-side timeout of a worker's blocking pop. Shutdown does not wait
    /// for it (a blocked pop is woken with CLIENT UNBLOCK); shorter only means
    /// more idle Redis traffic.
    #[arg(long, default_value = "20s", value_parser = positive_duration)]
    pub worker_pop_timeout: Duration,

    /// Most tasks a worker claims in one round trip when its queue holds
    /// several (1 to 1024; a lone task is never held back). Under Sync
    /// durability their writes share one fsync before their results are
    /// reported.
    #[arg(long, default_value_t = worker::DEFAULT_CLAIM_BATCH, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=client::broker::MAX_CLAIM_BATCH as u64))]
    pub claim_batch: usize,

    /// How often each worker refreshes its heartbeat (and, when other workers
    /// share its queue, looks for dead ones); a worker silent for 3 heartbeats
    /// is dead and its running task is ended as an error. A process serving
    /// circles' endpoints beats as their gateway as often, and once it saw
    /// no live worker of a circle for 3 heartbeats answers its `play` -32002.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    pub worker_heartbeat: Duration,

    /// How often each worker looks for dead workers' leftovers.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub worker_reap_interval: Duration,

    /// How often the live table and JSON snapshots are refreshed, and the
    /// queue counters read (every 10 s in plain mode without an admin
    /// endpoint).
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    pub refresh: Duration,

    /// Log file in live mode [default: DATA_DIR/orchestrator.log].
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// How log lines are written: `text`, or `json` (one object per line with
    /// timestamp, level, target, message, and circle and task where known).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: crate::logging::LogFormat,
    /// The admin HTTP endpoint.
    #[command(flatten)]
    pub admin: crate::admin::AdminArgs,
}

/// Options of `circles_orchestrator play`.
#[derive(Debug, Args)]
pub struct PlayArgs {
    /// The script; `-` reads it from stdin.
    #[arg(value_name = "SCRIPT", conflicts_with = "file")]
    pub script: Option<String>,

    /// Read the script from this file.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// The circle's WebSocket URL, e.g. ws://127.0.0.1:8081/ws, or
    /// wss://… for an orchestrator with --tls-cert.
    #[arg(long, conflicts_with = "circle")]
    pub url: Option<String>,

    /// The circle by name or id, looked up in --config [default: the first circle].
    #[arg(long, value_name = "NAME_OR_ID")]
    pub circle: Option<String>,

    /// The circles file used to find --circle.
    #[arg(long, value_name = "CONFIG", default_value = "circles.json")]
    pub config: PathBuf,

    /// Host used with --circle.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Trust this CA (PEM) for wss://, in addition to the system's root
    /// certificates: the CA that signed the orchestrator's --tls-cert, or
    /// that self-signed certificate itself. Without --url, play then
    /// connects to the circle with wss://.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,

    /// How long to wait for the reply.
    #[arg(long, default_value = "35s", value_parser = positive_duration)]
    pub timeout: Duration,

    /// Print the raw JSON-RPC reply instead of the output.
    #[arg(long)]
    pub json: bool,

    /// The bearer token of a protected circle, sent as `Authorization: Bearer`
    /// on the WebSocket upgrade.
    #[arg(
        long,
        env = "CIRCLES_TOKEN",
        hide_env_values = true,
        // A token is URL-safe base64: about one in 32 starts with `-`.
        allow_hyphen_values = true,
        value_parser = TokenParser,
        value_name = "TOKEN"
    )]
    pub token: Option<Token>,
}

/// Where a companion command finds a running orchestrator: its admin
/// endpoint, and the token it asks for. Shared by `status` and `reload`.
#[derive(Debug, Args)]
pub struct AdminTarget {
    /// The running orchestrator's admin address (its --admin).
    #[arg(
        long,
        env = "CIRCLES_ADMIN",
        hide_env_values = true,
        value_name = "ADDR",
        default_value = crate::admin::args::DEFAULT_ADMIN
    )]
    pub admin: String,

    /// The admin token, when the orchestrator has --admin-token-sha256.
    #[arg(
        long,
        env = "CIRCLES_ADMIN_TOKEN",
        hide_env_values = true,
        // A token is URL-safe base64: about one in 32 starts with `-`.
        allow_hyphen_values = true,
        value_parser = TokenParser,
        value_name = "TOKEN"
    )]
    pub token: Option<Token>,
}

/// Options of `circles_orchestrator status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The orchestrator asked.
    #[command(flatten)]
    pub target: AdminTarget,

    /// Print the JSON snapshot (the shape of `--output json`) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Options of `circles_orchestrator reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The orchestrator asked.
    #[command(flatten)]
    pub target: AdminTarget,
}

/// Parses the command line; on a usage error prints it and exits 2 (0
/// for `--help` and `--version`). An environment variable of an option of
/// the command being run, not given on the command line, that is set but
/// empty (`REDIS_URL=`) is such an error, naming the variable: clap would
/// report it as the option's own value, which the user never typed.
pub fn parse() -> Cli {
    let command = Cli::command();
    if let Some((name, option)) = empty_env_of(&command, std::env::args_os()) {
        // Without a usage line: the top-level one would not fit a subcommand.
        clap::Error::raw(
            clap::error::ErrorKind::InvalidValue,
            format!(
                "the environment variable {name} (for --{option}) is set but empty; unset it, \
                 or give it a value\n"
            ),
        )
        .exit();
    }
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The first option of the (sub)command `argv` runs, not given on its
/// command line, whose environment variable is set but empty: the
/// variable's name and the option's.
fn empty_env_of(
    command: &clap::Command,
    argv: impl IntoIterator<Item = std::ffi::OsString>,
) -> Option<(String, String)> {
    // Which subcommand runs, read leniently: errors (and --help) are left
    // to the real parse.
    let matches = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(argv)
        .ok()?;
    let (mut command, mut matches) = (command, &matches);
    while let Some((name, sub)) = matches.subcommand() {
        command = command.find_subcommand(name)?;
        matches = sub;
    }
    command.get_arguments().find_map(|arg| {
        let name = arg.get_env()?;
        // An option given on the command line: its variable does not count.
        if matches.value_source(arg.get_id().as_str())
            == Some(clap::parser::ValueSource::CommandLine)
        {
            return None;
        }
        std::env::var_os(name)
            .is_some_and(|v| v.is_empty())
            .then(|| {
                let option = arg.get_long().unwrap_or(arg.get_id().as_str());
                (name.to_string_lossy().into_owned(), option.to_owned())
            })
    })
}

/// [`parse_duration`] for an option where zero makes no sense (a timeout
/// that has always passed, an interval that would spin).
fn positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("`{text}` is zero; it must be more than 0")),
        d => Ok(d),
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 500ms, 10s, 2m, 1h)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{text}` (use ms, s, m, h)"
            ));
        }
    };
    let d = Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "`{text}` is longer than any option takes, 3650 days ({} s)",
            MAX_DURATION.as_secs()
        ));
    }
    Ok(d)
}

/// The longest duration any option takes, ten years: every time made from
/// one (a heartbeat's TTL of three beats, a deadline, a TTL in milliseconds
/// for Redis) fits its type.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 24 * 3600);

mod origin;
mod token;
use origin::origin;
pub use token::Token;
use token::TokenParser;

#[cfg(test)]
mod tests;
