//! Sending a saved template (SPEC §10: a send may give `template: {key, values?, language?}`
//! instead of `body`): rendered at enqueue with what the send can fill itself and `values`,
//! recorded with the value of every placeholder it had — by a single send, a batch item and a
//! manual send.

use std::time::Duration;

use bengkel_whatsapp::templates::{Language, tanggal};
use serde_json::{Value, json};

use crate::helpers::{TestApp, day, fields, id_of, ops_request};

pub async fn put_template(app: &TestApp, key: &str, body: &str, language: &str) {
    let (status, saved) = app
        .call(
            ops_request(app, reqwest::Method::PUT, &format!("/templates/{key}"))
                .json(&json!({"body": body, "language": language})),
        )
        .await;
    assert!(status == 200 || status == 201, "{saved}");
}

/// The gateway's texts once it has seen `n` calls.
async fn texts(app: &TestApp, n: usize) -> Vec<String> {
    app.gateway.wait_for_calls(n, Duration::from_secs(15)).await;
    app.gateway.sent_field("body").await
}

/// Ibu Siti (`en`), one vehicle due in two days; her number written as typed.
async fn siti(app: &TestApp) {
    let (status, body) = app
        .call(app.post("/customers").json(&json!({
            "nama": "Siti", "hp": "0812 3456 7001", "salutation": "Ibu", "language": "en",
            "vehicles": [{"no_pol": "B 1 SITI", "model": "Jazz",
                          "next_visit_date": day(2).to_string()}],
        })))
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_custom_template_sent_alone_reaches_the_gateway_rendered_and_records_its_values() {
    let app = TestApp::spawn().await;
    put_template(
        &app,
        "promo_servis",
        "Halo {salutation} {nama}, servis {model} diskon 20% di {workshop_name}. Info: {service_phone}",
        "id",
    )
    .await;

    // A number that belongs to nobody: the workshop's values, and `values` for the rest.
    let (status, body) = app
        .send(json!({"to": "0813 9999 0001", "template": {
            "key": "promo_servis", "values": {"nama": "Budi", "model": "Avanza"}}}))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = id_of(&body);
    assert_eq!(
        texts(&app, 1).await,
        ["Halo Bapak Budi, servis Avanza diskon 20% di Bengkel. Info: 08551000727"]
    );

    let m = app.message(&id).await;
    assert_eq!(m["kind"], "adhoc");
    assert_eq!(m["template_key"], "promo_servis");
    assert_eq!(
        m["template"],
        json!({"key": "promo_servis", "version": 1, "language": "id", "values": {
            "salutation": "Bapak", "nama": "Budi", "model": "Avanza",
            "workshop_name": "Bengkel", "service_phone": "08551000727"}})
    );
    // The list shows it too; a message with its own text has none.
    app.send(json!({"to": "0813 9999 0001", "body": "tanpa template"}))
        .await;
    let (_, list) = app
        .call(app.get("/whatsapp/messages?to=6281399990001"))
        .await;
    let items = list["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    assert!(items[0].get("template").is_none(), "{list}");
    assert_eq!(items[1]["template"], m["template"]);
}

#[tokio::test]
async fn a_template_send_to_a_customer_takes_their_data_and_language_and_values_win() {
    let app = TestApp::spawn().await;
    siti(&app).await;
    let key = "jatuh_tempo";
    put_template(
        &app,
        key,
        "Halo {salutation} {nama}, {no_pol} servis {tanggal}",
        "id",
    )
    .await;
    put_template(
        &app,
        key,
        "Hello {salutation} {nama}, {no_pol} is due on {tanggal}",
        "en",
    )
    .await;
    let to = "+62 812-3456-7001";

    // Her language (en), her salutation, name, plate and due date.
    let (status, first) = app.send(json!({"to": to, "template": {"key": key}})).await;
    assert_eq!(status, 202, "{first}");
    // `language` picks the body and the month names.
    let (status, _) = app
        .send(json!({"to": to, "template": {"key": key, "language": "id"}}))
        .await;
    assert_eq!(status, 202);
    // For a custom key, `values` win (and the salutation follows the name used).
    let (status, _) = app
        .send(json!({"to": to, "template": {"key": key, "values": {"nama": "Bu Ani"}}}))
        .await;
    assert_eq!(status, 202);

    let due = day(2);
    let sent = texts(&app, 3).await;
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    let mut want = vec![
        format!(
            "Hello Ibu Siti, B 1 SITI is due on {}",
            tanggal(due, Language::En)
        ),
        format!(
            "Halo Ibu Siti, B 1 SITI servis {}",
            tanggal(due, Language::Id)
        ),
        format!(
            "Hello Bu Ani, B 1 SITI is due on {}",
            tanggal(due, Language::En)
        ),
    ];
    want.sort();
    assert_eq!(sent_sorted, want);

    let m = app.message(&id_of(&first)).await;
    assert_eq!(m["to"], "6281234567001");
    assert_eq!(m["template"]["language"], "en");
    let values = &m["template"]["values"];
    assert_eq!(values["model"], "Jazz", "every value it had: {values}");
    assert_eq!(values["hari"], "2");
    assert_eq!(values["tanggal_dmy"], due.format("%d-%m-%Y").to_string());
}

#[tokio::test]
async fn an_english_send_of_a_template_without_english_renders_the_indonesian_body() {
    let app = TestApp::spawn().await;
    siti(&app).await;
    put_template(&app, "hanya_id", "Halo {nama}, jatuh tempo {tanggal}", "id").await;
    for language in [json!("en"), Value::Null] {
        let (status, body) = app
            .send(json!({"to": "0812 3456 7001",
                         "template": {"key": "hanya_id", "language": language}}))
            .await;
        assert_eq!(status, 202, "{body}");
        let m = app.message(&id_of(&body)).await;
        // The body used is recorded; its dates are in its language.
        assert_eq!(m["template"]["language"], "id");
        assert_eq!(
            m["body"],
            format!("Halo Siti, jatuh tempo {}", tanggal(day(2), Language::Id))
        );
    }
}

#[tokio::test]
async fn a_batch_renders_its_template_items_and_rejects_the_ones_that_cannot_be_sent() {
    let app = TestApp::spawn().await;
    siti(&app).await;
    put_template(&app, "promo", "Halo {nama}, promo {workshop_name}", "id").await;
    let (status, body) = app
        .call(app.post("/whatsapp/send-batch").json(&json!({"messages": [
            {"to": "0813 1111 0001", "body": "teks biasa", "client_ref": "a"},
            {"to": "0813 1111 0002", "template": {"key": "promo", "values": {"nama": "Budi"}}, "client_ref": "b"},
            {"to": "0812 3456 7001", "template": {"key": "promo"}, "client_ref": "c"},
            {"to": "0813 1111 0004", "template": {"key": "promo"}, "client_ref": "d"},
            {"to": "0813 1111 0005", "template": {"key": "tidak_ada"}, "client_ref": "e"},
            {"to": "0813 1111 0006", "body": "x", "template": {"key": "promo"}, "client_ref": "f"},
        ]})))
        .await;
    assert_eq!(status, 202, "{body}");
    let data = &body["data"];
    assert_eq!(
        (data["accepted"].as_i64(), data["rejected"].as_i64()),
        (Some(3), Some(3)),
        "{body}"
    );
    let items = data["items"].as_array().unwrap();
    let errors = |i: usize| fields(&json!({"errors": items[i]["errors"]}));
    assert_eq!(errors(3), ["template.values.nama"], "{body}");
    assert_eq!(errors(4), ["template.key"], "{body}");
    assert!(
        items[4]["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("tidak_ada")),
        "{body}"
    );
    assert_eq!(errors(5), ["template"], "{body}");

    let mut sent = texts(&app, 3).await;
    sent.sort();
    assert_eq!(
        sent,
        [
            "Halo Budi, promo Bengkel",
            "Halo Siti, promo Bengkel",
            "teks biasa"
        ]
    );
    let id = items[2]["id"].as_str().unwrap();
    assert_eq!(app.message(id).await["template"]["values"]["nama"], "Siti");
}

#[tokio::test]
async fn a_manual_send_renders_a_template_with_the_manual_record() {
    let app = TestApp::spawn().await;
    let (status, record) = app
        .call(app.post("/manual-whatsapp/").json(&json!({
            "customer_name": "Joko", "nopol": "B 9 JK", "no_hp": "0857 1000 2000",
            "next_service": day(3).to_string(),
        })))
        .await;
    assert_eq!(status, 201, "{record}");
    put_template(
        &app,
        "manual_promo",
        "Halo {salutation} {nama}, {no_pol}: {tanggal} ({hari} hari)",
        "id",
    )
    .await;
    let custom = |template: Value| {
        app.call(
            app.post("/manual-whatsapp/send-custom-message")
                .json(&json!({"no_hp": "6285710002000", "template": template})),
        )
    };

    let (status, body) = custom(json!({"key": "manual_promo"})).await;
    assert_eq!(status, 202, "{body}");
    let want = format!(
        "Halo Bapak Joko, B 9 JK: {} (3 hari)",
        tanggal(day(3), Language::Id)
    );
    assert_eq!(body["data"]["message"], want.as_str());
    assert_eq!(body["data"]["kind"], "manual");
    // The built-in key keeps the record's data over `values`.
    let (status, builtin) =
        custom(json!({"key": "manual_reminder", "values": {"nama": "Bukan Joko"}})).await;
    assert_eq!(status, 202, "{builtin}");
    let text = builtin["data"]["message"].as_str().unwrap();
    assert!(text.starts_with("Halo Bapak Joko,"), "{text}");

    let sent = texts(&app, 2).await;
    assert!(sent.contains(&want), "{sent:?}");
    let m = app.message(&id_of(&body)).await;
    assert_eq!(m["template"]["key"], "manual_promo");
    assert_eq!(m["template"]["values"]["no_pol"], "B 9 JK");
    assert!(m["template"]["values"].get("model").is_none(), "{m}");
}

#[tokio::test]
async fn an_idempotency_key_replays_the_same_template_send_and_refuses_another() {
    let app = TestApp::spawn().await;
    put_template(&app, "promo", "Halo {nama}", "id").await;
    let send = |key: &'static str, body: Value| {
        app.call(
            app.post("/whatsapp/send")
                .header("Idempotency-Key", key)
                .json(&body),
        )
    };
    let budi =
        json!({"to": "0813 2222 0001", "template": {"key": "promo", "values": {"nama": "Budi"}}});
    let (status, first) = send("k-1", budi.clone()).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = send("k-1", budi).await;
    assert_eq!((status, id_of(&again)), (200, id_of(&first)), "{again}");
    for other in [
        json!({"to": "0813 2222 0001", "template": {"key": "promo", "values": {"nama": "Ani"}}}),
        json!({"to": "0813 2222 0001", "template": {"key": "promo", "values": {"nama": "Budi"}, "language": "en"}}),
        json!({"to": "0813 2222 0001", "body": "Halo Budi"}),
    ] {
        let (status, body) = send("k-1", other).await;
        assert_eq!(status, 409, "{body}");
    }

    let batch = |key: &'static str, nama: &str| {
        app.call(
            app.post("/whatsapp/send-batch")
                .header("Idempotency-Key", key)
                .json(&json!({"messages": [{"to": "0813 2222 0002",
                    "template": {"key": "promo", "values": {"nama": nama}}}]})),
        )
    };
    let (status, first) = batch("b-1", "Budi").await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = batch("b-1", "Budi").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["batch_id"], first["data"]["batch_id"]);
    let (status, body) = batch("b-1", "Ani").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 2);
}
