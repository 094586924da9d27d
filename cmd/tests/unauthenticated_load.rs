//! What a client without a token can take from everyone else, through the
//! built binary: SECURITY.md says such a client, at a circle with
//! principals, can make "upgrade attempts only". Here one such client (its
//! own address, 127.0.0.2) holds HTTP/1.1 connections to a protected
//! circle's port, each sending a request for a path that does not exist
//! every 2 s so that keep-alive would never end it, and connecting again at
//! once when one is closed; meanwhile another client (127.0.0.1) must still
//! reach another circle and the admin probe. The orchestrator starts with
//! a limit of 1024 open files, soft and hard (the usual soft limit, here
//! not to be raised): the bound per address must do it alone. The same
//! client's connections to the admin endpoint, half of them event streams
//! (which stay open by design), must not shut out another address's
//! `/healthz` nor the circles either: past its bound an address gets 503,
//! as does an event stream past the bound on all of them, and every refusal
//! closes its connection.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Orchestrator, Sandbox, hold_quietly, port, sha256_hex};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Connections the one client holds.
const HELD: usize = 1100;

/// The status code of one raw request to `127.0.0.1:port`, or why there is
/// none within 3 s.
async fn status_of(port: u16, request: &str) -> Result<u16, String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut head = [0u8; 64];
        let n = stream
            .read(&mut head)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let line = String::from_utf8_lossy(&head[..n]).to_string();
        line.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or(format!("not HTTP: {line:?}"))
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer within 3 s".to_string()))
}

fn upgrade_request(port: u16) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// One connection held from `from`: a request for `path` every 2 s
/// (reading what comes back in between) until `stop`, connecting again
/// whenever the server closes it.
async fn hold(from: [u8; 4], port: u16, path: &'static str, stop: Arc<AtomicBool>) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    while !stop.load(Ordering::Relaxed) {
        let connect = async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind((from, 0).into())?;
            socket.connect(([127, 0, 0, 1], port).into()).await
        };
        let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(1), connect).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            if stream.write_all(request.as_bytes()).await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                _ => {}
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Rounds of (an upgrade's status, `/healthz`'s status), or why there was none.
type Answers = Vec<(Result<u16, String>, Result<u16, String>)>;

/// What another address (127.0.0.1) gets three times, after 8 s in which
/// one client has held [`HELD`] connections to `target` from 127.0.0.2 (the
/// i-th asking for `paths[i % paths.len()]`): an upgrade at `circle` and
/// `/healthz` at `admin`, both answered before the client starts; and how
/// many log lines of `o` say an accept failed for lack of descriptors.
fn answers_while_held(
    o: &Orchestrator,
    target: u16,
    paths: &[&'static str],
    circle: u16,
    admin: u16,
) -> (Answers, usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let seen = runtime.block_on(async {
        let healthz = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\n\r\n");
        assert_eq!(status_of(circle, &upgrade_request(circle)).await, Ok(101));
        assert_eq!(status_of(admin, &healthz).await, Ok(200));

        let stop = Arc::new(AtomicBool::new(false));
        let holders: Vec<_> = (0..HELD)
            .map(|i| {
                let path = paths[i % paths.len()];
                tokio::spawn(hold([127, 0, 0, 2], target, path, Arc::clone(&stop)))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(8)).await;
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push((
                status_of(circle, &upgrade_request(circle)).await,
                status_of(admin, &healthz).await,
            ));
        }
        stop.store(true, Ordering::Relaxed);
        for h in holders {
            h.abort();
        }
        seen
    });
    let refused_accepts = o
        .stderr()
        .lines()
        .filter(|l| l.contains("Too many open files"))
        .count();
    (seen, refused_accepts)
}

#[test]
fn idle_connections_of_one_client_without_a_token_do_not_shut_out_other_circles() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let (guarded, other, admin) = (port(), port(), port());
    let circles = json!([
        {"id": 1, "name": "Guarded", "port": guarded, "principals": [
            {"name": "ann", "token_sha256": sha256_hex("a-token-nobody-here-has"), "role": "write"}]},
        {"id": 2, "name": "Other", "port": other},
    ]);
    let config = sandbox.write("circles.json", &circles.to_string());
    let serve = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    // The same command, with at most 1024 open files.
    let mut cmd = common::limited(&serve, "1024:1024");
    cmd.args(["--admin", &format!("127.0.0.1:{admin}")]);
    cmd.env("CIRCLES_ADMIN", format!("127.0.0.1:{admin}"));
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();

    let (seen, refused_accepts) = answers_while_held(&o, guarded, &["/nothing"], other, admin);
    assert!(
        seen.iter().all(|s| *s == (Ok(101), Ok(200))),
        "while one client without a token held {HELD} connections to the protected \
         circle, the open circle's upgrades and /healthz from another address got \
         {seen:?} ({refused_accepts} log lines say accept failed: Too many open files)"
    );
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

#[test]
fn connections_and_event_streams_of_one_client_at_the_admin_port_do_not_shut_out_probes_or_circles()
{
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let (circle, admin) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let serve = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    let mut cmd = common::limited(&serve, "1024:1024");
    cmd.args(["--admin", &format!("127.0.0.1:{admin}")]);
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();

    // Half the connections refused (a path not served), half event streams.
    let paths = ["/nothing", "/api/events"];
    let (seen, refused_accepts) = answers_while_held(&o, admin, &paths, circle, admin);
    assert!(
        seen.iter().all(|s| *s == (Ok(101), Ok(200))),
        "while one client held {HELD} connections to the admin endpoint (half of them \
         event streams), the circle's upgrades and /healthz from another address got \
         {seen:?} ({refused_accepts} log lines say accept failed: Too many open files)"
    );
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// A connection to `to` from the loopback address `from`.
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .expect("bind the client's address");
    socket.connect(&to.into()).expect("connect");
    let stream = TcpStream::from(socket);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
}

/// Sends `GET path` on `stream` (keep-alive) and reads until the answer's
/// head and the start of its body are in: the status code and that text.
fn ask(stream: &mut TcpStream, path: &str) -> (u16, String) {
    let addr = stream.peer_addr().expect("peer");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("\r\n\r\n") {
        let n = stream.read(&mut buf).expect("read the answer");
        assert!(n > 0, "closed before an answer to {path}");
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, text)
}

/// Whether the server closed `stream` after its answer (reads what is left).
fn closed(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).is_ok()
}

/// The bounds themselves: 32 connections per address, the 33rd answered
/// 503 (another address still served); 64 event streams over all
/// addresses, the 65th answered 503 until one closes; every refusal closes
/// its connection, a success keeps it.
#[test]
fn past_its_bounds_the_admin_endpoint_answers_503_and_every_refusal_closes_its_connection() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let admin: SocketAddr = ([127, 0, 0, 1], port()).into();
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &["--admin", &admin.to_string()],
    );
    o.wait_table();

    // A success keeps its connection; a refusal (404 here) closes it.
    let mut kept = connect_from([127, 0, 0, 2], admin);
    assert_eq!(ask(&mut kept, "/healthz").0, 200);
    let (code, text) = ask(&mut kept, "/nothing");
    assert_eq!(code, 404, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(closed(&mut kept), "a refused connection stays open");

    // 32 connections of one address are served; its 33rd is not.
    let mut held: Vec<TcpStream> = (0..32)
        .map(|_| {
            let mut s = connect_from([127, 0, 0, 2], admin);
            assert_eq!(ask(&mut s, "/healthz").0, 200);
            s
        })
        .collect();
    let mut over = connect_from([127, 0, 0, 2], admin);
    let (code, mut text) = ask(&mut over, "/healthz");
    over.read_to_string(&mut text).expect("read to the close");
    assert_eq!(code, 503, "{text}");
    assert!(
        text.contains("too many connections from this address"),
        "{text}"
    );
    assert_eq!(
        ask(&mut connect_from([127, 0, 0, 1], admin), "/healthz").0,
        200
    );
    held.clear();

    // 64 event streams from two addresses; a 65th from a third waits for
    // one of them to close.
    let mut streams: Vec<TcpStream> = [[127, 0, 0, 3], [127, 0, 0, 4]]
        .iter()
        .flat_map(|from| (0..32).map(|_| connect_from(*from, admin)))
        .map(|mut s| {
            let (code, text) = ask(&mut s, "/api/events");
            assert_eq!(code, 200, "{text}");
            s
        })
        .collect();
    let mut extra = connect_from([127, 0, 0, 5], admin);
    let (code, mut text) = ask(&mut extra, "/api/events");
    extra.read_to_string(&mut text).expect("read to the close");
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("too many event streams open (64)"), "{text}");
    streams.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, text) = ask(&mut connect_from([127, 0, 0, 5], admin), "/api/events");
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed stream's place stayed taken: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(streams);
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// The orchestrator raises its soft limit of open files to the hard one:
/// every circle's connections and databases share the process's
/// descriptors, and the usual soft limit (1024) is soon reached.
#[test]
fn the_soft_limit_of_open_files_is_raised_to_the_hard_one() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let config = sandbox.circles(&[(1, "Alpha", port())]);
    let serve = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    let mut o = Orchestrator::spawn(common::limited(&serve, "1024:4096"));
    o.wait_table();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", o.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a line for open files");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{line}");
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// The addresses of [`hold_quietly`]'s many clients: 127.0.0.10 to 127.0.0.49.
const MANY: std::ops::Range<u8> = 10..50;

/// Connections each of the [`MANY`] addresses holds: below its bound (the
/// circle's 64 upgraded plus 64 on their way in), and 1,280 over all of
/// them, more than the process's 1,024 open files.
const EACH: usize = 32;

/// A `play` of `40 + 2` at the circle on `port` from 127.0.0.1, within
/// 3 s: its output, or why there is none.
async fn plays(port: u16) -> Result<String, String> {
    let attempt = async {
        let (mut ws, _) = tokio_tungstenite::connect_async(common::ws(port))
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": "play",
                             "params": {"script": "40 + 2"}});
        ws.send(Message::text(request.to_string()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        while let Some(frame) = ws.next().await {
            match frame.map_err(|e| format!("read: {e}"))? {
                Message::Text(text) => {
                    let reply: serde_json::Value =
                        serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
                    return reply["result"]["output"]
                        .as_str()
                        .map(str::to_string)
                        .ok_or(format!("{reply}"));
                }
                Message::Close(frame) => return Err(format!("closed: {frame:?}")),
                _ => {}
            }
        }
        Err("the connection ended".to_string())
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer within 3 s".to_string()))
}

/// What each of the [`MANY`] addresses at the admin endpoint holds: below
/// its bound of 32, and 1,200 over all of them.
const EACH_AT_ADMIN: usize = 30;

/// Many addresses, each below its bound, together hold more connections to
/// the admin endpoint than the process has file descriptors: each asks
/// `/healthz` every 2 s, and a success keeps its connection. The admin
/// endpoint's share closes the connections past it at once, so the
/// circles' descriptors stay theirs: another address's client still
/// upgrades at a circle and plays, also after Redis cut every client (the
/// task client and the worker connect again), and no accept fails.
#[test]
fn connections_of_many_addresses_to_the_admin_endpoint_do_not_take_the_circles_descriptors() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let (circle, admin) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let serve = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    let mut cmd = common::limited(&serve, "1024:1024");
    cmd.args(["--admin", &format!("127.0.0.1:{admin}")]);
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (upgrades, played) = runtime.block_on(async {
        assert_eq!(plays(circle).await, Ok("42".to_string()));
        let stop = Arc::new(AtomicBool::new(false));
        let holders: Vec<_> = MANY
            .flat_map(|last| (0..EACH_AT_ADMIN).map(move |_| [127, 0, 0, last]))
            .map(|from| tokio::spawn(hold(from, admin, "/healthz", Arc::clone(&stop))))
            .collect();
        tokio::time::sleep(Duration::from_secs(8)).await;
        let mut upgrades = Vec::new();
        for _ in 0..3 {
            upgrades.push(status_of(circle, &upgrade_request(circle)).await);
        }
        let killed = testkit::command(redis.port(), &["CLIENT", "KILL", "TYPE", "normal"]);
        assert!(killed.is_ok(), "CLIENT KILL: {killed:?}");
        let deadline = Instant::now() + Duration::from_secs(15);
        let played = loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let played = plays(circle).await;
            if played.is_ok() || Instant::now() > deadline {
                break played;
            }
        };
        stop.store(true, Ordering::Relaxed);
        for h in holders {
            h.abort();
        }
        (upgrades, played)
    });
    let refused_accepts = o
        .stderr()
        .lines()
        .filter(|l| l.contains("Too many open files"))
        .count();
    let held = MANY.len() * EACH_AT_ADMIN;
    assert!(
        upgrades.iter().all(|s| *s == Ok(101))
            && played == Ok("42".to_string())
            && refused_accepts == 0,
        "while {} addresses held {held} connections to the admin endpoint \
         ({EACH_AT_ADMIN} each), upgrades from another address got {upgrades:?}, and a \
         play after Redis cut every client got {played:?}; {refused_accepts} log lines \
         say an accept failed: Too many open files",
        MANY.len()
    );
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// Many addresses, each below its bound, together hold more connections to
/// a circle than the process has file descriptors. The process-wide bound
/// closes the connections past it at once, so none of its descriptors run
/// out: another address's `/healthz` is answered all along (the admin
/// endpoint has a share of its own), Redis connections that were cut are
/// made again (`/readyz` answers 200), no accept fails, and once the many
/// clients let go the circle upgrades another address's client again.
#[test]
fn connections_of_many_addresses_together_do_not_take_the_descriptors_of_probes_or_redis() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let (circle, admin) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let serve = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    let mut cmd = common::limited(&serve, "1024:1024");
    cmd.args(["--admin", &format!("127.0.0.1:{admin}")]);
    let mut o = Orchestrator::spawn(cmd);
    o.wait_table();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (healthz, readyz, upgrade_after) = runtime.block_on(async {
        let probe = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\n\r\n");
        assert_eq!(status_of(circle, &upgrade_request(circle)).await, Ok(101));
        assert_eq!(status_of(admin, &probe("/healthz")).await, Ok(200));

        let stop = Arc::new(AtomicBool::new(false));
        let holders: Vec<_> = MANY
            .flat_map(|last| (0..EACH).map(move |_| [127, 0, 0, last]))
            .map(|from| tokio::spawn(hold_quietly(from, circle, Arc::clone(&stop))))
            .collect();
        tokio::time::sleep(Duration::from_secs(8)).await;
        let mut healthz = Vec::new();
        for _ in 0..3 {
            healthz.push(status_of(admin, &probe("/healthz")).await);
        }
        // Every client of Redis but this one is cut: the orchestrator's
        // task client and worker connect again, with new descriptors.
        let killed = testkit::command(redis.port(), &["CLIENT", "KILL", "TYPE", "normal"]);
        assert!(killed.is_ok(), "CLIENT KILL: {killed:?}");
        let deadline = Instant::now() + Duration::from_secs(15);
        let readyz = loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let readyz = status_of(admin, &probe("/readyz")).await;
            if readyz == Ok(200) || Instant::now() > deadline {
                break readyz;
            }
        };
        stop.store(true, Ordering::Relaxed);
        for h in holders {
            let _ = h.await;
        }
        // Their connections closed, the circle upgrades again.
        let deadline = Instant::now() + Duration::from_secs(10);
        let upgrade_after = loop {
            let upgrade = status_of(circle, &upgrade_request(circle)).await;
            if upgrade == Ok(101) || Instant::now() > deadline {
                break upgrade;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        (healthz, readyz, upgrade_after)
    });
    let stderr = o.stderr();
    let refused: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Too many open files"))
        .collect();
    let refused_accepts = refused.len();
    let held = MANY.len() * EACH;
    assert!(
        healthz.iter().all(|s| *s == Ok(200))
            && readyz == Ok(200)
            && upgrade_after == Ok(101)
            && refused_accepts == 0,
        "while {} addresses held {held} connections to a circle ({EACH} each), /healthz \
         from another address got {healthz:?}, /readyz after Redis cut every client got \
         {readyz:?}, and after they let go an upgrade got {upgrade_after:?}; \
         {refused_accepts} log lines say an accept failed: Too many open files ({:?})",
        MANY.len(),
        refused.first()
    );
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// One address alone, past its bound of 32 at the admin endpoint, holds
/// connections that send nothing (each closed by actix's request timeout
/// after 5 s, and made again half a second later): they must not take the
/// whole endpoint's budget (96) and shut out another address's probes, as
/// the bound per address says. A connection past the bound that sends a
/// request is answered 503 and closed; one that sends nothing must not
/// hold a place the other addresses need.
#[test]
fn silent_connections_of_one_address_past_its_bound_do_not_shut_out_another_addresss_probes() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let (circle, admin) = (port(), port());
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let mut o = Orchestrator::start(
        &sandbox,
        &config,
        &redis.url(),
        &["--admin", &format!("127.0.0.1:{admin}")],
    );
    o.wait_table();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let probes = runtime.block_on(async {
        let probe = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\n\r\n");
        assert_eq!(status_of(admin, &probe).await, Ok(200));
        let stop = Arc::new(AtomicBool::new(false));
        let holders: Vec<_> = (0..150)
            .map(|_| tokio::spawn(hold_quietly([127, 0, 0, 2], admin, Arc::clone(&stop))))
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut probes = Vec::new();
        for _ in 0..6 {
            probes.push(status_of(admin, &probe).await);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for h in holders {
            h.abort();
        }
        probes
    });
    assert!(
        probes.iter().all(|p| *p == Ok(200)),
        "while 127.0.0.2 held silent connections past its bound of 32, /healthz from \
         127.0.0.1 got {probes:?}"
    );
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}

/// The same at a circle's port, under a limit of 1024 open files (720
/// connections for the hosts): one address (its bound 128) holding 900
/// silent connections must not shut another address out of the circle.
#[test]
fn silent_connections_of_one_address_past_its_bound_do_not_shut_another_address_out_of_a_circle() {
    let redis = testkit::RedisServer::start();
    let sandbox = Sandbox::new();
    let circle = port();
    let config = sandbox.circles(&[(1, "Alpha", circle)]);
    let serve = sandbox.serve_command(&config, &redis.url(), &sandbox.data_dir());
    let mut o = Orchestrator::spawn(common::limited(&serve, "1024:1024"));
    o.wait_table();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let upgrades = runtime.block_on(async {
        assert_eq!(status_of(circle, &upgrade_request(circle)).await, Ok(101));
        let stop = Arc::new(AtomicBool::new(false));
        let holders: Vec<_> = (0..900)
            .map(|_| tokio::spawn(hold_quietly([127, 0, 0, 2], circle, Arc::clone(&stop))))
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut upgrades = Vec::new();
        for _ in 0..6 {
            upgrades.push(status_of(circle, &upgrade_request(circle)).await);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for h in holders {
            h.abort();
        }
        upgrades
    });
    assert!(
        upgrades.iter().all(|u| *u == Ok(101)),
        "while 127.0.0.2 held 900 silent connections to the circle (its bound 128), \
         upgrades from 127.0.0.1 got {upgrades:?}"
    );
    assert_eq!(o.stop().code(), Some(0), "{}", o.stderr());
}
