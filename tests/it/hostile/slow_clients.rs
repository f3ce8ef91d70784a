//! Slow and idle clients cannot hold connections: header, body and idle timeouts, a cap on
//! connections, and per-IP limits that still see the client's address. Raw TCP clients, small
//! configured timeouts.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bengkel_whatsapp::{
    app::{self, ProcessRole},
    config::{Config, Secret},
};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{closed_after, connect, get, read_response};
use crate::helpers::{JWT_SECRET, Options, TestApp, TestDb, env_for};

async fn app_with(env: &[(&'static str, &str)]) -> TestApp {
    TestApp::spawn_with(Options {
        env: env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn a_client_that_does_not_finish_its_headers_is_disconnected_after_the_header_timeout() {
    let app = app_with(&[
        ("HTTP_HEADER_TIMEOUT_SECS", "1"),
        ("HTTP_IDLE_TIMEOUT_SECS", "30"),
    ])
    .await;
    // Half a request, then a byte every 300 ms: the clock runs from the first byte.
    let started = Instant::now();
    let mut trickle = connect(&app, b"GET /health HTTP/1.1\r\nHost: test\r\n").await;
    let mut silent = connect(&app, b"").await;
    let writer = tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if trickle.write_all(b"X").await.is_err() {
                break;
            }
        }
        trickle
    });
    // Nothing at all: the first request's headers are due from the accept.
    let took = closed_after(&mut silent, started, Duration::from_secs(4)).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    let mut trickle = writer.await.unwrap();
    let took = closed_after(&mut trickle, started, Duration::from_secs(1)).await;
    assert!(took < Duration::from_secs(4), "closed after {took:?}");

    // The server still serves everybody else.
    let mut fresh = connect(&app, &get("/health")).await;
    let res = read_response(&mut fresh, Duration::from_secs(2))
        .await
        .expect("served");
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout_and_closes_after_the_idle_timeout()
 {
    let app = app_with(&[
        ("HTTP_HEADER_TIMEOUT_SECS", "1"),
        ("HTTP_IDLE_TIMEOUT_SECS", "3"),
    ])
    .await;
    let mut stream = connect(&app, &get("/health")).await;
    let res = read_response(&mut stream, Duration::from_secs(2))
        .await
        .expect("first response");
    assert_eq!(res.status, 200);
    // Idle for longer than the header timeout: still open, the next request is served.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    stream.write_all(&get("/health")).await.unwrap();
    let res = read_response(&mut stream, Duration::from_secs(2))
        .await
        .expect("second response");
    assert_eq!(res.status, 200);
    let idle_from = Instant::now();
    let took = closed_after(&mut stream, idle_from, Duration::from_secs(6)).await;
    assert!(
        took >= Duration::from_millis(2800) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn a_stalled_body_gets_a_408_in_the_envelope_after_the_body_timeout_and_nothing_is_stored() {
    let app = app_with(&[("HTTP_BODY_TIMEOUT_SECS", "1")]).await;
    let body = json!({"to": "0812345678", "body": "never finished"}).to_string();
    let head = format!(
        "POST /whatsapp/send HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        app.token,
        body.len()
    );
    let started = Instant::now();
    let mut stream = connect(&app, head.as_bytes()).await;
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    let res = read_response(&mut stream, Duration::from_secs(4))
        .await
        .expect("a 408 response");
    let took = started.elapsed();
    assert_eq!(res.status, 408);
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );
    let answer = res.json();
    assert_eq!(answer["success"], false, "{answer}");
    assert!(answer.get("data").is_some());
    closed_after(&mut stream, started, Duration::from_secs(3)).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);

    // A body that arrives in time, slowly, is fine.
    let mut stream = connect(&app, head.as_bytes()).await;
    for part in body.as_bytes().chunks(body.len() / 3 + 1) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream.write_all(part).await.unwrap();
    }
    let res = read_response(&mut stream, Duration::from_secs(4))
        .await
        .expect("a response");
    assert_eq!(res.status, 202, "{}", String::from_utf8_lossy(&res.body));
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_is_free() {
    let app = app_with(&[
        ("HTTP_MAX_CONNECTIONS", "1"),
        ("HTTP_HEADER_TIMEOUT_SECS", "30"),
        ("HTTP_IDLE_TIMEOUT_SECS", "30"),
    ])
    .await;
    let mut first = connect(&app, &get("/health")).await;
    let res = read_response(&mut first, Duration::from_secs(2))
        .await
        .expect("served");
    assert_eq!(res.status, 200);
    // The first connection is open (keep-alive): the second waits.
    let mut second = connect(&app, &get("/health")).await;
    assert!(
        read_response(&mut second, Duration::from_millis(1000))
            .await
            .is_none(),
        "a second connection was served beyond the cap"
    );
    drop(first);
    let res = read_response(&mut second, Duration::from_secs(3))
        .await
        .expect("served once the first connection is gone");
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn the_public_send_limit_is_kept_per_client_ip() {
    let app = app_with(&[
        ("PUBLIC_SEND_ENDPOINTS", "true"),
        ("PUBLIC_SEND_RATE_PER_MINUTE", "1"),
    ])
    .await;
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let url = format!(
        "{}/whatsapp/send-simple?phone=0812345678&message=hi",
        app.base
    );
    let (status, body) = app.call(from([127, 0, 0, 1]).post(&url)).await;
    assert_eq!(status, 202, "{body}");
    let (status, _) = app.call(from([127, 0, 0, 1]).post(&url)).await;
    assert_eq!(status, 429);
    // Another address has its own allowance.
    let (status, body) = app.call(from([127, 0, 0, 2]).post(&url)).await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_finishes_requests_in_flight() {
    let db = TestDb::new().await;
    let gateway = crate::helpers::Gateway::start().await;
    gateway.ok().await;
    let config = Arc::new(Config::from_map(&env_for(&db, &gateway)).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let running = app::start(
        config,
        ProcessRole::Api,
        db.pool.clone(),
        listener,
        &Secret::new(JWT_SECRET),
    )
    .await
    .unwrap();
    let token = crate::helpers::token(
        "tester",
        bengkel_whatsapp::http::auth::Role::Client,
        Duration::from_secs(600),
    );

    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(&get("/health")).await.unwrap();
    assert_eq!(
        read_response(&mut idle, Duration::from_secs(2))
            .await
            .unwrap()
            .status,
        200
    );
    // A request in flight: its head is in, its body not yet.
    let body = json!({"to": "0812345678", "body": "in flight at shutdown"}).to_string();
    let mut busy = tokio::net::TcpStream::connect(addr).await.unwrap();
    busy.write_all(
        format!(
            "POST /whatsapp/send HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let shutdown = running.shutdown.clone();
    let stopped = tokio::spawn(running.wait());
    let started = Instant::now();
    shutdown.cancel();
    let took = closed_after(&mut idle, started, Duration::from_secs(2)).await;
    assert!(took < Duration::from_secs(2));
    assert!(!stopped.is_finished(), "stopped with a request in flight");
    busy.write_all(body.as_bytes()).await.unwrap();
    let res = read_response(&mut busy, Duration::from_secs(3))
        .await
        .expect("the request in flight is answered");
    assert_eq!(res.status, 202, "{}", String::from_utf8_lossy(&res.body));
    tokio::time::timeout(Duration::from_secs(3), stopped)
        .await
        .expect("stopped once the last request was answered")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}
