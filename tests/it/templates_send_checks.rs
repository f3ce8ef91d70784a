//! What a template send cannot be (each a `422` naming why, nothing stored), what the reminder
//! passes record of their template, and the database's phone normalization that finds whom a
//! number belongs to (SPEC §10).

use bengkel_whatsapp::messages::phone::PhoneNumber;
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, day, fields},
    templates_send::put_template,
};

/// The message of the first error.
fn first_message(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn what_a_template_send_cannot_be_is_a_422_naming_why_and_nothing_is_stored() {
    let app = &TestApp::spawn().await;
    put_template(
        app,
        "promo",
        "Halo {salutation} {nama}, {no_pol} di {workshop_name}",
        "id",
    )
    .await;
    put_template(app, "panjang", &"{nama}".repeat(600), "id").await;
    let to = "0813 3333 0001";
    let refused = |body: Value| async move {
        let (status, answer) = app.send(body).await;
        assert_eq!(status, 422, "{answer}");
        answer
    };

    // A placeholder nothing fills: named (the salutation goes with the missing name).
    let a =
        refused(json!({"to": to, "template": {"key": "promo", "values": {"no_pol": "B 1"}}})).await;
    assert_eq!(
        fields(&a),
        ["template.values.salutation", "template.values.nama"]
    );
    assert!(first_message(&a).contains("{salutation}"), "{a}");
    // An unknown key, named.
    let a = refused(json!({"to": to, "template": {"key": "tidak_ada"}})).await;
    assert_eq!(fields(&a), ["template.key"]);
    assert!(first_message(&a).contains("\"tidak_ada\""), "{a}");
    // Both, and neither.
    let a = refused(json!({"to": to, "body": "x", "template": {"key": "promo"}})).await;
    assert_eq!(fields(&a), ["template"]);
    assert!(
        first_message(&a).contains("exactly one of `body` or `template`"),
        "{a}"
    );
    let a = refused(json!({"to": to})).await;
    assert_eq!(fields(&a), ["body"]);
    assert!(
        first_message(&a).contains("exactly one of `body` or `template`"),
        "{a}"
    );
    // Bad shapes: never a 500.
    for (template, field) in [
        (json!("promo"), "template"),
        (
            json!({"key": "promo", "language": "fr"}),
            "template.language",
        ),
        (
            json!({"key": "promo", "values": ["Budi"]}),
            "template.values",
        ),
        (
            json!({"key": "promo", "values": {"nama": true}}),
            "template.values.nama",
        ),
        (
            json!({"key": "promo", "values": {"nama": {"first": "Budi"}}}),
            "template.values.nama",
        ),
        (
            json!({"key": "promo", "values": {"kode": "1"}}),
            "template.values.kode",
        ),
        (json!({"values": {}}), "template.key"),
        (json!({"key": ["promo"]}), "template.key"),
    ] {
        let a = refused(json!({"to": to, "template": template})).await;
        assert_eq!(fields(&a), [field], "{a}");
    }
    // Over 4,096 characters once rendered: 12 × 600 = 7,200.
    let a = refused(
        json!({"to": to, "template": {"key": "panjang", "values": {"nama": "Budi Santoso"}}}),
    )
    .await;
    assert_eq!(fields(&a), ["template"]);
    assert!(first_message(&a).contains("7200 characters"), "{a}");

    // The manual send names its own text field.
    for (body, field) in [
        (json!({"no_hp": to}), "message"),
        (
            json!({"no_hp": to, "message": "x", "template": {"key": "promo"}}),
            "template",
        ),
        (
            json!({"no_hp": to, "template": {"key": "promo"}}),
            "template.values.salutation",
        ),
    ] {
        let (status, a) = app
            .call(app.post("/manual-whatsapp/send-custom-message").json(&body))
            .await;
        assert_eq!(status, 422, "{a}");
        assert_eq!(fields(&a)[0], field, "{a}");
    }
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 0);
}

#[tokio::test]
async fn reminders_and_manual_reminders_record_every_placeholder_value_they_had() {
    let app = TestApp::spawn().await;
    let (status, c) = app
        .call(app.post("/customers").json(&json!({
            "nama": "Budi", "hp": "0812 5555 0001",
            "vehicles": [{"no_pol": "B 5 BD", "model": "Avanza", "next_visit_date": day(0).to_string()}],
        })))
        .await;
    assert_eq!(status, 201, "{c}");
    let (status, r) = app
        .call(app.post("/manual-whatsapp/").json(&json!({
            "customer_name": "Ani", "nopol": "M 5 AN", "no_hp": "0812 5555 0002",
            "next_service": day(1).to_string(), "salutation": "Ibu", "language": "en",
        })))
        .await;
    assert_eq!(status, 201, "{r}");

    let summary = app.run_now("").await;
    let id = summary["details"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let m = app.message(&id).await;
    assert_eq!(m["kind"], "maintenance");
    let today = day(0);
    assert_eq!(
        m["template"],
        json!({"key": "maintenance_reminder", "version": 1, "language": "id", "values": {
            "salutation": "Bapak", "nama": "Budi", "no_pol": "B 5 BD", "model": "Avanza",
            "tanggal": bengkel_whatsapp::templates::tanggal(today, bengkel_whatsapp::templates::Language::Id),
            "tanggal_dmy": today.format("%d-%m-%Y").to_string(), "hari": "0",
            "service_phone": "08551000727", "workshop_name": "Bengkel"}})
    );

    let (status, manual) = app
        .call(app.post("/manual-whatsapp/send-reminders").json(&json!({})))
        .await;
    assert_eq!(status, 200, "{manual}");
    let id = manual["data"]["details"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let m = app.message(&id).await;
    assert_eq!(m["kind"], "manual");
    let t = &m["template"];
    assert_eq!(
        (&t["key"], &t["language"]),
        (&json!("manual_reminder"), &json!("en"))
    );
    assert_eq!(t["values"]["salutation"], "Ibu");
    assert_eq!(t["values"]["no_pol"], "M 5 AN");
    assert_eq!(t["values"]["hari"], "1");
    assert!(t["values"].get("model").is_none(), "{t}");
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE template_values IS NULL")
            .await,
        0
    );
}

#[tokio::test]
async fn the_database_normalizes_a_phone_number_as_the_service_does() {
    let app = TestApp::spawn().await;
    let samples = [
        "+62 812-3456-789",
        "0812 3456 789",
        "812-3456-789",
        " (0812) 3456.789 ",
        "6281234567890123",
        "628123456789012",
        "081",
        "",
        "   ",
        "+",
        "++62812345678",
        "0812-3456-789x",
        "0812\t3456789",
        "00812345678",
        "123456789",
        "1234567890",
        "+1 (555) 010-9999",
        "٠٨١٢٣٤٥٦٧٨٩",
    ];
    for raw in samples {
        let db: Option<String> = sqlx::query_scalar("SELECT phone_normalized($1)")
            .bind(raw)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        let service = PhoneNumber::parse(raw).ok().map(|p| p.as_str().to_owned());
        assert_eq!(db, service, "{raw:?}");
    }
}
