//! The fake Graph API and the webhook poster themselves: what they answer, note and sign, so
//! that a `cloud_api` test failing says something about the service, not about its fakes.

use std::time::Duration;

use bengkel_whatsapp::gateway::cloud_api::payload::{self, DeliveryStatus, Notification};
use serde_json::{Value, json};

use crate::helpers::{
    GraphAnswer, GraphApi, HookReceiver, StatusEvent, StatusPoster, inbound_text, sign, webhook,
};

const TOKEN: &str = "EAAG-test-access-token";

/// A send to `to` through the fake: status and body (JSON, or the text as a JSON string).
async fn send(graph: &GraphApi, to: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!(
            "{}/v25.0/106540352242922/messages",
            graph.base_url()
        ))
        .bearer_auth(TOKEN)
        .json(
            &json!({"messaging_product": "whatsapp", "to": to, "type": "text",
            "text": {"body": "Halo"}, "biz_opaque_callback_data": "m-1"}),
        )
        .send()
        .await
        .expect("the fake answers");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn the_fake_graph_api_answers_sends_with_fresh_wamids_and_notes_every_request() {
    let graph = GraphApi::start().await;
    let (s1, a1) = send(&graph, "6281234567890").await;
    let (s2, a2) = send(&graph, "6289876543210").await;
    assert_eq!((s1, s2), (200, 200), "{a1} {a2}");
    assert_eq!(a1["messaging_product"], "whatsapp");
    assert_eq!(a1["contacts"][0]["wa_id"], "6281234567890");
    let (w1, w2) = (
        a1["messages"][0]["id"].as_str().unwrap(),
        a2["messages"][0]["id"].as_str().unwrap(),
    );
    assert!(w1.starts_with("wamid."), "{w1}");
    assert_ne!(w1, w2);

    // Anything but a send is Graph's unknown path, and noted too.
    let other = reqwest::Client::new()
        .get(format!("{}/v25.0/me", graph.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 400);
    assert_eq!(other.json::<Value>().await.unwrap()["error"]["code"], 2500);

    let calls = graph.wait_for_calls(3, Duration::from_secs(2)).await;
    assert_eq!(graph.count(), 3);
    let first = &calls[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v25.0/106540352242922/messages");
    assert_eq!(first.authorization(), Some("Bearer EAAG-test-access-token"));
    assert_eq!(first.callback_data(), Some("m-1"));
    assert_eq!(first.json["text"]["body"], "Halo");
    assert_eq!(first.wamid.as_deref(), Some(w1));
    assert_eq!(first.answer, GraphAnswer::Ok);
    assert!(serde_json::from_slice::<Value>(&first.body).is_ok());
    assert_eq!(calls[2].path, "/v25.0/me");
    assert_eq!(calls[2].wamid, None);
    let to_second = graph.calls_to("6289876543210");
    assert_eq!(to_second.len(), 1);
    assert_eq!(to_second[0].wamid.as_deref(), Some(w2));
    assert!(calls[0].at <= calls[1].at);
}

#[tokio::test]
async fn the_fake_graph_api_answers_what_it_is_told() {
    let graph = GraphApi::start().await;
    let code = |v: &Value| v["error"]["code"].as_i64();

    // The next two calls: a Graph error; then success again.
    graph.answer_next(
        2,
        GraphAnswer::Error {
            status: 400,
            code: 131056,
        },
    );
    // One recipient: its own answer, ahead of the plan (which it does not use up).
    graph.answer_to(
        "6280000000190",
        GraphAnswer::Error {
            status: 401,
            code: 190,
        },
    );
    let (s, b) = send(&graph, "6280000000190").await;
    assert_eq!((s, code(&b)), (401, Some(190)), "{b}");
    for _ in 0..2 {
        let (s, b) = send(&graph, "6281234567890").await;
        assert_eq!((s, code(&b)), (400, Some(131056)), "{b}");
        assert_eq!(b["error"]["type"], "OAuthException");
    }
    assert_eq!(send(&graph, "6281234567890").await.0, 200);
    assert_eq!(send(&graph, "6280000000190").await.0, 401);
    graph.heal_to("6280000000190");
    assert_eq!(send(&graph, "6280000000190").await.0, 200);
    assert_eq!(graph.calls_to("6280000000190").len(), 3);

    graph.answer_next(1, GraphAnswer::ServerError(503));
    graph.answer_next(1, GraphAnswer::NotJson);
    let (s, b) = send(&graph, "6281234567890").await;
    assert_eq!((s, code(&b)), (503, Some(2)), "{b}");
    let (s, b) = send(&graph, "6281234567890").await;
    assert_eq!(s, 200);
    assert!(b.as_str().is_some_and(|t| t.contains("<html>")), "{b}");

    graph.always(Some(GraphAnswer::ServerError(500)));
    let (s, b) = send(&graph, "6281234567890").await;
    assert_eq!((s, code(&b)), (500, Some(1)), "{b}");
    graph.always(None);
    assert_eq!(send(&graph, "6281234567890").await.0, 200);
}

#[tokio::test]
async fn a_hanging_fake_graph_api_times_the_client_out_and_still_notes_the_call() {
    let graph = GraphApi::start().await;
    graph.answer_next(1, GraphAnswer::Hang);
    graph.answer_next(1, GraphAnswer::Late(Duration::from_secs(2)));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let url = format!("{}/v25.0/1/messages", graph.base_url());
    for _ in 0..2 {
        let err = client
            .post(&url)
            .json(&json!({"messaging_product": "whatsapp", "to": "6281234567890"}))
            .send()
            .await
            .expect_err("no answer in time");
        assert!(err.is_timeout(), "{err}");
    }
    let calls = graph.wait_for_calls(2, Duration::from_secs(2)).await;
    assert_eq!(calls[0].answer, GraphAnswer::Hang);
    assert_eq!(calls[0].wamid, None);
    // A late answer is a success that came too late: the message went out.
    assert!(calls[1].wamid.is_some());
    // The hung calls hold no one else up.
    assert_eq!(send(&graph, "6281234567890").await.0, 200);
}

#[tokio::test]
async fn the_status_poster_signs_its_webhooks_as_meta_does() {
    let secret = "app-secret-of-the-test";
    let receiver = HookReceiver::start(secret).await;
    let poster = StatusPoster::new(&receiver.url, secret, "106540352242922");
    let sent = StatusEvent::new("wamid.7", "sent")
        .callback("m-7")
        .at(1_750_000_000)
        .recipient("6289876543210");
    let failed = StatusEvent::new("wamid.7", "failed").error(131026);
    assert_eq!(poster.statuses(&[sent, failed]).await, 200);
    assert_eq!(
        poster
            .messages(&[inbound_text("6289876543210", "wamid.IN1", "STOP")])
            .await,
        200
    );
    let hooks = receiver.wait_for(2, Duration::from_secs(2)).await;
    assert!(hooks.iter().all(|h| h.signed && h.answered == 200));
    // The service's own reading agrees: its verify, its types.
    for hook in &hooks {
        let header = hook.headers.get("x-hub-signature-256").unwrap();
        assert!(payload::verify(
            secret.as_bytes(),
            &hook.body,
            header.to_str().ok()
        ));
    }
    let statuses: Notification = serde_json::from_slice(&hooks[0].body).unwrap();
    let value = &statuses.entry[0].changes[0].value;
    assert_eq!(
        value.metadata.as_ref().unwrap().phone_number_id.as_deref(),
        Some("106540352242922")
    );
    assert_eq!(value.statuses[0].status, DeliveryStatus::Sent);
    assert_eq!(value.statuses[0].timestamp.as_deref(), Some("1750000000"));
    assert_eq!(
        value.statuses[0].recipient_id.as_deref(),
        Some("6289876543210")
    );
    assert_eq!(
        value.statuses[0].biz_opaque_callback_data.as_deref(),
        Some("m-7")
    );
    assert_eq!(value.statuses[1].errors[0].code, Some(131026));
    assert_eq!(hooks[0].status()["id"], "wamid.7");
    let inbound: Notification = serde_json::from_slice(&hooks[1].body).unwrap();
    let value = &inbound.entry[0].changes[0].value;
    assert_eq!(value.messages[0].body(), Some("STOP"));
    assert_eq!(value.contacts[0].wa_id.as_deref(), Some("6289876543210"));

    // Exact bytes: tampered, unsigned, and signed as they are (spacing kept).
    let body = serde_json::to_vec(&webhook(
        "106540352242922",
        &[StatusEvent::new("wamid.8", "read").json()],
        &[],
    ))
    .unwrap();
    let good = sign(secret, &body);
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    assert_eq!(poster.raw(&tampered, Some(&good)).await, 401);
    assert_eq!(poster.raw(&body, None).await, 401);
    let spaced = b"{ \"object\" : \"whatsapp_business_account\", \"entry\": [] }";
    assert_eq!(poster.raw(spaced, Some(&sign(secret, spaced))).await, 200);
    receiver.then(&[503]);
    assert_eq!(
        poster
            .post(&json!({"object": "whatsapp_business_account"}))
            .await,
        503
    );
    let hooks = receiver.wait_for(6, Duration::from_secs(2)).await;
    assert_eq!(hooks[4].body, spaced);
    assert_eq!(
        hooks.iter().map(|h| h.answered).collect::<Vec<_>>(),
        [200, 200, 401, 401, 200, 503]
    );
    assert!(hooks[2].at <= hooks[5].at);
}
