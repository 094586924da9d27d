//! `loadgen`: the end-to-end benchmark of the circles workspace. See the
//! crate documentation of the `loadgen` library and `loadgen --help`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

/// Starts a redis-server and the release circles_orchestrator (built first
/// with `cargo build --release --bin circles_orchestrator` unless --binary is
/// given), drives real WebSocket clients and prints a markdown table: each
/// figure, its floor and, with --baseline, the ratio to another build.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Args {
    /// The orchestrator to measure [default: build and use target/release/circles_orchestrator].
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,

    /// Another circles_orchestrator binary, run beside it on the same Redis;
    /// each load in sync mode (the baseline has no --durability) alternates
    /// between the two: request by request when sequential, otherwise one
    /// build at a time in slices of at most half a second.
    #[arg(long, value_name = "PATH", conflicts_with = "capacity")]
    baseline: Option<PathBuf>,

    /// A smoke run (well under a minute): 0.2 s warm-up, 1 s per load, 200 sequential requests.
    #[arg(long)]
    quick: bool,

    /// Measured seconds of each closed-loop load [default: 5, or 1 with --quick].
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,

    /// Unmeasured seconds at the start of each closed-loop load [default: 1, or 0.2 with --quick].
    #[arg(long, value_name = "SECONDS")]
    warmup: Option<f64>,

    /// Measured requests of the sequential load [default: 2000, or 200 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "capacity")]
    requests: Option<u64>,

    /// Instead of the latency and throughput table, measure where a task's
    /// CPU goes: one `--role worker` and one `--role gateway` process,
    /// trivial and 1 KiB-insert loads through the gateway, CPU µs per task
    /// of each process and of Redis.
    #[arg(long)]
    capacity: bool,

    /// With --capacity: circles served [default: 4].
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256), requires = "capacity")]
    circles: u64,

    /// With --capacity: connections of each load [default: 64].
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024), requires = "capacity")]
    conns: u64,

    /// With --capacity: then a steady trivial load of this many seconds with
    /// Redis used_memory sampled (pass the TTLs to test with --orchestrator-arg).
    #[arg(long, value_name = "SECONDS", requires = "capacity")]
    memory: Option<f64>,

    /// With --memory: seconds between samples [default: 10].
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10.0,
        requires = "memory"
    )]
    sample: f64,

    /// An option passed to the orchestrator under test, never to the
    /// baseline (with --capacity: to both of its processes), repeatable
    /// (`--orchestrator-arg=--claim-batch=8`).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    orchestrator_arg: Vec<String>,

    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "PATH", conflicts_with = "capacity")]
    json: Option<PathBuf>,
}

fn seconds(s: f64, option: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{option} {s} must be a positive number of seconds"))
}

/// Builds the release orchestrator of this workspace; returns its path.
fn build_release() -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the workspace folder");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "--bin", "circles_orchestrator"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release --bin circles_orchestrator failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release").join("circles_orchestrator"))
}

// One thread drives every client connection: on a small machine a second
// one would mostly add wake-ups between the two, CPU the orchestrator under
// test does not get. The echo server of the floor runs on its own thread.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = match args.binary {
        Some(path) => path,
        None => build_release()?,
    };
    if args.capacity {
        let quick = args.quick;
        let options = loadgen::capacity::CapacityOptions {
            binary,
            circles: args.circles as usize,
            conns: args.conns as usize,
            warmup: seconds(
                args.warmup.unwrap_or(if quick { 0.2 } else { 1.0 }),
                "--warmup",
            )?,
            duration: seconds(
                args.duration.unwrap_or(if quick { 1.0 } else { 5.0 }),
                "--duration",
            )?,
            memory: args.memory.map(|s| seconds(s, "--memory")).transpose()?,
            sample: seconds(args.sample, "--sample")?,
            extra: args.orchestrator_arg,
        };
        if !options.binary.is_file() {
            bail!("{} is not a file", options.binary.display());
        }
        print!("{}", loadgen::capacity::run(&options).await?.render());
        return Ok(());
    }
    let mut options = if args.quick {
        loadgen::Options::quick(binary)
    } else {
        loadgen::Options::full(binary)
    };
    options.baseline = args.baseline;
    options.extra = args.orchestrator_arg;
    if let Some(s) = args.duration {
        options.duration = seconds(s, "--duration")?;
    }
    if let Some(s) = args.warmup {
        options.warmup = seconds(s, "--warmup")?;
    }
    if let Some(n) = args.requests {
        options.requests = n as usize;
    }
    for binary in std::iter::once(&options.binary).chain(&options.baseline) {
        if !binary.is_file() {
            bail!("{} is not a file", binary.display());
        }
    }
    let report = loadgen::run(&options).await?;
    print!("{}", report.render());
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report.to_json())?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_option_of_the_other_mode_is_refused_not_ignored() {
        let parse = |args: &[&str]| {
            Args::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))
        };
        // --capacity prints its own table and returns: these would do nothing.
        for other in [
            &["--capacity", "--json", "figures.json"][..],
            &["--capacity", "--baseline", "old"],
            &["--capacity", "--requests", "50"],
        ] {
            assert!(parse(other).is_err(), "{other:?} was accepted");
        }
        // And the capacity run's own options without it.
        for other in [
            &["--circles", "8"][..],
            &["--conns", "16"],
            &["--memory", "60"],
            &["--sample", "5"],
        ] {
            assert!(parse(other).is_err(), "{other:?} was accepted");
        }
        assert!(parse(&["--capacity", "--circles", "8", "--memory", "60"]).is_ok());
        assert!(parse(&["--quick", "--json", "f.json", "--baseline", "old"]).is_ok());
        assert!(parse(&["--capacity", "--quick", "--duration", "2"]).is_ok());
    }
}
