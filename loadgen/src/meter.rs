//! Counters read around a load: how busy the machine's cores were
//! (`/proc/stat`), how much CPU Redis spent (`INFO cpu`) and the load
//! generator itself (`/proc/self/stat`), and other Redis
//! figures through a minimal RESP exchange (the load generator links no
//! Redis client).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How busy the machine's cores and Redis's one command thread were
/// during a load: the limit a load reached, if any.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Saturation {
    /// Busy share of all the machine's cores, 0..=1.
    pub machine: f64,
    /// Busy share of one core spent by redis-server, 0..=1 (it runs
    /// commands on one thread).
    pub redis: f64,
    /// Busy share of one core spent by the load generator's process (the
    /// thread that drives every client, and the floor's echo server), 0..=1:
    /// near 1, the figure is bounded by the clients, not by what they
    /// measure.
    pub client: f64,
}

impl Saturation {
    /// Busy at or above this share counts as the limit reached.
    pub const LIMIT: f64 = 0.9;

    /// What limited the load: `CPU`, `Redis`, `client` (the load
    /// generator's thread), those of them at the limit joined by `+`, or `—`
    /// for none.
    pub fn limit(&self) -> String {
        let at: Vec<&str> = [
            (self.machine, "CPU"),
            (self.redis, "Redis"),
            (self.client, "client"),
        ]
        .into_iter()
        // As the table shows it, to a tenth of a percent: a share printed
        // "90.0 %" is at the limit.
        .filter(|&(share, _)| (share * 1000.0).round() >= (Self::LIMIT * 1000.0).round())
        .map(|(_, name)| name)
        .collect();
        if at.is_empty() {
            "—".to_string()
        } else {
            at.join("+")
        }
    }
}

/// Reads the machine's and Redis's CPU counters before a load (or a slice
/// of one); [`Meter::stop`] after it.
pub(crate) struct Meter {
    port: u16,
    machine: (f64, f64),
    redis: f64,
    client: f64,
    at: Instant,
}

impl Meter {
    pub(crate) async fn start(port: u16) -> anyhow::Result<Meter> {
        Ok(Meter {
            port,
            machine: machine_ticks()?,
            redis: redis_cpu(port).await?,
            client: process_cpu("self")?,
            at: Instant::now(),
        })
    }

    /// What was spent since [`Meter::start`].
    pub(crate) async fn stop(self) -> anyhow::Result<Usage> {
        let (busy, total) = machine_ticks()?;
        let redis = redis_cpu(self.port).await?;
        Ok(Usage {
            busy_ticks: busy - self.machine.0,
            total_ticks: total - self.machine.1,
            redis_cpu: redis - self.redis,
            client_cpu: process_cpu("self")? - self.client,
            wall: self.at.elapsed(),
        })
    }
}

/// The counters' growth over one stretch of time; stretches add up (the
/// slices of an interleaved load).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Usage {
    busy_ticks: f64,
    total_ticks: f64,
    /// CPU seconds Redis spent.
    redis_cpu: f64,
    /// CPU seconds the load generator spent.
    client_cpu: f64,
    wall: Duration,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.busy_ticks += other.busy_ticks;
        self.total_ticks += other.total_ticks;
        self.redis_cpu += other.redis_cpu;
        self.client_cpu += other.client_cpu;
        self.wall += other.wall;
    }
}

impl Usage {
    /// The wall time it covers.
    #[cfg(test)]
    pub(crate) fn wall(&self) -> Duration {
        self.wall
    }

    /// How busy the machine's cores and Redis's thread were over it.
    pub(crate) fn saturation(&self) -> Saturation {
        let wall = self.wall.as_secs_f64().max(1e-3);
        Saturation {
            machine: (self.busy_ticks / self.total_ticks.max(1.0)).clamp(0.0, 1.0),
            redis: (self.redis_cpu / wall).clamp(0.0, 1.0),
            client: (self.client_cpu / wall).clamp(0.0, 1.0),
        }
    }
}

/// Busy and total ticks of all cores, from the first line of `/proc/stat`.
fn machine_ticks() -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat.lines().next().context("an empty /proc/stat")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().context("a /proc/stat field that is not a number"))
        .collect::<anyhow::Result<_>>()?;
    // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    Ok((total - idle, total))
}

/// [`testkit::process_cpu`], its error as an `anyhow` one.
pub(crate) fn process_cpu(pid: &str) -> anyhow::Result<f64> {
    testkit::process_cpu(pid).map_err(anyhow::Error::msg)
}

/// CPU seconds Redis has used so far.
pub(crate) async fn redis_cpu(port: u16) -> anyhow::Result<f64> {
    let info = info(port, "cpu").await?;
    Ok(field(&info, "used_cpu_user")? + field(&info, "used_cpu_sys")?)
}

/// One RESP command with simple arguments; the raw reply.
async fn command(port: u16, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).await?;
    stream.shutdown().await.ok();
    let mut reply = Vec::new();
    // A closed write side makes Redis answer and close once it has replied.
    let deadline = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 8192];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 || complete(&reply) {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if complete(&reply) {
                break;
            }
        }
        anyhow::Ok(())
    });
    deadline
        .await
        .context("redis did not answer within 5 s")??;
    Ok(reply)
}

/// Whether a reply of one bulk string or integer has arrived whole.
fn complete(reply: &[u8]) -> bool {
    let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    match reply.first() {
        Some(b'$') => std::str::from_utf8(&reply[1..end])
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| reply.len() >= end + 2 + n + 2),
        _ => true,
    }
}

/// `INFO <section>` as name → value.
pub(crate) async fn info(port: u16, section: &str) -> anyhow::Result<Vec<(String, String)>> {
    let reply = command(port, &["INFO", section]).await?;
    let text = String::from_utf8_lossy(&reply);
    if !text.starts_with('$') {
        bail!("INFO {section} answered {text:?}");
    }
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect())
}

pub(crate) fn field(info: &[(String, String)], name: &str) -> anyhow::Result<f64> {
    info.iter()
        .find(|(k, _)| k == name)
        .with_context(|| format!("INFO has no {name}"))?
        .1
        .parse()
        .with_context(|| format!("INFO's {name} is not a number"))
}

pub(crate) async fn dbsize(port: u16) -> anyhow::Result<u64> {
    let reply = command(port, &["DBSIZE"]).await?;
    let text = String::from_utf8_lossy(&reply);
    text.strip_prefix(':')
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("DBSIZE answered {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_complete_only_when_its_bulk_string_has_arrived() {
        assert!(!complete(b"$10\r\n01234"));
        assert!(complete(b"$10\r\n0123456789\r\n"));
        assert!(complete(b":42\r\n"));
        assert!(!complete(b":4"));
    }

    #[test]
    fn the_limit_is_what_was_at_least_90_percent_busy() {
        let at = |machine, redis, client| {
            Saturation {
                machine,
                redis,
                client,
            }
            .limit()
        };
        assert_eq!(at(0.95, 0.2, 0.5), "CPU");
        assert_eq!(at(0.5, 0.92, 0.5), "Redis");
        assert_eq!(at(0.9, 0.9, 0.3), "CPU+Redis");
        assert_eq!(at(0.89, 0.5, 0.97), "client");
        assert_eq!(at(0.89, 0.5, 0.89), "—");
    }

    #[test]
    fn the_slices_of_a_load_add_up_to_its_saturation() {
        let stretch = |busy_ticks, total_ticks, redis_cpu, ms| Usage {
            busy_ticks,
            total_ticks,
            redis_cpu,
            client_cpu: redis_cpu / 2.0,
            wall: Duration::from_millis(ms),
        };
        let mut usage = Usage::default();
        // Three quarters of the time all busy, a quarter idle: their sum,
        // not the mean of the two shares (which would be a half).
        usage += stretch(300.0, 300.0, 0.6, 1500);
        usage += stretch(0.0, 100.0, 0.0, 500);
        assert_eq!(
            usage.saturation(),
            Saturation {
                machine: 0.75,
                redis: 0.3,
                client: 0.15
            }
        );
        assert_eq!(usage.saturation().limit(), "—");
    }

    #[test]
    fn the_load_generators_own_cpu_grows_while_it_works() {
        // Spins until 20 ms of CPU are counted, however busy the machine
        // (within 10 s of wall time); what is counted is no more than the
        // wall time on two cores.
        let own = || process_cpu("self").expect("this process's CPU");
        let before = own();
        let start = Instant::now();
        let mut x = 0u64;
        while own() - before < 0.02 {
            assert!(start.elapsed() < Duration::from_secs(10), "no CPU counted");
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let spent = own() - before;
        assert!(
            spent < start.elapsed().as_secs_f64() * 2.0 + 0.01,
            "{spent} s"
        );
    }

    #[test]
    fn the_machine_counts_busy_ticks_below_its_total() {
        let (busy, total) = machine_ticks().expect("reads /proc/stat");
        assert!(busy > 0.0 && busy <= total, "{busy} of {total}");
    }

    #[tokio::test]
    async fn info_and_dbsize_read_a_real_redis() {
        let redis = testkit::RedisServer::start();
        let memory = info(redis.port(), "memory").await.expect("INFO memory");
        assert!(field(&memory, "used_memory").expect("a number") > 0.0);
        assert_eq!(dbsize(redis.port()).await.expect("DBSIZE"), 0);
        command(redis.port(), &["SET", "k", "v"])
            .await
            .expect("SET");
        assert_eq!(dbsize(redis.port()).await.expect("DBSIZE"), 1);
    }
}
