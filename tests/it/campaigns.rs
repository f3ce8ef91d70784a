//! Campaigns (SPEC §15): steps with weighted variants sent to a segment as §11 batches, a
//! follow-up with `only_if`, cancel, the send window, results per variant.

use std::{collections::HashMap, time::Duration};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Options, Receiver, TestApp, ops_call, ops_get, ops_post, ready, wait_until,
    window_excluding_now,
};
use crate::inbound::{TOKEN, inbound};

const WITHIN: Duration = Duration::from_secs(60);

async fn app(window: String) -> TestApp {
    TestApp::spawn_with(Options {
        env: vec![
            ("SEND_WINDOW", window),
            ("INBOUND_STARSENDER_TOKEN", TOKEN.into()),
            ("WEBHOOK_ALLOW_PRIVATE", "true".into()),
        ],
        ..Options::default()
    })
    .await
}

/// `n` customers, each with one Avanza due in 30 days: numbers 0813 0000 0000 + i.
async fn customers(app: &TestApp, n: i64) {
    sqlx::query(
        "WITH c AS (
            INSERT INTO customers (id, nama, hp)
            SELECT gen_random_uuid(), 'Pelanggan ' || i, '0813' || lpad(i::text, 8, '0')
            FROM generate_series(0, $1 - 1) i RETURNING id, nama
         )
         INSERT INTO vehicles (id, customer_id, no_pol, model, next_visit_date)
         SELECT gen_random_uuid(), id, 'B ' || substr(nama, 11), 'Avanza', current_date + 30 FROM c",
    )
    .bind(n)
    .execute(&app.db.pool)
    .await
    .unwrap();
}

async fn template(app: &TestApp, key: &str, body: &str) {
    let (status, reply) = ops_call(
        app,
        Method::PUT,
        &format!("/templates/{key}"),
        Some(json!({ "body": body })),
    )
    .await;
    assert!(status == 201 || status == 200, "{reply}");
}

async fn make(app: &TestApp, body: Value) -> String {
    let (status, reply) = ops_post(app, "/campaigns", Some(body)).await;
    assert_eq!(status, 201, "{reply}");
    reply["data"]["id"].as_str().unwrap().to_owned()
}

async fn act(app: &TestApp, id: &str, action: &str) -> (u16, Value) {
    ops_post(app, &format!("/campaigns/{id}/{action}"), None).await
}

async fn wait_status(app: &TestApp, id: &str, want: &str) -> Value {
    wait_until(WITHIN, async || {
        let c = ops_get(app, &format!("/campaigns/{id}")).await;
        let status = c["status"].as_str().unwrap_or_default().to_owned();
        ready(status == want, || {
            format!("campaign is {status}, waiting for {want}")
        })
        .map(|_| c)
    })
    .await
}

#[tokio::test]
async fn a_two_variant_campaign_sends_each_recipient_one_message_near_the_weights() {
    let app = app("00:00-24:00".into()).await;
    customers(&app, 1_000).await;
    template(
        &app,
        "promo_a",
        "A: Halo {nama}, servis {no_pol} diskon 10%",
    )
    .await;
    template(&app, "promo_b", "B: {nama}, servis {no_pol} gratis cuci").await;
    let id = make(
        &app,
        json!({"name": "Januari", "segment": {"source": "vehicles", "filters": {"model": "avanza"}},
               "steps": [{"variants": [{"template_key": "promo_a", "weight": 70},
                                       {"template_key": "promo_b", "weight": 30}]}]}),
    )
    .await;
    let (status, started) = act(&app, &id, "start").await;
    assert_eq!(status, 200, "{started}");
    let done = wait_status(&app, &id, "finished").await;

    let calls = app.gateway.wait_sent(1_000, WITHIN).await;
    assert_eq!(calls.len(), 1_000, "one message per recipient");
    let mut per_phone: HashMap<&str, usize> = HashMap::new();
    let mut per_variant = [0i64; 2];
    for (to, body) in &calls {
        *per_phone.entry(to.as_str()).or_default() += 1;
        per_variant[usize::from(body.starts_with("B: "))] += 1;
    }
    assert_eq!(per_phone.len(), 1_000, "every recipient once");
    assert!((620..=780).contains(&per_variant[0]), "{per_variant:?}");
    // The results are what the gateway received.
    let results = done["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{done}");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["variant"], i);
        assert_eq!(r["sent"], per_variant[i], "{r}");
        assert_eq!(r["recipients"], per_variant[i]);
        assert_eq!(r["rates"]["sent"], 1.0);
    }
    // Each message says where it came from.
    let (kind, campaign_id, step): (String, uuid::Uuid, i32) =
        sqlx::query_as("SELECT kind, campaign_id, campaign_step FROM messages LIMIT 1")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (kind.as_str(), campaign_id.to_string(), step),
        ("campaign", id.clone(), 0)
    );
    assert_eq!(done["steps"][0]["status"], "done");
    // Counted by outcome (the recorder is the test process's: other tests add theirs).
    for outcome in ["queued", "sent"] {
        let n = crate::inbound::series(
            &app,
            &format!("bengkel_campaign_messages_total{{outcome=\"{outcome}\"}}"),
        )
        .await;
        assert!(n >= 1_000.0, "{outcome}: {n}");
    }
    // A finished campaign cannot start again.
    assert_eq!(act(&app, &id, "start").await.0, 409);
}

#[tokio::test]
async fn a_no_reply_follow_up_skips_the_recipient_who_answered() {
    let app = app("00:00-24:00".into()).await;
    customers(&app, 3).await;
    template(&app, "first", "Halo {nama}, ada promo").await;
    template(&app, "again", "Halo {nama}, promo masih ada").await;
    let id = make(
        &app,
        json!({"name": "Ikuti", "segment": {"filters": {}},
               "steps": [{"variants": [{"template_key": "first", "weight": 1}]},
                         {"variants": [{"template_key": "again", "weight": 1}], "delay_days": 1,
                          "only_if": "no_reply"}]}),
    )
    .await;
    // Each step is a §11 batch: `batch.finished` when its last message is final.
    let receiver = Receiver::start().await;
    crate::webhooks::subscribe(&app, &receiver, &["batch.finished"]).await;
    act(&app, &id, "start").await;
    app.gateway.wait_sent(3, WITHIN).await;
    // The first step is done once its last message is final; the next is due a day later.
    wait_until(WITHIN, async || {
        let c = ops_get(&app, &format!("/campaigns/{id}")).await;
        let first = c["steps"][0]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        ready(
            first == "done" && c["steps"][1]["due_at"].is_string(),
            || format!("steps: {}", c["steps"]),
        )
    })
    .await;
    // Meanwhile one recipient answers through StarSender's webhook; then the day passes.
    inbound(&app, "6281300000001", "Boleh, jam berapa?").await;
    sqlx::query("UPDATE campaign_steps SET due_at = now() WHERE step = 1")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let done = wait_status(&app, &id, "finished").await;
    let calls = app.gateway.wait_sent(5, WITHIN).await;
    let mut again: Vec<&str> = calls
        .iter()
        .filter(|(_, b)| b.contains("masih"))
        .map(|(t, _)| t.as_str())
        .collect();
    again.sort();
    assert_eq!(again, ["6281300000000", "6281300000002"], "{calls:?}");
    let replied = &done["results"][0]["replied"];
    assert_eq!(replied, 1, "{done}");
    let finished = receiver.wait_for(2, WITHIN).await;
    for (step, total) in [(0, 3), (1, 2)] {
        let batch = &done["steps"][step]["batch_id"];
        let event = finished
            .iter()
            .find(|r| &r.json["data"]["batch_id"] == batch)
            .unwrap_or_else(|| panic!("no batch.finished for step {step}: {finished:?}"));
        assert!(event.verified());
        assert_eq!(event.json["data"]["total"], total);
        assert_eq!(event.json["data"]["sent"], total);
    }
    // Its messages say where they came from.
    let listed = ops_get(&app, "/whatsapp/messages?kind=campaign&limit=10").await;
    let first = &listed["items"][0];
    assert_eq!(first["campaign"]["id"], id.as_str(), "{first}");
    assert_eq!(first["campaign"]["step"], 1);
    assert_eq!(first["campaign"]["variant"], 0);
}

#[tokio::test]
async fn campaign_messages_wait_for_the_window_and_cancel_stops_them() {
    let app = app(window_excluding_now()).await;
    // 20 numbers: by the hash, some go to each half (all 20 in one: about 1 in 500,000).
    customers(&app, 20).await;
    template(&app, "promo", "Halo {nama}").await;
    let id = make(
        &app,
        json!({"name": "Malam", "segment": {"filters": {}},
               "steps": [{"variants": [{"template_key": "promo", "weight": 1}, {"holdout": true, "weight": 1}]}]}),
    )
    .await;
    act(&app, &id, "start").await;
    wait_until(WITHIN, async || {
        let queued = app
            .count(
                "SELECT count(*) FROM messages WHERE kind = 'campaign' AND held_reason IS NOT NULL",
            )
            .await;
        let holdouts = app
            .count("SELECT count(*) FROM campaign_recipients WHERE holdout")
            .await;
        let all = app.count("SELECT count(*) FROM campaign_recipients").await;
        ready(all == 20 && queued == all - holdouts, || {
            format!("{queued} held of {all} recipients ({holdouts} holdout)")
        })
    })
    .await;
    assert_eq!(app.gateway.calls().await, 0, "nothing outside the window");
    // Paused, their jobs are parked; resumed, due again (and held by the window again).
    let sent_to = app
        .count("SELECT count(*) FROM messages WHERE kind = 'campaign'")
        .await;
    assert_eq!(act(&app, &id, "pause").await.0, 200);
    let parked = "SELECT count(*) FROM apalis.jobs WHERE run_at = 'infinity'";
    assert_eq!(app.count(parked).await, sent_to);
    // A policy change wakes held messages; parked ones stay parked.
    crate::helpers::ops_ok(
        &app,
        Method::PUT,
        "/ops/policy",
        Some(json!({"recipient_min_interval_secs": 7})),
    )
    .await;
    wait_until(WITHIN, async || {
        let woken = app
            .count("SELECT count(*) FROM apalis.jobs WHERE run_at <= now() AND status = 'Pending'")
            .await;
        let parked_now = app.count(parked).await;
        ready(parked_now == sent_to && woken == 0, || {
            format!("{parked_now} parked, {woken} due")
        })
    })
    .await;
    assert_eq!(act(&app, &id, "resume").await.0, 200);
    assert_eq!(app.count(parked).await, 0);
    let (status, cancelled) = act(&app, &id, "cancel").await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["data"]["status"], "cancelled");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM messages WHERE kind = 'campaign' AND status <> 'cancelled'"
        )
        .await,
        0
    );
    assert_eq!(act(&app, &id, "pause").await.0, 409);
    assert_eq!(app.gateway.calls().await, 0);
    // Every variant of the started step has its row, the holdout marked.
    let results = ops_get(&app, &format!("/campaigns/{id}")).await["results"].clone();
    let rows = results.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{results}");
    assert_eq!(
        (rows[0]["holdout"].clone(), rows[1]["holdout"].clone()),
        (json!(false), json!(true))
    );
    let recipients: i64 = rows.iter().map(|r| r["recipients"].as_i64().unwrap()).sum();
    assert_eq!(recipients, 20);
    assert_eq!(rows[1]["sent"], 0);
    assert_eq!(rows[0]["cancelled"], rows[0]["recipients"]);
}

#[tokio::test]
async fn a_bad_campaign_is_refused_field_by_field() {
    let app = app("00:00-24:00".into()).await;
    let (status, reply) = ops_post(
        &app,
        "/campaigns",
        Some(json!({"name": "x", "segment_id": uuid::Uuid::nil(),
                    "steps": [{"variants": [{"template_key": "nope", "weight": 1}]}]})),
    )
    .await;
    assert_eq!(status, 422, "{reply}");
    let fields = crate::helpers::fields(&reply);
    assert_eq!(fields, ["segment_id", "steps[0].variants[0].template_key"]);
    let (status, _) = ops_call(&app, Method::GET, "/campaigns/not-an-id", None).await;
    assert_eq!(status, 404);
    let (status, _) = app.call(app.get("/campaigns")).await;
    assert_eq!(status, 403, "a client token may not");
}

#[tokio::test]
async fn a_campaign_window_holds_its_messages_until_it_opens() {
    // The delivery policy's window is always open; the campaign's own is not, now.
    let app = app("00:00-24:00".into()).await;
    customers(&app, 4).await;
    template(&app, "promo", "Halo {nama}").await;
    let id = make(
        &app,
        json!({"name": "Siang", "segment": {"filters": {}}, "send_window": window_excluding_now(),
               "steps": [{"variants": [{"template_key": "promo", "weight": 1}]}]}),
    )
    .await;
    act(&app, &id, "start").await;
    wait_until(WITHIN, async || {
        let stored = app
            .count("SELECT count(*) FROM messages WHERE kind = 'campaign'")
            .await;
        let parked = app
            .count("SELECT count(*) FROM apalis.jobs WHERE run_at = 'infinity'")
            .await;
        ready(stored == 4 && parked == 4, || {
            format!("{stored} stored, {parked} parked")
        })
    })
    .await;
    assert_eq!(
        app.gateway.calls().await,
        0,
        "nothing outside the campaign's window"
    );
    // Paused and resumed while its window is closed: still parked.
    assert_eq!(act(&app, &id, "pause").await.0, 200);
    assert_eq!(act(&app, &id, "resume").await.0, 200);
    assert_eq!(
        app.count("SELECT count(*) FROM apalis.jobs WHERE run_at = 'infinity'")
            .await,
        4
    );
    // The window opens (its hours now cover the clock): they go.
    sqlx::query("UPDATE campaigns SET send_window = '00:00-24:00'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let sent = app.gateway.wait_sent(4, WITHIN).await;
    assert_eq!(sent.len(), 4);
    wait_status(&app, &id, "finished").await;
}
