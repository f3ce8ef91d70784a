//! What `GATEWAY=cloud_api` refuses before anything is sent (SPEC §13): ad-hoc text outside
//! WhatsApp's 24-hour window and captions over 1,024 characters are `422` at enqueue; a
//! reminder whose template has no Meta mapping is `skipped`; a message that failed with
//! `131048`/`131049` is not requeued within 24 hours.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    GraphAnswer, GraphApi, Options, TestApp, day, id_of, ops_call, ops_post, wrote_just_now,
};

const WITHIN: Duration = Duration::from_secs(20);

async fn cloud_app(graph: &GraphApi) -> TestApp {
    TestApp::spawn_with(Options {
        env: vec![
            ("GATEWAY", "cloud_api".into()),
            ("CLOUD_API_ACCESS_TOKEN", "EAAG-rules".into()),
            ("CLOUD_API_PHONE_NUMBER_ID", "106540352242922".into()),
            ("CLOUD_API_APP_SECRET", "secret".into()),
            ("CLOUD_API_VERIFY_TOKEN", "verify".into()),
            ("CLOUD_API_BASE_URL", graph.base_url()),
        ],
        ..Options::default()
    })
    .await
}

fn first_error(reply: &Value) -> (String, String) {
    let e = &reply["errors"][0];
    (
        e["field"].as_str().unwrap_or_default().to_owned(),
        e["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn text_outside_the_24_hour_window_and_long_captions_are_refused_at_enqueue() {
    let graph = GraphApi::start().await;
    let app = cloud_app(&graph).await;
    let quiet = "6281700000001";
    let wrote = "6281700000002";

    // A number that never wrote: text is refused, on each send route, naming the rule.
    let (status, reply) = app.send(json!({"to": quiet, "body": "Promo"})).await;
    assert_eq!(status, 422, "{reply}");
    let (field, says) = first_error(&reply);
    assert_eq!(field, "body");
    assert!(
        says.contains("24 hours") && says.contains("template"),
        "{says}"
    );
    let (status, reply) = app
        .call(app.post(&format!(
            "/whatsapp/send-simple?phone={quiet}&message=Promo"
        )))
        .await;
    assert_eq!(status, 422, "{reply}");
    assert_eq!(first_error(&reply).0, "message");

    // Once it wrote, text goes; a caption over 1,024 characters does not.
    wrote_just_now(&app, &[wrote]).await;
    let (status, reply) = app.send(json!({"to": wrote, "body": "Siap"})).await;
    assert_eq!(status, 202, "{reply}");
    let long = "ä".repeat(1025);
    let (status, reply) = app
        .send(json!({"to": wrote, "body": long, "file": "https://example.com/nota.pdf"}))
        .await;
    assert_eq!(status, 422, "{reply}");
    assert!(first_error(&reply).1.contains("1024"), "{reply}");
    let (status, reply) = app
        .send(
            json!({"to": wrote, "body": "ä".repeat(1024), "file": "https://example.com/nota.pdf"}),
        )
        .await;
    assert_eq!(status, 202, "{reply}");

    // A template goes outside the window only when it is mapped to a Meta template.
    let (status, body) = ops_call(
        &app,
        Method::PUT,
        "/templates/promo",
        Some(json!({"body": "Halo {nama}, ada promo servis"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let templated = json!({"to": quiet, "template": {"key": "promo", "values": {"nama": "Budi"}}});
    let (status, reply) = app.send(templated.clone()).await;
    assert_eq!(status, 422, "{reply}");
    let (field, says) = first_error(&reply);
    assert_eq!(field, "template");
    assert!(says.contains("not mapped"), "{says}");
    let (status, body) = ops_call(
        &app,
        Method::PUT,
        "/templates/promo/cloud-api",
        Some(json!({"name": "promo_servis", "languages": {"id": "id"}, "params": ["nama"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, reply) = app.send(templated.clone()).await;
    assert_eq!(status, 202, "{reply}");

    // A batch rejects the item alone.
    let (status, reply) = app
        .call(app.post("/whatsapp/send-batch").json(&json!({"messages": [
            {"to": quiet, "body": "teks", "client_ref": "a"},
            {"to": wrote, "body": "teks", "client_ref": "b"},
            templated,
        ]})))
        .await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["data"]["accepted"], 2, "{reply}");
    let items = &reply["data"]["items"];
    assert_eq!(items[0]["status"], "rejected");
    assert!(
        items[0]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("24 hours")
    );
    assert_eq!(items[1]["status"], "queued");
    assert_eq!(items[2]["status"], "queued");

    // Exactly the accepted ones were stored and reach Meta.
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 5);
    let calls = graph.wait_for_calls(5, WITHIN).await;
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.json["type"] == "template")
            .count(),
        2
    );
}

#[tokio::test]
async fn a_reminder_without_a_meta_template_is_skipped_and_with_one_goes_as_it() {
    let graph = GraphApi::start().await;
    let app = cloud_app(&graph).await;
    let vehicles =
        json!([{"no_pol": "B 1 CL", "model": "Avanza", "next_visit_date": day(1).to_string()}]);
    let (status, body) = app
        .call(
            app.post("/customers")
                .json(&json!({"nama": "Budi", "hp": "0817 0000 0009", "vehicles": vehicles})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let summary = app.run_now("").await;
    assert_eq!(summary["skipped"], 1, "{summary}");
    assert_eq!(summary["details"][0]["reason"], "no cloud_api template");
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 0);

    let (status, body) = ops_call(
        &app,
        Method::PUT,
        "/templates/maintenance_reminder/cloud-api",
        Some(
            json!({"name": "service_reminder", "languages": {"id": "id", "en": "en_US"},
                    "params": ["nama", "no_pol", "tanggal"]}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let summary = app.run_now("").await;
    assert_eq!(summary["reminder_queued"], 1, "{summary}");
    let call = graph.wait_for_calls(1, WITHIN).await.remove(0);
    assert_eq!(call.json["type"], "template", "{}", call.json);
    assert_eq!(call.json["template"]["name"], "service_reminder");
    // The customer's language (Indonesian by default): the mapping's `id` code.
    assert_eq!(call.json["template"]["language"]["code"], "id");
    let params = &call.json["template"]["components"][0]["parameters"];
    assert_eq!(params[0]["text"], "Budi");
    assert_eq!(params[1]["text"], "B 1 CL");
}

#[tokio::test]
async fn a_message_failed_for_spam_limits_is_not_requeued_within_24_hours() {
    let graph = GraphApi::start().await;
    let app = cloud_app(&graph).await;
    let to = "6281700000003";
    wrote_just_now(&app, &[to]).await;
    graph.answer_next(
        1,
        GraphAnswer::Error {
            status: 400,
            code: 131048,
        },
    );
    let (_, reply) = app.send(json!({"to": to, "body": "x"})).await;
    let id = id_of(&reply);
    let m = app.wait_for_status(&id, "failed", WITHIN).await;
    let job = m["job_id"].as_str().unwrap().to_owned();

    let (status, body) = ops_post(&app, &format!("/ops/jobs/{job}/requeue"), None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("131048"),
        "{body}"
    );
    let (status, body) = ops_post(&app, "/ops/jobs/requeue", Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["requeued"], 0, "the bulk requeue leaves it");
    assert_eq!(app.message(&id).await["status"], "failed");

    // A day later it may go again.
    sqlx::query("UPDATE messages SET failed_at = now() - interval '25 hours' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (status, body) = ops_post(&app, &format!("/ops/jobs/{job}/requeue"), None).await;
    assert_eq!(status, 200, "{body}");
    app.wait_for_status(&id, "sent", WITHIN).await;
    assert_eq!(graph.calls_to(to).len(), 2);
}

#[tokio::test]
async fn a_campaign_on_the_cloud_api_needs_mapped_templates() {
    let graph = GraphApi::start().await;
    let app = cloud_app(&graph).await;
    let (status, body) = ops_call(
        &app,
        Method::PUT,
        "/templates/promo",
        Some(json!({"body": "Halo {nama}, ada promo servis"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let campaign = json!({"name": "Promo", "segment": {"filters": {}},
                          "steps": [{"variants": [{"template_key": "promo", "weight": 1}]}]});
    let (status, reply) = ops_post(&app, "/campaigns", Some(campaign.clone())).await;
    assert_eq!(status, 422, "{reply}");
    let (field, says) = first_error(&reply);
    assert_eq!(field, "steps[0].variants[0].template_key");
    assert!(says.contains("PUT /templates/promo/cloud-api"), "{says}");
    let (status, body) = ops_call(
        &app,
        Method::PUT,
        "/templates/promo/cloud-api",
        Some(json!({"name": "promo_servis", "languages": {"id": "id"}, "params": ["nama"]})),
    )
    .await;
    assert!(status == 200 || status == 201, "{body}");
    let (status, reply) = ops_post(&app, "/campaigns", Some(campaign)).await;
    assert_eq!(status, 201, "{reply}");
}
