//! A real coturn on 127.0.0.1 (`turnserver` from Debian's coturn package),
//! one per test on a free port, checking time-limited credentials against a
//! shared secret (`use-auth-secret`) the way a deployment does; and
//! coturn's own client, `turnutils_uclient`, to allocate relays with the
//! credentials the gateway hands out.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

pub const REALM: &str = "chat.test";
const READY_WITHIN: Duration = Duration::from_secs(20);
const CLIENT_WITHIN: Duration = Duration::from_secs(60);
const KEPT_LOG_LINES: usize = 2000;

/// The coturn programs on PATH; a test that needs them and cannot find
/// them fails here, saying what to install.
pub fn require() -> (PathBuf, PathBuf) {
    let find = |name: &str| {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    };
    match (find("turnserver"), find("turnutils_uclient")) {
        (Some(server), Some(client)) => (server, client),
        _ => panic!(
            "needs coturn: `turnserver` and `turnutils_uclient` are not on PATH \
             (apt-get install coturn)"
        ),
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both).
fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        let port = udp.local_addr().expect("local address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// A running `turnserver`; killed when dropped.
pub struct Coturn {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Coturn {
    /// Starts coturn on 127.0.0.1 with `static-auth-secret = secret` and
    /// returns once its UDP and TCP listeners are open. Relays are on
    /// 127.0.0.1 too, and loopback peers are allowed, so two clients on
    /// this host can relay to each other.
    pub fn start(secret: &str) -> Coturn {
        let (turnserver, _) = require();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("chat-coturn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("coturn's working directory");
        let mut child = Command::new(turnserver)
            .args(coturn_args(port, secret, &dir))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start turnserver");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (lines_tx, lines) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().expect("piped stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped stderr")),
        ] {
            let log = log.clone();
            let lines_tx = lines_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = lines_tx.send(line.clone());
                    let mut log = log.lock().expect("log lock");
                    if log.len() == KEPT_LOG_LINES {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        drop(lines_tx);
        let mut coturn = Coturn {
            child,
            port,
            dir,
            log,
        };
        coturn.wait_until_listening(&lines);
        coturn
    }

    fn wait_until_listening(&mut self, lines: &mpsc::Receiver<String>) {
        let address = format!("127.0.0.1:{}", self.port);
        let (mut udp, mut tcp) = (false, false);
        let deadline = std::time::Instant::now() + READY_WITHIN;
        while !(udp && tcp) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(&address) => {
                    udp |= line.contains("UDP listener opened");
                    tcp |= line.contains("TCP listener opened");
                }
                Ok(_) => {}
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "coturn did not open its listeners on {address} within {READY_WITHIN:?} \
                         (exit status {status:?})\n--- coturn output ---\n{}",
                        self.output()
                    );
                }
            }
        }
    }

    /// `turn:127.0.0.1:PORT?transport=udp`
    pub fn udp_url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// The last lines coturn logged.
    pub fn output(&self) -> String {
        let log = self.log.lock().expect("log lock");
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Everything on the command line, no config file: a test must not depend
/// on what `/etc/turnserver.conf` holds.
fn coturn_args(port: u16, secret: &str, dir: &Path) -> Vec<String> {
    let in_dir = |name: &str| dir.join(name).display().to_string();
    [
        "-n".to_owned(),
        "--listening-ip=127.0.0.1".to_owned(),
        "--relay-ip=127.0.0.1".to_owned(),
        format!("--listening-port={port}"),
        "--use-auth-secret".to_owned(),
        format!("--static-auth-secret={secret}"),
        format!("--realm={REALM}"),
        // Plain TURN only; no fixed ports (TLS 5349, CLI 5766, RFC 5780's
        // second port) that two servers on one host would fight over.
        "--no-tls".to_owned(),
        "--no-dtls".to_owned(),
        "--no-cli".to_owned(),
        "--no-rfc5780".to_owned(),
        // Both peers are on this host: their relays are loopback addresses.
        "--allow-loopback-peers".to_owned(),
        "--log-file=stdout".to_owned(),
        // Verbose is what logs the listeners opening, the readiness signal.
        "--verbose".to_owned(),
        format!("--pidfile={}", in_dir("turnserver.pid")),
        format!("--db={}", in_dir("turndb")),
    ]
    .into()
}

/// Allocates two relays on `coturn` with these credentials through
/// `turnutils_uclient` and sends data between them (`-y`). `Ok` when the
/// allocation succeeded and data made it through the relays; else what the
/// client printed.
pub async fn relay_through(coturn: &Coturn, username: &str, password: &str) -> Result<(), String> {
    let (_, uclient) = require();
    let port = coturn.port.to_string();
    let run = tokio::process::Command::new(uclient)
        .args(["-y", "-c", "-n", "3", "-L", "127.0.0.1", "-p", &port])
        .args(["-u", username, "-w", password, "127.0.0.1"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CLIENT_WITHIN, run)
        .await
        .map_err(|_| format!("turnutils_uclient did not finish within {CLIENT_WITHIN:?}"))?
        .map_err(|e| format!("cannot run turnutils_uclient: {e}"))?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The summary line: "start_mclient: tot_send_msgs=6, tot_recv_msgs=6".
    let received = printed
        .lines()
        .filter_map(|line| line.split_once("start_mclient: tot_send_msgs="))
        .filter_map(|(_, counts)| counts.split_once("tot_recv_msgs="))
        .filter_map(|(_, received)| received.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or(0);
    if output.status.success() && received > 0 {
        Ok(())
    } else {
        Err(format!(
            "turnutils_uclient exited with {} and relayed {received} messages:\n{printed}",
            output.status
        ))
    }
}
