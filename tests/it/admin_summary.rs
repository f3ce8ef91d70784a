//! The daily summary to `ADMIN_PHONES` (SPEC §14): once the day's run has nothing unsent, or at
//! the send window's close; once a day however many processes decide at the same moment.

use std::time::Duration;

use bengkel_whatsapp::{
    admin::summary::{self, Trigger},
    app::ProcessRole,
    reminders::schedule::job,
};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{
    Options, RealProcess, TestApp, ops_post, ready, today, wait_until, window_excluding_now,
};

const WITHIN: Duration = Duration::from_secs(30);

/// A customer with one vehicle due today (`hp` as given: `None` has no number).
async fn due_vehicle(app: &TestApp, nama: &str, hp: Option<&str>, no_pol: &str) {
    let customer_id = Uuid::new_v4();
    sqlx::query("INSERT INTO customers (id, nama, hp) VALUES ($1, $2, $3)")
        .bind(customer_id)
        .bind(nama)
        .bind(hp)
        .execute(&app.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO vehicles (id, customer_id, no_pol, next_visit_date) VALUES ($1, $2, $3, $4)",
    )
    .bind(Uuid::new_v4())
    .bind(customer_id)
    .bind(no_pol)
    .bind(today())
    .execute(&app.db.pool)
    .await
    .unwrap();
}

/// Today's daily run, as the schedule's tick would start it (trigger `cron`).
async fn daily_run(app: &TestApp) {
    let run_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO fanout_runs (id, trigger, business_date, tick_at) VALUES ($1, 'cron', $2, now())",
    )
    .bind(run_id)
    .bind(today())
    .execute(&app.db.pool)
    .await
    .unwrap();
    job::execute(&app.db.pool, &app.config, run_id, "cron", today())
        .await
        .expect("the daily run");
}

#[tokio::test]
async fn the_summary_follows_the_last_reminder_with_the_days_counts() {
    let app = TestApp::spawn_with(Options {
        env: vec![
            ("ADMIN_PHONES", "0812 1111 0001".to_owned()),
            ("ADMIN_LANGUAGE", "en".to_owned()),
            ("ADMIN_SUMMARY_CHECK_SECS", "1".to_owned()),
            ("SEND_WINDOW", "00:00-24:00".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    due_vehicle(&app, "Satu", Some("0812 2222 0001"), "B 1 A").await;
    due_vehicle(&app, "Dua", Some("0812 2222 0002"), "B 2 A").await;
    due_vehicle(&app, "Tanpa", None, "B 3 A").await;
    due_vehicle(&app, "Berhenti", Some("0812 2222 0004"), "B 4 A").await;
    let (status, body) = ops_post(
        &app,
        "/suppressions",
        Some(json!({"phone": "081222220004", "scope": "all"})),
    )
    .await;
    assert!(status == 201 || status == 200, "{body}");
    let (status, body) = app
        .call(app.post("/manual-whatsapp/").json(&json!({
            "customer_name": "Manual", "nopol": "B 5 A", "no_hp": "0812 2222 0005",
            "next_service": today().to_string(),
        })))
        .await;
    assert_eq!(status, 201, "{body}");

    daily_run(&app).await;
    // Three reminders (two vehicles, the manual record), then the summary.
    app.gateway.wait_for_calls(4, WITHIN).await;
    app.wait_idle(Duration::from_secs(10)).await;
    let sent = app.gateway.wait_sent(4, WITHIN).await;
    assert_eq!(sent.len(), 4, "{sent:?}");
    let (to, text) = &sent[3];
    assert_eq!(to, "6281211110001", "the summary comes last: {sent:?}");
    let date = today().format("%d-%m-%Y");
    assert_eq!(
        text,
        &format!(
            "📊 Reminder summary {date} · {ws}\n\
             Eligible: 5\n\
             Sent: 3 · failed: 0 · not sent yet: 0\n\
             Skipped: 2 (customer has no phone number 1, opted out 1)\n\
             Expired: 0 · opted out: 1\n\
             Delivered: - · read: - · undelivered: -",
            ws = app.config.workshop_name
        )
    );
    let (trigger, ids): (String, Vec<Uuid>) = sqlx::query_as(
        "SELECT trigger, message_ids FROM admin_daily_summaries WHERE business_date = $1",
    )
    .bind(today())
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(trigger, "drained");
    assert_eq!(ids.len(), 1);
    // Checking again the same day sends nothing.
    let again = summary::check(&app.db.pool, &app.config, chrono::Utc::now())
        .await
        .unwrap();
    assert!(again.is_none(), "{again:?}");
}

#[tokio::test]
async fn with_reminders_held_by_the_window_the_summary_goes_at_its_close_outside_it() {
    let app = TestApp::spawn_with(Options {
        env: vec![
            ("ADMIN_PHONES", "0812 1111 0001".to_owned()),
            // Only the checks this test makes.
            ("ADMIN_SUMMARY_CHECK_SECS", "3600".to_owned()),
            ("SEND_WINDOW", window_excluding_now()),
        ],
        ..Options::default()
    })
    .await;
    due_vehicle(&app, "Ditahan", Some("0812 2222 0001"), "B 1 W").await;
    daily_run(&app).await;
    let close = summary::closes(&app.db.pool, &app.config, today())
        .await
        .unwrap();
    let before = summary::check(
        &app.db.pool,
        &app.config,
        close - chrono::Duration::seconds(1),
    )
    .await
    .unwrap();
    assert!(
        before.is_none(),
        "the reminder is unsent and the window open: {before:?}"
    );
    let at_close = summary::check(&app.db.pool, &app.config, close)
        .await
        .unwrap()
        .expect("due at the window's close");
    assert_eq!(at_close.trigger, Trigger::WindowClose);
    assert_eq!(at_close.message_ids.len(), 1);
    // The admin message goes now, outside the window that still holds the reminder.
    let sent = app.gateway.wait_sent(1, WITHIN).await;
    assert_eq!(sent[0].0, "6281211110001");
    assert!(
        sent[0]
            .1
            .contains("Terkirim: 0 · gagal: 0 · belum terkirim: 1"),
        "{}",
        sent[0].1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE kind = 'maintenance' AND status = 'queued'")
            .await,
        1,
        "the reminder still waits for the window"
    );
}

#[tokio::test]
async fn three_processes_deciding_at_once_send_the_summary_once() {
    // The test's app only answers the API; three real workers each check every second.
    let app = TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        processes: 3,
        env: vec![
            ("ADMIN_PHONES", "0812 1111 0001, 0812 1111 0002".to_owned()),
            ("ADMIN_SUMMARY_CHECK_SECS", "1".to_owned()),
            ("SEND_WINDOW", "00:00-24:00".to_owned()),
        ],
        ..Options::default()
    })
    .await;
    for i in 0..3 {
        due_vehicle(
            &app,
            &format!("Tiga {i}"),
            Some(&format!("0812 3333 000{i}")),
            &format!("B {i} T"),
        )
        .await;
    }
    // Hold every claim of the day's summary until all three processes have made theirs: they
    // then decide at the same moment.
    let mut gate = app.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE admin_daily_summaries IN SHARE MODE")
        .execute(&mut *gate)
        .await
        .unwrap();
    let workers = [
        RealProcess::start(&app, "worker"),
        RealProcess::start(&app, "worker"),
        RealProcess::start(&app, "worker"),
    ];
    daily_run(&app).await;
    app.gateway.wait_for_calls(3, WITHIN).await;
    let names: Vec<String> = workers
        .iter()
        .map(|w| format!("bengkel-whatsapp/{}", w.pid()))
        .collect();
    wait_until(WITHIN, async || {
        let waiting: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT a.application_name FROM pg_locks l
             JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.relation = 'admin_daily_summaries'::regclass AND NOT l.granted",
        )
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
        ready(names.iter().all(|n| waiting.contains(n)), || {
            format!("waiting to claim: {waiting:?} of {names:?}")
        })
    })
    .await;
    gate.commit().await.unwrap();

    let sent = app.gateway.wait_sent(5, WITHIN).await;
    app.wait_idle(Duration::from_secs(10)).await;
    let mut admins: Vec<String> = app
        .gateway
        .sent_field("to")
        .await
        .into_iter()
        .filter(|to| to.starts_with("62812111100"))
        .collect();
    admins.sort();
    assert_eq!(admins, ["6281211110001", "6281211110002"], "{sent:?}");
    assert_eq!(app.gateway.calls().await, 5);
    assert_eq!(
        app.count("SELECT count(*) FROM admin_daily_summaries")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM messages WHERE kind = 'admin'")
            .await,
        2
    );
}

#[tokio::test]
async fn the_summary_template_previews_with_example_counts() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .call(
            app.post("/templates/admin_daily_summary/preview")
                .json(&json!({"language": "id"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let text = body["data"]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("Dilewati: 3 (opted out 2, no usable number 1)"),
        "{body}"
    );
    assert!(text.contains("Diterima: 30 · dibaca: 21"), "{body}");
}
