//! A real `circles_orchestrator` process with a generated circles.json, its
//! own data dir and the benchmark's Redis; stopped with SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long an orchestrator may take until every circle answers.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// A running orchestrator; killed on drop if [`Orchestrator::stop`] was not called.
pub struct Orchestrator {
    child: Child,
    dir: tempfile::TempDir,
    /// The `ws://` URL of each circle, in circles.json order.
    pub urls: Vec<String>,
}

impl Orchestrator {
    /// Starts `binary` with `circles` circles named after `tag` (so two
    /// orchestrators on one Redis never share a queue), `extra` options
    /// appended, and waits until every circle answers `40 + 2`.
    pub async fn start(
        binary: &Path,
        redis_url: &str,
        circles: usize,
        tag: &str,
        extra: &[&str],
    ) -> anyhow::Result<Orchestrator> {
        let dir = tempfile::tempdir().context("a temp dir for the orchestrator")?;
        let (config, urls) = write_config(dir.path(), circles, tag)?;
        let data = dir.path().join("data");
        let child = spawn(binary, &config, redis_url, &data, dir.path(), extra)?;
        let mut orchestrator = Orchestrator { child, dir, urls };
        orchestrator.wait_ready().await?;
        Ok(orchestrator)
    }

    /// Starts `binary` with the circles.json at `config` (written by
    /// [`write_config`], whose URLs are `urls`) and the data dir `data`,
    /// `extra` options appended (a `--role`, say). Waits until every URL of
    /// `urls` answers `40 + 2`; a worker-only process is given none.
    pub async fn start_with(
        binary: &Path,
        config: &Path,
        data: &Path,
        redis_url: &str,
        urls: Vec<String>,
        extra: &[&str],
    ) -> anyhow::Result<Orchestrator> {
        let dir = tempfile::tempdir().context("a temp dir for the orchestrator")?;
        let child = spawn(binary, config, redis_url, data, dir.path(), extra)?;
        let mut orchestrator = Orchestrator { child, dir, urls };
        orchestrator.wait_ready().await?;
        Ok(orchestrator)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        for url in self.urls.clone() {
            loop {
                if let Some(status) = self.child.try_wait()? {
                    bail!(
                        "the orchestrator exited ({status}) at start:\n{}",
                        self.log()
                    );
                }
                if let Ok(mut ws) = crate::client::connect(&url).await
                    && let Ok(reply) = crate::client::call(&mut ws, 0, "40 + 2").await
                    && reply.ok
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{url} did not answer within {READY_DEADLINE:?}:\n{}",
                        self.log()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Runs `script` once on circle `index`; an error reply is an error.
    pub async fn play(&self, index: usize, script: &str) -> anyhow::Result<()> {
        let mut ws = crate::client::connect(&self.urls[index]).await?;
        let reply = crate::client::call(&mut ws, 1, script).await?;
        anyhow::ensure!(reply.ok, "`{script:.60}` failed on {}", self.urls[index]);
        Ok(())
    }

    /// The first `n` circles' URLs.
    pub fn first(&self, n: usize) -> Arc<Vec<String>> {
        Arc::new(self.urls[..n].to_vec())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("orchestrator.log")).unwrap_or_default()
    }

    /// SIGTERM, then a kill after 20 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("the orchestrator did not stop on SIGTERM:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Writes a circles.json of `circles` circles named after `tag`, each on a
/// free port, into `dir`; gives its path and the circles' `ws://` URLs.
pub fn write_config(
    dir: &Path,
    circles: usize,
    tag: &str,
) -> anyhow::Result<(std::path::PathBuf, Vec<String>)> {
    let mut elements = Vec::new();
    let mut urls = Vec::new();
    // Each port stays bound until all are picked: one let go at once may be
    // handed out again for the next circle.
    let held = (0..circles)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    for (id, listener) in (1..).zip(&held) {
        let port = listener.local_addr()?.port();
        elements.push(serde_json::json!({
            "id": id, "name": format!("loadgen {tag} {id}"), "port": port
        }));
        urls.push(format!("ws://127.0.0.1:{port}/ws"));
    }
    drop(held);
    let config = dir.join("circles.json");
    std::fs::write(&config, serde_json::Value::Array(elements).to_string())?;
    Ok((config, urls))
}

/// Spawns `binary` on `config` with its log in `log_dir`.
fn spawn(
    binary: &Path,
    config: &Path,
    redis_url: &str,
    data: &Path,
    log_dir: &Path,
    extra: &[&str],
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log_dir.join("orchestrator.log"))?;
    Command::new(binary)
        .arg(config)
        .args(["--redis-url", redis_url, "--no-managed-redis"])
        .arg("--data-dir")
        .arg(data)
        .args(["--output", "plain", "--admin", "off"])
        .args(["--max-connections", "1024", "--result-ttl", "120s"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
