//! A fake WhatsApp Cloud API (Meta's Graph API) for the `cloud_api` gateway: a real HTTP server
//! on 127.0.0.1 that notes every request (method, path, headers, JSON body) and answers a send
//! as Graph does — `200` with a fresh `wamid.<n>` — unless the test told it otherwise for the
//! next calls or for one recipient: a Graph error (status and `error.code`), a 5xx, a hang, a
//! `2xx` that is not JSON. The webhooks Meta would post back are [`super::graph_hooks`]'.
//!
//! Which answer a call gets: the recipient's ([`GraphApi::answer_to`]), else the next planned
//! one ([`GraphApi::answer_next`]), else [`GraphApi::always`]'s, else success.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::wait_until;

/// What the fake answers a call.
#[derive(Debug, Clone, PartialEq)]
pub enum GraphAnswer {
    /// `200` `{"messaging_product", "contacts": [{"input", "wa_id"}], "messages": [{"id": "wamid.<n>"}]}`.
    Ok,
    /// `status` with a Graph error body whose `error.code` is `code`.
    Error { status: u16, code: i64 },
    /// A 5xx with Graph's "unexpected error" body (code 1, or 2 for 503).
    ServerError(u16),
    /// Never answers: the client's timeout ends the call.
    Hang,
    /// Success, after `delay` (longer than the client's timeout: the call went out, no answer).
    Late(Duration),
    /// `200` with an HTML body.
    NotJson,
}

/// A request the fake got.
#[derive(Debug, Clone)]
pub struct GraphCall {
    pub at: Instant,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The body as JSON (`Null` when it is not).
    pub json: Value,
    pub answer: GraphAnswer,
    /// The wamid it answered with (a success).
    pub wamid: Option<String>,
}

impl GraphCall {
    /// `to` of the send.
    pub fn to(&self) -> &str {
        self.json["to"].as_str().unwrap_or_default()
    }

    /// The `Authorization` header as sent.
    pub fn authorization(&self) -> Option<&str> {
        self.headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
    }

    /// `biz_opaque_callback_data` of the send.
    pub fn callback_data(&self) -> Option<&str> {
        self.json["biz_opaque_callback_data"].as_str()
    }
}

#[derive(Default)]
struct Script {
    next: VecDeque<GraphAnswer>,
    per_recipient: HashMap<String, GraphAnswer>,
    always: Option<GraphAnswer>,
}

#[derive(Default)]
struct Inner {
    calls: Mutex<Vec<GraphCall>>,
    script: Mutex<Script>,
}

/// wamids are numbered across every fake of the test binary: no two calls get the same.
static WAMIDS: AtomicU64 = AtomicU64::new(1);

#[derive(Clone)]
pub struct GraphApi {
    pub port: u16,
    inner: Arc<Inner>,
}

impl GraphApi {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Graph API");
        let port = listener.local_addr().expect("its address").port();
        let inner = Arc::new(Inner::default());
        let state = inner.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let inner = state.clone();
                async move { answer(inner, method, uri, headers, body).await }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, inner }
    }

    /// `CLOUD_API_BASE_URL` for the app: sends go to `{base}/{version}/{phone_number_id}/messages`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next `n` calls (to a recipient with no answer of its own) get `answer`.
    pub fn answer_next(&self, n: usize, answer: GraphAnswer) {
        let mut script = self.inner.script.lock().unwrap();
        script.next.extend(std::iter::repeat_n(answer, n));
    }

    /// Every call to `to` gets `answer`, until [`Self::heal_to`].
    pub fn answer_to(&self, to: &str, answer: GraphAnswer) {
        let mut script = self.inner.script.lock().unwrap();
        script.per_recipient.insert(to.to_owned(), answer);
    }

    pub fn heal_to(&self, to: &str) {
        self.inner.script.lock().unwrap().per_recipient.remove(to);
    }

    /// Every call without a planned or per-recipient answer gets `answer` (`None`: success).
    pub fn always(&self, answer: Option<GraphAnswer>) {
        self.inner.script.lock().unwrap().always = answer;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<GraphCall> {
        self.inner.calls.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.inner.calls.lock().unwrap().len()
    }

    /// The sends to `to`, in order.
    pub fn calls_to(&self, to: &str) -> Vec<GraphCall> {
        self.requests()
            .into_iter()
            .filter(|c| c.to() == to)
            .collect()
    }

    /// Waits until the fake has seen `n` requests (or panics after `within`).
    pub async fn wait_for_calls(&self, n: usize, within: Duration) -> Vec<GraphCall> {
        wait_until(within, async || {
            let calls = self.requests();
            let seen = calls.len();
            (seen >= n)
                .then_some(calls)
                .ok_or_else(|| format!("the Graph API saw {seen} call(s), expected {n}"))
        })
        .await
    }
}

/// Graph's error body.
pub fn graph_error(code: i64, message: &str) -> Value {
    json!({"error": {
        "message": format!("(#{code}) {message}"),
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": message},
        "fbtrace_id": "AFakeGraphTrace"
    }})
}

/// Notes the request, then answers what the script says. A send is `POST /{version}/{id}/messages`;
/// anything else is Graph's "unknown path" (`400`, code 2500), noted all the same.
async fn answer(
    inner: Arc<Inner>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let is_send = method == Method::POST && segments.len() == 3 && segments[2] == "messages";
    let to = json["to"].as_str().unwrap_or_default().to_owned();
    let answer = {
        let mut script = inner.script.lock().unwrap();
        match script.per_recipient.get(&to) {
            Some(a) => a.clone(),
            None => script
                .next
                .pop_front()
                .or_else(|| script.always.clone())
                .unwrap_or(GraphAnswer::Ok),
        }
    };
    let success = matches!(answer, GraphAnswer::Ok | GraphAnswer::Late(_));
    let wamid =
        (is_send && success).then(|| format!("wamid.{}", WAMIDS.fetch_add(1, Ordering::SeqCst)));
    inner.calls.lock().unwrap().push(GraphCall {
        at: Instant::now(),
        method,
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
        json,
        answer: answer.clone(),
        wamid: wamid.clone(),
    });
    if !is_send {
        let body = json!({"error": {"message": format!("Unknown path components: {}", uri.path()),
            "type": "OAuthException", "code": 2500, "fbtrace_id": "AFakeGraphTrace"}});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    let ok = || {
        let body = json!({"messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": wamid}]});
        (StatusCode::OK, axum::Json(body)).into_response()
    };
    match answer {
        GraphAnswer::Ok => ok(),
        GraphAnswer::Late(delay) => {
            tokio::time::sleep(delay).await;
            ok()
        }
        GraphAnswer::Error { status, code } => (
            status_code(status),
            axum::Json(graph_error(code, "error scripted by the test")),
        )
            .into_response(),
        GraphAnswer::ServerError(status) => {
            let (code, message) = if status == 503 {
                (2, "Service temporarily unavailable")
            } else {
                (1, "An unknown error has occurred.")
            };
            let body = json!({"error": {"message": message, "type": "OAuthException",
                "code": code, "fbtrace_id": "AFakeGraphTrace"}});
            (status_code(status), axum::Json(body)).into_response()
        }
        GraphAnswer::Hang => std::future::pending().await,
        GraphAnswer::NotJson => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>OK</body></html>",
        )
            .into_response(),
    }
}

fn status_code(s: u16) -> StatusCode {
    StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
