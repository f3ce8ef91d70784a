//! Tokens: `nbf` is honoured, refusals say no more than which rule failed, and live mode does
//! not start with a guessable secret.

use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, TestApp};

fn signed(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

async fn with_token(app: &TestApp, token: &str) -> (u16, Value) {
    app.call(
        app.http
            .get(format!("{}/whatsapp/messages", app.base))
            .bearer_auth(token),
    )
    .await
}

#[tokio::test]
async fn a_token_that_is_not_valid_yet_is_refused() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now().timestamp();
    let (status, body) = with_token(
        &app,
        &signed(&json!({"sub": "early", "exp": now + 7200, "nbf": now + 3600})),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["message"], "token not valid yet (nbf)");
    let (status, body) = with_token(
        &app,
        &signed(&json!({"sub": "on-time", "exp": now + 7200, "nbf": now - 10})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_refused_token_gets_a_generic_message_without_parser_details() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now().timestamp();
    for (name, token) in [
        (
            "unknown role",
            signed(&json!({"sub": "x", "exp": now + 600, "role": "admin"})),
        ),
        (
            "sub not a string",
            signed(&json!({"sub": 42, "exp": now + 600})),
        ),
        (
            "exp not a number",
            signed(&json!({"sub": "x", "exp": "tomorrow"})),
        ),
        ("not a JWT", "abc.def".to_owned()),
        ("garbage base64", "@@@.@@@.@@@".to_owned()),
        // Stored as `created_by`: PostgreSQL text takes no NUL.
        (
            "NUL in sub",
            signed(&json!({"sub": "a\u{0}b", "exp": now + 600})),
        ),
    ] {
        let (status, body) = with_token(&app, &token).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["message"], "invalid token", "{name}: {body}");
    }
    let sent = app
        .call(
            app.http
                .post(format!("{}/whatsapp/send", app.base))
                .bearer_auth(signed(&json!({"sub": "a\u{0}b", "exp": now + 600})))
                .json(&json!({"to": "0812345678", "body": "x"})),
        )
        .await;
    assert_eq!(sent.0, 401);
}

#[test]
fn live_mode_does_not_start_with_a_jwt_secret_shorter_than_32_bytes() {
    let short = "0123456789012345678901234567890"; // 31 bytes
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bengkel-whatsapp"))
        .arg("serve")
        .env("STARSENDER_API_KEY", "live-device-key")
        .env("JWT_SECRET", short)
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("BIND_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");
    assert!(stderr.contains("at least 32 bytes"), "{stderr}");
    assert!(!stderr.contains(short), "the secret was printed: {stderr}");
}
