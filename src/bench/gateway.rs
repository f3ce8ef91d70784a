//! A zero-latency StarSender (and Graph API, for the `cloud` part) in the benchmark process.

use super::*;

/// A StarSender stand-in that answers at once and notes when each body arrived.
pub(super) struct FakeGateway {
    pub(super) url: String,
    /// The base URL of its Graph API stand-in (`CLOUD_API_BASE_URL`): `POST
    /// /{version}/{number}/messages` answers a wamid at once.
    pub(super) graph_url: String,
    pub(super) arrivals: Arc<Mutex<HashMap<String, Instant>>>,
    pub(super) calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeGateway {
    pub(super) async fn start() -> anyhow::Result<Self> {
        let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let calls: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let (a, c) = (arrivals.clone(), calls.clone());
        let graph_calls = calls.clone();
        let app = Router::new()
            .route(
                "/{version}/{number}/messages",
                post(move || {
                    let c = graph_calls.clone();
                    async move {
                        let n = c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Json(json!({"messaging_product": "whatsapp",
                                    "messages": [{"id": format!("wamid.BENCH{n}")}]}))
                    }
                }),
            )
            .route(
            "/api/send",
            post(move |Json(body): Json<Value>| {
                let (a, c) = (a.clone(), c.clone());
                async move {
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Some(text) = body.get("body").and_then(Value::as_str)
                        && ["latency", "throttle", "campaign", "reminder"]
                            .iter()
                            .any(|p| text.starts_with(p))
                        && let Ok(mut map) = a.lock()
                    {
                        map.insert(text.to_owned(), Instant::now());
                    }
                    Json(json!({"success": true, "data": {"messageId": "bench"}, "message": "ok"}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/api/send", listener.local_addr()?);
        let graph_url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            url,
            graph_url,
            arrivals,
            calls,
        })
    }

    pub(super) fn arrival(&self, body: &str) -> Option<Instant> {
        self.arrivals.lock().ok()?.get(body).copied()
    }

    pub(super) fn arrivals_with_prefix(&self, prefix: &str) -> Vec<Instant> {
        self.arrivals
            .lock()
            .map(|map| {
                map.iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(_, at)| *at)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn reset(&self) {
        self.calls.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}
