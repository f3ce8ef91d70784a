//! The Cloud API sandbox (SPEC §13): its router served on 127.0.0.1 over the test app's database,
//! posting its status webhooks to a receiver that checks their signatures itself (`hmac` in the
//! test helpers, not the service's `verify`).

use std::{sync::Arc, time::Duration};

use bengkel_whatsapp::{
    config::Secret,
    gateway::cloud_api::sandbox::{self, CloudSandbox},
};
use serde_json::{Value, json};

use crate::helpers::{HookReceiver, Options, TestApp, ops_token, ready, wait_until};

const APP_SECRET: &str = "sandbox-app-secret";
const PHONE_NUMBER_ID: &str = "109876543210";
const KEY: &str = "sandbox-key-of-this-process";

struct Sandbox {
    /// In sandbox mode, so that it serves the listing.
    app: TestApp,
    /// `CLOUD_API_BASE_URL` of a client of the sandbox.
    base: String,
    hooks: HookReceiver,
}

impl Sandbox {
    async fn start(status_delay: Duration) -> Self {
        let app = TestApp::spawn_with(Options {
            env: vec![("STARSENDER_API_KEY", String::new())],
            ..Options::default()
        })
        .await;
        let hooks = HookReceiver::start(APP_SECRET).await;
        let cloud = Arc::new(CloudSandbox {
            inbound_url: hooks.url.clone(),
            app_secret: Secret::new(APP_SECRET),
            phone_number_id: PHONE_NUMBER_ID.to_owned(),
            key: Secret::new(KEY),
            status_delay,
        });
        let router = sandbox::router(cloud)
            .expect("the sandbox's router")
            .with_state(app.state());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            base: format!("http://127.0.0.1:{port}{}", sandbox::BASE_PATH),
            app,
            hooks,
        }
    }

    /// A send with `auth` as the `Authorization` header: status and JSON answer.
    async fn send_as(
        &self,
        auth: Option<&str>,
        phone_number_id: &str,
        body: &Value,
    ) -> (u16, Value) {
        let mut req = self
            .app
            .http
            .post(format!("{}/v25.0/{phone_number_id}/messages", self.base))
            .json(body);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let res = req.send().await.expect("the sandbox answers");
        let status = res.status().as_u16();
        (status, res.json().await.expect("a JSON answer"))
    }

    async fn send(&self, body: &Value) -> (u16, Value) {
        self.send_as(Some(&format!("Bearer {KEY}")), PHONE_NUMBER_ID, body)
            .await
    }
}

fn text(to: &str, body: &str) -> Value {
    json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
        "type": "text", "text": {"preview_url": false, "body": body}})
}

fn wamid(answer: &Value) -> String {
    answer["messages"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no wamid in {answer}"))
        .to_owned()
}

#[tokio::test]
async fn the_cloud_sandbox_answers_a_send_with_a_wamid_then_posts_signed_sent_delivered_read() {
    let delay = Duration::from_millis(150);
    let sandbox = Sandbox::start(delay).await;
    let mut body = text("6281234567890", "Kendaraan Anda sudah selesai diservis");
    body["biz_opaque_callback_data"] = json!("0190f3c2-message-id");
    let before = chrono::Utc::now().timestamp();
    let answered_at = std::time::Instant::now();
    let (status, answer) = sandbox.send(&body).await;
    assert_eq!(status, 200, "{answer}");
    let wamid = wamid(&answer);
    assert!(wamid.starts_with("wamid."), "{wamid}");
    assert_eq!(answer["messaging_product"], "whatsapp");
    assert_eq!(
        answer["contacts"],
        json!([{"input": "6281234567890", "wa_id": "6281234567890"}])
    );

    let hooks = sandbox.hooks.wait_for(3, Duration::from_secs(5)).await;
    let statuses: Vec<&str> = hooks
        .iter()
        .map(|h| h.status()["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(statuses, ["sent", "delivered", "read"]);
    let mut previous = answered_at;
    for hook in &hooks {
        assert!(hook.signed, "bad signature: {:?}", hook.headers);
        assert_eq!(
            hook.headers["content-type"], "application/json",
            "{:?}",
            hook.headers
        );
        let v = &hook.json;
        assert_eq!(v["object"], "whatsapp_business_account");
        let change = &v["entry"][0]["changes"][0];
        assert_eq!(change["field"], "messages");
        assert_eq!(change["value"]["messaging_product"], "whatsapp");
        assert_eq!(
            change["value"]["metadata"]["phone_number_id"],
            PHONE_NUMBER_ID
        );
        let s = hook.status();
        assert_eq!(s["id"], wamid.as_str());
        assert_eq!(s["recipient_id"], "6281234567890");
        assert_eq!(s["biz_opaque_callback_data"], "0190f3c2-message-id");
        let ts: i64 = s["timestamp"].as_str().expect("a string").parse().unwrap();
        assert!(ts >= before && ts <= chrono::Utc::now().timestamp(), "{ts}");
        // Each after the delay (the first after the answer).
        assert!(
            hook.at.duration_since(previous) >= delay,
            "{:?}",
            hook.at - previous
        );
        previous = hook.at;
    }
}

#[tokio::test]
async fn the_cloud_sandbox_takes_only_its_own_key_as_the_access_token() {
    let sandbox = Sandbox::start(Duration::from_secs(60)).await;
    let body = text("6281234567890", "Halo");
    for auth in [
        None,
        Some("Bearer wrong-key".to_owned()),
        Some(KEY.to_owned()),
        Some(format!("Bearer {KEY}x")),
        Some(format!("Basic {KEY}")),
    ] {
        let (status, answer) = sandbox
            .send_as(auth.as_deref(), PHONE_NUMBER_ID, &body)
            .await;
        assert_eq!(status, 401, "{auth:?}: {answer}");
        assert_eq!(answer["error"]["code"], 190, "{answer}");
        assert_eq!(answer["error"]["type"], "OAuthException", "{answer}");
    }
    let (status, answer) = sandbox
        .send_as(Some(&format!("bearer {KEY}")), PHONE_NUMBER_ID, &body)
        .await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn a_phone_number_id_that_is_not_the_sandboxs_does_not_exist() {
    let sandbox = Sandbox::start(Duration::from_secs(60)).await;
    let (status, answer) = sandbox
        .send_as(
            Some(&format!("Bearer {KEY}")),
            "1111",
            &text("6281234567890", "Halo"),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], 100);
    assert_eq!(answer["error"]["error_subcode"], 33);
}

#[tokio::test]
async fn the_cloud_sandbox_refuses_what_graph_refuses_and_takes_each_kind_it_knows() {
    let sandbox = Sandbox::start(Duration::from_secs(60)).await;
    let base = |to: &str, kind: &str, object: Value| {
        let mut v = json!({"messaging_product": "whatsapp", "to": to, "type": kind});
        v[kind] = object;
        v
    };
    let to = "6281234567890";
    let long_caption = "c".repeat(1025);
    let mut no_product = text(to, "x");
    no_product
        .as_object_mut()
        .unwrap()
        .remove("messaging_product");
    let mut long_callback = text(to, "x");
    long_callback["biz_opaque_callback_data"] = json!("d".repeat(513));
    let refused = [
        ("not an object", json!(["x"])),
        ("no messaging_product", no_product),
        ("another product", {
            let mut v = text(to, "x");
            v["messaging_product"] = json!("instagram");
            v
        }),
        (
            "no to",
            json!({"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}}),
        ),
        ("to with a plus", text("+6281234567890", "x")),
        ("to with letters", text("62812abc", "x")),
        ("unknown type", base(to, "sticker", json!({"id": "1"}))),
        (
            "type without its object",
            json!({"messaging_product": "whatsapp", "to": to, "type": "text"}),
        ),
        ("empty text", text(to, "  ")),
        ("text over 4096", text(to, &"é".repeat(4097))),
        (
            "document without link or id",
            base(to, "document", json!({"caption": "c"})),
        ),
        (
            "document link not a URL",
            base(to, "document", json!({"link": "invoice.pdf"})),
        ),
        (
            "image caption over 1024",
            base(
                to,
                "image",
                json!({"link": "https://x.test/a.jpg", "caption": long_caption}),
            ),
        ),
        (
            "template without name",
            base(to, "template", json!({"language": {"code": "id"}})),
        ),
        (
            "template without language",
            base(to, "template", json!({"name": "servis"})),
        ),
        (
            "template text parameter without text",
            base(
                to,
                "template",
                json!({"name": "servis", "language": {"code": "id"},
            "components": [{"type": "body", "parameters": [{"type": "text"}]}]}),
            ),
        ),
        ("callback data over 512", long_callback),
    ];
    for (why, body) in refused {
        let (status, answer) = sandbox.send(&body).await;
        assert_eq!(status, 400, "{why}: {answer}");
        assert_eq!(answer["error"]["code"], 100, "{why}: {answer}");
        assert_eq!(
            answer["error"]["message"], "(#100) Invalid parameter",
            "{why}"
        );
        assert!(
            answer["error"]["error_data"]["details"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{why}: {answer}"
        );
        assert!(answer["error"]["fbtrace_id"].is_string(), "{why}");
    }
    let taken = [
        text(to, &"é".repeat(4096)),
        json!({"messaging_product": "whatsapp", "to": to, "text": {"body": "no type: text"}}),
        base(
            to,
            "document",
            json!({"link": "https://x.test/invoice.pdf", "caption": "c".repeat(1024), "filename": "invoice.pdf"}),
        ),
        base(
            to,
            "image",
            json!({"link": "https://x.test/a.jpg", "caption": "Foto"}),
        ),
        base(
            to,
            "template",
            json!({"name": "servis_reminder", "language": {"code": "id"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "Budi"}]}]}),
        ),
    ];
    for body in taken {
        let (status, answer) = sandbox.send(&body).await;
        assert_eq!(status, 200, "{body}: {answer}");
    }
    assert_eq!(
        sandbox
            .app
            .count("SELECT count(*) FROM sandbox_messages")
            .await,
        5,
        "only what was taken is kept"
    );
}

#[tokio::test]
async fn a_trial_number_gets_its_error_at_once_or_as_a_failed_status() {
    let sandbox = Sandbox::start(Duration::from_millis(20)).await;
    // Throughput: refused at once, nothing kept, no webhook.
    let (status, answer) = sandbox.send(&text("628121304290000", "x")).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], 130429);
    let (status, answer) = sandbox.send(&text("62812131900000", "x")).await;
    assert_eq!(
        (status, answer["error"]["code"].as_i64()),
        (401, Some(190)),
        "{answer}"
    );
    // Undeliverable: taken, then one `failed` status with the code.
    let mut body = text("628121310260000", "x");
    body["biz_opaque_callback_data"] = json!("m-9");
    let (status, answer) = sandbox.send(&body).await;
    assert_eq!(status, 200, "{answer}");
    let hooks = sandbox.hooks.wait_for(1, Duration::from_secs(5)).await;
    let s = hooks[0].status();
    assert!(hooks[0].signed);
    assert_eq!(s["status"], "failed");
    assert_eq!(s["id"], wamid(&answer).as_str());
    assert_eq!(s["biz_opaque_callback_data"], "m-9");
    assert_eq!(s["errors"][0]["code"], 131026);
    assert!(s["errors"][0]["title"].is_string());
    // Nothing follows it: a message taken after it gets all three of its statuses (the last
    // three status delays after it), and the undeliverable one still has only its `failed`.
    let (status, later) = sandbox.send(&text("6281234567890", "y")).await;
    assert_eq!(status, 200, "{later}");
    let later = wamid(&later);
    wait_until(Duration::from_secs(5), async || {
        let hooks = sandbox.hooks.received();
        let read = hooks
            .iter()
            .any(|h| h.status()["id"] == later.as_str() && h.status()["status"] == "read");
        ready(read, || format!("{} hooks", hooks.len()))
    })
    .await;
    let undeliverable = sandbox
        .hooks
        .received()
        .iter()
        .filter(|h| h.status()["id"] == s["id"])
        .count();
    assert_eq!(undeliverable, 1);
    assert_eq!(
        sandbox
            .app
            .count("SELECT count(*) FROM sandbox_messages")
            .await,
        2
    );
}

#[tokio::test]
async fn a_status_webhook_the_service_refuses_is_dropped_and_the_next_still_goes() {
    let sandbox = Sandbox::start(Duration::from_millis(20)).await;
    sandbox.hooks.then(&[500]);
    let (status, _) = sandbox.send(&text("6281234567890", "x")).await;
    assert_eq!(status, 200);
    let hooks = sandbox.hooks.wait_for(3, Duration::from_secs(5)).await;
    let seen: Vec<(String, u16)> = hooks
        .iter()
        .map(|h| {
            (
                h.status()["status"].as_str().unwrap().to_owned(),
                h.answered,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("sent".to_owned(), 500),
            ("delivered".to_owned(), 200),
            ("read".to_owned(), 200)
        ]
    );
}

#[tokio::test]
async fn what_the_cloud_sandbox_took_is_listed_with_its_wamid_and_not_as_starsenders() {
    let sandbox = Sandbox::start(Duration::from_secs(60)).await;
    let mut first = text("6281111111111", "pertama");
    first["biz_opaque_callback_data"] = json!("m-1");
    let (_, a1) = sandbox.send(&first).await;
    let image = json!({"messaging_product": "whatsapp", "to": "6282222222222", "type": "image",
        "image": {"link": "https://x.test/a.jpg"}});
    let (_, a2) = sandbox.send(&image).await;
    let app = &sandbox.app;

    let (status, listed) = app.call(app.get(sandbox::LIST_PATH)).await;
    assert_eq!(status, 200, "{listed}");
    let rows = listed["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{listed}");
    assert_eq!(rows[0]["wamid"], wamid(&a2).as_str(), "newest first");
    assert_eq!(rows[0]["type"], "image");
    assert_eq!(rows[0]["to"], "6282222222222");
    assert_eq!(rows[0]["request"], image);
    assert!(rows[0].get("biz_opaque_callback_data").is_none());
    assert_eq!(rows[1]["wamid"], wamid(&a1).as_str());
    assert_eq!(rows[1]["type"], "text");
    assert_eq!(rows[1]["biz_opaque_callback_data"], "m-1");
    assert_eq!(rows[1]["request"]["text"]["body"], "pertama");
    assert!(rows[1]["received_at"].is_string());

    let (_, only) = app
        .call(app.get(&format!("{}?to=6281111111111&limit=5", sandbox::LIST_PATH)))
        .await;
    assert_eq!(only["data"].as_array().unwrap().len(), 1, "{only}");
    let (status, _) = app
        .call(app.get(&format!("{}?limit=0", sandbox::LIST_PATH)))
        .await;
    assert_eq!(status, 422);
    let (status, _) = app
        .call(app.http.get(format!("{}{}", app.base, sandbox::LIST_PATH)))
        .await;
    assert_eq!(status, 401, "the listing needs a token");
    // They are the Cloud API sandbox's, not StarSender's.
    let (status, starsender) = app
        .call(
            app.http
                .get(format!("{}/sandbox/starsender/messages", app.base))
                .bearer_auth(ops_token()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(starsender["data"], json!([]), "{starsender}");
    let spec: Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["paths"][sandbox::LIST_PATH]["get"].is_object());
}
