//! Runs the browser end-to-end suite in `tests/e2e` (node's test runner driving Debian's Chromium
//! through playwright-core) against the `chat` binary cargo just built; the calls tests also
//! start Debian's coturn.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The node suite bounds each of its steps; this only guards against a wedged runner.
const SUITE_DEADLINE: Duration = Duration::from_secs(600);

fn missing_prerequisites(e2e_dir: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} (apt-get install chromium)"));
    }
    if !e2e_dir
        .join("node_modules")
        .join("playwright-core")
        .exists()
    {
        missing.push("tests/e2e/node_modules (npm ci --prefix tests/e2e)".to_owned());
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node (apt-get install nodejs)".to_owned());
    }
    // The calls suite relays through a real TURN server.
    if Command::new("turnserver")
        .arg("--version")
        .output()
        .is_err()
    {
        missing.push("turnserver (apt-get install coturn)".to_owned());
    }
    missing
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        match child.try_wait().expect("poll the node test runner") {
            Some(status) => return Some(status),
            None if started.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            None => thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
#[ignore = "needs Chromium, coturn and `npm ci --prefix tests/e2e`; run with --include-ignored"]
fn browser_end_to_end() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let e2e_dir = root.join("tests").join("e2e");
    let missing = missing_prerequisites(&e2e_dir);
    // Asked for but unable to run: a failure, never a silent pass.
    assert!(
        missing.is_empty(),
        "browser tests cannot run, missing: {}",
        missing.join(", ")
    );

    let mut child = Command::new("node")
        .args(["--test", "--test-concurrency=1", "tests/e2e/"])
        .current_dir(&root)
        .env("CHAT_BIN", env!("CARGO_BIN_EXE_chat"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node's test runner");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_with_deadline(&mut child, SUITE_DEADLINE);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let output = format!("--- node stdout ---\n{stdout}\n--- node stderr ---\n{stderr}");

    match status {
        None => panic!("browser tests did not finish within {SUITE_DEADLINE:?}\n{output}"),
        Some(status) if !status.success() => panic!("browser tests failed ({status})\n{output}"),
        Some(_) => println!("{output}"),
    }
}
