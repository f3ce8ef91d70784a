//! Segments (SPEC §15): saved filters over vehicles and manual records, one recipient per
//! number, opted-out numbers left out; a preview stores nothing.

use chrono::NaiveDate;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, day, ops_call, ops_get, ops_post};

struct Vehicle<'a> {
    model: &'a str,
    next: Option<NaiveDate>,
    last: Option<NaiveDate>,
}

/// A customer (`language`) with vehicles; returns its id.
async fn customer(
    app: &TestApp,
    nama: &str,
    hp: &str,
    language: &str,
    vehicles: &[Vehicle<'_>],
) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO customers (id, nama, hp, language) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(nama)
        .bind(hp)
        .bind(language)
        .execute(&app.db.pool)
        .await
        .unwrap();
    for (i, v) in vehicles.iter().enumerate() {
        sqlx::query(
            "INSERT INTO vehicles (id, customer_id, no_pol, model, next_visit_date, last_visit_date)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(Uuid::new_v4())
        .bind(id)
        .bind(format!("{nama} {i}"))
        .bind(v.model)
        .bind(v.next)
        .bind(v.last)
        .execute(&app.db.pool)
        .await
        .unwrap();
    }
    id
}

/// An active manual record due on `next`; returns its id.
async fn manual(app: &TestApp, name: &str, phone: &str, next: NaiveDate) -> Uuid {
    let (status, body) = app
        .call(app.post("/manual-whatsapp/").json(&json!({
            "customer_name": name, "nopol": format!("M {name}"), "no_hp": phone,
            "next_service": next.to_string(),
        })))
        .await;
    assert_eq!(status, 201, "{body}");
    body["data"]["id"].as_str().unwrap().parse().unwrap()
}

async fn opt_out(app: &TestApp, phone: &str, scope: &str) {
    let (status, body) = ops_post(
        app,
        "/suppressions",
        Some(json!({"phone": phone, "scope": scope})),
    )
    .await;
    assert!(status == 201 || status == 200, "{body}");
}

async fn preview(app: &TestApp, body: Value) -> Value {
    let (status, reply) = ops_post(app, "/segments/preview", Some(body)).await;
    assert_eq!(status, 200, "{reply}");
    reply["data"].clone()
}

fn phones(preview: &Value) -> Vec<String> {
    let mut p: Vec<String> = preview["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["phone"].as_str().unwrap().to_owned())
        .collect();
    p.sort();
    p
}

/// January-ish: a window 30 to 60 days from today.
fn window() -> Value {
    json!({"due_from": day(30).to_string(), "due_to": day(60).to_string()})
}

#[tokio::test]
async fn a_preview_gives_one_recipient_per_number_without_opted_out_ones() {
    let app = TestApp::spawn().await;
    let avanza = |next| Vehicle {
        model: "Toyota Avanza",
        next: Some(next),
        last: None,
    };
    // Two vehicles in the window: one recipient, by the earlier one.
    customer(
        &app,
        "Ani",
        "0812 0000 0001",
        "id",
        &[avanza(day(50)), avanza(day(35))],
    )
    .await;
    // Due by its last visit (no next visit): 4 months after it.
    let by_last = day(40) - chrono::Months::new(4);
    customer(
        &app,
        "Budi",
        "0812 0000 0002",
        "en",
        &[Vehicle {
            model: "Honda Jazz",
            next: None,
            last: Some(by_last),
        }],
    )
    .await;
    // Outside the window, a number that is not one, opted out of everything, of reminders.
    customer(&app, "Citra", "0812 0000 0003", "id", &[avanza(day(90))]).await;
    customer(&app, "Dedi", "nomor salah", "id", &[avanza(day(45))]).await;
    customer(&app, "Eka", "0812 0000 0005", "id", &[avanza(day(45))]).await;
    opt_out(&app, "081200000005", "all").await;
    customer(&app, "Fajar", "0812 0000 0006", "id", &[avanza(day(45))]).await;
    opt_out(&app, "081200000006", "reminders").await;
    // A manual record with Ani's number (one recipient: her vehicle), and one of its own.
    manual(&app, "Ani lagi", "0812-0000-0001", day(35)).await;
    manual(&app, "Gita", "0812 0000 0007", day(55)).await;

    let all = preview(&app, json!({"source": "both", "filters": window()})).await;
    assert_eq!(all["count"], 4, "{all}");
    assert_eq!(
        phones(&all),
        [
            "6281200000001",
            "6281200000002",
            "6281200000006",
            "6281200000007"
        ]
    );
    let ani = all["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["phone"] == "6281200000001")
        .unwrap();
    assert_eq!(ani["source"], "vehicle", "a vehicle before a manual record");
    assert_eq!(ani["due_date"], day(35).to_string(), "the earliest due");
    let budi = &all["recipients"].as_array().unwrap()[1];
    assert_eq!(budi["due_date"], day(40).to_string(), "{all}");

    // A reminder-type campaign also leaves out numbers opted out of reminders.
    let reminders = preview(&app, json!({"filters": window(), "reminder_type": true})).await;
    assert_eq!(reminders["count"], 3, "{reminders}");

    // A model filter: vehicles only (a manual record has no model), case-insensitive.
    let model =
        json!({"due_from": day(30).to_string(), "due_to": day(60).to_string(), "model": "AVANZA"});
    let avanzas = preview(&app, json!({"filters": model})).await;
    assert_eq!(phones(&avanzas), ["6281200000001", "6281200000006"]);
    let manual_only = preview(&app, json!({"source": "manual", "filters": window()})).await;
    assert_eq!(phones(&manual_only), ["6281200000001", "6281200000007"]);
    let english = preview(&app, json!({"filters": {"language": "en"}})).await;
    assert_eq!(phones(&english), ["6281200000002"]);

    // Nothing was stored.
    assert_eq!(app.count("SELECT count(*) FROM segments").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 0);
}

#[tokio::test]
async fn inbound_and_explicit_id_filters_choose_the_people() {
    let app = TestApp::spawn().await;
    let v = || Vehicle {
        model: "Avanza",
        next: Some(day(10)),
        last: Some(day(-100)),
    };
    let a = customer(&app, "A", "0812 0000 0011", "id", &[v()]).await;
    customer(&app, "B", "0812 0000 0012", "id", &[v()]).await;
    let m = manual(&app, "M", "0812 0000 0013", day(10)).await;
    sqlx::query("INSERT INTO whatsapp_contacts (phone, last_inbound_at) VALUES ($1, now())")
        .bind("6281200000012")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let since = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let replied = preview(&app, json!({"filters": {"has_inbound_since": since}})).await;
    assert_eq!(phones(&replied), ["6281200000012"]);
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let none = preview(&app, json!({"filters": {"has_inbound_since": later}})).await;
    assert_eq!(none["count"], 0);
    assert_eq!(none["recipients"], json!([]));

    // With explicit ids, a side without its list contributes nobody.
    let chosen = preview(&app, json!({"filters": {"customer_ids": [a]}})).await;
    assert_eq!(phones(&chosen), ["6281200000011"]);
    let both = preview(
        &app,
        json!({"filters": {"customer_ids": [a], "manual_ids": [m]}}),
    )
    .await;
    assert_eq!(phones(&both), ["6281200000011", "6281200000013"]);
    let visited = preview(
        &app,
        json!({"filters": {"last_visit_after": day(-101).to_string(), "last_visit_before": day(-99).to_string()}}),
    )
    .await;
    assert_eq!(visited["count"], 2, "{visited}");
}

#[tokio::test]
async fn segments_are_saved_listed_read_previewed_and_deleted() {
    let app = TestApp::spawn().await;
    customer(
        &app,
        "Ani",
        "0812 0000 0001",
        "id",
        &[Vehicle {
            model: "Avanza",
            next: Some(day(40)),
            last: None,
        }],
    )
    .await;
    let body = json!({"name": "Januari", "source": "vehicles", "filters": window()});
    let (status, saved) = ops_post(&app, "/segments", Some(body.clone())).await;
    assert_eq!(status, 201, "{saved}");
    let id = saved["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(saved["data"]["filters"], window());
    assert_eq!(saved["data"]["source"], "vehicles");

    // The same name (any case) is refused; a bad body names every field.
    let (status, again) = ops_post(&app, "/segments", Some(json!({"name": "JANUARI"}))).await;
    assert_eq!(status, 422, "{again}");
    assert_eq!(again["errors"][0]["field"], "name");
    let (status, bad) = ops_post(
        &app,
        "/segments",
        Some(json!({"name": "x", "filters": {"due_from": "2027-13-01", "colour": "red"}})),
    )
    .await;
    assert_eq!(status, 422, "{bad}");
    let fields = crate::helpers::fields(&bad);
    assert_eq!(fields, ["filters.colour", "filters.due_from"]);
    // A client token may not.
    let (status, _) = app.call(app.post("/segments").json(&body)).await;
    assert_eq!(status, 403);

    let list = ops_get(&app, "/segments").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        ops_get(&app, &format!("/segments/{id}")).await["name"],
        "Januari"
    );
    let by_id = preview(&app, json!({"segment_id": id})).await;
    assert_eq!(by_id["count"], 1, "{by_id}");
    let (status, both) = ops_post(
        &app,
        "/segments/preview",
        Some(json!({"segment_id": id, "filters": {}})),
    )
    .await;
    assert_eq!(status, 422, "{both}");

    let (status, deleted) = ops_call(&app, Method::DELETE, &format!("/segments/{id}"), None).await;
    assert_eq!(status, 200, "{deleted}");
    let (status, _) = ops_call(&app, Method::GET, &format!("/segments/{id}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = ops_post(&app, "/segments/preview", Some(json!({"segment_id": id}))).await;
    assert_eq!(status, 404);
    let (status, _) = ops_call(&app, Method::GET, "/segments/not-a-uuid", None).await;
    assert_eq!(status, 404);
}
