//! A `redis-server`, so that a test can kill and restart it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a fresh server may take to answer.
const START_WAIT: Duration = Duration::from_secs(15);

pub struct RedisServer {
    pub port: u16,
    child: Child,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        RedisServer::start_on(crate::free_port()).await
    }

    /// A fresh, empty server on `port` (a Redis that came back after a
    /// crash, its data lost).
    pub async fn start_on(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "SKIPPED is not an option here: this test was asked for, but redis-server \
                     cannot be started ({e}); install it (apt-get install redis-server)"
                )
            });
        let mut server = RedisServer { port, child };
        let deadline = tokio::time::Instant::now() + START_WAIT;
        while !ping(&server.url()).await {
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "redis-server on port {port} exited"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server on port {port} did not answer within {START_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, and wait until it is gone: everything it held is lost.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A connection for a test's own look at what is stored.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let attempt = async {
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(_))
    )
}
