//! A NUL character (`\u0000`, `%00`) anywhere a client can put text: PostgreSQL refuses it in
//! text, so it must be refused where input is parsed (422 naming the field), and a bulk import
//! must report it as that item's error and keep the others.

use std::time::Duration;

use bengkel_whatsapp::http::auth::Role;
use serde_json::{Value, json};

use crate::helpers::{TestApp, fields, id_of, token};

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_nul_character_in_any_json_field_is_a_422_naming_it_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let (status, customer) = app
        .call(app.post("/customers").json(&json!({
            "nama": "Budi", "hp": "0812345678", "vehicles": [{"no_pol": "B 1 X", "model": "Avanza"}]
        })))
        .await;
    assert_eq!(status, 201, "{customer}");
    let customer_id = id_of(&customer);
    let vehicle_id = customer["data"]["vehicles"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, record) = app
        .call(app.post("/manual-whatsapp/").json(&json!({
            "customer_name": "Joko", "nopol": "B 2 Y", "no_hp": "0812345678", "notes": "VIP"
        })))
        .await;
    assert_eq!(status, 201, "{record}");
    let record_id = id_of(&record);
    let ops = token("ops", Role::Ops, Duration::from_secs(600));

    let cases: Vec<(reqwest::RequestBuilder, Value, &str)> = vec![
        (
            app.post("/whatsapp/send"),
            json!({"to": "0812345678", "body": "a\u{0}b"}),
            "body",
        ),
        (
            app.post("/whatsapp/send"),
            json!({"to": "0812345678", "body": "x", "file": "https://example.com/a\u{0}.pdf"}),
            "file",
        ),
        (
            app.post("/whatsapp/send"),
            json!({"to": "0812345678", "body": "x", "\u{0}": 1}),
            "\\u0000",
        ),
        (app.post("/customers"), json!({"nama": "Bu\u{0}di"}), "nama"),
        (
            app.post("/customers"),
            json!({"nama": "Budi", "vehicles": [{"no_pol": "B\u{0}1"}]}),
            "vehicles[0].no_pol",
        ),
        (
            app.http
                .put(format!("{}/customers/{customer_id}", app.base))
                .bearer_auth(&app.token),
            json!({"alamat": "Jl. \u{0}"}),
            "alamat",
        ),
        (
            app.post(&format!("/customers/{customer_id}/vehicles")),
            json!({"no_pol": "B\u{0}2"}),
            "no_pol",
        ),
        (
            app.http
                .put(format!("{}/vehicles/{vehicle_id}", app.base))
                .bearer_auth(&app.token),
            json!({"model": "\u{0}"}),
            "model",
        ),
        (
            app.post("/manual-whatsapp/"),
            json!({"customer_name": "J\u{0}", "nopol": "B 3 Z", "no_hp": "0812345678"}),
            "customer_name",
        ),
        (
            app.http
                .put(format!("{}/manual-whatsapp/{record_id}", app.base))
                .bearer_auth(&app.token),
            json!({"notes": "\u{0}"}),
            "notes",
        ),
        (
            app.post("/manual-whatsapp/send-custom-message"),
            json!({"no_hp": "0812345678", "message": "promo\u{0}"}),
            "message",
        ),
        (
            app.post("/manual-whatsapp/send-reminders"),
            json!({"only_active": true, "note": ["\u{0}"]}),
            "note[0]",
        ),
        (
            app.http
                .post(format!("{}/ops/jobs/requeue", app.base))
                .bearer_auth(&ops),
            json!({"queue": "whatsapp-send\u{0}", "status": "failed"}),
            "queue",
        ),
    ];
    for (req, body, field) in cases {
        let (status, answer) = app.call(req.json(&body)).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(fields(&answer), [field], "{body}: {answer}");
        assert_eq!(
            answer["errors"][0]["message"],
            "must not contain NUL characters (\\u0000)"
        );
    }

    // Nothing was stored or changed.
    assert_eq!(count(&app, "messages").await, 0);
    assert_eq!(count(&app, "customers").await, 1);
    assert_eq!(count(&app, "vehicles").await, 1);
    assert_eq!(count(&app, "manual_whatsapp").await, 1);
    let (_, stored) = app
        .call(app.get(&format!("/customers/{customer_id}")))
        .await;
    assert_eq!(stored["data"]["alamat"], Value::Null);
    assert_eq!(stored["data"]["vehicles"][0]["model"], "Avanza");
    let (_, stored) = app
        .call(app.get(&format!("/manual-whatsapp/{record_id}")))
        .await;
    assert_eq!(stored["data"]["notes"], "VIP");
}

#[tokio::test]
async fn a_nul_character_in_a_query_value_or_path_segment_is_a_422_naming_it() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            "POST",
            "/whatsapp/send-simple?phone=0812345678&message=a%00b",
            "message",
        ),
        (
            "POST",
            "/whatsapp/send-with-file?phone=0812345678&message=hi&file_url=https://example.com/a%00.pdf",
            "file_url",
        ),
        (
            "POST",
            "/whatsapp/send-scheduled?phone=08123%0045678&message=hi&schedule_timestamp_ms=1",
            "phone",
        ),
        ("GET", "/whatsapp/messages?to=%00", "to"),
        ("GET", "/whatsapp/messages?status=sent%00", "status"),
        ("GET", "/customers?cursor=%00", "cursor"),
        ("GET", "/manual-whatsapp/?active_only=%00", "active_only"),
        ("GET", "/reminders?status=%00", "status"),
        ("GET", "/whatsapp-report/?x%00y=1", "x\\u0000y"),
        ("GET", "/manual-whatsapp/by-nopol/B%001", "nopol"),
        ("GET", "/whatsapp/messages/%00", "id"),
        ("DELETE", "/customers/abc%00", "id"),
        (
            "GET",
            "/whatsapp-report/customer/%00/vehicle/x",
            "id_customer",
        ),
    ];
    for (method, path, field) in cases {
        let req = app
            .http
            .request(method.parse().unwrap(), format!("{}{path}", app.base))
            .bearer_auth(&app.token);
        let (status, body) = app.call(req).await;
        assert_eq!(status, 422, "{method} {path}: {body}");
        assert_eq!(fields(&body), [field], "{method} {path}: {body}");
    }
    assert_eq!(count(&app, "messages").await, 0);
}

#[tokio::test]
async fn a_bulk_import_reports_a_nul_character_as_that_items_error_and_keeps_the_others() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .call(
            app.post("/customers/bulk-import")
                .json(&json!({"customers": [
                    {"nama": "Ani", "hp": "0812345678"},
                    {"nama": "Bu\u{0}di"},
                    {"nama": "Citra", "vehicles": [{"no_pol": "B 1\u{0}"}]},
                    {"nama": "Dewi", "vehicles": [{"no_pol": "B 4 D"}]},
                ]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(
        (data["imported"].as_u64(), data["failed"].as_u64()),
        (Some(2), Some(2)),
        "{body}"
    );
    assert_eq!(data["failures"][0]["index"], 1);
    assert_eq!(fields(&data["failures"][0]), ["nama"]);
    assert_eq!(data["failures"][1]["index"], 2);
    assert_eq!(fields(&data["failures"][1]), ["vehicles[0].no_pol"]);
    assert_eq!(count(&app, "customers").await, 2);
    assert_eq!(count(&app, "vehicles").await, 1);

    let (status, body) = app
        .call(app.post("/manual-whatsapp/bulk-import").json(&json!([
            {"customer_name": "Ibu Siti", "nopol": "B 5678 ABC", "no_hp": "08987654321"},
            {"customer_name": "Pak Budi", "nopol": "B 9\u{0}", "no_hp": "08987654322"},
            {"customer_name": "Pak Eko", "nopol": "B 7 E", "no_hp": "08987654323", "notes": "\u{0}"},
        ])))
        .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(
        (data["imported"].as_u64(), data["failed"].as_u64()),
        (Some(1), Some(2)),
        "{body}"
    );
    assert_eq!(data["failures"][0]["index"], 1);
    assert_eq!(fields(&data["failures"][0]), ["nopol"]);
    assert_eq!(data["failures"][1]["index"], 2);
    assert_eq!(fields(&data["failures"][1]), ["notes"]);
    assert_eq!(count(&app, "manual_whatsapp").await, 1);

    // The same body outside a bulk import is refused whole.
    let (status, body) = app
        .call(app.post("/manual-whatsapp/").json(
            &json!({"customer_name": "Pak Budi", "nopol": "B 9\u{0}", "no_hp": "08987654322"}),
        ))
        .await;
    assert_eq!((status, fields(&body)), (422, vec!["nopol".to_owned()]));
}
