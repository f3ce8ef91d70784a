//! A webhook receiver: a real HTTP server on 127.0.0.1 that verifies every request with the
//! public Standard Webhooks library (the `standardwebhooks` crate, used only here — never our
//! own signing code), notes what it got, and answers what the test tells it.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::Value;
use standardwebhooks::Webhook;

/// What the receiver answers.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16),
    /// A status with a `Retry-After` (seconds).
    RetryAfter(u16, u64),
    /// `302` to this path (which answers 200 and is noted, should anyone follow it).
    Redirect(&'static str),
    /// Waits this long, then answers 200.
    Hang(Duration),
}

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    pub content_type: String,
    pub body: Vec<u8>,
    pub json: Value,
    /// Which of the receiver's secrets verified it (indexes into the secrets given).
    pub verified_by: Vec<usize>,
    pub headers: HeaderMap,
}

impl Received {
    pub fn verified(&self) -> bool {
        !self.verified_by.is_empty()
    }

    pub fn event_type(&self) -> &str {
        self.json["type"].as_str().unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    secrets: Mutex<Vec<String>>,
    received: Mutex<Vec<Received>>,
    plan: Mutex<VecDeque<Answer>>,
    default: Mutex<Option<Answer>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub port: u16,
    inner: Arc<Inner>,
}

/// Verifies `body` + `headers` with the Standard Webhooks library and `secret`.
pub fn verifies(secret: &str, body: &[u8], headers: &HeaderMap) -> bool {
    Webhook::new(secret)
        .and_then(|w| w.verify(body, headers))
        .is_ok()
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Inner::default());
        let state = inner.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let inner = state.clone();
            async move { handle(inner, uri, headers, body).await }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://127.0.0.1:{port}/hooks"),
            port,
            inner,
        }
    }

    /// The secrets requests are verified with (the subscription's, and its rotated one).
    pub fn trust(&self, secret: &str) {
        self.inner.secrets.lock().unwrap().push(secret.to_owned());
    }

    /// The `i`-th secret trusted.
    pub fn secret(&self, i: usize) -> String {
        self.inner.secrets.lock().unwrap()[i].clone()
    }

    /// The next answers, in order; then [`Self::always`]'s (or 200).
    pub fn then(&self, answers: &[Answer]) {
        self.inner
            .plan
            .lock()
            .unwrap()
            .extend(answers.iter().cloned());
    }

    /// The answer once the planned ones are used.
    pub fn always(&self, answer: Answer) {
        *self.inner.default.lock().unwrap() = Some(answer);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// The requests of event type `kind`.
    pub fn of_type(&self, kind: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.event_type() == kind)
            .collect()
    }

    /// The most requests it was answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        super::wait_until(within, async || {
            let got = self.received();
            if got.len() >= n {
                Ok(got)
            } else {
                Err(format!(
                    "the receiver got {} request(s), not {n}",
                    got.len()
                ))
            }
        })
        .await
    }
}

/// Counts a request as being answered until dropped (also when the client gives up first).
struct Answering(Arc<Inner>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(inner: Arc<Inner>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    inner.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _answering = Answering(inner.clone());
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let secrets = inner.secrets.lock().unwrap().clone();
    let verified_by = secrets
        .iter()
        .enumerate()
        .filter(|(_, s)| verifies(s, &body, &headers))
        .map(|(i, _)| i)
        .collect();
    inner.received.lock().unwrap().push(Received {
        at: Instant::now(),
        path: uri.path().to_owned(),
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp").parse().unwrap_or_default(),
        signature: header("webhook-signature"),
        content_type: header("content-type"),
        json: serde_json::from_slice(&body).unwrap_or_default(),
        body: body.to_vec(),
        verified_by,
        headers: headers.clone(),
    });
    let answer = inner
        .plan
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| inner.default.lock().unwrap().clone())
        .unwrap_or(Answer::Status(200));
    match answer {
        Answer::Status(s) => status(s).into_response(),
        Answer::RetryAfter(s, secs) => {
            (status(s), [("retry-after", secs.to_string())]).into_response()
        }
        Answer::Redirect(to) => (StatusCode::FOUND, [("location", to)]).into_response(),
        Answer::Hang(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
    }
}

fn status(s: u16) -> StatusCode {
    StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
