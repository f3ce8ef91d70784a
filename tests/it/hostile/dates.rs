//! Dates are `YYYY-MM-DD` with a four-digit year: chrono alone also reads `-5000-01-01`, which
//! PostgreSQL refuses ("date out of range"), so such a date was a 500.

use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn a_date_postgresql_cannot_store_is_a_422_naming_the_field() {
    let app = TestApp::spawn().await;
    for raw in ["-5000-01-01", "+2026-12-01", "0000-01-01"] {
        let (status, body) = app
            .call(app.post("/customers").json(&json!({
                "nama": "Budi", "vehicles": [{"no_pol": "B 1 X", "next_visit_date": raw}]
            })))
            .await;
        assert_eq!(status, 422, "{raw}: {body}");
        assert_eq!(body["errors"][0]["field"], "vehicles[0].next_visit_date");

        let (status, body) = app
            .call(app.post("/manual-whatsapp/").json(&json!({
                "customer_name": "Joko", "nopol": "B 2 Y", "no_hp": "0812345678", "next_service": raw
            })))
            .await;
        assert_eq!(status, 422, "{raw}: {body}");
        assert_eq!(body["errors"][0]["field"], "next_service");

        let (status, body) = app.call(app.get(&format!("/reminders?date={raw}"))).await;
        assert_eq!(status, 422, "{raw}: {body}");
        assert_eq!(body["errors"][0]["field"], "date");
    }
    let (status, body) = app
        .call(
            app.post("/customers/bulk-import")
                .json(&json!({"customers": [
                    {"nama": "Ani", "vehicles": [{"next_visit_date": "2026-12-01"}]},
                    {"nama": "Budi", "vehicles": [{"next_visit_date": "-5000-01-01"}]},
                ]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["imported"], 1, "{body}");
    assert_eq!(body["data"]["failures"][0]["index"], 1, "{body}");
}
