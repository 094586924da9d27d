//! A host of one circle run by `server_ws::run_many_pausable`, as the
//! orchestrator runs its hosts (its own budget), with Redis and a stand-in
//! worker.

use std::net::SocketAddr;
use std::sync::Arc;

use server_ws::{Budget, CircleServer, Pause, ServerConfig, ServerStatus, ServerTiming};
use tokio_util::sync::CancellationToken;

use super::tls::Certificate;
use super::{QUEUE, stand_in_worker};

/// A running host, its address and budget.
pub struct Host {
    _redis: testkit::RedisServer,
    pub addr: SocketAddr,
    pub budget: Arc<Budget>,
    pub token: CancellationToken,
    pub worker: CancellationToken,
    pub host: tokio::task::JoinHandle<server_ws::Result<()>>,
}

impl Host {
    /// One circle of `--max-connections 1`, its budget 10,000.
    pub async fn start(tls: Option<&Certificate>) -> Host {
        Host::start_with(tls, 1, 10_000).await
    }

    /// One circle (`tls`: served as `wss://`) of `max_connections` on a
    /// host of its own whose budget is `budget` connections.
    pub async fn start_with(
        tls: Option<&Certificate>,
        max_connections: usize,
        budget: usize,
    ) -> Host {
        let redis = testkit::RedisServer::start();
        let client = client::Client::connect(&redis.url())
            .await
            .expect("connect the client");
        let worker = CancellationToken::new();
        tokio::spawn(stand_in_worker(redis.url(), worker.clone()));
        let mut config = ServerConfig::new("Alpha", QUEUE);
        config.max_connections = max_connections;
        config.tls = tls.map(|c| c.config.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let circle = CircleServer::new(config, listener, Arc::new(ServerStatus::default()));
        let budget = Budget::new("test host", budget);
        let token = CancellationToken::new();
        let host = tokio::spawn(server_ws::run_many_pausable(
            vec![circle],
            ServerTiming::default(),
            client,
            token.clone(),
            Pause::new(),
            Arc::clone(&budget),
        ));
        Host {
            _redis: redis,
            addr,
            budget,
            token,
            worker,
            host,
        }
    }

    /// Stops the host (it must end cleanly), then the stand-in worker.
    pub async fn stop(self) {
        self.token.cancel();
        self.host.await.expect("host task").expect("host");
        self.worker.cancel();
    }
}
