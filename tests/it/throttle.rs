use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::json;
use wiremock::{Mock, Request, Respond, ResponseTemplate, matchers};

use crate::helpers::{Options, TestApp, hold_first_write, id_of};

/// When each call arrived at the gateway, with its message body.
pub type Arrivals = Arc<Mutex<Vec<(Instant, String)>>>;

/// Answers `success: true` and notes when each call arrived, and its body.
pub struct Clocked(pub Arrivals);

impl Respond for Clocked {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: serde_json::Value = request.body_json().unwrap_or_default();
        let text = body["body"].as_str().unwrap_or_default().to_owned();
        if let Ok(mut arrivals) = self.0.lock() {
            arrivals.push((Instant::now(), text));
        }
        ResponseTemplate::new(200).set_body_json(json!({"success": true}))
    }
}

/// An app sending at 5/s (burst 1, a slot every 200 ms) with 8 slots to a gateway that notes
/// its calls' arrivals.
pub async fn rate_limited_app() -> (TestApp, Arrivals) {
    let app = TestApp::spawn_with(Options {
        env: vec![
            ("SEND_RATE_PER_SECOND", "5".into()),
            ("SEND_BURST", "1".into()),
            ("WORKER_CONCURRENCY", "8".into()),
        ],
        gateway_ok: false,
        ..Default::default()
    })
    .await;
    let arrivals = Arrivals::default();
    Mock::given(matchers::method("POST"))
        .respond_with(Clocked(arrivals.clone()))
        .mount(&app.gateway.server)
        .await;
    (app, arrivals)
}

#[tokio::test]
async fn a_rate_of_five_per_second_holds_over_25_messages() {
    let (app, arrivals) = rate_limited_app().await;

    let mut ids = Vec::new();
    for i in 0..25 {
        let (status, body) = app
            .send(json!({"to": "0812345678", "body": format!("r{i}")}))
            .await;
        assert_eq!(status, 202);
        ids.push(id_of(&body));
    }
    app.gateway
        .wait_for_calls(25, Duration::from_secs(12))
        .await;
    for id in &ids {
        app.wait_for_status(id, "sent", Duration::from_secs(2))
            .await;
    }
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM messages")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert!(
        attempts.iter().all(|a| *a == 1),
        "waiting for the limiter costs no attempt: {attempts:?}"
    );

    // Burst 1 at 5/s: one call every 200 ms, and no second holds more than burst + rate = 6
    // (seven consecutive releases span more than a second); six span nearly a second (less the
    // half interval a slot may be used late).
    // `started_at` is taken the moment the throttle lets a call go.
    let released: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT started_at FROM message_attempts ORDER BY started_at")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(released.len(), 25);
    for w in released.windows(7) {
        let span = (w[6] - w[0]).num_milliseconds();
        assert!(span > 1_000, "seven releases within {span} ms");
    }
    // A slot may be used up to half an interval (100 ms) late, never later (plus the error of
    // mapping the database's clock onto this process', at most one quick round trip).
    for w in released.windows(6) {
        let span = (w[5] - w[0]).num_milliseconds();
        assert!(span >= 890, "six releases within {span} ms");
    }
    // At the gateway the same rate holds over longer windows; single gaps jitter by the time an
    // HTTP call takes after its release, which on a loaded machine can be a few hundred ms.
    let mut at: Vec<Instant> = arrivals.lock().unwrap().iter().map(|a| a.0).collect();
    at.sort();
    assert_eq!(at.len(), 25);
    for w in at.windows(11) {
        let span = w[10] - w[0];
        assert!(
            span >= Duration::from_millis(1_500),
            "eleven calls within {span:?}"
        );
    }
    let total = at[24] - at[0];
    assert!(
        total >= Duration::from_millis(4_500) && total <= Duration::from_millis(6_500),
        "25 calls at 5/s took {total:?}"
    );
}

/// A reservation whose reply comes back late (here its commit is held 300 ms after the bucket
/// read its clock, as a slow WAL flush would) must not move its slots late against the next
/// reservation's: placed by that reply, the first slot would go out together with the next ones.
#[tokio::test]
async fn a_slow_reservation_reply_does_not_bunch_the_slots() {
    let app = TestApp::spawn_with(Options {
        env: vec![
            ("SEND_RATE_PER_SECOND", "5".into()),
            ("SEND_BURST", "1".into()),
            ("WORKER_CONCURRENCY", "4".into()),
        ],
        ..Default::default()
    })
    .await;
    hold_first_write(&app.db.pool, "sender_state", 0.3).await;
    for i in 0..6 {
        let (status, _) = app
            .send(json!({"to": "0812345678", "body": format!("s{i}")}))
            .await;
        assert_eq!(status, 202);
    }
    app.wait_all_sent(Duration::from_secs(10)).await;
    assert_eq!(app.count("SELECT count(*) FROM slept").await, 1);
    let released: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT started_at FROM message_attempts ORDER BY started_at")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(released.len(), 6);
    // One every 200 ms; a slot is used at most 100 ms late.
    for w in released.windows(2) {
        let gap = (w[1] - w[0]).num_milliseconds();
        assert!(gap >= 90, "two releases {gap} ms apart: {released:?}");
    }
}
