//! A client that does not read its replies: what the server keeps queued for
//! it stays within `MAX_UNSENT_BYTES`, the server stops reading it instead
//! of taking in more work, and reading later delivers every reply.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Fixture, PROMPTLY, Ws, eventually, play, recv, send};
use server_ws::{MAX_UNSENT_BYTES, ServerStatus, ServerTiming};
use tokio_tungstenite::MaybeTlsStream;

/// The output of each reply: a reply alone fills the outbox.
const BIG: usize = 1 << 20;
/// Requests the client sends: far more than the outbox, the socket buffers
/// and the replies waiting for room can take.
const SENT: usize = 40;
/// Long enough for a request the server reads to be run and answered; past
/// it the server is taken to have stopped reading.
const TAKEN_IN: Duration = Duration::from_secs(3);

/// Whether `f` holds within `limit`.
async fn within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !f() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Whether the server took in request number `n` (from 1) and has answered it.
fn answered(status: &ServerStatus, n: usize) -> bool {
    status.requests() == n as u64 && status.in_flight() == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_not_read_either_and_later_gets_every_reply() {
    // Slots for all, so no request is refused once reading resumes.
    let fx = Fixture::start(|c| c.max_in_flight = SENT).await;
    let status = fx.status.clone();
    let mut ws = fx.connect().await;
    let big = format!("big:{BIG}");
    // One request at a time, each once the one before was answered, never
    // reading: while the socket buffers and the outbox take the replies the
    // server goes on; then it stops reading, so the requests after are not
    // submitted.
    let mut sent = 0;
    while sent < SENT {
        send(&mut ws, &play(sent, &big)).await;
        sent += 1;
        if !within(TAKEN_IN, || answered(&status, sent)).await {
            break;
        }
    }
    // What the server read (the last one sent may be among them, slow to
    // answer).
    let taken_in = status.requests() as usize;
    assert!(
        taken_in < SENT,
        "the server took in all {SENT} requests of {BIG} bytes each from a client that \
         read nothing"
    );
    for id in sent..SENT {
        send(&mut ws, &play(id, &big)).await;
    }
    // A quiet while: nothing more is read.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        status.requests(),
        taken_in as u64,
        "requests were submitted after the server stopped reading"
    );
    let unsent = status.unsent_bytes();
    assert!(
        unsent <= MAX_UNSENT_BYTES,
        "{unsent} bytes queued for a client that does not read (limit {MAX_UNSENT_BYTES})"
    );
    // Reading delivers every reply, each whole.
    let mut ids = BTreeSet::new();
    for _ in 0..SENT {
        let reply = recv(&mut ws).await;
        assert_eq!(
            reply["result"]["output"].as_str().map(str::len),
            Some(BIG),
            "reply {} is not the result",
            reply["id"]
        );
        ids.insert(reply["id"].as_u64().expect("a numeric id"));
    }
    assert_eq!(ids, (0..SENT as u64).collect::<BTreeSet<_>>());
    assert_eq!(status.requests(), SENT as u64);
    eventually("the outbox to empty", || status.unsent_bytes() == 0).await;
    ws.close(None).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_holding_no_more_than_the_outbox() {
    let timing =
        server_ws::ServerTiming::heartbeat(Duration::from_millis(50), Duration::from_millis(300));
    let fx = Fixture::start_with(|c| c.max_in_flight = SENT, timing, true).await;
    let status = fx.status.clone();
    let mut ws = fx.connect().await;
    for id in 0..SENT {
        send(&mut ws, &play(id, &format!("big:{BIG}"))).await;
    }
    // Never reading: the server stops reading too, queues at most the
    // outbox, and drops the client once it has taken nothing for the client
    // timeout.
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while status.connections() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client that never reads was never dropped"
        );
        let unsent = status.unsent_bytes();
        assert!(
            unsent <= MAX_UNSENT_BYTES,
            "{unsent} bytes queued (limit {MAX_UNSENT_BYTES})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eventually("its requests to be abandoned", || status.in_flight() == 0).await;
    // What was queued is let go with the socket.
    drop(ws);
    eventually("what was queued to be let go", || {
        status.unsent_bytes() == 0
    })
    .await;
}

/// The state (as `/proc/net/tcp` spells it: 01 is ESTABLISHED) and the bytes
/// queued to send (sent and unacknowledged, or not yet sent) of the IPv4
/// socket from port `local` to port `remote`, if there is one.
fn tcp_socket(local: u16, remote: u16) -> Option<(u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if port(fields[1])? != local || port(fields[2])? != remote {
            return None;
        }
        let state = u8::from_str_radix(fields[3], 16).ok()?;
        let queued = u64::from_str_radix(fields[4].split(':').next()?, 16).ok()?;
        Some((state, queued))
    })
}

/// The client's own port.
fn client_port(ws: &Ws) -> u16 {
    match ws.get_ref() {
        MaybeTlsStream::Plain(stream) => stream.local_addr().expect("local addr").port(),
        _ => panic!("expected a plain TCP stream"),
    }
}

/// A client that never reads its replies, and keeps its socket open, leaves no
/// socket behind once the server drops it: the server's socket to it, whose
/// replies stay unacknowledged behind the client's shut window, is aborted by
/// the kernel once the client timeout passes (the listener's
/// TCP_USER_TIMEOUT), and the server lets it go, rather than holding it
/// ESTABLISHED with a full send queue for as long as the client stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_client_that_never_reads_leaves_no_socket_behind() {
    // Long enough for the replies to fill the sockets first on a busy
    // machine: a client that never reads answers no ping either, so while
    // the replies are still being made it counts as silent.
    let client_timeout = Duration::from_secs(3);
    let timing = ServerTiming::heartbeat(Duration::from_millis(100), client_timeout);
    let fx = Fixture::start_with(|c| c.max_in_flight = SENT, timing, true).await;
    let status = fx.status.clone();
    let server = fx.addr.port();
    let mut ws = fx.connect().await;
    let client = client_port(&ws);
    for id in 0..SENT {
        send(&mut ws, &play(id, &format!("big:{BIG}"))).await;
    }
    // Never reading: the server's socket fills up with replies the client's
    // shut window does not take.
    eventually("the server's socket to fill with replies", || {
        tcp_socket(server, client).is_some_and(|(_, queued)| queued >= BIG as u64)
    })
    .await;
    eventually("the client to be dropped", || status.connections() == 0).await;
    let dropped = tokio::time::Instant::now();
    // Well past the client timeout, the server holds no socket to the client.
    let deadline = dropped + 3 * client_timeout;
    while let Some((state, queued)) = tcp_socket(server, client) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?} after dropping the client the server still holds its socket to it \
             (state {state:02X}, {queued} bytes queued for it)",
            dropped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The client kept its side open all along.
    assert!(
        tcp_socket(client, server).is_some(),
        "the client's socket closed"
    );
    drop(ws);
}

/// The scripts of every task in Redis.
async fn queued_scripts(fx: &Fixture) -> Vec<String> {
    common::task_hashes(fx)
        .await
        .into_iter()
        .filter_map(|mut h| h.remove("script"))
        .collect()
}

/// A notification (no id) of `script`.
fn notification_text(script: &str) -> String {
    serde_json::json!({"jsonrpc":"2.0","method":"play","params":{"script":script}}).to_string()
}

/// A connection whose outbox is full (its client reads nothing) reads no
/// more frames, but a notification it read ahead while another waited for
/// the one in-flight slot is still queued when the server shuts down: every
/// notification the server read is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_read_ahead_is_queued_when_the_server_shuts_down_with_a_full_outbox() {
    let timing = ServerTiming::default().with_drain_timeout(Duration::from_secs(1));
    let mut fx = Fixture::start_with(|c| c.max_in_flight = 1, timing, true).await;
    let status = fx.status.clone();
    let mut ws = fx.connect().await;

    // Phase 1: fill the kernel's socket buffers with replies the client does
    // not read, one request at a time, until replies stay in the outbox (but
    // far less than its 1 MiB, so the server still reads).
    let mut n = 0u64;
    loop {
        send(&mut ws, &play(n, "big:200000")).await;
        n += 1;
        common::eventually("the request to be answered", || {
            status.requests() == n && status.in_flight() == 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        if status.unsent_bytes() > 0 {
            break;
        }
        assert!(n < 200, "the socket buffers never filled");
    }
    let unsent = status.unsent_bytes();
    assert!(
        unsent < 500_000,
        "{unsent} bytes unsent: the outbox is already full"
    );

    // Phase 2: no worker for a moment; a big request takes the one slot.
    fx.worker_token.cancel();
    tokio::time::sleep(Duration::from_millis(600)).await;
    send(&mut ws, &play(9999, "big:1048576")).await;
    common::eventually("the big request to be in flight", || {
        status.requests() == n + 1 && status.in_flight() == 1
    })
    .await;
    // N1 waits for the slot (the server reads on meanwhile); N2 is read ahead.
    send(&mut ws, &notification_text("echo:first-notification")).await;
    send(&mut ws, &notification_text("echo:second-notification")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A worker again: the big request ends (its 1 MiB reply waits for room
    // in the outbox), N1 takes its slot and is queued.
    let worker = tokio_util::sync::CancellationToken::new();
    tokio::spawn(common::stand_in_worker(fx.redis.url(), worker.clone()));
    common::eventually_async("the first notification to be queued", || async {
        queued_scripts(&fx)
            .await
            .iter()
            .any(|s| s == "echo:first-notification")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The server shuts down.
    fx.shut_down().await.expect("run returns Ok");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = queued_scripts(&fx).await;
    worker.cancel();
    assert!(
        all.iter().any(|s| s == "echo:second-notification"),
        "the second notification, which the server had read, was never queued \
         (tasks in redis: {} of them, first notification queued: {})",
        all.len(),
        all.iter().any(|s| s == "echo:first-notification"),
    );
}
