//! The opt-out and opt-in keywords through the webhook and the real workers: the suppression
//! they make or lift, the messages cancelled, and the confirmation reply.

use reqwest::Method;
use serde_json::{Value, json};

use super::{WITHIN, app, app_with, events, inbound, list, series, subscribe, suppression};
use crate::helpers::{
    TestApp, fields, id_of, ops_call, ops_get, ops_post, pause_sends, resume_sends, today,
    window_excluding_now,
};

const NUMBER: &str = "628123456789";
const CONFIRMATION: &str = "Anda tidak akan menerima pesan lagi dari {workshop_name}. Ketik {optin_keyword} untuk mulai lagi.";
const RENDERED: &str =
    "Anda tidak akan menerima pesan lagi dari Bengkel. Ketik MULAI untuk mulai lagi.";

/// An operator's opt-out of `phone`.
async fn operator_suppresses(app: &TestApp, phone: &str, scope: &str) -> Value {
    let (status, body) = ops_post(
        app,
        "/suppressions",
        Some(json!({"phone": phone, "scope": scope, "reason": "asked at the desk"})),
    )
    .await;
    assert!(status == 201 || status == 200, "{body}");
    body["data"].clone()
}

async fn save_confirmation(app: &TestApp) {
    let (status, body) = ops_call(
        app,
        Method::PUT,
        "/templates/optout_confirmation",
        Some(json!({"body": CONFIRMATION})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

/// The messages to `phone`: (kind, status, last_error).
async fn messages_to(app: &TestApp, phone: &str) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("SELECT kind, status, last_error FROM messages WHERE to_phone = $1 ORDER BY id")
        .bind(phone)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

/// A manual customer due tomorrow and its reminder sent now: the reminder's message id.
async fn manual_reminder(app: &TestApp, phone: &str) -> String {
    let (status, body) = app
        .call(app.post("/manual-whatsapp/").json(&json!({
            "customer_name": "Siti", "nopol": "B 1 KW",
            "no_hp": phone, "next_service": (today() + chrono::Duration::days(1)).to_string()
        })))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .call(app.post(&format!("/manual-whatsapp/{}/send-reminder", id_of(&body))))
        .await;
    assert!(status < 300, "{body}");
    body["data"]["message_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn berhenti_opts_the_number_out_and_its_unsent_messages_never_reach_the_gateway() {
    let app = app().await;
    subscribe(&app).await;
    let optouts = r#"bengkel_optouts_total{source="inbound"}"#;
    let before = series(&app, optouts).await;
    pause_sends(&app).await;
    let reminder = manual_reminder(&app, "0812-3456-789").await;
    let (status, body) = app
        .send(json!({"to": NUMBER, "body": "Promo besok", "delay": 3600}))
        .await;
    assert_eq!(status, 202, "{body}");
    let scheduled = id_of(&body);
    let (_, body) = app
        .send(json!({"to": "0812 3456 0002", "body": "untuk orang lain"}))
        .await;
    let other = id_of(&body);

    assert_eq!(
        super::processed(&app, &inbound(&app, "+62 812 3456 789", " Berhenti ").await).await,
        "ok"
    );
    let entry = suppression(&app, NUMBER).await.expect("opted out");
    assert_eq!(
        (
            entry["scope"].as_str(),
            entry["reason"].as_str(),
            entry["source"].as_str(),
            entry["created_by"].as_str()
        ),
        (
            Some("all"),
            Some("keyword"),
            Some("inbound"),
            Some("inbound")
        )
    );
    for id in [&reminder, &scheduled] {
        let m = app.message(id).await;
        assert_eq!(m["status"], "cancelled", "{m}");
        assert_eq!(m["last_error"], "recipient opted out", "{m}");
    }
    assert_eq!(app.message(&other).await["status"], "queued");
    assert_eq!(list(&app, "").await["items"][0]["keyword"], "optout");
    let created = events(&app, "optout.created").await;
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(
        (
            &created[0]["phone"],
            &created[0]["scope"],
            &created[0]["source"]
        ),
        (&json!(NUMBER), &json!("all"), &json!("inbound"))
    );
    assert_eq!(events(&app, "message.cancelled").await.len(), 2);
    let changes = ops_get(&app, &format!("/suppressions/{NUMBER}/changes")).await;
    assert_eq!(changes[0]["action"], "added");
    assert_eq!(changes[0]["changed_by"], "inbound");
    assert!(series(&app, optouts).await >= before + 1.0);

    resume_sends(&app).await;
    app.wait_for_status(&other, "sent", WITHIN).await;
    app.deliver_control().await;
    let to = app.gateway.sent_field("to").await;
    assert!(!to.iter().any(|t| t == NUMBER), "{to:?}");
    // No confirmation template: no reply either.
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE kind = 'system'")
            .await,
        0
    );
}

#[tokio::test]
async fn mulai_lifts_a_keyword_opt_out_and_never_an_operators() {
    let app = app().await;
    // The customer's own opt-out: lifted by the opt-in keyword.
    inbound(&app, NUMBER, "STOP").await;
    assert!(suppression(&app, NUMBER).await.is_some());
    inbound(&app, NUMBER, "Mulai!").await;
    assert!(suppression(&app, NUMBER).await.is_none());
    let changes = ops_get(&app, &format!("/suppressions/{NUMBER}/changes")).await;
    assert_eq!(
        changes
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (
                c["action"].as_str().unwrap(),
                c["changed_by"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("added", "inbound"), ("removed", "inbound")]
    );
    let (status, body) = app
        .send(json!({"to": NUMBER, "body": "selamat datang kembali"}))
        .await;
    assert_eq!(status, 202, "{body}");
    app.wait_for_status(&id_of(&body), "sent", WITHIN).await;

    // An operator's opt-out of everything: neither keyword changes it, both are stored.
    let api_optouts = r#"bengkel_optouts_total{source="api"}"#;
    let before = series(&app, api_optouts).await;
    let operator = "6281234560002";
    let made = operator_suppresses(&app, operator, "all").await;
    assert_eq!(made["source"], "api");
    assert!(series(&app, api_optouts).await >= before + 1.0, "counted");
    for text in ["START", "stop", "mulai"] {
        inbound(&app, operator, text).await;
        let entry = suppression(&app, operator).await.expect("still opted out");
        assert_eq!(
            (&entry["source"], &entry["reason"], &entry["scope"]),
            (&json!("api"), &json!("asked at the desk"), &json!("all")),
            "after {text}"
        );
    }
    let stored: Vec<Value> = list(&app, "?from=6281234560002").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["keyword"].clone())
        .collect();
    assert_eq!(stored, [json!("optin"), json!("optout"), json!("optin")]);

    // An operator's opt-out of reminders: the keyword widens it to everything, and it stays
    // the operator's (the opt-in keyword cannot lift it).
    let reminders_only = "6281234560003";
    operator_suppresses(&app, reminders_only, "reminders").await;
    inbound(&app, reminders_only, "jangan kirim").await;
    let entry = suppression(&app, reminders_only).await.unwrap();
    assert_eq!(
        (&entry["scope"], &entry["source"], &entry["updated_by"]),
        (&json!("all"), &json!("api"), &json!("inbound"))
    );
    inbound(&app, reminders_only, "MULAI").await;
    assert_eq!(
        suppression(&app, reminders_only).await.unwrap()["scope"],
        "all"
    );
    // An opt-in from a number never opted out: nothing to lift.
    inbound(&app, "6281234560004", "mulai").await;
    assert!(suppression(&app, "6281234560004").await.is_none());
}

#[tokio::test]
async fn the_confirmation_goes_out_once_per_opt_out_as_a_system_message_outside_the_send_window() {
    let app = app_with(vec![("SEND_WINDOW", window_excluding_now())]).await;
    // Only the placeholders that make sense for a reply to a number.
    let (status, body) = ops_call(
        &app,
        Method::PUT,
        "/templates/optout_confirmation",
        Some(json!({"body": "Halo {nama}, ketik {optin_keyword}"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(fields(&body), ["body"]);
    save_confirmation(&app).await;
    let template = ops_get(&app, "/templates/optout_confirmation").await;
    assert_eq!(
        template["placeholders"],
        json!(["workshop_name", "service_phone", "optin_keyword"])
    );
    let (status, preview) = app
        .call(
            app.post("/templates/optout_confirmation/preview")
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["data"]["text"], RENDERED);

    // The window is closed: a message that respects it waits.
    let (_, body) = app
        .send(json!({"to": "0812 3456 0009", "body": "nanti", "respect_window": true}))
        .await;
    let held = id_of(&body);

    inbound(&app, NUMBER, "STOP").await;
    let calls = app.gateway.wait_for_calls(1, WITHIN).await;
    let sent: Value = calls[0].body_json().unwrap();
    assert_eq!(
        (&sent["to"], &sent["body"]),
        (&json!(NUMBER), &json!(RENDERED))
    );
    let (status, page) = app
        .call(
            app.http
                .get(format!("{}/whatsapp/messages?kind=system", app.base))
                .bearer_auth(crate::helpers::ops_token()),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let replies = page["data"]["items"].as_array().unwrap().clone();
    assert_eq!(replies.len(), 1, "{page}");
    let reply = app
        .wait_for_status(replies[0]["id"].as_str().unwrap(), "sent", WITHIN)
        .await;
    assert_eq!(
        (
            &reply["kind"],
            &reply["template_key"],
            &reply["held_reason"]
        ),
        (
            &json!("system"),
            &json!("optout_confirmation"),
            &Value::Null
        )
    );
    assert!(
        reply["expires_at"].is_string(),
        "a reply a day late is not sent: {reply}"
    );
    let held = app.message(&held).await;
    assert_eq!(
        held["held_reason"], "send_window",
        "the window is closed: {held}"
    );

    // Opted out already: another STOP is stored, and not answered again.
    inbound(&app, NUMBER, "stop!!").await;
    app.wait_idle(WITHIN).await;
    // Opting in and out again is a new opt-out: one more reply.
    inbound(&app, NUMBER, "MULAI").await;
    inbound(&app, NUMBER, "berhenti").await;
    app.gateway.wait_for_calls(2, WITHIN).await;
    app.wait_idle(WITHIN).await;
    let to: Vec<String> = app.gateway.sent_field("to").await;
    assert_eq!(to, [NUMBER, NUMBER], "once per opt-out");
    assert_eq!(
        messages_to(&app, NUMBER).await,
        [
            ("system".into(), "sent".into(), None),
            ("system".into(), "sent".into(), None)
        ]
    );
}

#[tokio::test]
async fn no_confirmation_goes_to_a_number_an_operator_opted_out() {
    let app = app().await;
    save_confirmation(&app).await;
    // Opted out by an operator: no reply.
    operator_suppresses(&app, NUMBER, "all").await;
    inbound(&app, NUMBER, "STOP").await;
    // Opted out of reminders by an operator: widened, still the operator's, no reply.
    let reminders_only = "6281234560003";
    operator_suppresses(&app, reminders_only, "reminders").await;
    inbound(&app, reminders_only, "STOP").await;
    assert!(messages_to(&app, NUMBER).await.is_empty());
    assert!(messages_to(&app, reminders_only).await.is_empty());

    // An operator's opt-out that comes while the reply waits: it is cancelled, never sent.
    pause_sends(&app).await;
    let late = "6281234560005";
    inbound(&app, late, "STOP").await;
    assert_eq!(
        messages_to(&app, late).await,
        [("system".into(), "queued".into(), None)]
    );
    let made = operator_suppresses(&app, late, "all").await;
    assert_eq!(made["cancelled"], 1, "{made}");
    assert_eq!(made["source"], "api");
    assert_eq!(
        messages_to(&app, late).await,
        [(
            "system".into(),
            "cancelled".into(),
            Some("recipient opted out".into())
        )]
    );
    resume_sends(&app).await;
    app.deliver_control().await;
    let to = app.gateway.sent_field("to").await;
    assert!(
        !to.iter()
            .any(|t| [NUMBER, reminders_only, late].contains(&t.as_str())),
        "{to:?}"
    );
    // It is the operator's now: the opt-in keyword does not lift it.
    inbound(&app, late, "MULAI").await;
    assert!(suppression(&app, late).await.is_some());
}
