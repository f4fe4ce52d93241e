//! moto's server mode: an S3-compatible store. `.ci/run` installs it
//! (`pip install 'moto[server]'`); `MOTO_SERVER` names another binary.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

const NEEDS: &str =
    "needs an S3-compatible server: moto_server (pip install 'moto[server]'), started by the test";

/// How long moto (a Python program) may take to start answering.
const START_WAIT: Duration = Duration::from_secs(60);

pub struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    pub async fn start() -> MotoServer {
        let binary = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = crate::free_port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start {binary:?} ({error}): this suite {NEEDS}; .ci/run installs it")
            });
        let mut server = MotoServer { child, port };
        server.wait_until_ready().await;
        server
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + START_WAIT;
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr).await;
                }
                panic!(
                    "moto_server exited ({status}) before serving: {stderr}\nThis suite {NEEDS}"
                );
            }
            if client.get(self.url("/")).send().await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {} within {START_WAIT:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let response = reqwest::Client::new()
            .put(self.url(&format!("/{bucket}")))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "creating bucket {bucket}: {}",
            response.status()
        );
    }

    /// `FILE_STORE_URL` for `bucket` under `prefix`: path-style requests,
    /// plain HTTP (implied by the endpoint), dummy credentials, which is
    /// what a local server wants.
    pub fn store_url(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "s3://{bucket}/{prefix}?endpoint={}&region=us-east-1&access_key_id=test&secret_access_key=test",
            self.url("")
        )
    }

    pub async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}
