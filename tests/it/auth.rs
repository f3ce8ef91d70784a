use std::time::Duration;

use bengkel_whatsapp::http::auth::Role;
use serde_json::json;

use crate::helpers::{JWT_SECRET, TestApp, token};

fn b64(v: &serde_json::Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused_with_401() {
    let app = TestApp::spawn().await;
    let url = format!("{}/whatsapp/send", app.base);
    let body = json!({"to": "0812345678", "body": "x"});
    let now = chrono::Utc::now().timestamp();

    let missing = app.http.post(&url).json(&body);
    let wrong_key = app.http.post(&url).json(&body).bearer_auth(
        bengkel_whatsapp::http::auth::JwtKeys::new(b"another-secret")
            .issue("mallory", Role::Client, Duration::from_secs(60))
            .unwrap(),
    );
    let expired_token = {
        let claims = json!({"sub": "old", "exp": now - 10, "role": "client"});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    let expired = app.http.post(&url).json(&body).bearer_auth(expired_token);
    let alg_none = {
        let t = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&json!({"sub": "x", "exp": now + 600}))
        );
        app.http.post(&url).json(&body).bearer_auth(t)
    };
    let no_exp = {
        let t = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": "forever"}),
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .unwrap();
        app.http.post(&url).json(&body).bearer_auth(t)
    };
    let not_bearer = app
        .http
        .post(&url)
        .json(&body)
        .header("Authorization", "Basic abc");

    for (name, req) in [
        ("missing", missing),
        ("wrong key", wrong_key),
        ("expired", expired),
        ("alg none", alg_none),
        ("no exp", no_exp),
        ("not bearer", not_bearer),
    ] {
        let (status, body) = app.call(req).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["success"], false, "{name}");
    }
    assert_eq!(app.gateway.calls().await, 0);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn a_valid_token_of_either_role_may_send() {
    let app = TestApp::spawn().await;
    for role in [Role::Client, Role::Ops] {
        let req = app
            .http
            .post(format!("{}/whatsapp/send", app.base))
            .bearer_auth(token("someone", role, Duration::from_secs(60)))
            .json(&json!({"to": "0812345678", "body": "hello"}));
        let (status, body) = app.call(req).await;
        assert_eq!(status, 202, "{body}");
    }
}

#[tokio::test]
async fn health_metrics_docs_and_openapi_need_no_token() {
    let app = TestApp::spawn().await;
    for path in ["/health", "/health/ready"] {
        let (status, _) = app.call(app.http.get(format!("{}{path}", app.base))).await;
        assert_eq!(status, 200, "{path}");
    }
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let spec: serde_json::Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/whatsapp/send",
        "/whatsapp/send-simple",
        "/whatsapp/send-with-file",
        "/whatsapp/send-scheduled",
        "/whatsapp/messages",
        "/whatsapp/messages/{id}",
        "/whatsapp/messages/{id}/cancel",
        "/customers",
        "/customers/bulk-import",
        "/customers/send-maintenance-reminder",
        "/scheduler/maintenance-reminder/run-now",
        "/scheduler/maintenance-reminder/start",
        "/scheduler/maintenance-reminder/stop",
        "/scheduler/maintenance-reminder/status",
        "/health/scheduler",
        "/reminders",
        "/whatsapp-report/",
        "/whatsapp-report/detail",
        "/whatsapp-report/statistics",
        "/whatsapp-report/customer/{id_customer}",
        "/whatsapp-report/customer/{id_customer}/vehicle/{id_vehicle}",
        "/whatsapp-report/{report_id}",
        "/whatsapp-report/reset-frequency",
        "/manual-whatsapp/",
        "/manual-whatsapp/{record_id}",
        "/manual-whatsapp/by-nopol/{nopol}",
        "/manual-whatsapp/{record_id}/toggle-active",
        "/manual-whatsapp/bulk-import",
        "/manual-whatsapp/send-reminders",
        "/manual-whatsapp/{record_id}/send-reminder",
        "/manual-whatsapp/send-custom-message",
        "/manual-whatsapp/stats/summary",
        "/ops/ui",
        "/ops/queues",
        "/ops/queues/{queue}/pause",
        "/ops/queues/{queue}/resume",
        "/ops/jobs",
        "/ops/jobs/requeue",
        "/ops/jobs/{id}",
        "/ops/jobs/{id}/requeue",
        "/ops/jobs/{id}/cancel",
        "/ops/purge",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from openapi.json"
        );
    }
    let docs = app
        .http
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("/openapi.json"));
}

#[tokio::test]
async fn public_send_endpoints_accept_anonymous_calls_only_when_enabled_and_limit_them_per_ip() {
    let closed = TestApp::spawn().await;
    let url = |app: &TestApp| {
        format!(
            "{}/whatsapp/send-simple?phone=0812345678&message=hi",
            app.base
        )
    };
    let (status, _) = closed.call(closed.http.post(url(&closed))).await;
    assert_eq!(status, 401);

    let open = TestApp::spawn_with(crate::helpers::Options {
        env: vec![
            ("PUBLIC_SEND_ENDPOINTS", "true".into()),
            ("PUBLIC_SEND_RATE_PER_MINUTE", "3".into()),
        ],
        ..Default::default()
    })
    .await;
    for _ in 0..3 {
        let (status, body) = open.call(open.http.post(url(&open))).await;
        assert_eq!(status, 202, "{body}");
    }
    let res = open.http.post(url(&open)).send().await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    // The JSON endpoint stays authenticated, and a token bypasses the public limit.
    let (status, _) = open
        .call(
            open.http
                .post(format!("{}/whatsapp/send", open.base))
                .json(&json!({"to": "0812345678", "body": "x"})),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = open
        .call(open.post("/whatsapp/send-simple?phone=0812345678&message=hi"))
        .await;
    assert_eq!(status, 202);
}
