//! `PUT /templates/{key}/cloud-api` (SPEC §13 "Templates"): a template mapped to an approved
//! Meta template, validated, shown with the template, flagged after a template error.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, ops_call};

#[tokio::test]
async fn a_mapping_is_saved_shown_with_its_template_and_validated() {
    let app = TestApp::spawn().await;
    let mapping = json!({"name": "service_reminder", "languages": {"id": "id", "en": "en_US"},
                         "params": ["nama", "no_pol", "tanggal"]});
    let (status, body) = ops_call(
        &app,
        Method::PUT,
        "/templates/maintenance_reminder/cloud-api",
        Some(mapping.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["name"], "service_reminder");
    assert_eq!(body["data"]["params"], json!(["nama", "no_pol", "tanggal"]));
    assert_eq!(body["data"]["updated_by"], "operator");
    assert!(body["data"]["flagged"].is_null());

    let (status, body) = app.call(app.get("/templates/maintenance_reminder")).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["cloud_api"]["languages"]["en"], "en_US");
    let (_, all) = app.call(app.get("/templates")).await;
    let manual = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "manual_reminder")
        .unwrap();
    assert!(manual["cloud_api"].is_null(), "not mapped: {manual}");

    // A client may read, not map.
    let (status, _) = app
        .call(
            app.http
                .put(format!(
                    "{}/templates/maintenance_reminder/cloud-api",
                    app.base
                ))
                .bearer_auth(&app.token)
                .json(&mapping),
        )
        .await;
    assert_eq!(status, 403);

    for (bad, field, says) in [
        (
            json!({"name": "x", "languages": {"id": "id"}, "params": ["kota"]}),
            "params[0]",
            "kota",
        ),
        (
            json!({"name": "x", "languages": {"en": "en_US"}}),
            "languages.id",
            "required",
        ),
        (
            json!({"name": "x", "languages": {"fr": "fr"}}),
            "languages.fr",
            "id or en",
        ),
        (
            json!({"name": "Bad Name", "languages": {"id": "id"}}),
            "name",
            "lowercase",
        ),
        (json!({"languages": {"id": "id"}}), "name", "required"),
        (
            json!({"name": "x", "languages": {"id": 1}}),
            "languages.id",
            "language code",
        ),
        (
            json!({"name": "x", "languages": {"id": "id"}, "params": "nama"}),
            "params",
            "array",
        ),
    ] {
        let (status, body) = ops_call(
            &app,
            Method::PUT,
            "/templates/maintenance_reminder/cloud-api",
            Some(bad.clone()),
        )
        .await;
        assert_eq!(status, 422, "{bad} → {body}");
        let errors = body["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["field"] == field && e["message"].as_str().unwrap().contains(says)),
            "{bad} → {body}"
        );
    }
    // `model` is not a placeholder of the manual reminder.
    let (status, _) = ops_call(
        &app,
        Method::PUT,
        "/templates/manual_reminder/cloud-api",
        Some(json!({"name": "x", "languages": {"id": "id"}, "params": ["model"]})),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = ops_call(
        &app,
        Method::PUT,
        "/templates/no_such_template/cloud-api",
        Some(json!({"name": "x", "languages": {"id": "id"}})),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn saving_a_mapping_again_clears_its_flag() {
    let app = TestApp::spawn().await;
    let mapping = json!({"name": "service_reminder", "languages": {"id": "id"}});
    let path = "/templates/maintenance_reminder/cloud-api";
    ops_call(&app, Method::PUT, path, Some(mapping.clone())).await;
    bengkel_whatsapp::templates::cloud_api::flag(
        &app.db.pool,
        "maintenance_reminder",
        132001,
        "template name does not exist",
    )
    .await
    .unwrap();
    let (_, body) = app.call(app.get("/templates/maintenance_reminder")).await;
    assert_eq!(body["data"]["cloud_api"]["flagged"]["code"], 132001);
    let (status, body) = ops_call(&app, Method::PUT, path, Some(mapping)).await;
    assert_eq!(status, 200);
    assert!(body["data"]["flagged"].is_null(), "{body}");
}
