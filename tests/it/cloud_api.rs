//! `GATEWAY=cloud_api` against a fake Graph API over HTTP (SPEC §13): what a send looks like,
//! what each error code does, signed status webhooks as receipts, and inbound keywords.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    GraphAnswer, GraphApi, Options, Receiver, StatusEvent, StatusPoster, TestApp, id_of,
    inbound_text, ops_get, ops_post, ready, sign, wait_until, wrote_just_now,
};

const NUMBER_ID: &str = "106540352242922";
const TOKEN: &str = "EAAG-test-token";
const APP_SECRET: &str = "app-secret-for-tests";
const VERIFY: &str = "verify-me";
const WITHIN: Duration = Duration::from_secs(20);

async fn cloud_app(graph: &GraphApi, extra: &[(&'static str, &str)]) -> TestApp {
    let mut env: Vec<(&'static str, String)> = vec![
        ("GATEWAY", "cloud_api".into()),
        ("CLOUD_API_ACCESS_TOKEN", TOKEN.into()),
        ("CLOUD_API_PHONE_NUMBER_ID", NUMBER_ID.into()),
        ("CLOUD_API_APP_SECRET", APP_SECRET.into()),
        ("CLOUD_API_VERIFY_TOKEN", VERIFY.into()),
        ("CLOUD_API_BASE_URL", graph.base_url()),
        ("CLOUD_API_TIMEOUT_SECS", "2".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    TestApp::spawn_with(Options {
        env,
        ..Options::default()
    })
    .await
}

fn poster(app: &TestApp) -> StatusPoster {
    StatusPoster::new(
        &format!("{}/inbound/cloud-api", app.base),
        APP_SECRET,
        NUMBER_ID,
    )
}

async fn sent(app: &TestApp, to: &str, body: &str) -> Value {
    let (status, reply) = app.send(json!({"to": to, "body": body})).await;
    assert_eq!(status, 202, "{reply}");
    app.wait_for_status(&id_of(&reply), "sent", WITHIN).await
}

#[tokio::test]
async fn a_text_goes_to_the_graph_api_with_its_version_number_and_token_and_keeps_its_wamid() {
    let graph = GraphApi::start().await;
    let app = cloud_app(&graph, &[]).await;
    wrote_just_now(&app, &["6281234567890"]).await;
    let message = sent(&app, "0812 3456 7890", "Kendaraan Anda sudah selesai 🚗").await;
    let calls = graph.requests();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.path, format!("/v25.0/{NUMBER_ID}/messages"));
    assert_eq!(
        call.authorization(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        call.json,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual",
               "to": "6281234567890", "type": "text",
               "biz_opaque_callback_data": message["id"],
               "text": {"preview_url": false, "body": "Kendaraan Anda sudah selesai 🚗"}})
    );
    assert_eq!(
        message["gateway_message_id"].as_str(),
        call.wamid.as_deref()
    );
}

#[tokio::test]
async fn a_document_and_an_image_go_with_their_link_caption_and_file_name() {
    let graph = GraphApi::start().await;
    let app = cloud_app(&graph, &[]).await;
    wrote_just_now(&app, &["6281234567891"]).await;
    for file in [
        "https://files.example.com/nota/INV-77.pdf",
        "https://files.example.com/foto/mobil.JPG",
    ] {
        let (status, reply) = app
            .send(json!({"to": "6281234567891", "body": "Nota servis 🚗", "file": file}))
            .await;
        assert_eq!(status, 202, "{reply}");
        app.wait_for_status(&id_of(&reply), "sent", WITHIN).await;
    }
    let calls = graph.wait_for_calls(2, WITHIN).await;
    assert_eq!(calls[0].json["type"], "document");
    assert_eq!(
        calls[0].json["document"],
        json!({"link": "https://files.example.com/nota/INV-77.pdf",
               "caption": "Nota servis 🚗", "filename": "INV-77.pdf"})
    );
    assert_eq!(calls[1].json["type"], "image");
    assert_eq!(
        calls[1].json["image"],
        json!({"link": "https://files.example.com/foto/mobil.JPG", "caption": "Nota servis 🚗"})
    );
}

#[tokio::test]
async fn each_error_code_has_its_treatment() {
    let graph = GraphApi::start().await;
    let app = cloud_app(
        &graph,
        &[("SEND_RATE_PER_SECOND", "10"), ("SEND_BURST", "5")],
    )
    .await;
    wrote_just_now(
        &app,
        &[
            "6281100000001",
            "6281100000002",
            "6281100000003",
            "6281100000004",
            "6281100000005",
        ],
    )
    .await;

    // 131026 (undeliverable) and 131047 (24-hour window): failed after one call.
    for (to, code) in [("6281100000001", 131026), ("6281100000002", 131047)] {
        graph.answer_to(to, GraphAnswer::Error { status: 400, code });
        let (_, reply) = app.send(json!({"to": to, "body": "x"})).await;
        let m = app.wait_for_status(&id_of(&reply), "failed", WITHIN).await;
        assert_eq!(graph.calls_to(to).len(), 1, "{code}: one call");
        assert!(
            m["last_error"]
                .as_str()
                .unwrap()
                .contains(&code.to_string()),
            "{m}"
        );
    }

    // 131056 (pair limit): only that recipient waits, no attempt spent; another goes on.
    graph.answer_to(
        "6281100000003",
        GraphAnswer::Error {
            status: 400,
            code: 131056,
        },
    );
    let (_, held) = app.send(json!({"to": "6281100000003", "body": "x"})).await;
    sent(&app, "6281100000004", "others go on").await;
    let m = wait_until(WITHIN, async || {
        let m = app.message(&id_of(&held)).await;
        ready(m["held_reason"] == "pair_limit", || m.to_string()).map(|_| m)
    })
    .await;
    assert_eq!(m["attempts"], 0, "no attempt spent: {m}");
    let held_for = chrono::DateTime::parse_from_rfc3339(m["held_until"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
        - chrono::Utc::now();
    assert!(held_for.num_seconds() >= 50, "held ≥ 60 s: {m}");

    // 130429 (throughput): no attempt spent, the rate halved.
    graph.answer_next(
        1,
        GraphAnswer::Error {
            status: 400,
            code: 130429,
        },
    );
    let (_, limited) = app.send(json!({"to": "6281100000005", "body": "x"})).await;
    let m = wait_until(WITHIN, async || {
        let m = app.message(&id_of(&limited)).await;
        ready(
            m["held_reason"] == "rate_limit" || m["status"] == "sent",
            || m.to_string(),
        )
        .map(|_| m)
    })
    .await;
    assert_eq!(m["attempts"], 0, "{m}");
    let sender = ops_get(&app, "/ops/sender").await;
    assert_eq!(sender["rate_effective"], 5.0, "{sender}");
}

#[tokio::test]
async fn an_invalid_token_pauses_the_queue_and_fails_nothing() {
    let graph = GraphApi::start().await;
    let app = cloud_app(&graph, &[]).await;
    wrote_just_now(&app, &["6281100000009"]).await;
    graph.always(Some(GraphAnswer::Error {
        status: 401,
        code: 190,
    }));
    let (_, reply) = app.send(json!({"to": "6281100000009", "body": "x"})).await;
    let queue = wait_until(WITHIN, async || {
        let queues = ops_get(&app, "/ops/queues").await;
        let send = queues
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queue"] == "whatsapp-send")
            .cloned()
            .unwrap();
        ready(send["paused"] == true, || send.to_string()).map(|_| send)
    })
    .await;
    assert_eq!(queue["paused_reason"], "access token invalid");
    // The pause is written before the run's outcome: wait for the message to be back.
    let m = wait_until(WITHIN, async || {
        let m = app.message(&id_of(&reply)).await;
        ready(m["status"] == "queued", || m.to_string()).map(|_| m)
    })
    .await;
    assert_eq!(m["attempts"], 0, "{m}");
    assert_eq!(graph.count(), 1, "one call, nothing failed");
}

#[tokio::test]
async fn signed_statuses_in_any_order_and_twice_end_read_once() {
    let graph = GraphApi::start().await;
    let app = cloud_app(&graph, &[("WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let receiver = Receiver::start().await;
    let (status, sub) = ops_post(
        &app,
        "/webhooks",
        Some(json!({"url": receiver.url, "events": ["message.delivered", "message.read"]})),
    )
    .await;
    assert_eq!(status, 201, "{sub}");
    receiver.trust(sub["data"]["secret"].as_str().unwrap());
    wrote_just_now(&app, &["6281200000001", "6281200000003"]).await;
    let m = sent(&app, "6281200000001", "servis").await;
    let wamid = m["gateway_message_id"].as_str().unwrap().to_owned();
    let t = chrono::Utc::now().timestamp();
    let read = StatusEvent::new(&wamid, "read").at(t + 20);
    let delivered = StatusEvent::new(&wamid, "delivered").at(t + 10);
    let hooks = poster(&app);
    // read before delivered, then both again; an inbound text with an emoji rides along.
    let body = crate::helpers::webhook(
        NUMBER_ID,
        &[read.json(), delivered.json()],
        &[inbound_text(
            "6281200000001",
            "wamid.in.1",
            "terima kasih 🙏",
        )],
    );
    assert_eq!(hooks.post(&body).await, 200);
    assert_eq!(
        hooks.statuses(&[delivered.clone(), read.clone()]).await,
        200
    );
    let m = wait_until(WITHIN, async || {
        let m = app.message(m["id"].as_str().unwrap()).await;
        ready(m["delivery_status"] == "read", || m.to_string()).map(|_| m)
    })
    .await;
    assert!(
        m["delivered_at"].is_string() && m["read_at"].is_string(),
        "{m}"
    );
    let rows = app
        .count("SELECT count(*) FROM cloud_api_statuses WHERE status IN ('read', 'delivered')")
        .await;
    assert_eq!(rows, 2, "each (wamid, status) once");

    // `read` without `delivered`, twice: read, with both times.
    let only_read = sent(&app, "6281200000003", "servis").await;
    let only_read_id = only_read["id"].as_str().unwrap();
    let wamid = only_read["gateway_message_id"].as_str().unwrap();
    let read_only = StatusEvent::new(wamid, "read").at(t + 30);
    assert_eq!(hooks.statuses(&[read_only.clone(), read_only]).await, 200);
    let only_read = wait_until(WITHIN, async || {
        let m = app.message(only_read_id).await;
        ready(m["delivery_status"] == "read", || m.to_string()).map(|_| m)
    })
    .await;
    assert!(
        only_read["delivered_at"].is_string() && only_read["read_at"].is_string(),
        "{only_read}"
    );

    // Exactly one `message.read` per message, verified by the Standard Webhooks library: the
    // first has `message.delivered` before it, the second has its delivery implied by the read.
    let got = receiver.wait_for(4, WITHIN).await;
    assert!(got.iter().all(|r| r.verified()), "{got:?}");
    let events = |id: &str, kind: &str| {
        got.iter()
            .filter(|r| r.event_type() == kind && r.json["data"]["message_id"] == id)
            .count()
    };
    for id in [m["id"].as_str().unwrap(), only_read_id] {
        assert_eq!(events(id, "message.read"), 1, "{id}: {got:?}");
    }
    assert_eq!(events(m["id"].as_str().unwrap(), "message.delivered"), 1);
    wait_until(WITHIN, async || {
        let open = app
            .count("SELECT count(*) FROM inbound_payloads WHERE processed_at IS NULL")
            .await;
        ready(open == 0, || open.to_string())
    })
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM webhook_events WHERE type = 'message.read'")
            .await,
        2,
        "no second read event was written"
    );

    // One changed byte: 401, nothing stored.
    let payloads = app.count("SELECT count(*) FROM inbound_payloads").await;
    let bytes = serde_json::to_vec(&body).unwrap();
    let signature = sign(APP_SECRET, &bytes);
    let mut tampered = bytes.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    assert_eq!(hooks.raw(&tampered, Some(&signature)).await, 401);
    assert_eq!(hooks.raw(&bytes, None).await, 401);
    assert_eq!(
        app.count("SELECT count(*) FROM inbound_payloads").await,
        payloads
    );
}

#[tokio::test]
async fn a_status_before_the_message_is_known_waits_for_it() {
    let graph = GraphApi::start().await;
    let app = cloud_app(&graph, &[]).await;
    // A status for a wamid no message has yet (it beat our own commit).
    let hooks = poster(&app);
    assert_eq!(
        hooks
            .statuses(&[StatusEvent::new("wamid.early", "delivered")])
            .await,
        200
    );
    wrote_just_now(&app, &["6281200000002"]).await;
    let m = sent(&app, "6281200000002", "servis").await;
    sqlx::query("UPDATE messages SET gateway_message_id = 'wamid.early' WHERE id = $1::uuid")
        .bind(m["id"].as_str().unwrap())
        .execute(&app.db.pool)
        .await
        .unwrap();
    let m = wait_until(Duration::from_secs(40), async || {
        let m = app.message(m["id"].as_str().unwrap()).await;
        ready(m["delivery_status"] == "delivered", || m.to_string()).map(|_| m)
    })
    .await;
    assert!(m["delivered_at"].is_string());
}

#[tokio::test]
async fn berhenti_through_the_cloud_api_opts_the_number_out_and_the_subscription_check_answers() {
    let graph = GraphApi::start().await;
    let app = cloud_app(&graph, &[]).await;
    let hooks = poster(&app);
    assert_eq!(
        hooks
            .messages(&[inbound_text("6281300000001", "wamid.in.stop", " Berhenti ")])
            .await,
        200
    );
    let entry = wait_until(WITHIN, async || {
        let list = ops_get(&app, "/suppressions?phone=6281300000001").await;
        let first = list["items"][0].clone();
        ready(first.is_object(), || list.to_string()).map(|_| first)
    })
    .await;
    assert_eq!(entry["source"], "inbound");
    assert_eq!(entry["scope"], "all");
    // Another number id's notification is ignored.
    let other = StatusPoster::new(&hooks.url, APP_SECRET, "999");
    assert_eq!(
        other
            .messages(&[inbound_text("6281300000002", "wamid.in.x", "STOP")])
            .await,
        200
    );

    let verify = |token: &str| {
        app.http.get(format!(
            "{}/inbound/cloud-api?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444",
            app.base
        ))
    };
    let ok = verify(VERIFY).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    assert_eq!(verify("wrong").send().await.unwrap().status(), 403);
    // The other number's STOP changed nothing.
    wait_until(WITHIN, async || {
        let n = app
            .count("SELECT count(*) FROM inbound_payloads WHERE processed_at IS NOT NULL")
            .await;
        ready(n == 2, || n.to_string())
    })
    .await;
    let list = ops_get(&app, "/suppressions?phone=6281300000002").await;
    assert_eq!(list["items"], json!([]));
}

/// The first call times out after it went out. The message's status webhook (its callback data
/// is the message id) arrives while the next run waits for it: sent, with no second call.
#[tokio::test]
async fn an_ambiguous_send_is_settled_by_its_status_and_not_sent_twice() {
    let graph = GraphApi::start().await;
    let app = cloud_app(
        &graph,
        &[
            ("CLOUD_API_TIMEOUT_SECS", "1"),
            ("AMBIGUOUS_RECEIPT_WAIT_SECS", "30"),
        ],
    )
    .await;
    graph.answer_next(1, GraphAnswer::Late(Duration::from_secs(3)));
    wrote_just_now(&app, &["6281400000001"]).await;
    let (_, reply) = app.send(json!({"to": "6281400000001", "body": "x"})).await;
    let id = id_of(&reply);
    let call = graph.wait_for_calls(1, WITHIN).await.remove(0);
    assert_eq!(call.callback_data(), Some(id.as_str()));
    // The attempt ended ambiguous (timed out after sending).
    wait_until(WITHIN, async || {
        let m = app.message(&id).await;
        ready(m["status"] == "retrying", || m.to_string())
    })
    .await;
    let status = StatusEvent::new("wamid.late", "sent").callback(&id);
    assert_eq!(poster(&app).statuses(&[status]).await, 200);
    let m = app.wait_for_status(&id, "sent", WITHIN).await;
    assert_eq!(graph.count(), 1, "not called again");
    assert_eq!(m["gateway_message_id"], "wamid.late");
    assert_eq!(
        app.outcomes(&id).await.last().map(String::as_str),
        Some("sent")
    );
    let class: String = sqlx::query_scalar(
        "SELECT class FROM message_attempts WHERE message_id = $1::uuid ORDER BY attempt DESC LIMIT 1",
    )
    .bind(&id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(class, "receipt");
}

/// Without a status within `AMBIGUOUS_RECEIPT_WAIT_SECS`, the message is sent again.
#[tokio::test]
async fn an_ambiguous_send_without_a_status_is_sent_again_after_the_wait() {
    let graph = GraphApi::start().await;
    let app = cloud_app(
        &graph,
        &[
            ("CLOUD_API_TIMEOUT_SECS", "1"),
            ("AMBIGUOUS_RECEIPT_WAIT_SECS", "2"),
        ],
    )
    .await;
    graph.answer_next(1, GraphAnswer::Late(Duration::from_secs(3)));
    wrote_just_now(&app, &["6281400000002"]).await;
    let (_, reply) = app.send(json!({"to": "6281400000002", "body": "x"})).await;
    let m = app.wait_for_status(&id_of(&reply), "sent", WITHIN).await;
    assert_eq!(graph.count(), 2, "sent again: {m}");
}

/// A templated send to a number that has not written in 24 hours goes as the mapped Meta
/// template, its parameters in the mapping's order, in the recipient's language; once the
/// number has written, the same send goes as text.
#[tokio::test]
async fn a_template_goes_as_its_mapped_meta_template_outside_the_window_and_as_text_inside() {
    let graph = GraphApi::start().await;
    let app = cloud_app(&graph, &[]).await;
    let put = |path: &'static str, body: Value| {
        crate::helpers::ops_call(&app, reqwest::Method::PUT, path, Some(body))
    };
    let (status, body) = put(
        "/templates/servis_selesai",
        json!({"body": "Halo {nama}, kendaraan {no_pol} sudah selesai"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = put(
        "/templates/servis_selesai",
        json!({"body": "Hello {nama}, your {no_pol} is ready", "language": "en"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = put(
        "/templates/servis_selesai/cloud-api",
        json!({"name": "service_done", "languages": {"id": "id", "en": "en_US"},
               "params": ["no_pol", "nama"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let to = "6281500000001";
    let send = json!({"to": to, "template": {"key": "servis_selesai",
        "values": {"nama": "Budi", "no_pol": "B 1234 XY"}, "language": "en"}});
    let (status, reply) = app.send(send.clone()).await;
    assert_eq!(status, 202, "{reply}");
    app.wait_for_status(&id_of(&reply), "sent", WITHIN).await;
    let call = graph.wait_for_calls(1, WITHIN).await.remove(0);
    assert_eq!(call.json["type"], "template", "{}", call.json);
    assert_eq!(
        call.json["template"],
        json!({"name": "service_done", "language": {"code": "en_US"},
               "components": [{"type": "body", "parameters": [
                   {"type": "text", "text": "B 1234 XY"}, {"type": "text", "text": "Budi"}]}]})
    );

    // The customer writes: within 24 hours the same send is text.
    assert_eq!(
        poster(&app)
            .messages(&[inbound_text(to, "wamid.in.hi", "halo")])
            .await,
        200
    );
    wait_until(WITHIN, async || {
        let n = app
            .count("SELECT count(*) FROM whatsapp_contacts WHERE last_inbound_at IS NOT NULL")
            .await;
        ready(n == 1, || n.to_string())
    })
    .await;
    let (_, reply) = app.send(send).await;
    app.wait_for_status(&id_of(&reply), "sent", WITHIN).await;
    let calls = graph.wait_for_calls(2, WITHIN).await;
    assert_eq!(calls[1].json["type"], "text");
    assert_eq!(
        calls[1].json["text"]["body"],
        "Hello Budi, your B 1234 XY is ready"
    );

    // A template error flags the mapping.
    graph.answer_next(
        1,
        GraphAnswer::Error {
            status: 404,
            code: 132001,
        },
    );
    let (_, reply) = app
        .send(
            json!({"to": "6281500000002", "template": {"key": "servis_selesai",
            "values": {"nama": "Sari", "no_pol": "D 1 A"}}}),
        )
        .await;
    app.wait_for_status(&id_of(&reply), "failed", WITHIN).await;
    let (_, template) = app.call(app.get("/templates/servis_selesai")).await;
    assert_eq!(template["data"]["cloud_api"]["flagged"]["code"], 132001);
}
