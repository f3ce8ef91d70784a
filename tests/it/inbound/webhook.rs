//! StarSender's webhook over HTTP: what it keeps, what it refuses, and the list of inbound
//! messages.

use std::time::Duration;

use serde_json::{Value, json};

use tokio::io::AsyncWriteExt;

use super::{TOKEN, app, events, hook, inbound, list, processed, series, subscribe};
use crate::{
    helpers::{TestApp, fields, metric, ops_token, token},
    hostile::{connect, read_response},
};

async fn stored_payloads(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM inbound_payloads").await
        + app
            .count("SELECT count(*) FROM apalis.jobs WHERE job_type = 'inbound'")
            .await
}

#[tokio::test]
async fn a_json_message_is_kept_byte_for_byte_and_becomes_an_inbound_message() {
    let app = app().await;
    subscribe(&app).await;
    // Unknown fields, odd spacing and key order: all of it stays in the stored body.
    let raw = r#"{"device":"6285100000000", "from":"0812-3456-789","message":"Jam berapa buka?",
        "timestamp":1796526000,"extra":{"nested":[1,2,{"k":"v"}]}}"#;
    let (status, body) = app
        .call(
            hook(&app, TOKEN)
                .header("content-type", "application/json")
                .body(raw),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    let payload_id = body["data"]["payload_id"].as_str().unwrap().to_owned();
    assert_eq!(processed(&app, &payload_id).await, "ok");
    let (kept, content_type, gateway): (Vec<u8>, Option<String>, String) = sqlx::query_as(
        "SELECT body, content_type, gateway FROM inbound_payloads WHERE id = $1::uuid",
    )
    .bind(&payload_id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(kept, raw.as_bytes(), "the exact bytes");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert_eq!(gateway, "starsender");

    let page = list(&app, "").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    let m = &items[0];
    assert_eq!(m["gateway"], "starsender");
    assert_eq!(m["from"], "628123456789");
    assert_eq!(m["text"], "Jam berapa buka?");
    assert_eq!(m["sent_at"], "2026-12-06T03:00:00Z");
    assert!(m["received_at"].is_string(), "{m}");
    assert_eq!(m["keyword"], Value::Null);

    let mut conn = app.db.pool.acquire().await.unwrap();
    let last = bengkel_whatsapp::inbound::last_inbound_at(&mut conn, "628123456789")
        .await
        .unwrap();
    assert_eq!(
        last.map(|t| t.timestamp()),
        Some(1_796_526_000),
        "the customer's time"
    );
    let received = events(&app, "message.received").await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["message_id"], m["id"]);
    assert_eq!(received[0]["from"], "628123456789");
    assert_eq!(received[0]["text"], "Jam berapa buka?");
    // Not a keyword: nothing else happened.
    assert!(super::suppression(&app, "628123456789").await.is_none());
}

#[tokio::test]
async fn a_form_message_is_taken_like_json() {
    let app = app().await;
    let (status, body) = app
        .call(
            hook(&app, TOKEN)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("from=%2B62+812-3456-0001&message=Halo%2C+bengkel&device=x&timestamp=2026-12-06T10%3A00%3A00%2B07%3A00"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        processed(&app, body["data"]["payload_id"].as_str().unwrap()).await,
        "ok"
    );
    let m = &list(&app, "").await["items"][0];
    assert_eq!(
        (
            m["from"].as_str(),
            m["text"].as_str(),
            m["sent_at"].as_str()
        ),
        (
            Some("6281234560001"),
            Some("Halo, bengkel"),
            Some("2026-12-06T03:00:00Z")
        )
    );
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_answered_as_an_unknown_route_and_nothing_is_stored() {
    let app = app().await;
    let unknown = app
        .call(app.http.post(format!("{}/no/such/route", app.base)))
        .await;
    assert_eq!(unknown.0, 404);
    let before = series(
        &app,
        r#"bengkel_inbound_total{gateway="starsender",result="bad_token"}"#,
    )
    .await;
    let message = json!({"from": "628123456789", "message": "STOP"});
    let mut wrong = TOKEN.to_owned();
    wrong.replace_range(31.., "0");
    for token in [
        wrong.as_str(),
        &TOKEN[..31],
        &format!("{TOKEN}0"),
        &TOKEN.to_uppercase(),
        "%00",
        "%ff",
    ] {
        let answer = app.call(hook(&app, token).json(&message)).await;
        assert_eq!(answer, unknown, "{token}");
    }
    // Another method on the route says no more.
    let answer = app
        .call(
            app.http
                .get(format!("{}/inbound/starsender/{TOKEN}", app.base)),
        )
        .await;
    assert_eq!(answer, unknown);
    // A wrong token is refused before the body is looked at.
    let answer = app.call(hook(&app, &wrong).body("not json")).await;
    assert_eq!(answer, unknown);
    assert_eq!(stored_payloads(&app).await, 0);
    let after = series(
        &app,
        r#"bengkel_inbound_total{gateway="starsender",result="bad_token"}"#,
    )
    .await;
    assert!(after >= before + 7.0, "{before} → {after}");

    // No token configured: the route is off.
    let off = TestApp::spawn().await;
    let unknown = off
        .call(off.http.post(format!("{}/no/such/route", off.base)))
        .await;
    for token in [TOKEN, ""] {
        let answer = off.call(hook(&off, token).json(&message)).await;
        assert_eq!(answer, unknown, "{token:?}");
    }
    assert_eq!(stored_payloads(&off).await, 0);
}

#[tokio::test]
async fn a_token_shorter_than_32_characters_stops_start_up_naming_the_variable() {
    let short = "tooshort-but-secret";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bengkel-whatsapp"))
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("INBOUND_STARSENDER_TOKEN", short)
        // no .env of the checkout is read
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run the binary");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("INBOUND_STARSENDER_TOKEN") && stderr.contains("32"),
        "{stderr}"
    );
    assert!(!stderr.contains(short), "the token is not shown: {stderr}");
}

#[tokio::test]
async fn malformed_bodies_are_4xx_in_the_envelope_and_nothing_is_stored() {
    let app = app().await;
    let malformed = r#"bengkel_inbound_total{gateway="starsender",result="malformed"}"#;
    let before = series(&app, malformed).await;
    let json_ct = "application/json";
    let form_ct = "application/x-www-form-urlencoded";
    let cases: Vec<(&str, Vec<u8>, u16, Vec<&str>)> = vec![
        ("text/plain", b"STOP".to_vec(), 400, vec![]),
        (json_ct, b"{\"from\": ".to_vec(), 400, vec![]),
        (json_ct, b"[\"STOP\"]".to_vec(), 400, vec![]),
        (json_ct, b"".to_vec(), 400, vec![]),
        (
            json_ct,
            br#"{"from": "1", "from": "2", "message": "x"}"#.to_vec(),
            400,
            vec![],
        ),
        (
            json_ct,
            br#"{"message": "STOP"}"#.to_vec(),
            422,
            vec!["from"],
        ),
        (
            json_ct,
            br#"{"from": "628123456789"}"#.to_vec(),
            422,
            vec!["message"],
        ),
        (
            json_ct,
            br#"{"from": "12", "message": ["STOP"]}"#.to_vec(),
            422,
            vec!["from", "message"],
        ),
        (
            json_ct,
            br#"{"from": "120363000000@g.us", "message": "STOP"}"#.to_vec(),
            422,
            vec!["from"],
        ),
        (
            json_ct,
            br#"{"from": "628123456789", "message": "ST\u0000OP"}"#.to_vec(),
            422,
            vec!["message"],
        ),
        (form_ct, b"message=STOP".to_vec(), 422, vec!["from"]),
        (form_ct, b"from=%FF&message=x".to_vec(), 422, vec!["from"]),
    ];
    let n = cases.len();
    for (ct, body, status, want) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (got, answer) = app
            .call(hook(&app, TOKEN).header("content-type", ct).body(body))
            .await;
        assert_eq!(got, status, "{shown}: {answer}");
        assert_eq!(answer["success"], false);
        assert_eq!(fields(&answer), want, "{shown}: {answer}");
    }
    // Over 1 MiB: 413, whether it says so or not.
    let big = format!(
        r#"{{"from": "628123456789", "message": "{}"}}"#,
        "x".repeat(1024 * 1024)
    );
    let (status, answer) = app
        .call(
            hook(&app, TOKEN)
                .header("content-type", json_ct)
                .body(big.clone()),
        )
        .await;
    assert_eq!(status, 413, "{answer}");
    // Streamed (chunked, no length) past the limit: refused when the limit is crossed.
    let head = format!(
        "POST /inbound/starsender/{TOKEN} HTTP/1.1\r\nHost: test\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut stream = connect(&app, head.as_bytes()).await;
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent <= 1024 * 1024 {
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
    assert_eq!(res.status, 413, "streamed");
    assert_eq!(res.json()["success"], false);
    // A body of exactly the largest size is read.
    let padding = 1024 * 1024 - r#"{"from": "628123456789", "message": ""}"#.len();
    let (status, answer) = app
        .call(
            hook(&app, TOKEN)
                .header("content-type", json_ct)
                .body(format!(
                    r#"{{"from": "628123456789", "message": "{}"}}"#,
                    "y".repeat(padding)
                )),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        stored_payloads(&app).await,
        2,
        "only the last one, with its job"
    );
    let after = series(&app, malformed).await;
    assert!(after >= before + n as f64, "{before} → {after}");
}

#[tokio::test]
async fn the_list_filters_by_sender_and_time_pages_with_a_cursor_and_is_for_ops() {
    let app = app().await;
    let start = chrono::Utc::now();
    for (from, text) in [
        ("0812 3456 0001", "satu"),
        ("0812 3456 0002", "dua"),
        ("0812 3456 0001", "tiga"),
        ("0812 3456 0001", "empat"),
    ] {
        inbound(&app, from, text).await;
    }
    let texts = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        texts(&list(&app, "").await),
        ["empat", "tiga", "dua", "satu"]
    );
    let mine = list(&app, "?from=%2B62%20812-3456-0001&limit=2").await;
    assert_eq!(texts(&mine), ["empat", "tiga"]);
    let cursor = mine["next_cursor"].as_str().unwrap().to_owned();
    let rest = list(
        &app,
        &format!("?from=6281234560001&limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(texts(&rest), ["satu"]);
    assert!(rest["next_cursor"].is_null(), "{rest}");
    let since = |t: chrono::DateTime<chrono::Utc>| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            .replace('+', "%2B")
    };
    assert_eq!(
        texts(&list(&app, &format!("?since={}", since(start))).await).len(),
        4
    );
    let later = start + chrono::Duration::hours(1);
    assert!(texts(&list(&app, &format!("?since={}", since(later))).await).is_empty());

    for (query, field) in [
        ("?from=12", "from"),
        ("?since=yesterday", "since"),
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?cursor=x", "cursor"),
    ] {
        let (status, body) = app
            .call(
                app.http
                    .get(format!("{}/inbound/messages{query}", app.base))
                    .bearer_auth(ops_token()),
            )
            .await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(fields(&body), [field], "{query}");
    }
    let client = token(
        "workshop",
        bengkel_whatsapp::http::auth::Role::Client,
        Duration::from_secs(60),
    );
    let (status, _) = app
        .call(
            app.http
                .get(format!("{}/inbound/messages", app.base))
                .bearer_auth(client),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .call(app.http.get(format!("{}/inbound/messages", app.base)))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn every_inbound_counter_and_the_system_kind_are_exposed_from_the_start() {
    let app = TestApp::spawn().await;
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut names = Vec::new();
    for gateway in ["starsender", "cloud_api"] {
        for result in [
            "ok",
            "bad_signature",
            "bad_token",
            "unknown_number",
            "malformed",
            "duplicate",
        ] {
            names.push(format!(
                "bengkel_inbound_total{{gateway=\"{gateway}\",result=\"{result}\"}}"
            ));
        }
    }
    for source in ["api", "inbound"] {
        names.push(format!("bengkel_optouts_total{{source=\"{source}\"}}"));
    }
    for counter in ["enqueued", "suppressed", "expired"] {
        names.push(format!(
            "bengkel_messages_{counter}_total{{kind=\"system\"}}"
        ));
    }
    for name in names {
        assert!(metric(&text, &name).is_some(), "{name}:\n{text}");
    }
}
