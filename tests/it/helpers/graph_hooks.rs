//! Meta's webhooks, from the test's side and computed here (the `hmac` crate, never the
//! service's signing code): [`StatusPoster`] builds a signed webhook of statuses or inbound
//! messages and posts it as Meta would, or posts exact bytes with a header of the test's choice
//! (tamper tests); [`HookReceiver`] plays the service's inbound route for the sandbox's
//! webhooks, checking each signature itself.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::wait_until;

/// `X-Hub-Signature-256` of `body`: `sha256=<lowercase hex HMAC-SHA256(secret, body)>`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// One entry of `value.statuses[]`.
#[derive(Debug, Clone)]
pub struct StatusEvent {
    pub wamid: String,
    pub status: String,
    /// Unix seconds (written as a string, as Meta does).
    pub timestamp: i64,
    pub recipient_id: String,
    pub callback_data: Option<String>,
    /// `errors[].code` (a `failed` status).
    pub errors: Vec<i64>,
}

impl StatusEvent {
    /// `status` (`sent`, `delivered`, `read`, `failed`) of `wamid`, now, to 6281234567890.
    pub fn new(wamid: &str, status: &str) -> Self {
        Self {
            wamid: wamid.to_owned(),
            status: status.to_owned(),
            timestamp: chrono::Utc::now().timestamp(),
            recipient_id: "6281234567890".to_owned(),
            callback_data: None,
            errors: Vec::new(),
        }
    }

    pub fn callback(mut self, data: &str) -> Self {
        self.callback_data = Some(data.to_owned());
        self
    }

    pub fn error(mut self, code: i64) -> Self {
        self.errors.push(code);
        self
    }

    pub fn at(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }

    pub fn recipient(mut self, to: &str) -> Self {
        self.recipient_id = to.to_owned();
        self
    }

    pub fn json(&self) -> Value {
        let mut v = json!({"id": self.wamid, "status": self.status,
            "timestamp": self.timestamp.to_string(), "recipient_id": self.recipient_id});
        if let Some(data) = &self.callback_data {
            v["biz_opaque_callback_data"] = json!(data);
        }
        if !self.errors.is_empty() {
            v["errors"] = self
                .errors
                .iter()
                .map(|code| {
                    json!({"code": code, "title": "Scripted error", "message": "Scripted error",
                    "error_data": {"details": format!("error {code} scripted by the test")}})
                })
                .collect();
        }
        v
    }
}

/// A text a customer sent (`value.messages[]`), from `from`, now.
pub fn inbound_text(from: &str, id: &str, body: &str) -> Value {
    json!({"from": from, "id": id, "timestamp": chrono::Utc::now().timestamp().to_string(),
        "type": "text", "text": {"body": body}})
}

/// Meta's envelope around `statuses` and `messages` of `phone_number_id` (with a contact for
/// each message's sender).
pub fn webhook(phone_number_id: &str, statuses: &[Value], messages: &[Value]) -> Value {
    let mut value = json!({"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id}});
    if !statuses.is_empty() {
        value["statuses"] = json!(statuses);
    }
    if !messages.is_empty() {
        value["contacts"] = messages
            .iter()
            .map(|m| json!({"profile": {"name": "Pelanggan"}, "wa_id": m["from"]}))
            .collect();
        value["messages"] = json!(messages);
    }
    json!({"object": "whatsapp_business_account",
        "entry": [{"id": "100000000000001", "changes": [{"field": "messages", "value": value}]}]})
}

/// Posts webhooks to `url` as Meta does, signed with `app_secret`.
pub struct StatusPoster {
    pub url: String,
    pub app_secret: String,
    pub phone_number_id: String,
    http: reqwest::Client,
}

impl StatusPoster {
    pub fn new(url: &str, app_secret: &str, phone_number_id: &str) -> Self {
        Self {
            url: url.to_owned(),
            app_secret: app_secret.to_owned(),
            phone_number_id: phone_number_id.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// One webhook with `statuses`; the status code answered.
    pub async fn statuses(&self, statuses: &[StatusEvent]) -> u16 {
        let statuses: Vec<Value> = statuses.iter().map(StatusEvent::json).collect();
        self.post(&webhook(&self.phone_number_id, &statuses, &[]))
            .await
    }

    /// One webhook with inbound `messages` ([`inbound_text`]).
    pub async fn messages(&self, messages: &[Value]) -> u16 {
        self.post(&webhook(&self.phone_number_id, &[], messages))
            .await
    }

    /// `body` serialized, signed and posted.
    pub async fn post(&self, body: &Value) -> u16 {
        let bytes = serde_json::to_vec(body).expect("JSON");
        let signature = sign(&self.app_secret, &bytes);
        self.raw(&bytes, Some(&signature)).await
    }

    /// Exactly `body`, with `X-Hub-Signature-256: signature` (none: no header).
    pub async fn raw(&self, body: &[u8], signature: Option<&str>) -> u16 {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            req = req.header("x-hub-signature-256", signature);
        }
        req.send()
            .await
            .expect("post the webhook")
            .status()
            .as_u16()
    }
}

/// A webhook the [`HookReceiver`] got.
#[derive(Debug, Clone)]
pub struct Hook {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub json: Value,
    /// Whether `X-Hub-Signature-256` is [`sign`]'s of the body with the receiver's secret.
    pub signed: bool,
    pub answered: u16,
}

impl Hook {
    /// `entry[0].changes[0].value.statuses[0]`.
    pub fn status(&self) -> &Value {
        &self.json["entry"][0]["changes"][0]["value"]["statuses"][0]
    }
}

/// A stand-in for the service's `POST /inbound/cloud-api`: a real HTTP server on 127.0.0.1 that
/// notes each webhook and checks its signature: a bad one is `401`, a good one gets the planned
/// statuses (then `200`).
#[derive(Clone)]
pub struct HookReceiver {
    pub url: String,
    secret: String,
    got: Arc<Mutex<Vec<Hook>>>,
    plan: Arc<Mutex<VecDeque<u16>>>,
}

impl HookReceiver {
    pub async fn start(app_secret: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the hook receiver");
        let port = listener.local_addr().expect("its address").port();
        let receiver = Self {
            url: format!("http://127.0.0.1:{port}/inbound/cloud-api"),
            secret: app_secret.to_owned(),
            got: Arc::default(),
            plan: Arc::default(),
        };
        let state = receiver.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let r = state.clone();
            async move { r.take(headers, body) }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        receiver
    }

    fn take(&self, headers: HeaderMap, body: Bytes) -> StatusCode {
        let expected = sign(&self.secret, &body);
        let signed = headers
            .get("x-hub-signature-256")
            .is_some_and(|v| v.as_bytes() == expected.as_bytes());
        let answered = if signed {
            self.plan.lock().unwrap().pop_front().unwrap_or(200)
        } else {
            401
        };
        self.got.lock().unwrap().push(Hook {
            at: Instant::now(),
            headers,
            json: serde_json::from_slice(&body).unwrap_or(Value::Null),
            body: body.to_vec(),
            signed,
            answered,
        });
        StatusCode::from_u16(answered).unwrap_or(StatusCode::OK)
    }

    /// The next webhooks are answered with `statuses`, in order.
    pub fn then(&self, statuses: &[u16]) {
        self.plan.lock().unwrap().extend(statuses);
    }

    pub fn received(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Hook> {
        wait_until(within, async || {
            let got = self.received();
            if got.len() >= n {
                Ok(got)
            } else {
                Err(format!("got {} webhook(s), not {n}", got.len()))
            }
        })
        .await
    }
}

/// These numbers wrote to the workshop just now: WhatsApp's 24-hour window is open for them, so
/// the Cloud API takes ad-hoc text to them (SPEC §13).
pub async fn wrote_just_now(app: &crate::helpers::TestApp, phones: &[&str]) {
    sqlx::query(
        "INSERT INTO whatsapp_contacts (phone, last_inbound_at) SELECT unnest($1::text[]), now()
         ON CONFLICT (phone) DO UPDATE SET last_inbound_at = now()",
    )
    .bind(phones)
    .execute(&app.db.pool)
    .await
    .expect("the contacts are written");
}
