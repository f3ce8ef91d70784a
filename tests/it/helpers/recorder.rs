//! A fake gateway that notes every call (when, to whom, what, what it answered) and answers
//! what the test tells it: `success: true`, or a status (with a `Retry-After`) for the next
//! calls.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use wiremock::{Mock, Request, Respond, ResponseTemplate, matchers};

use super::{TestApp, ready, wait_until};

/// A call: when it arrived, to whom, the text, the status answered.
type Call = (Instant, String, String, u16);
/// What the next calls get: status, `Retry-After`, how many more (`u32::MAX`: until healed).
type Answer = (u16, Option<&'static str>, u32);

#[derive(Clone, Default)]
pub struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    next: Arc<Mutex<Option<Answer>>>,
    /// How long each answer takes.
    delay: Duration,
}

impl Respond for Recorder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let v = serde_json::from_slice::<Value>(&request.body).unwrap_or_default();
        let to = v["to"].as_str().unwrap_or_default().to_owned();
        let body = v["body"].as_str().unwrap_or_default().to_owned();
        let mut next = self.next.lock().unwrap();
        let answer = match next.as_mut() {
            Some((status, after, left)) if *left > 0 => {
                if *left != u32::MAX {
                    *left -= 1;
                }
                let mut r = ResponseTemplate::new(*status)
                    .set_body_json(json!({"success": false, "message": "refused"}));
                if let Some(after) = after {
                    r = r.insert_header("Retry-After", *after);
                }
                Some((*status, r))
            }
            _ => None,
        };
        let (status, response) = answer.unwrap_or_else(|| {
            (
                200,
                ResponseTemplate::new(200)
                    .set_body_json(json!({"success": true, "message": "Message sent"})),
            )
        });
        self.calls
            .lock()
            .unwrap()
            .push((Instant::now(), to, body, status));
        response.set_delay(self.delay)
    }
}

impl Recorder {
    /// Answers every call of `app`'s gateway (start the app with `gateway_ok: false`).
    pub async fn mount(app: &TestApp) -> Self {
        Self::mount_slow(app, Duration::ZERO).await
    }

    /// [`Self::mount`], each answer taking `delay`.
    pub async fn mount_slow(app: &TestApp, delay: Duration) -> Self {
        let recorder = Self {
            delay,
            ..Self::default()
        };
        Mock::given(matchers::method("POST"))
            .and(matchers::path("/api/send"))
            .respond_with(recorder.clone())
            .mount(&app.gateway.server)
            .await;
        recorder
    }

    /// The next `times` calls get `status` (and `Retry-After`); `u32::MAX`: until healed.
    pub fn answer(&self, status: u16, retry_after: Option<&'static str>, times: u32) {
        *self.next.lock().unwrap() = Some((status, retry_after, times));
    }

    pub fn heal(&self) {
        *self.next.lock().unwrap() = None;
    }

    pub fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// When each call arrived, in order.
    pub fn times(&self) -> Vec<Instant> {
        let mut t: Vec<Instant> = self.calls.lock().unwrap().iter().map(|c| c.0).collect();
        t.sort();
        t
    }

    pub fn times_to(&self, to: &str) -> Vec<Instant> {
        let mut t: Vec<Instant> = self
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.1 == to)
            .map(|c| c.0)
            .collect();
        t.sort();
        t
    }

    pub fn first_with(&self, status: u16) -> Option<Instant> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.3 == status)
            .map(|c| c.0)
            .min()
    }

    pub fn first_call_after(&self, t: Instant) -> Option<Instant> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0)
            .filter(|at| *at > t)
            .min()
    }

    /// Calls per message body, whatever they were answered.
    pub fn per_body(&self) -> HashMap<String, usize> {
        let mut per = HashMap::new();
        for c in self.calls.lock().unwrap().iter() {
            *per.entry(c.2.clone()).or_default() += 1;
        }
        per
    }

    /// Successful calls per message body.
    pub fn delivered(&self) -> HashMap<String, usize> {
        let mut per = HashMap::new();
        for c in self.calls.lock().unwrap().iter().filter(|c| c.3 == 200) {
            *per.entry(c.2.clone()).or_default() += 1;
        }
        per
    }

    pub async fn wait_for(&self, n: usize, within: Duration) {
        wait_until(within, async || {
            let seen = self.count();
            ready(seen >= n, || {
                format!("gateway saw {seen} call(s), expected {n}")
            })
        })
        .await;
    }
}
