//! Sandbox mode listens on all interfaces: the listing of what it "sent" needs a token, and its
//! send endpoint takes only the key its own process generated.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Options, TestApp, id_of};

async fn sandbox_app() -> TestApp {
    TestApp::spawn_with(Options {
        // Empty is unset: sandbox mode.
        env: vec![("STARSENDER_API_KEY", String::new())],
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn the_sandbox_listing_needs_a_token_and_shows_what_was_sent() {
    let app = sandbox_app().await;
    assert!(app.config.sandbox());
    let (status, body) = app
        .send(json!({"to": "0812 3456 789", "body": "Halo sandbox"}))
        .await;
    assert_eq!(status, 202, "{body}");
    // Delivered through the sandbox with the process's own key.
    app.wait_for_status(&id_of(&body), "sent", Duration::from_secs(10))
        .await;
    assert_eq!(
        app.gateway.calls().await,
        0,
        "nothing went to a live gateway"
    );

    let url = format!("{}/sandbox/starsender/messages", app.base);
    let (status, body) = app.call(app.http.get(&url)).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = app
        .call(app.http.get(&url).bearer_auth("not-a-token"))
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = app.call(app.get("/sandbox/starsender/messages")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["to"], "628123456789");
    assert_eq!(body["data"][0]["body"], "Halo sandbox");
    let (status, body) = app
        .call(app.get("/sandbox/starsender/messages?to=%00"))
        .await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test]
async fn the_sandbox_send_endpoint_takes_only_its_own_processs_key() {
    let app = sandbox_app().await;
    let url = format!("{}/sandbox/starsender/send", app.base);
    let message = json!({"messageType": "text", "to": "628123456789", "body": "forged"});
    for key in [None, Some("sandbox"), Some(""), Some("any-other-key")] {
        let mut req = app.http.post(&url).json(&message);
        if let Some(key) = key {
            req = req.header("authorization", key);
        }
        let (status, body) = app.call(req).await;
        assert_eq!(status, 401, "{key:?}: {body}");
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM sandbox_messages")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "a forged message was stored");
}
