//! A `redis-server` of a test's own on a free loopback port, killed when
//! dropped (never the machine's shared one). Tests that use it are
//! `#[ignore]`d; asked for without the binary installed, they fail.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, WAIT};

pub struct RedisServer {
    pub port: u16,
    child: Child,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        RedisServer::start_on(port).await
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
        let url = server.url();
        eventually("redis-server to answer PING", WAIT, || {
            let url = url.clone();
            async move { ping(&url).await.then_some(()) }
        })
        .await;
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "redis-server on port {port} exited"
        );
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A connection for a test's own look at what the gateways stored.
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
