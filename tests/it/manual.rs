//! Manual WhatsApp customers (SPEC §7).

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, day, gateway_error};

async fn create(app: &TestApp, body: Value) -> (u16, Value) {
    app.call(app.post("/manual-whatsapp/").json(&body)).await
}

async fn record(app: &TestApp, name: &str, nopol: &str, phone: &str, next: i64) -> String {
    let (status, body) = create(
        app,
        json!({"customer_name": name, "nopol": nopol, "no_hp": phone, "next_service": day(next).to_string()}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["data"]["id"].as_str().unwrap().to_owned()
}

async fn get(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.call(app.get(&format!("/manual-whatsapp/{id}"))).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

async fn send_reminders(app: &TestApp, body: Value) -> Value {
    let (status, res) = app
        .call(app.post("/manual-whatsapp/send-reminders").json(&body))
        .await;
    assert_eq!(status, 200, "{res}");
    res["data"].clone()
}

fn nopols(summary: &Value) -> Vec<String> {
    let mut v: Vec<String> = summary["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["nopol"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_record_round_trips_and_nopol_and_phone_are_checked() {
    let app = TestApp::spawn().await;
    let (status, created) = create(
        &app,
        json!({"customer_name": "Bapak Joko", "nopol": "B 1234 XYZ", "no_hp": "0812-3456-789",
               "last_service": "2025-10-15", "next_service": "2026-01-15", "notes": "Customer VIP"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let r = &created["data"];
    assert_eq!(
        (
            r["no_hp"].as_str(),
            r["is_active"].as_i64(),
            r["reminder_sent_count"].as_i64(),
            r["next_service"].as_str()
        ),
        (Some("628123456789"), Some(1), Some(0), Some("2026-01-15"))
    );
    assert!(r["last_reminder_sent"].is_null());
    let id = r["id"].as_str().unwrap().to_owned();

    let (status, dup) = create(
        &app,
        json!({"customer_name": "Lain", "nopol": "b 1234 xyz", "no_hp": "0812000000"}),
    )
    .await;
    assert_eq!(status, 409, "{dup}");
    let (status, bad) = create(
        &app,
        json!({"customer_name": "X", "nopol": "Z 1", "no_hp": "12-ab"}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(bad["errors"][0]["field"], "no_hp");

    let (_, by_nopol) = app
        .call(app.get("/manual-whatsapp/by-nopol/b%201234%20XYZ"))
        .await;
    assert_eq!(by_nopol["data"]["id"], id.as_str());
    assert_eq!(
        app.call(app.get("/manual-whatsapp/by-nopol/NOPE")).await.0,
        404
    );

    let put = |body: Value| {
        app.http
            .put(format!("{}/manual-whatsapp/{id}", app.base))
            .bearer_auth(&app.token)
            .json(&body)
    };
    let (status, updated) = app
        .call(put(
            json!({"next_service": "2026-02-01", "notes": null, "no_hp": "+62 811 222 333"}),
        ))
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        (
            updated["data"]["next_service"].as_str(),
            updated["data"]["no_hp"].as_str(),
            updated["data"]["customer_name"].as_str()
        ),
        (Some("2026-02-01"), Some("62811222333"), Some("Bapak Joko"))
    );
    assert!(updated["data"]["notes"].is_null());
    assert_eq!(app.call(put(json!({"no_hp": "abc"}))).await.0, 422);
    record(&app, "Siti", "B 5678 ABC", "08987654321", 10).await;
    assert_eq!(
        app.call(put(json!({"nopol": "B 5678 ABC"}))).await.0,
        409,
        "nopol taken by another record"
    );

    let toggle = || {
        app.http
            .patch(format!("{}/manual-whatsapp/{id}/toggle-active", app.base))
            .bearer_auth(&app.token)
    };
    let (_, toggled) = app.call(toggle()).await;
    assert_eq!(toggled["data"]["is_active"], 0);
    let (_, list) = app.call(app.get("/manual-whatsapp/")).await;
    assert_eq!(
        (
            list["data"]["total"].as_i64(),
            list["data"]["active"].as_i64(),
            list["data"]["inactive"].as_i64()
        ),
        (Some(2), Some(1), Some(1))
    );
    let (_, active) = app.call(app.get("/manual-whatsapp?active_only=true")).await;
    assert_eq!(active["data"]["data"].as_array().unwrap().len(), 1);
    assert_eq!(app.call(toggle()).await.1["data"]["is_active"], 1);

    let del = || {
        app.http
            .delete(format!("{}/manual-whatsapp/{id}", app.base))
            .bearer_auth(&app.token)
    };
    assert_eq!(app.call(del()).await.0, 200);
    assert_eq!(app.call(del()).await.0, 404);
    assert_eq!(
        app.call(app.get(&format!("/manual-whatsapp/{id}"))).await.0,
        404
    );
    assert_eq!(
        app.call(app.get("/manual-whatsapp/not-a-uuid")).await.0,
        404
    );
}

#[tokio::test]
async fn bulk_import_takes_both_shapes_and_reports_failing_items() {
    let app = TestApp::spawn().await;
    let (status, array) = app
        .call(app.post("/manual-whatsapp/bulk-import").json(&json!([
            {"customer_name": "Bapak Joko", "nopol": "B 1234 XYZ", "no_hp": "08123456789", "next_service": "2026-01-15"},
            {"customer_name": "Ibu Siti", "nopol": "B 5678 ABC", "no_hp": "bukan nomor"},
            {"customer_name": "Pak Budi", "nopol": "B 9999 DEF", "no_hp": "08555123456"}
        ])))
        .await;
    assert_eq!(status, 200, "{array}");
    assert_eq!(array["message"], "Import selesai. 2 berhasil, 1 gagal");
    let d = &array["data"];
    assert_eq!(
        (
            d["total"].as_i64(),
            d["imported"].as_i64(),
            d["failed"].as_i64()
        ),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(d["failures"][0]["index"], 1);
    assert!(
        d["failures"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("no_hp:"),
        "{d}"
    );

    let (status, wrapped) = app
        .call(
            app.post("/manual-whatsapp/bulk-import")
                .json(&json!({"customers": [
                    {"customer_name": "Baru", "nopol": "D 1 A", "no_hp": "0811111111"},
                    {"customer_name": "Ulang", "nopol": "b 1234 xyz", "no_hp": "0811111112"},
                    {"customer_name": "Kembar", "nopol": "D 1 A", "no_hp": "0811111113"},
                    {"nopol": "D 2 A", "no_hp": "0811111114", "next_service": "besok"}
                ]})),
        )
        .await;
    assert_eq!(status, 200, "{wrapped}");
    let d = &wrapped["data"];
    assert_eq!(
        (d["imported"].as_i64(), d["failed"].as_i64()),
        (Some(1), Some(3))
    );
    let indexes: Vec<i64> = d["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["index"].as_i64().unwrap())
        .collect();
    assert_eq!(indexes, [1, 2, 3]);
    assert!(
        d["failures"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    assert!(
        d["failures"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("earlier in this import")
    );
    let fields: Vec<&str> = d["failures"][2]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["customer_name", "next_service"]);
    let (_, list) = app.call(app.get("/manual-whatsapp/")).await;
    assert_eq!(list["data"]["total"], 3);
    assert_eq!(
        app.call(app.post("/manual-whatsapp/bulk-import").json(&json!("x")))
            .await
            .0,
        400
    );
    assert_eq!(
        app.call(
            app.post("/manual-whatsapp/bulk-import")
                .json(&json!({"records": []}))
        )
        .await
        .0,
        422
    );
}

#[tokio::test]
async fn send_reminders_takes_the_window_and_only_active_and_never_repeats_a_day() {
    let app = TestApp::spawn().await;
    record(&app, "Lewat", "M 1", "0812 0000 0001", -1).await;
    record(&app, "Hari Ini", "M 2", "0812 0000 0002", 0).await;
    record(&app, "Lusa", "M 3", "0812 0000 0003", 2).await;
    record(&app, "Nanti", "M 4", "0812 0000 0004", 3).await;
    let inactive = record(&app, "Libur", "M 5", "0812 0000 0005", 1).await;
    app.call(
        app.http
            .patch(format!(
                "{}/manual-whatsapp/{inactive}/toggle-active",
                app.base
            ))
            .bearer_auth(&app.token),
    )
    .await;

    let first = send_reminders(
        &app,
        json!({"days_threshold": 3, "only_active": true, "wait_seconds": 20}),
    )
    .await;
    assert_eq!(nopols(&first), ["M 2", "M 3"], "{first}");
    assert_eq!(
        (
            first["total_records"].as_i64(),
            first["reminder_queued"].as_i64(),
            first["reminder_sent"].as_i64()
        ),
        (Some(4), Some(2), Some(2))
    );
    assert!(
        first["details"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "sent")
    );
    let calls = app.gateway.wait_for_calls(2, Duration::from_secs(5)).await;
    let body: Value = calls[0].body_json().unwrap();
    assert!(
        body["body"].as_str().unwrap().starts_with("Halo Bapak "),
        "{body}"
    );

    let again = send_reminders(&app, json!({"days_threshold": 3})).await;
    assert_eq!(
        (
            again["reminder_queued"].as_i64(),
            again["already_queued"].as_i64()
        ),
        (Some(0), Some(2))
    );
    let wider = send_reminders(
        &app,
        json!({"days_threshold": 4, "only_active": false, "wait_seconds": 20}),
    )
    .await;
    assert_eq!(nopols(&wider), ["M 2", "M 3", "M 4", "M 5"]);
    assert_eq!(
        wider["reminder_queued"], 2,
        "only the records not yet reminded today"
    );
    app.wait_idle(Duration::from_secs(5)).await;
    assert_eq!(app.gateway.calls().await, 4);
    assert_eq!(
        app.call(
            app.post("/manual-whatsapp/send-reminders")
                .json(&json!({"days_threshold": 0}))
        )
        .await
        .0,
        422
    );
    assert_eq!(
        app.call(app.post("/manual-whatsapp/send-reminders?wait_seconds=500"))
            .await
            .0,
        422
    );
}

#[tokio::test]
async fn the_count_is_of_delivered_messages_and_a_retry_counts_once() {
    let app = TestApp::spawn().await;
    wiremock::Mock::given(wiremock::matchers::body_partial_json(
        json!({"to": "6281344445555"}),
    ))
    .respond_with(gateway_error(502, json!({"success": false})))
    .up_to_n_times(1)
    .with_priority(1)
    .mount(&app.gateway.server)
    .await;
    let id = record(&app, "Rudi", "N 7 R", "0813 4444 5555", 1).await;
    let bad = record(&app, "Salah", "N 8 S", "0813 9999 9999", 1).await;
    wiremock::Mock::given(wiremock::matchers::body_partial_json(
        json!({"to": "6281399999999"}),
    ))
    .respond_with(
        wiremock::ResponseTemplate::new(400)
            .set_body_json(json!({"success": false, "message": "invalid"})),
    )
    .with_priority(1)
    .mount(&app.gateway.server)
    .await;

    let summary = send_reminders(&app, json!({"wait_seconds": 30})).await;
    let mut statuses: Vec<(String, String)> = summary["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["nopol"].as_str().unwrap().to_owned(),
                d["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            ("N 7 R".to_owned(), "sent".to_owned()),
            ("N 8 S".to_owned(), "failed".to_owned())
        ],
        "{summary}"
    );
    assert_eq!(
        (
            summary["reminder_sent"].as_i64(),
            summary["reminder_failed"].as_i64()
        ),
        (Some(1), Some(1))
    );
    let sent = summary["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["nopol"] == "N 7 R")
        .unwrap();
    assert_eq!(
        app.outcomes(sent["message_id"].as_str().unwrap()).await,
        ["retry", "sent"]
    );
    let r = get(&app, &id).await;
    assert_eq!(r["reminder_sent_count"], 1, "two attempts, one delivery");
    assert!(r["last_reminder_sent"].is_string());
    assert_eq!(
        get(&app, &bad).await["reminder_sent_count"],
        0,
        "a failed message does not count"
    );

    let (_, stats) = app.call(app.get("/manual-whatsapp/stats/summary")).await;
    assert_eq!(
        stats["data"],
        json!({"total_customers": 2, "active_customers": 2, "inactive_customers": 0,
        "reminders_sent_total": 1, "customers_with_upcoming_service": 2})
    );
}

#[tokio::test]
async fn a_single_reminder_ignores_the_window_and_repeats_only_when_forced() {
    let app = TestApp::spawn().await;
    let id = record(&app, "Jauh", "P 1 J", "0812 1212 1212", 40).await;
    let path = format!("/manual-whatsapp/{id}/send-reminder");
    let (status, first) = app.call(app.post(&path)).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["data"]["status"], "queued");
    let message_id = first["data"]["message_id"].as_str().unwrap().to_owned();
    let date = day(40);
    assert!(
        first["data"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("📅 {} ", date.format("%-d")))
    );
    app.wait_for_status(&message_id, "sent", Duration::from_secs(10))
        .await;

    let (status, again) = app.call(app.post(&path)).await;
    assert_eq!(
        (status, again["data"]["status"].as_str()),
        (200, Some("already_queued"))
    );
    assert_eq!(again["data"]["message_id"], message_id.as_str());
    let (status, forced) = app.call(app.post(&format!("{path}?force=true"))).await;
    assert_eq!(status, 202, "{forced}");
    assert_ne!(forced["data"]["message_id"], message_id.as_str());
    app.wait_for_status(
        forced["data"]["message_id"].as_str().unwrap(),
        "sent",
        Duration::from_secs(10),
    )
    .await;
    app.wait_idle(Duration::from_secs(5)).await;
    assert_eq!(app.gateway.calls().await, 2);
    assert_eq!(get(&app, &id).await["reminder_sent_count"], 2);
    let summary = send_reminders(&app, json!({"days_threshold": 60})).await;
    assert_eq!(
        summary["already_queued"], 1,
        "the day's reminder exists: the forced one does not hide it"
    );

    let no_date = {
        let (_, b) = create(
            &app,
            json!({"customer_name": "Tanpa", "nopol": "P 2 T", "no_hp": "0812 3434 3434"}),
        )
        .await;
        b["data"]["id"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        app.call(app.post(&format!("/manual-whatsapp/{no_date}/send-reminder")))
            .await
            .0,
        422
    );
    assert_eq!(
        app.call(app.post(&format!(
            "/manual-whatsapp/{}/send-reminder",
            uuid::Uuid::new_v4()
        )))
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn a_custom_message_is_queued_and_its_length_limited() {
    let app = TestApp::spawn().await;
    let url = "/manual-whatsapp/send-custom-message";
    let (status, res) = app.call(app.post(url).json(&json!({"no_hp": "08123456789", "message": "Halo, ada promo service gratis minggu ini!"}))).await;
    assert_eq!(status, 202, "{res}");
    assert_eq!(
        (
            res["data"]["status"].as_str(),
            res["data"]["kind"].as_str(),
            res["data"]["no_hp"].as_str()
        ),
        (Some("queued"), Some("manual"), Some("628123456789"))
    );
    let m = app
        .wait_for_status(
            res["data"]["id"].as_str().unwrap(),
            "sent",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(m["body"], "Halo, ada promo service gratis minggu ini!");

    let (status, _) = app
        .call(
            app.post(url)
                .json(&json!({"no_hp": "08123456789", "message": "x".repeat(2000)})),
        )
        .await;
    assert_eq!(status, 202);
    let (status, long) = app
        .call(
            app.post(url)
                .json(&json!({"no_hp": "08123456789", "message": "x".repeat(2001)})),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(long["errors"][0]["field"], "message");
    let (status, both) = app
        .call(app.post(url).json(&json!({"no_hp": "x", "message": " "})))
        .await;
    assert_eq!(status, 422);
    assert_eq!(both["errors"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn salutation_and_language_are_created_changed_imported_and_checked() {
    let app = TestApp::spawn().await;
    let (status, created) = create(
        &app,
        json!({"customer_name": "Siti", "nopol": "B 1 S", "no_hp": "0812000001",
               "salutation": " Ibu ", "language": "en"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (&created["data"]["salutation"], &created["data"]["language"]),
        (&json!("Ibu"), &json!("en"))
    );
    let plain = record(&app, "Joko", "B 2 J", "0812000002", 5).await;
    let plain = get(&app, &plain).await;
    assert!(plain["salutation"].is_null(), "{plain}");
    assert_eq!(plain["language"], "id", "the default");

    let id = created["data"]["id"].as_str().unwrap().to_owned();
    let put = |body: Value| {
        app.http
            .put(format!("{}/manual-whatsapp/{id}", app.base))
            .bearer_auth(&app.token)
            .json(&body)
    };
    let (status, kept) = app.call(put(json!({"notes": "VIP"}))).await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(
        (&kept["data"]["salutation"], &kept["data"]["language"]),
        (&json!("Ibu"), &json!("en")),
        "absent fields are kept"
    );
    let (_, changed) = app
        .call(put(json!({"salutation": "", "language": "id"})))
        .await;
    assert_eq!(
        (&changed["data"]["salutation"], &changed["data"]["language"]),
        (&json!(""), &json!("id")),
        "an empty salutation is kept: no salutation"
    );
    let (_, cleared) = app.call(put(json!({"salutation": null}))).await;
    assert!(cleared["data"]["salutation"].is_null(), "{cleared}");
    let stored: (Option<String>, String) =
        sqlx::query_as("SELECT salutation, language FROM manual_whatsapp WHERE nopol = 'B 1 S'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(stored, (None, "id".to_owned()));

    let (status, bad) = app
        .call(put(
            json!({"salutation": "z".repeat(31), "language": "jawa"}),
        ))
        .await;
    assert_eq!(status, 422, "{bad}");
    let errors: Vec<(&str, &str)> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        [
            ("salutation", "must be at most 30 characters"),
            ("language", "must be id or en")
        ]
    );
    let (status, bad) = create(
        &app,
        json!({"customer_name": "X", "nopol": "B 3 X", "no_hp": "0812000003", "language": "english"}),
    )
    .await;
    assert_eq!(status, 422, "{bad}");
    assert_eq!(bad["errors"][0]["field"], "language");

    let (status, imported) = app
        .call(app.post("/manual-whatsapp/bulk-import").json(&json!([
            {"customer_name": "Rina", "nopol": "B 4 R", "no_hp": "0812000004", "salutation": "Kak", "language": "en"},
            {"customer_name": "Dewi", "nopol": "B 5 D", "no_hp": "0812000005", "language": "de"},
            {"customer_name": "Andi", "nopol": "B 6 A", "no_hp": "0812000006", "salutation": ""}
        ])))
        .await;
    assert_eq!(status, 200, "{imported}");
    let d = &imported["data"];
    assert_eq!(
        (d["imported"].as_i64(), d["failed"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(d["failures"][0]["index"], 1);
    assert_eq!(d["failures"][0]["reason"], "language: must be id or en");
    let (_, rina) = app
        .call(app.get("/manual-whatsapp/by-nopol/B%204%20R"))
        .await;
    assert_eq!(
        (&rina["data"]["salutation"], &rina["data"]["language"]),
        (&json!("Kak"), &json!("en"))
    );
    let (_, list) = app.call(app.get("/manual-whatsapp/")).await;
    let andi = list["data"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["nopol"] == "B 6 A")
        .unwrap();
    assert_eq!(
        (&andi["salutation"], &andi["language"]),
        (&json!(""), &json!("id"))
    );
}
