//! The task clients of one orchestrator: one per distinct Redis URL (the
//! `--redis-url`, and each circle's own `redis` in circles.json), shared by
//! every circle on that URL — its websocket server, its counters, its drain.
//! A circle's worker makes its own connections to the same URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use client::RedisUrl;

use crate::config::CircleConfig;

/// The clients by URL. Cheap to clone; clones share the clients.
#[derive(Clone)]
pub struct Clients {
    inner: Arc<Inner>,
}

struct Inner {
    main: client::Client,
    main_url: RedisUrl,
    options: client::ClientOptions,
    others: Mutex<HashMap<RedisUrl, client::Client>>,
}

impl Clients {
    /// The clients, starting with `main`, connected to `--redis-url`;
    /// others connect with `options`.
    pub fn new(main: client::Client, main_url: RedisUrl, options: client::ClientOptions) -> Self {
        Clients {
            inner: Arc::new(Inner {
                main,
                main_url,
                options,
                others: Mutex::default(),
            }),
        }
    }

    fn others(&self) -> std::sync::MutexGuard<'_, HashMap<RedisUrl, client::Client>> {
        self.inner.others.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client of `--redis-url`.
    pub fn main(&self) -> &client::Client {
        &self.inner.main
    }

    /// Every client: the main one, then those of circles' own Redis.
    pub fn all(&self) -> Vec<client::Client> {
        let mut all = vec![self.inner.main.clone()];
        all.extend(self.others().values().cloned());
        all
    }

    /// The Redis URL of `circle`: its own, else `--redis-url`.
    pub fn url_of<'a>(&'a self, circle: &'a CircleConfig) -> &'a RedisUrl {
        circle.redis.as_ref().unwrap_or(&self.inner.main_url)
    }

    /// Connects a client for every URL of `circles` that has none yet; the
    /// error names the first circle whose Redis cannot be reached.
    pub async fn connect_for(&self, circles: &[CircleConfig]) -> anyhow::Result<()> {
        for circle in circles {
            let url = self.url_of(circle);
            if *url == self.inner.main_url || self.others().contains_key(url) {
                continue;
            }
            let failing = format!(
                "circle \"{}\" (id {}): cannot connect the task client to its redis at {url}",
                circle.name, circle.id
            );
            let client = connect(url, self.inner.options.clone(), &failing, || {
                " (the \"redis\" of the circle in circles.json). Fix: check that a Redis server \
                 (6.2 or newer) listens there, or that the sentinels of a redis+sentinel:// URL \
                 answer and monitor that service"
                    .to_string()
            })
            .await?;
            log::info!(
                circle = circle.name.as_str();
                "circle \"{}\" has its own redis at {url}: connected",
                circle.name
            );
            self.others().insert(url.clone(), client);
        }
        Ok(())
    }

    /// Closes the client of every Redis none of `running` uses any more
    /// (a reload moved or removed the circles that did): its reply
    /// listener and connections go, and nothing reconnects to a Redis that
    /// may be gone for good. The `--redis-url` client stays.
    pub fn close_unused(&self, running: &[CircleConfig]) {
        let mut others = self.others();
        others.retain(|url, _| {
            let used = running.iter().any(|c| self.url_of(c) == url);
            if !used {
                log::info!("no circle uses the redis at {url} any more: its task client is closed");
            }
            used
        });
    }

    /// The client of `circle`'s Redis. A circle whose own Redis was never
    /// connected ([`Clients::connect_for`]) gets the main client, logged:
    /// every caller connects first.
    pub fn of(&self, circle: &CircleConfig) -> client::Client {
        let url = self.url_of(circle);
        if *url == self.inner.main_url {
            return self.inner.main.clone();
        }
        match self.others().get(url) {
            Some(client) => client.clone(),
            None => {
                log::error!(
                    circle = circle.name.as_str();
                    "circle \"{}\": its redis at {url} has no client; using --redis-url",
                    circle.name
                );
                self.inner.main.clone()
            }
        }
    }

    /// `circles` grouped by Redis: each group's client and the positions
    /// of its circles in `circles`, in order.
    pub fn groups<'a>(
        &self,
        circles: impl IntoIterator<Item = &'a CircleConfig>,
    ) -> Vec<(client::Client, Vec<usize>)> {
        let mut groups: Vec<(RedisUrl, client::Client, Vec<usize>)> = Vec::new();
        for (i, circle) in circles.into_iter().enumerate() {
            let url = self.url_of(circle);
            match groups.iter_mut().find(|(u, ..)| u == url) {
                Some((.., members)) => members.push(i),
                None => groups.push((url.clone(), self.of(circle), vec![i])),
            }
        }
        groups
            .into_iter()
            .map(|(_, client, members)| (client, members))
            .collect()
    }
}

/// Connects a task client to `url`. A failure reads `failing` then `fix()`,
/// the cause below; except for a `rediss://` URL at a Redis that answers
/// plain RESP, where the TLS handshake only timed out: `failing` then says
/// so ([`crate::redis_setup::plain_at_tls_url`]).
pub async fn connect(
    url: &RedisUrl,
    options: client::ClientOptions,
    failing: &str,
    fix: impl FnOnce() -> String,
) -> anyhow::Result<client::Client> {
    let connected = client::Client::connect_with(url.as_str(), options).await;
    if connected.is_err()
        && let Some(why) = crate::redis_setup::plain_at_tls_url(url).await
    {
        bail!("{failing}: {why}");
    }
    if let Err(e) = &connected
        && let Some(why) = untrusted_certificate(url, e)
            .or_else(|| client_certificate_wanted(url, e))
            .or_else(|| closed_in_handshake(url, &e.to_string()))
    {
        return Err(anyhow::anyhow!(e.to_string()).context(format!("{failing}: {why}")));
    }
    connected.with_context(|| format!("{failing}{}", fix()))
}

/// What to say when a `rediss://` Redis refused the handshake for want of
/// a client certificate (its `tls-auth-clients yes`, the default): this
/// program sends none. `None` for any other failure.
fn client_certificate_wanted(url: &RedisUrl, error: &client::Error) -> Option<String> {
    (url.is_tls() && error.client_certificate_wanted()).then(|| {
        "Redis asks for a client certificate (mutual TLS), which this program does not send. \
         Fix: set tls-auth-clients no (or optional) in Redis's configuration"
            .to_string()
    })
}

/// What to say when a `rediss://` Redis closed the connection in the TLS
/// handshake: at `maxclients` it does so without a word (over plain TCP it
/// writes why), and a start has no other connection to ask it on. The close
/// reaches us as an end of file, or as a reset when our hello was still
/// unread. `None` for any other failure.
fn closed_in_handshake(url: &RedisUrl, error: &str) -> Option<String> {
    let closed = error.contains("tls handshake eof") || error.contains("Connection reset by peer");
    (url.is_tls() && closed).then(|| {
        "Redis closed the connection before the TLS handshake finished, as a Redis at its \
         maxclients does (over TLS without saying so). Fix: compare connected_clients with \
         maxclients (redis-cli INFO clients); raise maxclients, or open fewer connections to it"
            .to_string()
    })
}

/// What to say when a `rediss://` connection failed because the server's
/// certificate was not trusted (rustls names why: the name of its error,
/// or the sentence it writes for one that carries the times or names
/// involved); `None` for any other failure.
fn untrusted_certificate(url: &RedisUrl, error: &client::Error) -> Option<String> {
    let error = error.untrusted_certificate().filter(|_| url.is_tls())?;
    let fix = "pass the CA that signed it, or the self-signed certificate itself, with \
               --redis-ca PEM";
    let has = |marks: &[&str]| marks.iter().any(|m| error.contains(m));
    // A signature none of the trusted keys could have made (an EC
    // certificate against RSA roots) is reported as an unsupported
    // algorithm: it is a certificate no trusted CA signed.
    Some(
        if has(&[
            "UnknownIssuer",
            "BadSignature",
            "UnsupportedSignatureAlgorithm",
        ]) {
            format!(
                "the certificate of Redis is not trusted: no CA this machine or --redis-ca trusts \
             signed it. Fix: {fix}"
            )
        } else if has(&["NotValidForName", "certificate not valid for name"]) {
            "the certificate of Redis is not trusted: it is not made out for the URL's host name. \
         Fix: connect with a name the certificate lists"
                .to_string()
        } else if has(&["Expired", "certificate expired"]) {
            "the certificate of Redis is not trusted: it has expired. Fix: renew it".to_string()
        } else if has(&["NotValidYet", "certificate not valid yet"]) {
            "the certificate of Redis is not trusted: it is not valid yet. Fix: check the clock \
             of this machine and the certificate's start date"
                .to_string()
        } else {
            format!("the certificate of Redis is not trusted. Fix: {fix}")
        },
    )
}
