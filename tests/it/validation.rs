use serde_json::json;

use crate::helpers::{TestApp, fields};

#[tokio::test]
async fn every_invalid_field_of_the_json_send_is_a_422_naming_it() {
    let app = TestApp::spawn().await;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let cases = [
        (json!({"body": "x"}), "to"),
        (json!({"to": "0812345678"}), "body"),
        (json!({"to": "0812", "body": "x"}), "to"),
        (json!({"to": "0812-abc-345", "body": "x"}), "to"),
        (json!({"to": 812345678, "body": "x"}), "to"),
        (json!({"to": "0812345678", "body": "   "}), "body"),
        (
            json!({"to": "0812345678", "body": "x".repeat(4097)}),
            "body",
        ),
        (
            json!({"to": "0812345678", "body": "x", "file": "invoice.pdf"}),
            "file",
        ),
        (
            json!({"to": "0812345678", "body": "x", "file": "ftp://host/invoice.pdf"}),
            "file",
        ),
        (
            json!({"to": "0812345678", "body": "x", "delay": -1}),
            "delay",
        ),
        (
            json!({"to": "0812345678", "body": "x", "delay": 2_592_001}),
            "delay",
        ),
        (
            json!({"to": "0812345678", "body": "x", "delay": "5"}),
            "delay",
        ),
        (
            json!({"to": "0812345678", "body": "x", "schedule": now_ms - 61_000}),
            "schedule",
        ),
        (
            json!({"to": "0812345678", "body": "x", "schedule": now_ms + 367 * 86_400_000i64}),
            "schedule",
        ),
        (
            json!({"to": "0812345678", "body": "x", "delay": 5, "schedule": now_ms + 10_000}),
            "schedule",
        ),
    ];
    for (request, field) in cases {
        let (status, body) = app.send(request.clone()).await;
        assert_eq!(status, 422, "{request}: {body}");
        assert_eq!(body["success"], false);
        assert!(
            fields(&body).contains(&field.to_owned()),
            "{request}: expected an error on {field}: {body}"
        );
    }
    // 4096 characters (not bytes) is still fine.
    let (status, body) = app
        .send(json!({"to": "0812345678", "body": "é".repeat(4096)}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        app.gateway
            .wait_for_calls(1, std::time::Duration::from_secs(5))
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn malformed_json_is_a_400_in_the_envelope() {
    let app = TestApp::spawn().await;
    for raw in ["{\"to\": ", "not json", "", "[1, 2]"] {
        let req = app
            .post("/whatsapp/send")
            .header("content-type", "application/json")
            .body(raw.to_owned());
        let (status, body) = app.call(req).await;
        assert_eq!(status, 400, "{raw:?}: {body}");
        assert_eq!(body["success"], false);
        assert!(!body["message"].as_str().unwrap_or_default().is_empty());
    }
}

#[tokio::test]
async fn query_string_endpoints_validate_their_parameters() {
    let app = TestApp::spawn().await;
    let cases = [
        ("/whatsapp/send-simple?message=hi", "phone"),
        ("/whatsapp/send-simple?phone=0812345678", "message"),
        ("/whatsapp/send-simple?phone=12&message=hi", "phone"),
        (
            "/whatsapp/send-with-file?phone=0812345678&message=hi",
            "file_url",
        ),
        (
            "/whatsapp/send-with-file?phone=0812345678&message=hi&file_url=nope",
            "file_url",
        ),
        (
            "/whatsapp/send-scheduled?phone=0812345678&message=hi",
            "schedule_timestamp_ms",
        ),
        (
            "/whatsapp/send-scheduled?phone=0812345678&message=hi&schedule_timestamp_ms=soon",
            "schedule_timestamp_ms",
        ),
        (
            "/whatsapp/send-scheduled?phone=0812345678&message=hi&schedule_timestamp_ms=1000",
            "schedule_timestamp_ms",
        ),
    ];
    for (path, field) in cases {
        let (status, body) = app.call(app.post(path)).await;
        assert_eq!(status, 422, "{path}: {body}");
        assert!(fields(&body).contains(&field.to_owned()), "{path}: {body}");
    }
    let (status, body) = app
        .call(app.post("/whatsapp/send-simple?phone=%FF%FE"))
        .await;
    assert_eq!(status, 400, "malformed query: {body}");
}

#[tokio::test]
async fn list_filters_are_validated_and_unknown_ids_are_404() {
    let app = TestApp::spawn().await;
    for q in [
        "status=lost",
        "kind=spam",
        "limit=0",
        "limit=501",
        "limit=many",
        "cursor=abc",
        "to=12",
        "batch=INV-001",
    ] {
        let (status, body) = app.call(app.get(&format!("/whatsapp/messages?{q}"))).await;
        assert_eq!(status, 422, "{q}: {body}");
    }
    for id in ["not-a-uuid", "01a212aa-23c0-71db-9e75-22982c58756b"] {
        let (status, _) = app.call(app.get(&format!("/whatsapp/messages/{id}"))).await;
        assert_eq!(status, 404);
        let (status, _) = app
            .call(app.post(&format!("/whatsapp/messages/{id}/cancel")))
            .await;
        assert_eq!(status, 404);
    }
    let (status, _) = app.call(app.get("/no/such/route")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_three_spellings_of_a_number_are_normalized() {
    let app = TestApp::spawn().await;
    for raw in ["+62 812-3456-789", "0812 3456 789", "812-3456-789"] {
        let (status, body) = app.send(json!({"to": raw, "body": "x"})).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["data"]["to"], "628123456789", "{raw}");
    }
    let (_, body) = app
        .call(app.post("/whatsapp/send-simple?phone=%2B62%20812-3456-789&message=hi"))
        .await;
    assert_eq!(body["data"]["to"], "628123456789");
}
