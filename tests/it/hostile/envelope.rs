//! Every rejection is the envelope `{"success": false, "data": …, "message": …}` with the right
//! status: undecodable paths, bodies over the limit, over-long file URLs, and whatever a layer
//! answers in plain text.

use std::time::Duration;

use axum::{Router, http::StatusCode, middleware, routing::get};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::{connect, read_response};
use crate::helpers::TestApp;

const LIMIT: usize = bengkel_whatsapp::http::extract::MAX_BODY_BYTES;

fn assert_envelope(status: u16, body: &Value) {
    assert_eq!(body["success"], false, "{status}: {body}");
    assert!(body.get("data").is_some(), "{status}: {body}");
    assert!(
        !body["message"].as_str().unwrap_or_default().is_empty(),
        "{status}: {body}"
    );
}

#[tokio::test]
async fn a_path_that_is_not_utf8_is_a_400_in_the_envelope() {
    let app = TestApp::spawn().await;
    for path in [
        "/whatsapp/messages/%ff",
        "/whatsapp/messages/%C3%28/cancel",
        "/manual-whatsapp/by-nopol/B%ff1",
        "/ops/queues/%fe/pause",
    ] {
        let method = if path.ends_with("cancel") || path.ends_with("pause") {
            reqwest::Method::POST
        } else {
            reqwest::Method::GET
        };
        let req = app
            .http
            .request(method, format!("{}{path}", app.base))
            .bearer_auth(crate::helpers::token(
                "ops",
                bengkel_whatsapp::http::auth::Role::Ops,
                Duration::from_secs(60),
            ));
        let (status, body) = app.call(req).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_envelope(status, &body);
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_in_the_envelope() {
    let app = TestApp::spawn().await;
    // Declared too long: refused before a byte of it is read.
    let head = format!(
        "POST /whatsapp/send HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        app.token,
        LIMIT + 1
    );
    let mut stream = connect(&app, head.as_bytes()).await;
    let res = read_response(&mut stream, Duration::from_secs(5))
        .await
        .expect("a response before the body is sent");
    assert_eq!(res.status, 413);
    assert_envelope(res.status, &res.json());

    // Streamed (chunked) past the limit: refused when the limit is crossed.
    let head = format!(
        "POST /customers/bulk-import HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.token
    );
    let mut stream = connect(&app, head.as_bytes()).await;
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent <= LIMIT {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        stream.write_all(&chunk).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
        sent += chunk.len();
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let res = read_response(&mut stream, Duration::from_secs(5))
        .await
        .expect("a response");
    assert_eq!(res.status, 413);
    assert_envelope(res.status, &res.json());

    // Just under the limit is read (and is then only malformed JSON).
    let (status, body) = app
        .call(
            app.post("/whatsapp/send")
                .header("content-type", "application/json")
                .body(format!("{{\"to\": \"{}", "x".repeat(LIMIT - 20))),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn a_file_url_longer_than_2048_characters_is_a_422() {
    let app = TestApp::spawn().await;
    let url = |len: usize| {
        let base = "https://example.com/";
        format!("{base}{}", "a".repeat(len - base.len()))
    };
    let (status, body) = app
        .send(json!({"to": "0812345678", "body": "x", "file": url(2049)}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "file");
    let (status, body) = app
        .call(app.post(&format!(
            "/whatsapp/send-with-file?phone=0812345678&message=hi&file_url={}",
            url(2049)
        )))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "file_url");
    let (status, body) = app
        .send(json!({"to": "0812345678", "body": "x", "file": url(2048)}))
        .await;
    assert_eq!(status, 202, "{body}");
}

/// The router's safety net on a real server: whatever answers in plain text (an extractor we do
/// not own, a layer) reaches the client as the envelope with its status and headers.
#[tokio::test]
async fn a_plain_text_error_from_any_handler_or_layer_reaches_the_client_as_the_envelope() {
    let app = Router::new()
        .route(
            "/plain",
            get(|| async {
                (
                    StatusCode::IM_A_TEAPOT,
                    [("retry-after", "7")],
                    "short and stout",
                )
            }),
        )
        .route(
            "/axum-rejection/{n}",
            get(|axum::extract::Path(n): axum::extract::Path<u32>| async move { n.to_string() }),
        )
        .layer(middleware::map_response(
            bengkel_whatsapp::http::envelope::envelope_errors,
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let res = http.get(format!("{base}/plain")).send().await.unwrap();
    assert_eq!(res.status(), 418);
    assert_eq!(res.headers()["retry-after"], "7");
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"success": false, "data": {}, "message": "short and stout"})
    );
    let res = http
        .get(format!("{base}/axum-rejection/not-a-number"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_envelope(400, &body);
    server.abort();
}
