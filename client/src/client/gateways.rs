//! Gateways: the processes that serve circles' WebSocket endpoints announce
//! themselves per queue ([`keys::gateway_heartbeat`], [`keys::gateways`]),
//! and learn in the same round trip whether a worker of each queue is
//! alive. Readers list the gateways of many queues at once.

use std::time::Duration;

use super::Client;
use crate::{Error, Result, keys, ttl_ms};

/// Circles per script call of [`Client::gateway_beat`] and
/// [`Client::gateways_many`] (the calls of one beat still go out in one
/// pipeline: one round trip).
const BATCH: usize = 256;

/// One gateway of a queue, as its heartbeat key names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// Its id (unique per process and run).
    pub id: String,
    /// Its process id on its host; `None` when the key held none readable.
    pub pid: Option<u32>,
    /// The machine it runs on.
    pub host: String,
    /// The URL it serves the circle's endpoint at.
    pub url: String,
}

impl Gateway {
    /// The heartbeat value: `<pid>|<host>|<ws url>`.
    fn value(pid: u32, host: &str, url: &str) -> String {
        format!("{pid}|{host}|{url}")
    }

    /// Reads a heartbeat value back; a value of another shape keeps what
    /// it has in `url` (a third party's gateway still counts).
    fn parse(id: String, value: &str) -> Gateway {
        let mut parts = value.splitn(3, '|');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(pid), Some(host), Some(url)) => Gateway {
                id,
                pid: pid.parse().ok(),
                host: host.to_owned(),
                url: url.to_owned(),
            },
            _ => Gateway {
                id,
                pid: None,
                host: String::new(),
                url: value.to_owned(),
            },
        }
    }
}

/// The process that beats as a gateway: its id and what its heartbeat
/// values say of it.
#[derive(Debug, Clone)]
pub struct GatewayProcess {
    /// The gateway id, in the key and the set.
    pub id: String,
    /// The process id.
    pub pid: u32,
    /// The machine's name.
    pub host: String,
}

impl GatewayProcess {
    /// This process on `host`, with a fresh random id.
    pub fn new(host: impl Into<String>) -> GatewayProcess {
        GatewayProcess {
            id: uuid::Uuid::new_v4().simple().to_string(),
            pid: std::process::id(),
            host: host.into(),
        }
    }
}

/// The Lua function both scripts that look at a queue's workers share:
/// the milliseconds the freshest heartbeat key of a worker in the set
/// `workers` (keys `prefix .. id`) has left to live, 0 when none has one,
/// `ttl` for a key without a TTL. A `workers` key of another type (another
/// program's mistake) registers no worker: it fails neither the script
/// nor the other circles of its beat.
macro_rules! freshest_worker {
    () => {
        r#"
local function freshest_worker(workers, prefix, ttl)
  local best = 0
  local ids = redis.pcall('SMEMBERS', workers)
  if ids.err then return 0 end
  for _, w in ipairs(ids) do
    local left = redis.call('PTTL', prefix .. w)
    if left == -1 then
      left = tonumber(ttl)
    end
    if left > best then
      best = left
    end
  end
  return best
end
"#
    };
}

/// Per circle: writes the gateway's heartbeat key, adds it to the queue's
/// gateway set (unless that key holds another type), and answers the
/// milliseconds the freshest heartbeat key of a worker registered for the
/// queue has left to live (0 when none has one; a key without a TTL counts
/// as fresh as the gateway's own).
/// KEYS: per circle its gateway heartbeat key, gateway set, worker set.
/// ARGV: gateway id, TTL in ms, then per circle the heartbeat value and the
/// worker heartbeat key prefix of its queue.
/// Sent with EVAL (the text, not its hash), so a Redis that lost its
/// script cache needs no second round trip.
const BEAT: &str = concat!(
    freshest_worker!(),
    r#"
local id, ttl = ARGV[1], ARGV[2]
local out = {}
for i = 1, #KEYS / 3 do
  redis.call('SET', KEYS[3 * i - 2], ARGV[2 * i + 1], 'PX', ttl)
  redis.pcall('SADD', KEYS[3 * i - 1], id)
  out[i] = freshest_worker(KEYS[3 * i], ARGV[2 * i + 2], ttl)
end
return out
"#
);

/// [`BEAT`]'s look at one queue's workers alone, writing nothing.
/// KEYS: the queue's worker set. ARGV: its worker heartbeat key prefix, the
/// TTL in ms a key without one counts as.
const LOOK: &str = concat!(
    freshest_worker!(),
    "return freshest_worker(KEYS[1], ARGV[1], ARGV[2])\n"
);

/// Per queue: the `{id, value}` of every member of its gateway set whose
/// heartbeat key exists; members without one are removed from the set. A
/// gateway set of another type lists none, and a heartbeat key of another
/// type reads as absent, so neither hides another queue's gateways.
/// KEYS: per queue its gateway set. ARGV: per queue its gateway heartbeat
/// key prefix.
const LIST: &str = r#"
local out = {}
for i = 1, #KEYS do
  local found = {}
  local ids = redis.pcall('SMEMBERS', KEYS[i])
  if ids.err then ids = {} end
  for _, g in ipairs(ids) do
    local value = redis.pcall('GET', ARGV[i] .. g)
    if type(value) == 'table' then value = false end
    if value then
      found[#found + 1] = { g, value }
    else
      redis.call('SREM', KEYS[i], g)
    end
  end
  out[i] = found
end
return out
"#;

impl Client {
    /// One beat of `gateway` for every circle it serves, `(queue, ws url)`:
    /// each heartbeat key is written with `ttl` and the gateway added to
    /// each queue's set; the answer says, per circle in order, how long the
    /// freshest heartbeat of a worker registered for the queue has left to
    /// live (`None` when no worker has one: none is alive). One round trip
    /// however many circles.
    pub async fn gateway_beat(
        &self,
        gateway: &GatewayProcess,
        circles: &[(&str, &str)],
        ttl: Duration,
    ) -> Result<Vec<Option<Duration>>> {
        if circles.is_empty() {
            return Ok(Vec::new());
        }
        let ttl_ms = ttl_ms(ttl);
        let mut pipe = redis::pipe();
        for chunk in circles.chunks(BATCH) {
            let cmd = pipe.cmd("EVAL").arg(BEAT).arg(chunk.len() * 3);
            for (queue, _) in chunk {
                cmd.arg(keys::gateway_heartbeat(queue, &gateway.id))
                    .arg(keys::gateways(queue))
                    .arg(keys::workers(queue));
            }
            cmd.arg(&gateway.id).arg(ttl_ms);
            for (queue, url) in chunk {
                cmd.arg(Gateway::value(gateway.pid, &gateway.host, url))
                    .arg(keys::heartbeat(queue, ""));
            }
        }
        // Redis' clock, measured again each beat (see `RedisClock`).
        let (answers, ()) = tokio::join!(
            self.inner.conn.query_pipe::<Vec<Vec<i64>>>(&pipe),
            self.inner.conn.measure_clock()
        );
        let answers = answers?;
        let live: Vec<Option<Duration>> = answers.into_iter().flatten().map(time_left).collect();
        if live.len() != circles.len() {
            return Err(Error::Protocol(format!(
                "a gateway beat of {} circles answered {} rows",
                circles.len(),
                live.len()
            )));
        }
        Ok(live)
    }

    /// How long the freshest heartbeat of a worker registered for `queue`
    /// has left to live (`None` when no worker has one: none is alive), as
    /// a beat tells, writing nothing; a key without a TTL counts as `ttl`.
    /// One round trip.
    pub async fn worker_heartbeat(&self, queue: &str, ttl: Duration) -> Result<Option<Duration>> {
        let ttl_ms = ttl_ms(ttl);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(LOOK)
            .arg(1)
            .arg(keys::workers(queue))
            .arg(keys::heartbeat(queue, ""))
            .arg(ttl_ms);
        let left: i64 = self.inner.conn.query(&cmd).await?;
        Ok(time_left(left))
    }

    /// Takes `gateway` out of the gateway sets of `queues` and deletes its
    /// heartbeat keys (a clean shutdown, or circles it no longer serves).
    /// One round trip.
    pub async fn gateway_leave(&self, gateway: &GatewayProcess, queues: &[&str]) -> Result<()> {
        if queues.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for queue in queues {
            pipe.cmd("SREM")
                .arg(keys::gateways(queue))
                .arg(&gateway.id)
                .ignore()
                .cmd("DEL")
                .arg(keys::gateway_heartbeat(queue, &gateway.id))
                .ignore();
        }
        self.inner.conn.query_pipe::<()>(&pipe).await
    }

    /// The live gateways of every queue in `queues`, in order (each
    /// queue's sorted by id); members of a gateway set whose heartbeat
    /// expired are removed from it on the way. One round trip.
    pub async fn gateways_many(&self, queues: &[&str]) -> Result<Vec<Vec<Gateway>>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for chunk in queues.chunks(BATCH) {
            let cmd = pipe.cmd("EVAL").arg(LIST).arg(chunk.len());
            for queue in chunk {
                cmd.arg(keys::gateways(queue));
            }
            for queue in chunk {
                cmd.arg(keys::gateway_heartbeat(queue, ""));
            }
        }
        let answers: Vec<Vec<Vec<(String, String)>>> = self.inner.conn.query_pipe(&pipe).await?;
        let rows: Vec<Vec<Gateway>> = answers
            .into_iter()
            .flatten()
            .map(|found| {
                let mut gateways: Vec<Gateway> = found
                    .into_iter()
                    .map(|(id, value)| Gateway::parse(id, &value))
                    .collect();
                gateways.sort_by(|a, b| a.id.cmp(&b.id));
                gateways
            })
            .collect();
        if rows.len() != queues.len() {
            return Err(Error::Protocol(format!(
                "the gateways of {} queues answered {} rows",
                queues.len(),
                rows.len()
            )));
        }
        Ok(rows)
    }
}

/// A heartbeat's time left as a script answers it (ms; 0 or less: none
/// alive).
fn time_left(ms: i64) -> Option<Duration> {
    u64::try_from(ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::Gateway;

    #[test]
    fn a_heartbeat_value_reads_back_as_pid_host_and_url() {
        let value = Gateway::value(42, "box/abc", "ws://127.0.0.1:8081/ws");
        assert_eq!(value, "42|box/abc|ws://127.0.0.1:8081/ws");
        let g = Gateway::parse("g1".into(), &value);
        assert_eq!(g.pid, Some(42));
        assert_eq!(g.host, "box/abc");
        assert_eq!(g.url, "ws://127.0.0.1:8081/ws");
        let odd = Gateway::parse("g2".into(), "something else");
        assert_eq!((odd.pid, odd.url.as_str()), (None, "something else"));
    }
}
