//! The hostile probe's findings (issue 17): a rate that parks the sender, changes a client token
//! must not make, and bodies or headers that say one thing twice.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, ops_token};

fn fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn policy(app: &TestApp) -> Value {
    let (status, body) = app
        .call(
            app.http
                .get(format!("{}/ops/policy", app.base))
                .bearer_auth(ops_token()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

async fn change_policy(app: &TestApp, change: Value) -> (u16, Value) {
    app.call(
        app.http
            .put(format!("{}/ops/policy", app.base))
            .bearer_auth(ops_token())
            .json(&change),
    )
    .await
}

#[tokio::test]
async fn a_rate_below_the_floor_is_refused_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let before = policy(&app).await;
    for rate in [json!(1e-30), json!(1e-7), json!(0.049), json!(-1)] {
        let (status, body) =
            change_policy(&app, json!({"rate_per_second": rate, "burst": 7})).await;
        assert_eq!(status, 422, "{rate}: {body}");
        assert_eq!(fields(&body), ["rate_per_second"], "{rate}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("0.05"),
            "the floor is named: {body}"
        );
    }
    assert_eq!(policy(&app).await, before, "nothing changed");
    // The floor itself, and 0 (no limit), are rates.
    for rate in [0.05, 0.0] {
        let (status, body) = change_policy(&app, json!({"rate_per_second": rate})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["rate_per_second"], rate);
    }
    // The database refuses it too, whoever writes.
    let stored = sqlx::query("UPDATE delivery_policy SET rate_per_second = 1e-30")
        .execute(&app.db.pool)
        .await;
    assert!(stored.is_err(), "a rate below the floor was stored");
}

#[tokio::test]
async fn a_send_rate_below_the_floor_stops_start_up_naming_the_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bengkel-whatsapp"))
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SEND_RATE_PER_SECOND", "1e-30")
        // no .env of the checkout is read
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run the binary");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SEND_RATE_PER_SECOND") && stderr.contains("0.05"),
        "{stderr}"
    );
}

#[tokio::test]
async fn runs_waiting_for_a_slot_of_a_slow_rate_take_up_a_faster_one_within_seconds() {
    let app = TestApp::spawn_with(Options {
        env: vec![
            ("SEND_RATE_PER_SECOND", "0.05".into()),
            ("SEND_BURST", "1".into()),
        ],
        ..Options::default()
    })
    .await;
    for i in 0..4 {
        let (status, body) = app
            .send(json!({"to": format!("62812000010{i}"), "body": "slow"}))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    // The first call takes the bucket's one token; at 0.05/s the next slot is 20 s away, and
    // the other runs wait for it.
    app.gateway.wait_for_calls(1, Duration::from_secs(15)).await;
    let (status, body) = change_policy(&app, json!({"rate_per_second": 20})).await;
    assert_eq!(status, 200, "{body}");
    let raised = Instant::now();
    app.gateway.wait_for_calls(4, Duration::from_secs(6)).await;
    eprintln!(
        "the waiting runs went {:?} after the change",
        raised.elapsed()
    );
    app.wait_all_sent(Duration::from_secs(5)).await;
}
