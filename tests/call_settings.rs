//! The binaries take the call settings (STUN_URLS, TURN_URLS, TURN_SECRET,
//! TURN_TTL_SECS) from the environment, serve them at
//! `/chat/api/rtc/ice-servers`, and refuse bad ones at start with one line.

mod binaries;

use binaries::{chat, gateway_port, refusal};

use tokio::process::Command;

const JWT_SECRET: &str = "call-settings-secret-of-at-least-32-bytes";
const TURN_SECRET: &str = "call-settings-turn-secret-0123456789";

fn gateway() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-gateway"));
    command
        .env("INTERNAL_API_KEY", "call-settings-internal-key")
        .env("JWT_SECRET", JWT_SECRET)
        .env("CHAT_SERVICE_URL", "http://127.0.0.1:9")
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("METRICS_ADDR", "")
        .env("RUST_LOG", "warn");
    command
}

fn without_call_settings(command: &mut Command) -> &mut Command {
    for name in ["STUN_URLS", "TURN_URLS", "TURN_SECRET", "TURN_TTL_SECS"] {
        command.env_remove(name);
    }
    command
}

#[tokio::test]
async fn bad_call_settings_stop_both_binaries_with_one_line() {
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[("TURN_SECRET", "")],
            "TURN_SECRET must be at least 20 bytes",
        ),
        (
            &[
                ("TURN_URLS", "turn:127.0.0.1:3478"),
                ("TURN_SECRET", "short"),
            ],
            "TURN_SECRET must be at least 20 bytes",
        ),
        (
            &[("TURN_URLS", "turn:127.0.0.1:3478")],
            "TURN_URLS is set but TURN_SECRET is not",
        ),
        (
            &[("STUN_URLS", "stun:127.0.0.1,https://stun.example.com")],
            "STUN_URLS: `https://stun.example.com` must start with stun:",
        ),
        (
            &[
                ("TURN_URLS", "turn:127.0.0.1:3478"),
                ("TURN_SECRET", TURN_SECRET),
                ("TURN_TTL_SECS", "0"),
            ],
            "TURN_TTL_SECS must be at least 1",
        ),
    ];
    for (settings, says) in cases {
        for mut command in [chat(), gateway()] {
            without_call_settings(&mut command).envs(settings.iter().copied());
            let stderr = refusal(command).await;
            assert!(stderr.contains(says), "{settings:?}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
            assert!(!stderr.contains(TURN_SECRET), "{stderr}");
        }
    }
}

#[tokio::test]
async fn the_gateway_binary_serves_its_configured_ice_servers() {
    let mut command = gateway();
    without_call_settings(&mut command)
        .env(
            "STUN_URLS",
            "stun:stun1.example.com:3478, stun:stun2.example.com",
        )
        .env("TURN_URLS", "turn:turn.example.com:3478?transport=udp")
        .env("TURN_SECRET", TURN_SECRET)
        .env("TURN_TTL_SECS", "90");
    let (_child, port) = gateway_port(&mut command).await;
    let token = std::process::Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["token", "--user", "a:b"])
        .env("JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap();
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/chat/api/rtc/ice-servers"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let servers = body["iceServers"].as_array().unwrap();
    assert_eq!(
        servers[0],
        serde_json::json!({"urls": ["stun:stun1.example.com:3478", "stun:stun2.example.com"]})
    );
    assert_eq!(
        servers[1]["urls"],
        serde_json::json!(["turn:turn.example.com:3478?transport=udp"])
    );
    let username = servers[1]["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "a%3Ab");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        (now + 80..=now + 100).contains(&expiry),
        "{expiry} vs {now}"
    );
    assert!(servers[1]["credential"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
}
