//! A rendered text over 4,096 characters (SPEC §10): a template of placeholders can grow far
//! past what it is saved as — `{nama}` 500 times renders a name 500 times. A reminder pass skips
//! such a recipient with reason `text too long`, and a preview answers `422`.

use chrono::{NaiveDate, Utc};
use serde_json::{Value, json};

use crate::helpers::{TestApp, id_of, ops_token};

/// 500 × `{nama}`: 3,000 characters saved, `500 × name` rendered.
fn names_500() -> String {
    "{nama}".repeat(500)
}

fn today() -> NaiveDate {
    Utc::now()
        .with_timezone(&chrono_tz::Asia::Jakarta)
        .date_naive()
}

async fn put_template(app: &TestApp, key: &str, body: &str) {
    let (status, saved) = app
        .call(
            app.http
                .put(format!("{}/templates/{key}", app.base))
                .bearer_auth(ops_token())
                .json(&json!({ "body": body })),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
}

/// A customer with one vehicle due today; returns the customer id.
async fn customer(app: &TestApp, nama: &str, hp: &str, no_pol: &str) -> String {
    let (status, created) = app
        .call(app.post("/customers").json(&json!({
            "nama": nama, "hp": hp,
            "vehicles": [{"no_pol": no_pol, "next_visit_date": today().to_string()}],
        })))
        .await;
    assert_eq!(status, 201, "{created}");
    id_of(&created)
}

/// The detail of a pass answer whose `field` is `value`.
fn detail<'a>(summary: &'a Value, field: &str, value: &str) -> &'a Value {
    summary["details"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d[field] == value))
        .unwrap_or_else(|| panic!("no detail with {field} {value}: {summary}"))
}

/// A pass answer over a long and a short name: the long one skipped as `text too long` with
/// neither text nor message, the short one queued with its 1,500 characters.
fn check_pass(summary: &Value, field: &str, long: &str, short: &str) {
    assert_eq!(summary["eligible"], 2, "{summary}");
    assert_eq!(summary["reminder_queued"], 1, "{summary}");
    assert_eq!(summary["skipped"], 1, "{summary}");
    let long = detail(summary, field, long);
    assert_eq!(long["status"], "skipped", "{long}");
    assert_eq!(long["reason"], "text too long", "{long}");
    assert!(long.get("message").is_none(), "{long}");
    assert!(long["message_id"].is_null(), "{long}");
    let short = detail(summary, field, short);
    assert_eq!(short["status"], "queued", "{short}");
    assert_eq!(short["message"].as_str().map(str::len), Some(1_500));
}

#[tokio::test]
async fn a_reminder_that_renders_over_4096_characters_is_skipped_as_text_too_long() {
    let app = TestApp::spawn().await;
    // 12 characters × 500 = 6,000: too long. 3 × 500 = 1,500: sent.
    customer(&app, "Budi Santoso", "0812 3456 7001", "B 1 LONG").await;
    customer(&app, "Ani", "0812 3456 7002", "B 2 SHORT").await;
    put_template(&app, "maintenance_reminder", &names_500()).await;

    let (status, body) = app
        .call(app.post("/scheduler/maintenance-reminder/run-now"))
        .await;
    assert_eq!(status, 200, "{body}");
    check_pass(&body["data"], "no_pol", "B 1 LONG", "B 2 SHORT");

    // Nothing stored for the skipped vehicle: a later (fixed) template can still remind it.
    assert_eq!(app.count("SELECT count(*) FROM reminders").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE length(body) > 4096")
            .await,
        0
    );
}

#[tokio::test]
async fn a_manual_reminder_that_renders_over_4096_characters_is_skipped_as_text_too_long() {
    let app = TestApp::spawn().await;
    for (name, nopol, hp) in [
        ("Budi Santoso", "M 1 LONG", "0813 1111 0001"),
        ("Ani", "M 2 SHORT", "0813 1111 0002"),
    ] {
        let (status, created) = app
            .call(app.post("/manual-whatsapp/").json(&json!({
                "customer_name": name, "nopol": nopol, "no_hp": hp,
                "next_service": today().to_string(),
            })))
            .await;
        assert_eq!(status, 201, "{created}");
    }
    put_template(&app, "manual_reminder", &names_500()).await;

    let (status, body) = app
        .call(app.post("/manual-whatsapp/send-reminders").json(&json!({})))
        .await;
    assert_eq!(status, 200, "{body}");
    check_pass(&body["data"], "nopol", "M 1 LONG", "M 2 SHORT");
    assert_eq!(app.count("SELECT count(*) FROM manual_reminders").await, 1);

    // The daily run's manual pass skips it the same way.
    let (status, body) = app
        .call(app.post("/scheduler/maintenance-reminder/run-now"))
        .await;
    assert_eq!(status, 200, "{body}");
    let manual = &body["data"]["manual"];
    assert_eq!(manual["skipped"], 1, "{body}");
    assert_eq!(manual["already_queued"], 1, "{body}");

    // One record's reminder (`{id}/send-reminder`, even forced) is skipped the same way.
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM manual_whatsapp WHERE nopol = 'M 1 LONG'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let (status, body) = app
        .call(app.post(&format!("/manual-whatsapp/{id}/send-reminder?force=true")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["status"], "skipped", "{body}");
    assert_eq!(body["data"]["reason"], "text too long", "{body}");
    assert_eq!(app.count("SELECT count(*) FROM manual_reminders").await, 1);
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE length(body) > 4096")
            .await,
        0
    );
}

#[tokio::test]
async fn a_preview_that_renders_over_4096_characters_is_a_422_not_megabytes() {
    let app = TestApp::spawn().await;
    let long = customer(&app, "Budi Santoso", "0812 3456 7001", "B 1 LONG").await;
    let short = customer(&app, "Ani", "0812 3456 7002", "B 2 SHORT").await;
    let preview = |body: Value| {
        app.call(
            app.post("/templates/maintenance_reminder/preview")
                .json(&body),
        )
    };
    let fields = |body: &Value| -> Vec<String> {
        body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
            .collect()
    };

    // An unsaved body: the error is on `body`.
    let (status, body) = preview(json!({"customer_id": long, "body": names_500()})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(fields(&body), ["body"], "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("6000 characters")),
        "{body}"
    );

    // The saved version: the error is on the template.
    put_template(&app, "maintenance_reminder", &names_500()).await;
    let (status, body) = preview(json!({"customer_id": long})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(fields(&body), ["template"], "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("maintenance_reminder version 2 ")),
        "{body}"
    );

    // The same template for a short name fits.
    let (status, body) = preview(json!({"customer_id": short})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["text"].as_str().map(str::len), Some(1_500));
}
