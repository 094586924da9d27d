//! A `redis-server` that answers LOADING for about 2 s after it starts:
//! for the tests of what happens while the orchestrator waits for it.

use std::path::Path;

/// A `redis-server` started by the test with `args`, killed on drop.
pub struct OwnRedis(std::process::Child);

impl OwnRedis {
    pub fn start(port: u16, dir: &Path, args: &[&str]) -> OwnRedis {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir)
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server");
        OwnRedis(child)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Redis on a free port (its data in the sandbox's `redis` dir) still
/// loading its data when this returns, and its port.
pub async fn loading_redis(sandbox: &super::Sandbox) -> (OwnRedis, u16) {
    let redis_dir = sandbox.path().join("redis");
    std::fs::create_dir_all(&redis_dir).expect("redis dir");
    let redis_port = super::port();
    let url = format!("redis://127.0.0.1:{redis_port}");
    {
        let _first = OwnRedis::start(redis_port, &redis_dir, &[]);
        assert_eq!(super::ping_reply(redis_port), "+PONG");
        let mut conn = redis::Client::open(url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let mut pipe = redis::pipe();
        for i in 0..20_000 {
            pipe.cmd("SET").arg(format!("ballast:{i}")).arg(i).ignore();
        }
        let () = pipe.query_async(&mut conn).await.expect("ballast");
        let () = redis::cmd("SAVE")
            .query_async(&mut conn)
            .await
            .expect("save");
    }
    // Restarted with a (Redis test-suite) delay of 100 µs per key loaded,
    // and answering while it loads: about 2 s of LOADING.
    let loading = OwnRedis::start(
        redis_port,
        &redis_dir,
        &[
            "--key-load-delay",
            "100",
            "--loading-process-events-interval-bytes",
            "1024",
        ],
    );
    assert!(
        super::ping_reply(redis_port).starts_with("-LOADING"),
        "redis should still be loading"
    );
    (loading, redis_port)
}
