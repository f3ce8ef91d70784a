//! Maintenance reminders: window, text, idempotent fan-out, report, schedule (SPEC §5, §6).

use std::{collections::HashSet, time::Duration};

use bengkel_whatsapp::app::ProcessRole;
use chrono::{NaiveDate, Utc};
use serde_json::{Value, json};
use wiremock::{Mock, ResponseTemplate, matchers};

use crate::helpers::{
    Options, RealProcess, TestApp, TestDb, day, gateway_error, ops_token, ready, today, wait_until,
};

const SERVICE_PHONE: &str = "08551000727";

fn text(nama: &str, no_pol: &str, visit: NaiveDate) -> String {
    format!(
        "Bapak {nama} untuk nomor kendaraan {no_pol} sebentar lagi tiba saat pemeliharaan rutin pada tanggal {}, daftarkan segera melalui nomor pelayanan kami {SERVICE_PHONE}",
        visit.format("%d-%m-%Y")
    )
}

/// Creates a customer with vehicles `(no_pol, days from today)`; returns (customer id, vehicle ids).
async fn customer(
    app: &TestApp,
    nama: Option<&str>,
    hp: Option<&str>,
    vehicles: &[(Option<&str>, i64)],
) -> (String, Vec<String>) {
    let vehicles: Vec<Value> = vehicles
        .iter()
        .map(|(no_pol, offset)| json!({"no_pol": no_pol, "model": "Avanza", "next_visit_date": day(*offset).to_string()}))
        .collect();
    let (status, body) = app
        .call(
            app.post("/customers")
                .json(&json!({"nama": nama, "hp": hp, "vehicles": vehicles})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let ids = body["data"]["vehicles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    (body["data"]["id"].as_str().unwrap().to_owned(), ids)
}

/// (to, body) of every gateway call.
async fn delivered(app: &TestApp) -> Vec<(String, String)> {
    app.gateway
        .requests()
        .await
        .iter()
        .map(|r| {
            let b: Value = r.body_json().expect("gateway body is JSON");
            (
                b["to"].as_str().unwrap().to_owned(),
                b["body"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn statuses(summary: &Value) -> Vec<(String, String)> {
    summary["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["no_pol"].as_str().unwrap_or("-").to_owned(),
                d["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn only_vehicles_due_today_to_two_days_ahead_are_reminded_with_the_exact_text() {
    let app = TestApp::spawn().await;
    let plates = [
        ("B 1 M", -1),
        ("B 2 T", 0),
        ("B 3 A", 1),
        ("B 4 B", 2),
        ("B 5 C", 3),
    ];
    let vehicles: Vec<(Option<&str>, i64)> = plates.iter().map(|(p, d)| (Some(*p), *d)).collect();
    customer(&app, Some("Budi Santoso"), Some("0812 3456 789"), &vehicles).await;

    let summary = app.run_now("?wait_seconds=20").await;
    assert_eq!(summary["date"], today().to_string());
    assert_eq!(summary["total_customers"], 1);
    assert_eq!(
        (
            summary["eligible"].as_i64(),
            summary["reminder_queued"].as_i64()
        ),
        (Some(3), Some(3))
    );
    assert_eq!(summary["reminder_sent"], 3, "{summary}");
    let mut got = statuses(&summary);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("B 2 T".into(), "sent".into()),
            ("B 3 A".into(), "sent".into()),
            ("B 4 B".into(), "sent".into())
        ]
    );
    for d in summary["details"].as_array().unwrap() {
        assert_eq!(d["customer_nama"], "Budi Santoso");
        assert!((0..=2).contains(&d["days_until_visit"].as_i64().unwrap()));
    }

    let mut calls = delivered(&app).await;
    calls.sort();
    let mut want: Vec<(String, String)> = plates[1..4]
        .iter()
        .map(|(p, d)| ("628123456789".to_owned(), text("Budi Santoso", p, day(*d))))
        .collect();
    want.sort();
    assert_eq!(calls, want);
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE kind = 'maintenance' AND status = 'sent'")
            .await,
        3
    );
}

#[tokio::test]
async fn eligible_vehicles_with_incomplete_data_are_skipped_with_a_reason() {
    let app = TestApp::spawn().await;
    customer(&app, None, Some("08123456789"), &[(Some("B 10 A"), 0)]).await;
    customer(&app, Some("Tanpa HP"), None, &[(Some("B 11 A"), 1)]).await;
    customer(&app, Some("HP Salah"), Some("12ab"), &[(Some("B 12 A"), 1)]).await;
    customer(&app, Some("Tanpa Nopol"), Some("08123456789"), &[(None, 2)]).await;

    let summary = app.run_now("").await;
    assert_eq!(
        (
            summary["eligible"].as_i64(),
            summary["skipped"].as_i64(),
            summary["reminder_queued"].as_i64()
        ),
        (Some(4), Some(4), Some(0))
    );
    let mut reasons: Vec<String> = summary["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["status"], "skipped");
            assert!(d.get("message_id").is_none());
            d["reason"].as_str().unwrap().to_owned()
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons[0], "customer has no name");
    assert_eq!(reasons[1], "customer has no phone number");
    assert!(
        reasons[2].starts_with("customer phone number \"12ab\" is invalid"),
        "{reasons:?}"
    );
    assert_eq!(reasons[3], "vehicle has no no_pol");
    assert_eq!(app.count("SELECT count(*) FROM reminders").await, 0);
    // Every send is a stored message with its job: none, so nothing can reach the gateway.
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 0);
    app.wait_idle(Duration::from_secs(5)).await;
    assert_eq!(app.gateway.calls().await, 0);
}

#[tokio::test]
async fn a_second_run_queues_nothing_and_reports_the_first_runs_messages() {
    let app = TestApp::spawn().await;
    customer(
        &app,
        Some("Sari"),
        Some("0813 1111 2222"),
        &[(Some("D 1 X"), 0), (Some("D 2 X"), 1)],
    )
    .await;
    let first = app.run_now("").await;
    assert_eq!(first["reminder_queued"], 2);
    let first_ids: HashSet<String> = first["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["message_id"].as_str().unwrap().to_owned())
        .collect();

    let second = app.run_now("").await;
    assert_eq!(
        (
            second["reminder_queued"].as_i64(),
            second["already_queued"].as_i64()
        ),
        (Some(0), Some(2)),
        "{second}"
    );
    let second_ids: HashSet<String> = second["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["status"], "already_queued");
            d["message_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        first_ids, second_ids,
        "already queued vehicles point at the first run's messages"
    );

    app.gateway.wait_for_calls(2, Duration::from_secs(10)).await;
    let third = app.run_now("").await;
    assert_eq!(third["reminder_queued"], 0);
    app.wait_idle(Duration::from_secs(5)).await;
    assert_eq!(app.gateway.calls().await, 2);
    assert_eq!(app.count("SELECT count(*) FROM messages").await, 2);
}

#[tokio::test]
async fn six_concurrent_runs_create_each_reminder_once() {
    let app = TestApp::spawn().await;
    for i in 0..10 {
        let plates: Vec<String> = (0..3).map(|j| format!("F {i}{j} Z")).collect();
        let vehicles: Vec<(Option<&str>, i64)> = plates
            .iter()
            .enumerate()
            .map(|(j, p)| (Some(p.as_str()), j as i64))
            .collect();
        customer(
            &app,
            Some(&format!("Pelanggan {i}")),
            Some(&format!("0812000000{i:02}")),
            &vehicles,
        )
        .await;
    }
    let runs = futures::future::join_all((0..6).map(|_| app.run_now(""))).await;
    let queued: i64 = runs
        .iter()
        .map(|r| r["reminder_queued"].as_i64().unwrap())
        .sum();
    let already: i64 = runs
        .iter()
        .map(|r| r["already_queued"].as_i64().unwrap())
        .sum();
    assert_eq!(
        (queued, already),
        (30, 150),
        "each of 30 reminders queued by exactly one run"
    );
    assert_eq!(app.count("SELECT count(*) FROM reminders").await, 30);
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE kind = 'maintenance'")
            .await,
        30
    );
    assert_eq!(
        app.count("SELECT count(*) FROM apalis.jobs WHERE job_type = 'whatsapp-send'")
            .await,
        30
    );
    app.gateway
        .wait_for_calls(30, Duration::from_secs(20))
        .await;
    app.wait_idle(Duration::from_secs(5)).await;
    let calls = delivered(&app).await;
    assert_eq!(calls.len(), 30);
    assert_eq!(
        calls.iter().map(|c| &c.1).collect::<HashSet<_>>().len(),
        30,
        "no text twice"
    );
}

#[tokio::test]
async fn a_retried_reminder_is_counted_once_in_the_report() {
    let app = TestApp::spawn().await;
    app.gateway
        .respond_times(
            gateway_error(503, json!({"success": false, "message": "busy"})),
            1,
        )
        .await;
    let (cid, vids) = customer(
        &app,
        Some("Rina"),
        Some("0857 0000 1111"),
        &[(Some("L 5 R"), 1)],
    )
    .await;

    let summary = app.run_now("?wait_seconds=30").await;
    assert_eq!(
        statuses(&summary),
        vec![("L 5 R".into(), "sent".into())],
        "{summary}"
    );
    let mid = summary["details"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.outcomes(&mid).await, vec!["retry", "sent"]);
    assert_eq!(app.gateway.calls().await, 2);

    let (status, report) = app
        .call(app.get(&format!(
            "/whatsapp-report/customer/{cid}/vehicle/{}",
            vids[0]
        )))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["data"]["frequency"], 1);
    assert_eq!(report["data"]["id_customer"], cid.as_str());

    // A re-run of the already-finished job changes nothing.
    sqlx::query("UPDATE apalis.jobs SET status = 'Pending', run_at = now(), attempts = 0, lock_by = NULL, done_at = NULL
                 WHERE id = (SELECT job_id FROM messages WHERE id = $1::uuid)")
        .bind(&mid)
        .execute(&app.db.pool)
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), async || {
        let job = app.job_of(&mid).await;
        ready(job.status == "Done", || {
            format!("the re-run did not finish: {job:?}")
        })
    })
    .await;
    assert_eq!(
        app.gateway.calls().await,
        2,
        "a sent message is not sent again"
    );
    assert_eq!(
        app.count("SELECT sum(frequency) FROM whatsapp_report")
            .await,
        1
    );
    let (_, reminders) = app.call(app.get("/reminders")).await;
    assert_eq!(reminders["data"]["items"][0]["status"], "sent");
    assert!(reminders["data"]["items"][0]["sent_at"].is_string());
}

#[tokio::test]
async fn wait_seconds_reports_sent_and_failed_per_vehicle() {
    let app = TestApp::spawn().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::body_partial_json(json!({"to": "6281999999999"})))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"success": false, "message": "number not on WhatsApp"})),
        )
        .with_priority(1)
        .mount(&app.gateway.server)
        .await;
    customer(
        &app,
        Some("Baik"),
        Some("081211112222"),
        &[(Some("AB 1 OK"), 0)],
    )
    .await;
    let (bad_customer, bad_vehicles) = customer(
        &app,
        Some("Gagal"),
        Some("081999999999"),
        &[(Some("AB 2 NO"), 0)],
    )
    .await;

    let summary = app.run_now("?wait_seconds=20").await;
    let mut got = statuses(&summary);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("AB 1 OK".into(), "sent".into()),
            ("AB 2 NO".into(), "failed".into())
        ]
    );
    let failed = summary["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["status"] == "failed")
        .unwrap();
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("number not on WhatsApp"),
        "{failed}"
    );
    assert_eq!(summary["reminder_sent"], 1);

    let (_, log) = app
        .call(app.get(&format!(
            "/reminders?status=failed&vehicle_id={}",
            bad_vehicles[0]
        )))
        .await;
    let items = log["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{log}");
    assert!(
        items[0]["reason"]
            .as_str()
            .unwrap()
            .contains("number not on WhatsApp")
    );
    assert_eq!(items[0]["message_status"], "failed");
    let (status, _) = app
        .call(app.get(&format!("/whatsapp-report/customer/{bad_customer}")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        app.count("SELECT count(*) FROM whatsapp_report").await,
        1,
        "a failed reminder is not in the report"
    );
}

#[tokio::test]
async fn the_report_api_matches_what_was_sent_and_can_be_reset_and_deleted() {
    let app = TestApp::spawn().await;
    let (a, a_vehicles) = customer(
        &app,
        Some("Andi"),
        Some("0811 0000 0001"),
        &[(Some("B 100 A"), 0), (Some("B 101 A"), 1)],
    )
    .await;
    let (b, b_vehicles) = customer(
        &app,
        Some("Bela"),
        Some("0811 0000 0002"),
        &[(Some("B 200 B"), 2)],
    )
    .await;
    app.run_now("?wait_seconds=20").await;
    // A second delivery to B's vehicle (a later day's reminder).
    sqlx::query("UPDATE reminders SET reminder_date = reminder_date - 1")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let again = app.run_now("?wait_seconds=20").await;
    assert_eq!(again["reminder_queued"], 3);

    let (_, stats) = app.call(app.get("/whatsapp-report/statistics")).await;
    assert_eq!(
        stats["data"],
        json!({
            "total_customers_with_vehicles": 3, "total_messages_sent": 6,
            "total_messages_delivered": 0, "total_messages_read": 0,
            "average_messages_per_customer": 2.0, "customers_by_frequency": {"2": 3}
        })
    );
    let (_, detail) = app.call(app.get("/whatsapp-report/detail")).await;
    let rows = detail["data"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let row_b = rows
        .iter()
        .find(|r| r["id_customer"] == b.as_str())
        .unwrap();
    assert_eq!(
        (
            row_b["customer_name"].as_str(),
            row_b["customer_phone"].as_str(),
            row_b["vehicle_nopol"].as_str(),
            row_b["vehicle_model"].as_str()
        ),
        (
            Some("Bela"),
            Some("0811 0000 0002"),
            Some("B 200 B"),
            Some("Avanza")
        )
    );
    let (_, list) = app.call(app.get("/whatsapp-report/")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    let (_, of_a) = app
        .call(app.get(&format!("/whatsapp-report/customer/{a}")))
        .await;
    assert_eq!(of_a["data"].as_array().unwrap().len(), 2);
    let (status, _) = app
        .call(app.get(&format!(
            "/whatsapp-report/customer/{a}/vehicle/{}",
            b_vehicles[0]
        )))
        .await;
    assert_eq!(status, 404);

    let (status, reset) = app
        .call(app.ops_post(&format!("/whatsapp-report/reset-frequency?id_customer={a}")))
        .await;
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["data"]["count"], 2);
    assert!(reset["data"]["message"].as_str().unwrap().contains(&a));
    let (_, stats) = app.call(app.get("/whatsapp-report/statistics")).await;
    assert_eq!(stats["data"]["total_messages_sent"], 2);
    assert_eq!(
        stats["data"]["customers_by_frequency"],
        json!({"0": 2, "2": 1})
    );
    let (status, _) = app
        .call(app.ops_post("/whatsapp-report/reset-frequency?id_customer=nope"))
        .await;
    assert_eq!(status, 422);

    let report_id = app
        .call(app.get(&format!(
            "/whatsapp-report/customer/{a}/vehicle/{}",
            a_vehicles[0]
        )))
        .await
        .1["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let del = || app.ops_delete(&format!("/whatsapp-report/{report_id}"));
    let (status, deleted) = app.call(del()).await;
    assert_eq!(status, 200);
    assert_eq!(deleted["data"]["message"], "Report berhasil dihapus");
    assert_eq!(app.call(del()).await.0, 404);
    let (status, all) = app
        .call(app.ops_post("/whatsapp-report/reset-frequency"))
        .await;
    assert_eq!((status, all["data"]["count"].as_i64()), (200, Some(2)));
    assert_eq!(
        app.call(app.get("/whatsapp-report/")).await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn the_reminder_log_filters_and_rejects_bad_filters() {
    let app = TestApp::spawn().await;
    let (_, vids) = customer(
        &app,
        Some("Dodi"),
        Some("0812 7777 8888"),
        &[(Some("E 1 A"), 0), (Some("E 2 A"), 1)],
    )
    .await;
    app.run_now("?wait_seconds=20").await;
    let (_, all) = app
        .call(app.get(&format!("/reminders?date={}", today())))
        .await;
    assert_eq!(all["data"]["items"].as_array().unwrap().len(), 2, "{all}");
    let (_, other_day) = app
        .call(app.get(&format!("/reminders?date={}", day(-1))))
        .await;
    assert!(other_day["data"]["items"].as_array().unwrap().is_empty());
    let (_, one) = app
        .call(app.get(&format!("/reminders?vehicle_id={}&status=sent", vids[1])))
        .await;
    let items = one["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (
            items[0]["vehicle_id"].as_str(),
            items[0]["message_status"].as_str()
        ),
        (Some(vids[1].as_str()), Some("sent"))
    );
    let (_, page) = app.call(app.get("/reminders?limit=1")).await;
    let cursor = page["data"]["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = app
        .call(app.get(&format!("/reminders?limit=1&cursor={cursor}")))
        .await;
    assert_ne!(
        rest["data"]["items"][0]["id"],
        page["data"]["items"][0]["id"]
    );
    let (status, bad) = app
        .call(app.get("/reminders?date=25-11-2026&status=done&vehicle_id=x"))
        .await;
    assert_eq!(status, 422);
    assert_eq!(bad["errors"].as_array().unwrap().len(), 3, "{bad}");
    let (status, _) = app
        .call(app.post("/customers/send-maintenance-reminder?wait_seconds=121"))
        .await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn start_stop_and_status_round_trip_and_are_shared_by_every_process() {
    let app = TestApp::spawn_with(Options {
        processes: 1,
        ..Options::default()
    })
    .await;
    let (status, started) = app
        .call(app.ops_post("/scheduler/maintenance-reminder/start?hour=8&minute=30"))
        .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(
        started["data"]["message"],
        "Scheduler dimulai. Job akan berjalan setiap hari jam 08:30"
    );
    let other = app.another_process(ProcessRole::Api).await;
    let (_, st) = app
        .call(
            app.http
                .get(format!(
                    "{}/scheduler/maintenance-reminder/status",
                    other.base
                ))
                .bearer_auth(&app.token),
        )
        .await;
    assert_eq!(st["data"]["running"], true);
    let job = &st["data"]["jobs"][0];
    assert_eq!(job["id"], "maintenance_reminder_job");
    assert_eq!(job["name"], "Maintenance Reminder WhatsApp");
    assert_eq!(job["trigger"], "cron[hour='8', minute='30']");
    let next = job["next_run_time"].as_str().unwrap();
    assert!(next.ends_with("T08:30:00+07:00"), "{next}");
    let next = chrono::DateTime::parse_from_rfc3339(next).unwrap();
    assert!(next > Utc::now() && next < Utc::now() + chrono::Duration::days(1));

    let (status, stopped) = app
        .call(app.ops_post("/scheduler/maintenance-reminder/stop"))
        .await;
    assert_eq!(
        (status, stopped["data"]["message"].as_str()),
        (200, Some("Scheduler dihentikan"))
    );
    let (_, st) = app
        .call(
            app.http
                .get(format!(
                    "{}/scheduler/maintenance-reminder/status",
                    other.base
                ))
                .bearer_auth(&app.token),
        )
        .await;
    assert_eq!(
        (
            st["data"]["running"].as_bool(),
            st["data"]["jobs"].as_array().map(Vec::len)
        ),
        (Some(false), Some(0))
    );
    let (status, health) = app
        .call(app.http.get(format!("{}/health/scheduler", app.base)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            health["data"]["status"].as_str(),
            health["data"]["scheduler_running"].as_bool()
        ),
        (Some("unhealthy"), Some(false))
    );

    for bad in ["hour=24", "hour=-1", "minute=60", "hour=seven"] {
        let (status, body) = app
            .call(app.ops_post(&format!("/scheduler/maintenance-reminder/start?{bad}")))
            .await;
        assert_eq!(status, 422, "{bad}: {body}");
    }
    let (_, st) = app
        .call(app.get("/scheduler/maintenance-reminder/status"))
        .await;
    assert_eq!(
        st["data"]["running"], false,
        "a rejected start changes nothing"
    );
    let (_, started) = app
        .call(app.ops_post("/scheduler/maintenance-reminder/start"))
        .await;
    assert_eq!(
        started["data"]["jobs"][0]["trigger"], "cron[hour='8', minute='30']",
        "start without a time keeps the stored time"
    );
    let (_, health) = app
        .call(app.http.get(format!("{}/health/scheduler", app.base)))
        .await;
    assert_eq!(health["data"]["status"], "healthy");
    let (status, _) = app
        .call(
            app.http
                .post(format!("{}/scheduler/maintenance-reminder/stop", app.base)),
        )
        .await;
    assert_eq!(status, 401);
}

/// Notes every claim of a scheduler tick in `tick_claims` (which process, which tick), also the
/// claims that lose: a trigger before the insert, which runs before the conflict is found.
async fn note_tick_claims(pool: &sqlx::PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE tick_claims (process text, tick_at timestamptz);
         CREATE FUNCTION note_tick_claim() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.tick_at IS NOT NULL THEN
             INSERT INTO tick_claims VALUES (current_setting('application_name'), NEW.tick_at);
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER note_tick_claim BEFORE INSERT ON fanout_runs
           FOR EACH ROW EXECUTE FUNCTION note_tick_claim();",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Waits until each of the processes `pids` has tried to claim the tick that was run: then
/// none of them runs it again, whatever time passes.
async fn wait_for_tick_claims(app: &TestApp, pids: &[u32]) {
    let names: Vec<String> = pids
        .iter()
        .map(|pid| format!("bengkel-whatsapp/{pid}"))
        .collect();
    // A process started just now needs a moment to start up and tick (every 2 s).
    wait_until(Duration::from_secs(20), async || {
        let claimed: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT c.process FROM tick_claims c
             JOIN fanout_runs r ON r.tick_at = c.tick_at WHERE c.process = ANY($1)",
        )
        .bind(&names)
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
        ready(claimed.len() == names.len(), || {
            format!("of {names:?}, only {claimed:?} tried to claim the tick")
        })
    })
    .await;
    assert_eq!(
        app.count("SELECT count(DISTINCT tick_at) FROM tick_claims")
            .await,
        1,
        "every claim was of the one tick"
    );
}

/// (hour, minute) in Jakarta of `now + offset`.
fn jakarta_time(offset: chrono::Duration) -> (u32, u32, NaiveDate) {
    use chrono::Timelike;
    let t = (Utc::now() + offset).with_timezone(&chrono_tz::Asia::Jakarta);
    (t.hour(), t.minute(), t.date_naive())
}

#[tokio::test]
async fn two_serve_processes_send_each_reminder_once_at_the_scheduled_minute() {
    // The test's own app only answers the API; the schedule runs in two real `serve` processes
    // and a `worker`, each with its own cron ticker.
    let app = TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        processes: 3,
        ..Options::default()
    })
    .await;
    note_tick_claims(&app.db.pool).await;
    let processes = [
        RealProcess::start(&app, "serve"),
        RealProcess::start(&app, "serve"),
        RealProcess::start(&app, "worker"),
    ];
    for i in 0..4 {
        customer(
            &app,
            Some(&format!("Cron {i}")),
            Some(&format!("08130000000{i}")),
            &[(Some(&format!("K {i} C")), i % 3)],
        )
        .await;
    }
    let (hour, minute, date) = jakarta_time(chrono::Duration::minutes(1));
    if date != today() {
        return; // the next minute is tomorrow in Jakarta: the vehicles' window would move
    }
    let (status, body) = app
        .call(app.ops_post(&format!(
            "/scheduler/maintenance-reminder/start?hour={hour}&minute={minute}"
        )))
        .await;
    assert_eq!(status, 200, "{body}");
    app.gateway.wait_for_calls(4, Duration::from_secs(90)).await;
    app.wait_idle(Duration::from_secs(10)).await;
    assert_eq!(app.gateway.calls().await, 4, "each reminder sent once");
    // Every process has ticked since the tick came and tried to claim it.
    let pids: Vec<u32> = processes.iter().map(RealProcess::pid).collect();
    wait_for_tick_claims(&app, &pids).await;
    // The run records its counts after its messages are queued (and maybe sent).
    wait_until(Duration::from_secs(10), async || {
        let unfinished = app
            .count("SELECT count(*) FROM fanout_runs WHERE status NOT IN ('done', 'failed')")
            .await;
        ready(unfinished == 0, || {
            format!("{unfinished} fan-out run(s) not finished")
        })
    })
    .await;
    let runs: Vec<(String, String)> = sqlx::query_as("SELECT trigger, status FROM fanout_runs")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        runs,
        vec![("cron".to_owned(), "done".to_owned())],
        "one fan-out for the tick"
    );
    let (_, health) = app
        .call(app.http.get(format!("{}/health/scheduler", app.base)))
        .await;
    assert_eq!(health["data"]["status"], "healthy");
    let (_, st) = app
        .call(app.get("/scheduler/maintenance-reminder/status"))
        .await;
    assert_eq!(st["data"]["last_run"]["trigger"], "cron");
    assert_eq!(st["data"]["last_run"]["reminder_queued"], 4);
}

#[tokio::test]
async fn a_process_started_after_a_missed_tick_catches_up() {
    let db = TestDb::with_processes(1).await;
    let (hour, minute, date) = jakarta_time(-chrono::Duration::minutes(3));
    if date != today() {
        return; // three minutes ago was yesterday in Jakarta: today's tick has not passed
    }
    // The schedule existed yesterday; its tick three minutes ago found no process running.
    sqlx::query(
        "INSERT INTO scheduler_settings (job_id, enabled, hour, minute, updated_at)
                 VALUES ('maintenance_reminder_job', true, $1, $2, now() - interval '1 day')",
    )
    .bind(hour as i32)
    .bind(minute as i32)
    .execute(&db.pool)
    .await
    .unwrap();
    let customer_id = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO customers (id, nama, hp) VALUES ($1, 'Telat', '0812 5555 6666')")
        .bind(customer_id)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO vehicles (id, customer_id, no_pol, next_visit_date) VALUES ($1, $2, 'Z 9 Z', $3)")
        .bind(uuid::Uuid::new_v4())
        .bind(customer_id)
        .bind(today())
        .execute(&db.pool)
        .await
        .unwrap();
    note_tick_claims(&db.pool).await;

    let app = TestApp::spawn_on(db, Options::default()).await;
    let calls = app.gateway.wait_for_calls(1, Duration::from_secs(20)).await;
    let body: Value = calls[0].body_json().unwrap();
    assert_eq!(body["body"], text("Telat", "Z 9 Z", today()));
    let runs: Vec<(String, Option<chrono::DateTime<Utc>>)> =
        sqlx::query_as("SELECT trigger, tick_at FROM fanout_runs")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].0, "catch_up");
    let restart = RealProcess::start(&app, "serve");
    wait_for_tick_claims(&app, &[restart.pid()]).await;
    app.wait_idle(Duration::from_secs(10)).await;
    assert_eq!(
        app.count("SELECT count(*) FROM fanout_runs").await,
        1,
        "a caught-up tick is not run again"
    );
    assert_eq!(app.gateway.calls().await, 1);
}

#[tokio::test]
async fn cancelling_a_reminder_message_cancels_the_reminder_and_a_new_pass_does_not_requeue_it() {
    let app = TestApp::spawn().await;
    let ops = crate::helpers::token(
        "ops",
        bengkel_whatsapp::http::auth::Role::Ops,
        Duration::from_secs(600),
    );
    let (status, _) = app
        .call(
            app.http
                .post(format!("{}/ops/queues/whatsapp-send/pause", app.base))
                .bearer_auth(&ops),
        )
        .await;
    assert_eq!(status, 200);
    customer(
        &app,
        Some("Batal"),
        Some("0812 6666 7777"),
        &[(Some("G 1 B"), 0)],
    )
    .await;
    let summary = app.run_now("").await;
    let message_id = summary["details"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A reminder is the service's own message: a client token does not reach it, ops does.
    let cancel = || app.post(&format!("/whatsapp/messages/{message_id}/cancel"));
    let (status, _) = app.call(cancel()).await;
    assert_eq!(status, 404);
    let (status, cancelled) = app
        .call(
            app.http
                .post(format!(
                    "{}/whatsapp/messages/{message_id}/cancel",
                    app.base
                ))
                .bearer_auth(ops_token()),
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let (_, log) = app.call(app.get("/reminders")).await;
    assert_eq!(log["data"]["items"][0]["status"], "cancelled");
    assert_eq!(log["data"]["items"][0]["message_status"], "cancelled");
    let again = app.run_now("").await;
    assert_eq!(
        (
            again["reminder_queued"].as_i64(),
            again["already_queued"].as_i64()
        ),
        (Some(0), Some(1))
    );
    app.call(
        app.http
            .post(format!("{}/ops/queues/whatsapp-send/resume", app.base))
            .bearer_auth(&ops),
    )
    .await;
    app.deliver_control().await;
    assert_eq!(
        app.gateway.sent_field("body").await,
        ["control"],
        "a cancelled reminder is not sent"
    );
}
