//! env_logger set-up. Logs go to stderr, except in live mode where they go to a
//! file (default `<data-dir>/orchestrator.log`) so they can never corrupt the
//! table. `RUST_LOG` works as usual; the default shows our crates at `info`
//! and everything else at `warn`.

use std::path::Path;

use anyhow::Context;

const DEFAULT_FILTER: &str =
    "warn,circles_orchestrator=info,ourdb=info,engine=info,client=info,worker=info,server_ws=info";

/// Installs the logger; `file` sends logs there instead of stderr.
pub fn init(file: Option<&Path>) -> anyhow::Result<()> {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_FILTER));
    if let Some(path) = file {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create the log directory {}", parent.display()))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the log file {}", path.display()))?;
        builder.target(env_logger::Target::Pipe(Box::new(f)));
    }
    builder.try_init().context("cannot install the logger")?;
    Ok(())
}
