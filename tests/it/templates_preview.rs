//! `POST /templates/{key}/preview` with `body`: the ops page previews the text being edited,
//! checked like a save, and nothing is stored.

use serde_json::{Value, json};

use crate::helpers::{TestApp, id_of};

/// A customer "Siti" (salutation `Ibu`) with one vehicle due on 2026-12-01.
async fn siti(app: &TestApp) -> String {
    let (status, created) = app
        .call(app.post("/customers").json(&json!({
            "nama": "Siti", "hp": "0812 3456 7001",
            "vehicles": [{"no_pol": "B 1 SIT", "model": "Brio", "next_visit_date": "2026-12-01"}]
        })))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = id_of(&created);
    sqlx::query("UPDATE customers SET salutation = 'Ibu' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.db.pool)
        .await
        .expect("salutation");
    id
}

async fn preview(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    app.call(app.post(&format!("/templates/{key}/preview")).json(&body))
        .await
}

#[tokio::test]
async fn preview_renders_the_unsaved_body_for_a_customer() {
    let app = TestApp::spawn().await;
    let customer = siti(&app).await;
    let draft = "Halo {salutation} {nama}, kendaraan {no_pol} ({model}) jatuh tempo {tanggal}.";

    let (status, body) = preview(
        &app,
        "maintenance_reminder",
        json!({"customer_id": customer, "body": draft}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(
        data["text"],
        "Halo Ibu Siti, kendaraan B 1 SIT (Brio) jatuh tempo 1 Desember 2026."
    );
    assert_eq!(data["version"], 1, "{data}");
    assert_eq!(data["language"], "id");
    assert_eq!(data["missing"], json!([]));

    // Without `body` the saved (seeded) text is rendered, not the last draft.
    let (status, saved) = preview(
        &app,
        "maintenance_reminder",
        json!({"customer_id": customer}),
    )
    .await;
    assert_eq!(status, 200, "{saved}");
    let text = saved["data"]["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("Ibu Siti untuk nomor kendaraan B 1 SIT"),
        "{text}"
    );

    // The English draft of a manual record's template, with values given.
    let (status, body) = preview(
        &app,
        "manual_reminder",
        json!({"language": "en", "body": "Hi {nama} ({no_pol})", "values": {"nama": "Rina", "no_pol": "D 7 R"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["text"], "Hi Rina (D 7 R)");
    assert_eq!(body["data"]["language"], "en");
}

#[tokio::test]
async fn a_preview_in_another_language_names_the_month_in_it() {
    let app = TestApp::spawn().await;
    let customer = siti(&app).await;
    let draft = "Hi {salutation} {nama}, due {tanggal} ({tanggal_dmy})";
    for (language, want) in [
        ("en", "Hi Ibu Siti, due 1 December 2026 (01-12-2026)"),
        ("id", "Hi Ibu Siti, due 1 Desember 2026 (01-12-2026)"),
    ] {
        let (status, body) = preview(
            &app,
            "maintenance_reminder",
            json!({"customer_id": customer, "language": language, "body": draft}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["text"], want, "{language}");
        assert_eq!(body["data"]["language"], language);
    }
}

#[tokio::test]
async fn an_unknown_placeholder_in_a_previewed_body_is_a_422_on_body() {
    let app = TestApp::spawn().await;
    let customer = siti(&app).await;
    let fields = |body: &Value| -> Vec<(String, String)> {
        body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["field"].as_str().unwrap_or_default().to_owned(),
                    e["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };

    let (status, body) = preview(
        &app,
        "maintenance_reminder",
        json!({"customer_id": customer, "body": "Halo {nama}, kode {kode}"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let errors = fields(&body);
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0].0, "body");
    assert!(errors[0].1.contains("{kode}"), "{body}");

    // `model` is not a placeholder of manual records; empty, malformed, too long, not a string.
    let long = "x".repeat(4_001);
    for (key, draft) in [
        ("manual_reminder", json!("Halo {nama} {model}")),
        ("maintenance_reminder", json!("   ")),
        ("maintenance_reminder", json!("Halo {nama")),
        ("maintenance_reminder", json!(long)),
        ("maintenance_reminder", json!(5)),
    ] {
        let (status, body) = preview(&app, key, json!({"body": draft})).await;
        assert_eq!(status, 422, "{key} {draft}: {body}");
        let errors = fields(&body);
        assert_eq!(
            errors.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
            ["body"],
            "{key} {draft}: {body}"
        );
    }
}

#[tokio::test]
async fn previewing_a_body_stores_nothing() {
    let app = TestApp::spawn().await;
    let customer = siti(&app).await;
    let versions = "SELECT count(*) FROM template_versions";
    let before = app.count(versions).await;
    let (_, template) = app.call(app.get("/templates/maintenance_reminder")).await;
    let saved_body = template["data"]["bodies"]["id"].clone();

    for (draft, want) in [("Halo {salutation} {nama}", 200), ("Halo {kode}", 422)] {
        for language in ["id", "en"] {
            let (status, body) = preview(
                &app,
                "maintenance_reminder",
                json!({"customer_id": customer, "language": language, "body": draft}),
            )
            .await;
            assert_eq!(status, want, "{draft} {language}: {body}");
        }
    }

    assert_eq!(app.count(versions).await, before, "a version was stored");
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 0);
    let (status, after) = app.call(app.get("/templates/maintenance_reminder")).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["data"]["current_version"], 1, "{after}");
    assert_eq!(after["data"]["bodies"]["id"], saved_body);
    assert!(after["data"]["bodies"].get("en").is_some());
    assert_eq!(after["data"]["versions"].as_array().map(Vec::len), Some(1));
}
