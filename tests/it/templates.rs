//! Templates, salutation and language, the reminder calendar, the last-visit rule and the
//! daily run's manual pass (SPEC §10).

use std::time::Duration;

use bengkel_whatsapp::templates::{Language, tanggal};
use chrono::{Months, NaiveDate};
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, day, ops_request, token};

/// A customer with one vehicle `no_pol`, its dates and the customer's salutation/language set
/// in the database; returns the vehicle id.
async fn vehicle(
    app: &TestApp,
    nama: &str,
    no_pol: &str,
    next: Option<NaiveDate>,
    last: Option<NaiveDate>,
    salutation: Option<&str>,
    language: &str,
) -> String {
    let hp = format!("0812{:07}", rand_digits(no_pol));
    let (status, body) = app
        .call(app.post("/customers").json(&json!({
            "nama": nama, "hp": hp,
            "vehicles": [{"no_pol": no_pol, "model": "Avanza",
                          "next_visit_date": next.map(|d| d.to_string())}],
        })))
        .await;
    assert_eq!(status, 201, "{body}");
    let customer = body["data"]["id"].as_str().unwrap().to_owned();
    let vehicle = body["data"]["vehicles"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    sqlx::query("UPDATE customers SET salutation = $2, language = $3 WHERE id = $1::uuid;")
        .bind(&customer)
        .bind(salutation)
        .bind(language)
        .execute(&app.db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE vehicles SET last_visit_date = $2 WHERE id = $1::uuid")
        .bind(&vehicle)
        .bind(last)
        .execute(&app.db.pool)
        .await
        .unwrap();
    vehicle
}

/// A stable 7-digit number per plate, so that each customer has their own phone.
fn rand_digits(s: &str) -> u32 {
    s.bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 10_000_000
}

/// The queued details of a fan-out, by plate: (status, message).
fn by_plate(summary: &Value) -> std::collections::HashMap<String, (String, String)> {
    summary["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["no_pol"].as_str().unwrap_or_default().to_owned(),
                (
                    d["status"].as_str().unwrap().to_owned(),
                    d["message"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
}

async fn put_template(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    app.call(ops_request(app, reqwest::Method::PUT, &format!("/templates/{key}")).json(&body))
        .await
}

#[tokio::test]
async fn templates_are_listed_with_their_placeholders_and_versions() {
    let app = TestApp::spawn().await;
    let (status, body) = app.call(app.get("/templates")).await;
    assert_eq!(status, 200, "{body}");
    let all = body["data"].as_array().unwrap();
    let keys: Vec<&str> = all.iter().map(|t| t["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "admin_alert",
            "admin_daily_summary",
            "maintenance_reminder",
            "manual_reminder"
        ]
    );
    // The alert template (SPEC §14) knows the alert, not a customer.
    assert_eq!(
        all[0]["placeholders"],
        json!([
            "workshop_name",
            "status",
            "alert_names",
            "summary",
            "since",
            "count"
        ])
    );
    // The summary's (SPEC §14): the day's counts.
    assert_eq!(
        all[1]["placeholders"],
        json!([
            "workshop_name",
            "date",
            "eligible",
            "queued",
            "sent",
            "failed",
            "skipped",
            "skipped_reasons",
            "expired",
            "opted_out",
            "delivered",
            "read",
            "undelivered"
        ])
    );
    let maintenance = &all[2];
    assert_eq!(maintenance["builtin"], true);
    assert_eq!(maintenance["current_version"], 1);
    assert_eq!(maintenance["versions"].as_array().unwrap().len(), 1);
    assert_eq!(maintenance["versions"][0]["created_by"], "built-in");
    let placeholders: Vec<&str> = maintenance["placeholders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for p in [
        "salutation",
        "nama",
        "no_pol",
        "model",
        "tanggal",
        "tanggal_dmy",
        "hari",
        "service_phone",
        "workshop_name",
    ] {
        assert!(placeholders.contains(&p), "{p} in {placeholders:?}");
    }
    assert!(
        maintenance["bodies"]["id"]
            .as_str()
            .unwrap()
            .starts_with("{salutation} {nama} untuk nomor kendaraan {no_pol}")
    );
    assert!(maintenance["bodies"]["en"].is_string());
    let (status, one) = app.call(app.get("/templates/manual_reminder")).await;
    assert_eq!(status, 200, "{one}");
    assert!(
        !one["data"]["placeholders"]
            .as_array()
            .unwrap()
            .contains(&json!("model")),
        "a manual record has no model"
    );
    let (status, missing) = app.call(app.get("/templates/nope")).await;
    assert_eq!(status, 404, "{missing}");
}

#[tokio::test]
async fn saving_needs_the_ops_role_and_names_every_unknown_placeholder() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .call(
            app.http
                .put(format!("{}/templates/maintenance_reminder", app.base))
                .bearer_auth(token(
                    "client",
                    bengkel_whatsapp::http::auth::Role::Client,
                    Duration::from_secs(60),
                ))
                .json(&json!({"body": "Halo {nama}"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");

    let (status, body) = put_template(
        &app,
        "maintenance_reminder",
        json!({"body": "Halo {nama} {kode} {promo}", "language": "xx"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let errors = body["errors"].as_array().unwrap();
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["language", "body"]);
    let message = errors[1]["message"].as_str().unwrap();
    assert!(
        message.contains("{kode}") && message.contains("{promo}"),
        "{message}"
    );
    for bad in [
        json!({"body": "   "}),
        json!({"body": "Halo {nama"}),
        json!({}),
    ] {
        let (status, body) = put_template(&app, "maintenance_reminder", bad).await;
        assert_eq!(status, 422, "{body}");
    }
    let (status, body) = put_template(&app, "manual_reminder", json!({"body": "{model}"})).await;
    assert_eq!(status, 422, "a manual record has no model: {body}");
    let (status, body) = put_template(&app, "Bad-Key", json!({"body": "Halo"})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "key");
    // A new custom template starts with its Indonesian body.
    let (status, body) = put_template(
        &app,
        "promo",
        json!({"body": "Hello {nama}", "language": "en"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = put_template(
        &app,
        "promo",
        json!({"body": "Halo {nama}, promo {{gratis}}"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["version"], 1);
    let (status, body) = put_template(
        &app,
        "promo",
        json!({"body": "Hello {nama}", "language": "en"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["version"], 2);
    assert_eq!(
        body["data"]["bodies"]["id"], "Halo {nama}, promo {{gratis}}",
        "the other language is kept"
    );
    // Nothing invalid was stored.
    let (_, t) = app.call(app.get("/templates/maintenance_reminder")).await;
    assert_eq!(t["data"]["current_version"], 1);
    // Custom templates take values only.
    let (status, body) = app
        .call(
            app.post("/templates/promo/preview")
                .json(&json!({"values": {"nama": "Rina"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["text"], "Halo Rina, promo {gratis}");
    let (status, body) = app
        .call(app.post("/templates/promo/preview").json(&json!({})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["missing"], json!(["nama"]));
    let (status, body) = app
        .call(
            app.post("/templates/promo/preview")
                .json(&json!({"customer_id": uuid::Uuid::nil()})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "customer_id");
}

#[tokio::test]
async fn a_new_version_is_what_the_next_fan_out_sends_and_records() {
    let app = TestApp::spawn().await;
    vehicle(&app, "Joko", "B 1 A", Some(day(0)), None, None, "id").await;
    let first = app.run_now("").await;
    let (status, message) = by_plate(&first)["B 1 A"].clone();
    assert_eq!(status, "queued");
    assert!(
        message.starts_with("Bapak Joko untuk nomor kendaraan B 1 A"),
        "{message}"
    );
    let (status, body) = put_template(
        &app,
        "maintenance_reminder",
        json!({"body": "{salutation} {nama}: {model} {no_pol} servis {tanggal} (H-{hari}) di {workshop_name}"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["version"], 2);
    vehicle(&app, "Rina", "B 2 A", Some(day(1)), None, Some("Ibu"), "id").await;
    let second = app.run_now("").await;
    let (status, message) = by_plate(&second)["B 2 A"].clone();
    assert_eq!(status, "queued");
    let due = day(1);
    // The month names themselves are checked word for word in `templates` unit tests.
    let tanggal = tanggal(due, Language::Id);
    assert_eq!(
        message,
        format!("Ibu Rina: Avanza B 2 A servis {tanggal} (H-1) di Bengkel")
    );
    let versions: Vec<(String, Option<String>, Option<i32>)> = sqlx::query_as(
        "SELECT body, template_key, template_version FROM messages ORDER BY created_at",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0].1.as_deref(), Some("maintenance_reminder"));
    assert_eq!(versions[0].2, Some(1));
    assert_eq!(
        (versions[1].0.as_str(), versions[1].2),
        (message.as_str(), Some(2))
    );
    let newest: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM messages ORDER BY created_at DESC LIMIT 1")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let m = app.message(&newest.to_string()).await;
    assert_eq!(m["template_key"], "maintenance_reminder");
    assert_eq!(m["template_version"], 2);
    app.gateway.wait_for_calls(2, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn salutations_are_never_doubled_and_languages_get_their_month() {
    let app = TestApp::spawn().await;
    let joko = vehicle(&app, "Bapak Joko", "B 10 A", Some(day(0)), None, None, "id").await;
    vehicle(
        &app,
        "Siti",
        "B 11 A",
        Some(day(0)),
        None,
        Some("Ibu"),
        "id",
    )
    .await;
    vehicle(&app, "Budi", "B 12 A", Some(day(0)), None, None, "id").await;
    vehicle(
        &app,
        "Ibu Ani",
        "B 13 A",
        Some(day(0)),
        None,
        Some("Ibu"),
        "id",
    )
    .await;
    vehicle(&app, "Dewi", "B 14 A", Some(day(0)), None, Some(""), "id").await;
    vehicle(
        &app,
        "John",
        "B 15 A",
        Some(day(0)),
        None,
        Some("Mr."),
        "en",
    )
    .await;
    let summary = app.run_now("").await;
    let m = by_plate(&summary);
    assert!(
        m["B 10 A"].1.starts_with("Bapak Joko untuk"),
        "{}",
        m["B 10 A"].1
    );
    assert!(
        m["B 11 A"].1.starts_with("Ibu Siti untuk"),
        "{}",
        m["B 11 A"].1
    );
    assert!(
        m["B 12 A"].1.starts_with("Bapak Budi untuk"),
        "Budi is not Bu: {}",
        m["B 12 A"].1
    );
    assert!(
        m["B 13 A"].1.starts_with("Ibu Ani untuk"),
        "{}",
        m["B 13 A"].1
    );
    assert!(m["B 14 A"].1.starts_with("Dewi untuk"), "{}", m["B 14 A"].1);
    let d = day(0);
    let en = &m["B 15 A"].1;
    assert!(en.starts_with("Mr. John, your vehicle B 15 A"), "{en}");
    assert!(en.contains(&tanggal(d, Language::En)), "{en}");
    assert!(
        !m.values().any(|(_, text)| text.contains("  ")),
        "no double spaces"
    );
    // The preview renders what was sent; the name's own salutation is not a missing value.
    let (status, body) = app
        .call(
            app.post("/templates/maintenance_reminder/preview")
                .json(&json!({"vehicle_id": joko})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["text"], m["B 10 A"].1.as_str());
    assert_eq!(body["data"]["missing"], json!([]));

    // A manual record in English: the month in English too.
    let (status, body) = app
        .call(app.post("/manual-whatsapp/").json(&json!({
            "customer_name": "Jane", "nopol": "D 1 EN", "no_hp": "0813 1111 2222",
            "next_service": day(0).to_string()})))
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    sqlx::query(
        "UPDATE manual_whatsapp SET language = 'en', salutation = 'Ms.' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let (status, body) = app
        .call(app.post(&format!("/manual-whatsapp/{id}/send-reminder")))
        .await;
    assert_eq!(status, 202, "{body}");
    let text = body["data"]["message"].as_str().unwrap();
    assert!(text.starts_with("Hello Ms. Jane,"), "{text}");
    assert!(
        text.contains(&format!("📅 {}", tanggal(d, Language::En))),
        "{text}"
    );
    // The preview renders the same, and sends nothing.
    let before: i64 = app.count("SELECT count(*) FROM messages").await;
    let (status, body) = app
        .call(
            app.post("/templates/manual_reminder/preview")
                .json(&json!({"manual_id": id})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["text"], text);
    assert_eq!(body["data"]["language"], "en");
    let (status, body) = app
        .call(
            app.post("/templates/manual_reminder/preview")
                .json(&json!({"manual_id": id, "language": "id"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["data"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Halo Ms. Jane,")
    );
    assert_eq!(
        app.count("SELECT count(*) FROM messages").await,
        before,
        "a preview sends nothing"
    );
}

#[tokio::test]
async fn the_calendar_reminds_only_on_its_days_and_is_shared_through_the_scheduler() {
    let app = TestApp::spawn_with(Options {
        processes: 1,
        ..Options::default()
    })
    .await;
    for (plate, offset) in [("C 0", 0), ("C 1", 1), ("C 2", 2), ("C 3", 3)] {
        vehicle(&app, "Ani", plate, Some(day(offset)), None, None, "id").await;
    }
    let standard = app.run_now("").await;
    let m = by_plate(&standard);
    let mut reminded: Vec<&str> = m.keys().map(String::as_str).collect();
    reminded.sort();
    assert_eq!(reminded, ["C 0", "C 1", "C 2"], "2,1,0 by default");

    let (status, body) = app
        .call(app.ops_post("/scheduler/maintenance-reminder/start?days_before=2,0"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["days_before"], json!([2, 0]));
    let (status, body) = app
        .call(app.ops_post("/scheduler/maintenance-reminder/start?days_before=2,x"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "days_before");
    let (_, status_body) = app
        .call(app.get("/scheduler/maintenance-reminder/status"))
        .await;
    assert_eq!(
        status_body["data"]["days_before"],
        json!([2, 0]),
        "persisted"
    );

    // A second process sees the same calendar.
    let other = app
        .another_process(bengkel_whatsapp::app::ProcessRole::Api)
        .await;
    let (_, other_status) = app
        .call(
            app.http
                .get(format!(
                    "{}/scheduler/maintenance-reminder/status",
                    other.base
                ))
                .bearer_auth(&app.token),
        )
        .await;
    assert_eq!(other_status["data"]["days_before"], json!([2, 0]));

    sqlx::query("DELETE FROM reminders")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let narrowed = app.run_now("").await;
    let m = by_plate(&narrowed);
    let mut reminded: Vec<&str> = m.keys().map(String::as_str).collect();
    reminded.sort();
    assert_eq!(reminded, ["C 0", "C 2"], "the day in between is skipped");
}

#[tokio::test]
async fn a_vehicle_is_due_by_its_last_visit_and_an_explicit_date_wins() {
    let app = TestApp::spawn().await;
    let four_months_back = |d: NaiveDate| d.checked_sub_months(Months::new(4)).unwrap();
    // Due today by the last visit four months ago (a month end may clamp: pick what maps).
    let last = (0..4)
        .map(|k| four_months_back(day(0)) + chrono::Duration::days(k))
        .find(|l| l.checked_add_months(Months::new(4)) == Some(day(0)))
        .expect("a last visit four months before today");
    vehicle(&app, "Lastri", "L 1 A", None, Some(last), None, "id").await;
    // Its last visit says today, but an explicit next visit in ten days wins.
    vehicle(&app, "Nexa", "L 2 A", Some(day(10)), Some(last), None, "id").await;
    // No dates at all: never due.
    vehicle(&app, "Kosong", "L 3 A", None, None, None, "id").await;
    let summary = app.run_now("").await;
    let details = summary["details"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{summary}");
    assert_eq!(details[0]["no_pol"], "L 1 A");
    assert_eq!(details[0]["next_visit_date"], day(0).to_string());
    assert_eq!(details[0]["due_source"], "last_visit_date");
    assert_eq!(details[0]["status"], "queued");
    let reminded: (NaiveDate, String) = sqlx::query_as(
        "SELECT r.next_visit_date, m.body FROM reminders r JOIN messages m ON m.id = r.message_id",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(reminded.0, day(0));
    assert!(reminded.1.contains(&day(0).format("%d-%m-%Y").to_string()));
}

/// Manual records reminded by the daily run: once per day, on the same calendar.
async fn manual_record(app: &TestApp, nopol: &str, next: NaiveDate) -> String {
    let (status, body) = app
        .call(app.post("/manual-whatsapp/").json(&json!({
            "customer_name": "Manual", "nopol": nopol,
            "no_hp": format!("0813{:07}", rand_digits(nopol)),
            "next_service": next.to_string()})))
        .await;
    assert_eq!(status, 201, "{body}");
    body["data"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_daily_run_reminds_manual_customers_once_a_day() {
    let app = TestApp::spawn().await;
    manual_record(&app, "M 0", day(0)).await;
    manual_record(&app, "M 1", day(1)).await;
    manual_record(&app, "M 9", day(9)).await;
    let inactive = manual_record(&app, "M 2", day(2)).await;
    sqlx::query("UPDATE manual_whatsapp SET is_active = 0 WHERE id = $1::uuid")
        .bind(&inactive)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let first = app.run_now("").await;
    assert_eq!(first["manual"]["eligible"], 2, "{first}");
    assert_eq!(first["manual"]["reminder_queued"], 2);
    let second = app.run_now("").await;
    assert_eq!(second["manual"]["reminder_queued"], 0, "{second}");
    assert_eq!(second["manual"]["already_queued"], 2);
    assert_eq!(app.count("SELECT count(*) FROM manual_reminders").await, 2);
    let (_, status) = app
        .call(app.get("/scheduler/maintenance-reminder/status"))
        .await;
    assert_eq!(
        status["data"]["last_run"]["manual"]["already_queued"], 2,
        "{status}"
    );
    app.gateway.wait_for_calls(2, Duration::from_secs(20)).await;
    let texts: Vec<String> = sqlx::query_scalar("SELECT body FROM messages WHERE kind = 'manual'")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert!(
        texts.iter().all(|t| t.starts_with("Halo Bapak Manual,")),
        "{texts:?}"
    );
}

#[tokio::test]
async fn the_daily_run_leaves_manual_customers_alone_when_switched_off() {
    let app = TestApp::spawn_with(Options {
        env: vec![("REMINDER_INCLUDE_MANUAL", "false".into())],
        ..Options::default()
    })
    .await;
    manual_record(&app, "M 0", day(0)).await;
    let summary = app.run_now("").await;
    assert!(summary.get("manual").is_none(), "{summary}");
    assert_eq!(app.count("SELECT count(*) FROM manual_reminders").await, 0);
    // The explicit endpoint still works.
    let (status, body) = app
        .call(app.post("/manual-whatsapp/send-reminders").json(&json!({})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["reminder_queued"], 1);
}
