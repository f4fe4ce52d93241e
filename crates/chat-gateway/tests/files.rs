//! Files through the gateway, to a real service with a real file store:
//! who may upload (token, Origin, rate), the early 413, and bodies streamed
//! both ways with the service's download headers, ranges and conditions.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

const BOUNDARY: &str = "----formdata-gateway-files-3vHUEYs";

fn multipart(name: &str, content_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// `size` bytes a PDF by its signature, different for each `seed`.
fn document(size: usize, seed: u64) -> Vec<u8> {
    let mut bytes = b"%PDF-1.4\n".to_vec();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    while bytes.len() < size {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
    }));
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

struct Files {
    service: Running,
    gateway: Running,
    _dir: tempfile::TempDir,
}

async fn start(tune: impl FnOnce(&mut chat_gateway::GatewayConfig)) -> Files {
    start_limited(chat_proto::limits::DEFAULT_MAX_UPLOAD_BYTES, tune).await
}

/// Gateway and service with one upload limit.
async fn start_limited(
    max_upload_bytes: u64,
    tune: impl FnOnce(&mut chat_gateway::GatewayConfig),
) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let mut service = chat_service::Config::new(KEY);
    service.files.store = Some(dir.path().display().to_string());
    service.files.upload.max_upload_bytes = max_upload_bytes;
    let service = start_service_with(service).await;
    let mut config = gateway_config(service.addr);
    tune(&mut config);
    config.limits.max_upload_bytes = max_upload_bytes;
    let gateway = start_gateway(config).await;
    Files {
        service,
        gateway,
        _dir: dir,
    }
}

impl Files {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.addr)
    }

    fn upload(
        &self,
        room: &str,
        auth: &[(&str, &str)],
        body: reqwest::Body,
    ) -> reqwest::RequestBuilder {
        let mut request = reqwest::Client::new()
            .post(self.url(&format!("/chat/api/rooms/{room}/files")))
            .header("content-type", multipart_type())
            .body(body);
        for (name, value) in auth {
            request = request.header(*name, *value);
        }
        request
    }

    /// `user`'s upload of `bytes` to `room`, which must be accepted: its
    /// answer.
    async fn uploaded(
        &self,
        room: &str,
        user: &str,
        name: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Value {
        let auth = bearer(user);
        let sent = self
            .upload(
                room,
                &[("authorization", &auth)],
                multipart(name, content_type, bytes).into(),
            )
            .send()
            .await
            .unwrap();
        let (status, info) = answer(sent).await;
        assert_eq!(status, 201, "{info}");
        info
    }

    fn get(&self, path: &str, user: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(token(user))
    }
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn bearer(user: &str) -> String {
    format!("Bearer {}", token(user))
}

#[tokio::test]
async fn files_stream_through_the_gateway_with_the_services_headers() {
    let files = start(|_| {}).await;
    let auth = bearer("ann");
    let bytes = document(3 * 1024 * 1024 + 17, 1);
    let info = files
        .uploaded("lobby", "ann", "big.pdf", "application/pdf", &bytes)
        .await;
    assert_eq!(info["size"], bytes.len());
    assert_eq!(info["contentType"], "application/pdf");
    let url = info["url"].as_str().unwrap().to_owned();

    // Sent in a message through the gateway's socket.
    let mut ann = connect_as(files.gateway.addr, "ann").await;
    join(&mut ann, "lobby").await;
    send_json(
        &mut ann,
        json!({"event": "chat.message", "data": {"roomId": "lobby", "attachments": [info["id"]]}}),
    )
    .await;
    let echo = next_event(&mut ann, "chat.message").await;
    assert_eq!(echo["data"]["attachments"][0]["url"], url);

    // Another user downloads it byte for byte, with the planned headers.
    let response = files.get(&url, "bob").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(header("content-type").as_deref(), Some("application/pdf"));
    assert_eq!(header("content-length"), Some(bytes.len().to_string()));
    assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(
        header("content-security-policy").as_deref(),
        Some("sandbox")
    );
    assert_eq!(header("accept-ranges").as_deref(), Some("bytes"));
    assert!(header("content-disposition")
        .unwrap()
        .starts_with("attachment;"));
    let etag = header("etag").unwrap();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
    }
    assert!(body == bytes, "the download differs from the upload");

    // Ranges and conditions pass through.
    let part = files
        .get(&url, "bob")
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 1000-1999/{}", bytes.len()).as_str()
    );
    assert_eq!(&part.bytes().await.unwrap()[..], &bytes[1000..2000]);
    let cached = files
        .get(&url, "bob")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    let stale = files
        .get(&url, "bob")
        .header("range", "bytes=0-9")
        .header("if-range", "\"not-it\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);

    // An image and its thumbnail; a body without a declared length.
    let picture = png(400, 300);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = multipart("p.png", "image/png", &picture)
        .chunks(1000)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let (status, image) = answer(
        files
            .upload(
                "lobby",
                &[("authorization", &auth)],
                reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{image}");
    let thumbnail = files
        .get(image["thumbnailUrl"].as_str().unwrap(), "ann")
        .send()
        .await
        .unwrap();
    assert_eq!(thumbnail.status(), 200);
    assert_eq!(thumbnail.headers()["content-type"], "image/jpeg");
    assert_eq!(
        thumbnail.headers()["content-disposition"],
        "inline; filename=\"p.jpg\"; filename*=UTF-8''p.jpg"
    );

    // The service's refusals come through as they are.
    let (status, body) = answer(
        files
            .get("/chat/api/files/nothing-here", "bob")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, body) = answer(
        files
            .get(image["url"].as_str().unwrap(), "bob")
            .send()
            .await
            .unwrap(),
    )
    .await;
    // Not sent yet: nobody but its uploader knows of it.
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let html = b"<html><script>alert(1)</script></html>";
    let (status, body) = answer(
        files
            .upload(
                "lobby",
                &[("authorization", &auth)],
                multipart("x.png", "image/png", html).into(),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let (status, body) = answer(
        files
            .upload(
                "private:team",
                &[("authorization", &auth)],
                multipart("a.txt", "text/plain", b"x").into(),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    // Refused before the service read the body: the answer still arrives.
    let big = document(5 * 1024 * 1024, 9);
    let (status, body) = answer(
        files
            .upload(
                "private:team",
                &[("authorization", &auth)],
                multipart("big.pdf", "application/pdf", &big).into(),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    drop(files.service);
}

#[tokio::test]
async fn uploads_need_a_user_and_an_origin_of_this_site() {
    let files =
        start(|config| config.allowed_origins = vec!["https://app.example.com".into()]).await;
    let body = || reqwest::Body::from(multipart("a.txt", "text/plain", b"hello"));
    let status = |response: reqwest::Response| response.status().as_u16();
    let cookie = cookie(&token("ann"));
    let own = format!("http://{}", files.gateway.addr);

    let (code, body_json) = answer(files.upload("lobby", &[], body()).send().await.unwrap()).await;
    assert_eq!(
        (code, body_json["code"].as_str()),
        (401, Some("missing_token"))
    );
    for origin in ["https://evil.example", "null", "http://app.example.com"] {
        let (code, refusal) = answer(
            files
                .upload("lobby", &[("cookie", &cookie), ("origin", origin)], body())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (code, refusal["code"].as_str()),
            (403, Some("origin_not_allowed")),
            "{origin}"
        );
    }
    // A cross-site form post carries the cookie and an Origin; without an
    // Origin, a cookie alone is no proof of a page of ours.
    let (code, refusal) = answer(
        files
            .upload("lobby", &[("cookie", &cookie)], body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (code, refusal["code"].as_str()),
        (403, Some("origin_required"))
    );
    for origin in [own.as_str(), "https://app.example.com"] {
        assert_eq!(
            status(
                files
                    .upload("lobby", &[("cookie", &cookie), ("origin", origin)], body())
                    .send()
                    .await
                    .unwrap()
            ),
            201,
            "{origin}"
        );
    }
    // A program with a bearer token sends no Origin; a page elsewhere that
    // somehow had the token is still refused by its Origin.
    let auth = bearer("ann");
    assert_eq!(
        status(
            files
                .upload("lobby", &[("authorization", &auth)], body())
                .send()
                .await
                .unwrap()
        ),
        201
    );
    assert_eq!(
        status(
            files
                .upload(
                    "lobby",
                    &[("authorization", &auth), ("origin", "https://evil.example")],
                    body()
                )
                .send()
                .await
                .unwrap()
        ),
        403
    );
    // Identity headers a client sends are not passed on.
    let (code, info) = answer(
        files
            .upload(
                "lobby",
                &[("authorization", &auth), ("x-user-id", "bob")],
                body(),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 201);
    let own_file = files
        .get(info["url"].as_str().unwrap(), "ann")
        .send()
        .await
        .unwrap();
    assert_eq!(own_file.status(), 200);
    // Downloads need a user too.
    let anonymous = reqwest::get(files.url(info["url"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// Writes a request head (and `body_part`) by hand; reads the answer until
/// the gateway closes.
fn raw_upload(gateway: SocketAddr, head: &str, body_part: &[u8]) -> String {
    let mut socket = std::net::TcpStream::connect(gateway).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket.write_all(head.as_bytes()).unwrap();
    socket.write_all(body_part).unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match socket.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(error) => panic!("the gateway neither answered nor closed: {error}"),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn too_large_is_refused_before_the_body_is_read() {
    let limit = 512 * 1024;
    let files = start_limited(limit, |_| {}).await;
    let head = format!(
        "POST /chat/api/rooms/lobby/files HTTP/1.1\r\nHost: {}\r\nauthorization: {}\r\n\
         content-type: {}\r\ncontent-length: {}\r\n\r\n",
        files.gateway.addr,
        bearer("ann"),
        multipart_type(),
        limit + chat_proto::limits::MULTIPART_OVERHEAD_BYTES + 1,
    );
    let addr = files.gateway.addr;
    // A few bytes of the body, then nothing: the answer must not wait.
    let answer = tokio::task::spawn_blocking(move || raw_upload(addr, &head, b"--"))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"code\":\"file_too_large\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    // Without a declared length, reading stops once past the limit.
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let head = multipart("big.txt", "text/plain", b"");
    let head = head[..head.len() - format!("\r\n--{BOUNDARY}--\r\n").len()].to_vec();
    let chunks = futures_util::stream::iter(
        std::iter::once(head).chain((0..2048).map(|_| vec![b'a'; 64 * 1024])),
    )
    .map(move |chunk| {
        counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        Ok::<_, std::io::Error>(chunk)
    });
    let auth = bearer("ann");
    let response = files
        .upload(
            "lobby",
            &[("authorization", &auth)],
            reqwest::Body::wrap_stream(chunks),
        )
        .send()
        .await
        .expect("the 413 reaches a client still sending");
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["connection"], "close");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "file_too_large");
    let read = pulled.load(Ordering::SeqCst);
    assert!(
        read < 32 * 1024 * 1024,
        "{read} of 128 MiB pulled for a limit of {limit}"
    );

    // Over by one byte, its length within the allowance: the service
    // refuses it while reading, and the refusal reaches the client.
    for _ in 0..3 {
        let response = files
            .upload(
                "lobby",
                &[("authorization", &auth)],
                multipart("over.txt", "text/plain", &vec![b'z'; limit as usize + 1]).into(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "file_too_large");
    }

    // Just under the limit goes through.
    let exact = vec![b'y'; limit as usize];
    let response = files
        .upload(
            "lobby",
            &[("authorization", &auth)],
            multipart("ok.txt", "text/plain", &exact).into(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn uploads_count_against_the_users_request_rate() {
    let files = start(|config| {
        config.limits.api_burst = 2.try_into().unwrap();
        config.limits.api_requests_per_sec = 1.try_into().unwrap();
        config.limits.download_burst = 5.try_into().unwrap();
        config.limits.downloads_per_sec = 1.try_into().unwrap();
    })
    .await;
    let other_user = || bearer("carl");
    let auth = bearer("ann");
    let body = || reqwest::Body::from(multipart("a.txt", "text/plain", b"hello"));
    for _ in 0..2 {
        let response = files
            .upload("lobby", &[("authorization", &auth)], body())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let response = files
        .upload("lobby", &[("authorization", &auth)], body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let refusal: Value = response.json().await.unwrap();
    assert_eq!(refusal["code"], "rate_limited");
    // Downloads have an allowance of their own, larger: a page loads many
    // thumbnails at once.
    let (status, info) = answer(
        files
            .upload("lobby", &[("authorization", &other_user())], body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{info}");
    let url = info["url"].as_str().unwrap();
    for n in 0..5 {
        let response = files.get(url, "carl").send().await.unwrap();
        assert_eq!(response.status(), 200, "download {n}");
    }
    let response = files.get(url, "carl").send().await.unwrap();
    assert_eq!(response.status(), 429);
    // Another user has an allowance of their own.
    let other = bearer("bob");
    let response = files
        .upload(
            "lobby",
            &[("authorization", &other)],
            reqwest::Body::from(multipart("b.txt", "text/plain", b"hi")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

/// A client that asks for a download and stops reading is let go after the
/// write timeout, as a socket that stops reading is: it cannot keep its
/// connection, and its place under the cap, for as long as TCP would.
#[tokio::test]
async fn a_download_nobody_reads_is_cut_off() {
    let files = start_limited(32 << 20, |config| {
        config.limits.client_write_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let auth = bearer("ann");
    // Far more than the kernel buffers on both sides hold.
    let bytes = document(24 << 20, 9);
    let info = files
        .uploaded("lobby", "ann", "large.pdf", "application/pdf", &bytes)
        .await;
    let url = info["url"].as_str().unwrap().to_owned();

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(files.gateway.addr).await.unwrap();
    let request = format!(
        "GET {url} HTTP/1.1\r\nhost: {}\r\nauthorization: {auth}\r\n\r\n",
        files.gateway.addr
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    // Read nothing for well past the timeout, then everything there is.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let mut received = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let drained = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "the gateway kept the stalled download open"
    );
    assert!(
        received > 0 && received < bytes.len(),
        "{received} of {} bytes arrived: the download should have been cut off",
        bytes.len()
    );
}
