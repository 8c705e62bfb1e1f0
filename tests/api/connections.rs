//! The connection layer under hostile and careless clients, spoken in raw HTTP/1.1: idle and
//! slow-header sockets are reaped and capped, a stalled body answers 408, and a keep-alive
//! connection survives early answers to requests whose body arrives late.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::helpers::{TestOptions, TestResources, closed_port, spawn_app_with, wait_for};
use crate::process::{spawn_spike_with, terminate, wait_until_healthy};

/// Reads one response; `None` when the server closed the connection instead of answering.
async fn read_response(stream: &mut BufReader<TcpStream>) -> Option<(u16, String)> {
    let mut status_line = String::new();
    if stream.read_line(&mut status_line).await.ok()? == 0 {
        return None;
    }
    let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn connect(address: &str) -> TcpStream {
    TcpStream::connect(address.trim_start_matches("http://"))
        .await
        .unwrap()
}

fn post_head(path: &str, token: Option<&str>, body_len: usize) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n"
    )
}

#[tokio::test]
async fn a_keep_alive_connection_survives_early_answers_to_bodies_that_arrive_late() {
    let app = spawn_app_with(TestOptions::default()).await;
    let (user, _) = app.signed_in_user().await;
    let token = user["access_token"].as_str().unwrap();
    let stream = connect(&app.address).await;
    let mut stream = BufReader::new(stream);

    for i in 0..200 {
        let (head, body, expected) = if i % 2 == 0 {
            // Paying an order that is not the caller's is refused before the body matters, and
            // so is a request without a token.
            let token = (i % 4 == 0).then_some(token);
            let expected = if token.is_some() { 404 } else { 401 };
            (
                post_head("/api/v1/orders/999999999/pay", token, 2),
                "{}",
                expected,
            )
        } else {
            (
                "GET /api/v1/users/me HTTP/1.1\r\nHost: localhost\r\n".to_owned()
                    + &format!("Authorization: Bearer {token}\r\n\r\n"),
                "",
                200,
            )
        };
        stream.get_mut().write_all(head.as_bytes()).await.unwrap();
        stream.get_mut().flush().await.unwrap();
        if !body.is_empty() {
            // The body in a segment of its own, after the server could have answered.
            tokio::time::sleep(Duration::from_millis(5)).await;
            stream.get_mut().write_all(body.as_bytes()).await.unwrap();
        }
        let answer = read_response(&mut stream).await;
        let Some((status, _)) = answer else {
            panic!("request {i}: the server closed the keep-alive connection");
        };
        assert_eq!(status, expected, "request {i}");
    }
}

#[tokio::test]
async fn a_stalled_request_body_answers_408() {
    let app = spawn_app_with(TestOptions::default().env("SPIKE_HTTP_BODY_TIMEOUT", "300ms")).await;
    let mut stream = BufReader::new(connect(&app.address).await);
    let head = post_head("/api/v1/auth/login", None, 100);
    stream.get_mut().write_all(head.as_bytes()).await.unwrap();
    stream.get_mut().write_all(b"{\"email\":").await.unwrap();

    let (status, body) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
        .await
        .expect("an answer, not a hang")
        .expect("an answer, not a closed connection");
    assert_eq!(status, 408, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], 10001, "{body}");
    assert!(body["request_id"].is_string());
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

#[tokio::test]
async fn idle_and_slow_header_sockets_are_capped_and_reaped() {
    const CAP: usize = 40;
    const IDLE: usize = 300;
    let resources = TestResources::create().await;
    let port = closed_port().await;
    let child = spawn_spike_with(
        "serve",
        &resources,
        port,
        &[
            ("SPIKE_HTTP_MAX_CONNECTIONS", "40"),
            ("SPIKE_HTTP_HEADER_TIMEOUT", "2s"),
        ],
    );
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_healthy(&base).await;
    let healthz = format!("{base}/healthz");
    // The health check's connection may still be counted here and close a moment later: the
    // wait below allows for that one.
    let before = open_descriptors(pid);

    // Half never send a byte, half start a request head and never finish it.
    let mut sockets = Vec::new();
    for i in 0..IDLE {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        if i % 2 == 1 {
            socket
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: lo")
                .await
                .unwrap();
        }
        sockets.push(socket);
    }
    wait_for(
        "the server to hold its cap of connections",
        Duration::from_secs(10),
        || async { open_descriptors(pid) >= before + CAP - 1 },
    )
    .await;
    let held = open_descriptors(pid);
    assert!(
        held <= before + CAP,
        "{held} descriptors with {IDLE} idle clients: the cap of {CAP} does not hold (was {before})"
    );

    // The header timeout closes them.
    let first = &mut sockets[1];
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), first.read(&mut buf))
        .await
        .expect("the server closes a socket that never finishes its head");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // Everyone waiting in the backlog gets its turn, and so does a real client.
    let fresh = reqwest::Client::new();
    let answer = tokio::time::timeout(Duration::from_secs(60), fresh.get(&healthz).send())
        .await
        .expect("/healthz answers while idle sockets come and go")
        .unwrap();
    assert_eq!(answer.status(), 200);
    drop(sockets);
    assert!(terminate(child).await.success());
}
