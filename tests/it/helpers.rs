//! Starting the app on a fresh database with a fake gateway, and talking to it.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bengkel_whatsapp::{
    app::{self, ProcessRole},
    config::{Config, Secret},
    http::auth::{JwtKeys, Role},
};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

mod dates;
mod graph;
mod graph_hooks;
mod ops;
mod read;
mod receiver;
mod recorder;
mod wait;

pub use dates::{day, today, window_excluding_now};
pub use graph::{GraphAnswer, GraphApi};
pub use graph_hooks::{
    HookReceiver, StatusEvent, StatusPoster, inbound_text, sign, webhook, wrote_just_now,
};
pub use ops::{ops_call, ops_get, ops_ok, ops_post, ops_request, pause_sends, resume_sends};
pub use read::{fields, http_status, metric};
pub use receiver::{Answer, Received, Receiver, verifies};
pub use recorder::Recorder;
pub use wait::{ready, wait_until};

pub const JWT_SECRET: &str = "integration-test-secret-of-32-bytes-at-least";
pub const API_KEY: &str = "device-key-123";

/// The test PostgreSQL's administrative database.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// PostgreSQL allows 100 connections and the suite runs many tests at once, some with several
/// processes: each test first takes its share of this budget (returned when its database is
/// dropped), so that the server is never at its limit — a process waiting for a connection
/// would make every timing in the suite meaningless. `TEST_DB_CONNECTIONS` changes it.
static CONNECTIONS: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(
        std::env::var("TEST_DB_CONNECTIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(94),
    )
});

/// What the test's database and in-process app may open: the test's pool (which the app's
/// handlers share) and, for an app with workers, its relaxed pool and two dedicated connections
/// (`DB_MAX_CONNECTIONS`=[`PROCESS_CONNECTIONS`] in [`env_for`]).
const APP_CONNECTIONS: u32 = TEST_POOL + 4;
const TEST_POOL: u32 = 6;
/// What each further process may open (its `DB_MAX_CONNECTIONS`).
pub const PROCESS_CONNECTIONS: u32 = 6;

/// A fresh, migrated database, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    /// How many processes the test declared it runs beside its app, and how many run now.
    processes: usize,
    running: Arc<std::sync::atomic::AtomicUsize>,
    _budget: tokio::sync::SemaphorePermit<'static>,
}

/// One more process of the test, counted against what it declared.
pub struct ProcessSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for ProcessSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl TestDb {
    /// A database for a test that runs no process beside its app.
    pub async fn new() -> Self {
        Self::with_processes(0).await
    }

    /// A database for a test that runs up to `processes` processes (`RealProcess`, another
    /// app, the binary) at once beside its app.
    pub async fn with_processes(processes: usize) -> Self {
        let weight = APP_CONNECTIONS + PROCESS_CONNECTIONS * processes as u32;
        let budget = CONNECTIONS
            .acquire_many(weight)
            .await
            .expect("the connection budget is never closed");
        let admin = admin_url();
        let name = format!("bw_test_{}", uuid::Uuid::new_v4().simple());
        // Many tests run at once: a server at its connection limit gets a few seconds.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut conn = loop {
            match PgConnection::connect(&admin).await {
                Ok(conn) => break conn,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("test database server busy ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("connect to the test PostgreSQL: {e}"),
            }
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let url = match admin.rfind('/') {
            Some(i) => format!("{}/{name}", &admin[..i]),
            None => panic!("TEST_DATABASE_URL must end in /<database>"),
        };
        let pool = bengkel_whatsapp::db::connect(&url, TEST_POOL)
            .await
            .expect("connect to test database");
        bengkel_whatsapp::db::migrate(&pool)
            .await
            .expect("migrate test database");
        Self {
            name,
            url,
            pool,
            processes,
            running: Arc::default(),
            _budget: budget,
        }
    }

    /// Counts one more process against what the test declared (`Options::processes`).
    pub fn process_slot(&self) -> ProcessSlot {
        let n = self
            .running
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let slot = ProcessSlot(self.running.clone());
        assert!(
            n <= self.processes,
            "this test runs {n} processes beside its app but declared {} \
             (Options::processes / TestDb::with_processes): the connection budget would be wrong",
            self.processes
        );
        slot
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run on the test's own runtime thread: use a thread with its own runtime, and
        // do not wait for the pool (its connections belong to tasks of the blocked runtime);
        // FORCE ends them.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut conn = PgConnection::connect(&admin_url()).await.ok()?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()
            })
        })
        .join();
    }
}

/// The fake StarSender: a real HTTP server on 127.0.0.1.
pub struct Gateway {
    pub server: MockServer,
}

impl Gateway {
    pub async fn start() -> Self {
        Self {
            server: MockServer::start().await,
        }
    }

    pub fn url(&self) -> String {
        format!("{}/api/send", self.server.uri())
    }

    /// Every call answers `success: true`.
    pub async fn ok(&self) {
        Mock::given(matchers::method("POST"))
            .and(matchers::path("/api/send"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "success": true, "data": {"messageId": "ss-1"}, "message": "Message sent"
            })))
            .mount(&self.server)
            .await;
    }

    /// The next `times` calls get `response`; mounted before [`ok`](Self::ok) it takes priority.
    pub async fn respond_times(&self, response: ResponseTemplate, times: u64) {
        Mock::given(matchers::method("POST"))
            .and(matchers::path("/api/send"))
            .respond_with(response)
            .up_to_n_times(times)
            .with_priority(1)
            .mount(&self.server)
            .await;
    }

    pub async fn requests(&self) -> Vec<wiremock::Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    /// One field (`to`, `body`, …) of every call's JSON body so far, in order.
    pub async fn sent_field(&self, field: &str) -> Vec<String> {
        self.requests()
            .await
            .iter()
            .map(|r| {
                let b: Value = r.body_json().expect("gateway body is JSON");
                b[field].as_str().unwrap_or_default().to_owned()
            })
            .collect()
    }

    pub async fn calls(&self) -> usize {
        self.requests().await.len()
    }

    /// Waits until the gateway has seen `n` calls (or panics after `within`).
    pub async fn wait_for_calls(&self, n: usize, within: Duration) -> Vec<wiremock::Request> {
        wait_until(within, async || {
            let requests = self.requests().await;
            let seen = requests.len();
            (seen >= n)
                .then_some(requests)
                .ok_or_else(|| format!("gateway saw {seen} call(s), expected {n}"))
        })
        .await
    }

    /// (to, body) of each call, once there are at least `n` (or panics after `within`).
    pub async fn wait_sent(&self, n: usize, within: Duration) -> Vec<(String, String)> {
        self.wait_for_calls(n, within).await;
        let to = self.sent_field("to").await;
        let bodies = self.sent_field("body").await;
        to.into_iter().zip(bodies).collect()
    }
}

pub fn gateway_error(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(body)
}

/// The service's environment for a test: live mode against the fake gateway, fast backoff.
pub fn env_for(db: &TestDb, gateway: &Gateway) -> HashMap<String, String> {
    [
        ("DATABASE_URL", db.url.clone()),
        ("JWT_SECRET", JWT_SECRET.to_owned()),
        ("STARSENDER_API_KEY", API_KEY.to_owned()),
        ("STARSENDER_API_URL", gateway.url()),
        ("STARSENDER_TIMEOUT_SECS", "2".to_owned()),
        ("SEND_RATE_PER_SECOND", "0".to_owned()),
        ("SEND_BACKOFF_BASE_SECS", "1".to_owned()),
        ("SEND_BACKOFF_MAX_SECS", "2".to_owned()),
        ("BIND_ADDR", "127.0.0.1:0".to_owned()),
        // The delivery policy's quiet hours and spacing would make most tests depend on the time
        // of day and on sending to one number at most every 6 s; the policy's own tests set them.
        ("SEND_WINDOW", "00:00-24:00".to_owned()),
        ("RECIPIENT_MIN_INTERVAL_SECS", "0".to_owned()),
        // Every process of a test within its share of the connection budget.
        ("DB_MAX_CONNECTIONS", PROCESS_CONNECTIONS.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

pub struct TestApp {
    pub db: TestDb,
    pub gateway: Gateway,
    pub base: String,
    pub http: reqwest::Client,
    pub token: String,
    pub config: Arc<Config>,
    /// The environment the app was configured from (for starting the real binary beside it).
    pub env: HashMap<String, String>,
    running: Option<app::Running>,
}

pub struct Options {
    pub role: ProcessRole,
    /// Processes the test runs at once beside its app (`RealProcess`, `another_process`).
    pub processes: usize,
    pub env: Vec<(&'static str, String)>,
    pub gateway_ok: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            role: ProcessRole::Serve,
            processes: 0,
            env: Vec::new(),
            gateway_ok: true,
        }
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(opts: Options) -> Self {
        Self::spawn_on(TestDb::with_processes(opts.processes).await, opts).await
    }

    /// Starts the app on a database the test has prepared.
    pub async fn spawn_on(db: TestDb, opts: Options) -> Self {
        let gateway = Gateway::start().await;
        if opts.gateway_ok {
            gateway.ok().await;
        }
        let mut env = env_for(&db, &gateway);
        for (k, v) in opts.env {
            env.insert(k.to_owned(), v);
        }
        let config = Arc::new(Config::from_map(&env).expect("test configuration"));
        let app_env = env.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let running = app::start(
            config.clone(),
            opts.role,
            db.pool.clone(),
            listener,
            &Secret::new(JWT_SECRET),
        )
        .await
        .expect("start app");
        let base = format!("http://{}", running.local_addr);
        Self {
            token: token("tester", Role::Client, Duration::from_secs(3600)),
            db,
            gateway,
            base,
            config,
            env: app_env,
            http: reqwest::Client::new(),
            running: Some(running),
        }
    }

    /// The running app's state (to serve a router of its own on the test's database).
    pub fn state(&self) -> bengkel_whatsapp::state::AppState {
        self.running.as_ref().expect("the app runs").state.clone()
    }

    /// Sends a request and checks the envelope; no response in the suite may be a 5xx.
    pub async fn call(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        assert!(status < 500, "server error {status}: {text}");
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        assert!(
            body.get("success").is_some_and(Value::is_boolean),
            "no envelope: {body}"
        );
        (status, body)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// `POST /whatsapp/send` with a JSON body.
    pub async fn send(&self, body: Value) -> (u16, Value) {
        self.call(self.post("/whatsapp/send").json(&body)).await
    }

    /// `POST /scheduler/maintenance-reminder/run-now{query}`: the pass's summary.
    pub async fn run_now(&self, query: &str) -> Value {
        let (status, body) = self
            .call(self.post(&format!("/scheduler/maintenance-reminder/run-now{query}")))
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].clone()
    }

    /// A message as an operator sees it (any caller's, reminders' too).
    pub async fn message(&self, id: &str) -> Value {
        let (status, body) = self
            .call(
                self.http
                    .get(format!("{}/whatsapp/messages/{id}", self.base))
                    .bearer_auth(ops_token()),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].clone()
    }

    /// The single integer a query answers (a count, a sum).
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.db.pool)
            .await
            .expect("count")
    }

    /// Waits until every message is `sent`.
    pub async fn wait_all_sent(&self, within: Duration) {
        wait_until(within, async || {
            let unsent: i64 =
                sqlx::query_scalar("SELECT count(*) FROM messages WHERE status <> 'sent'")
                    .fetch_one(&self.db.pool)
                    .await
                    .unwrap_or(-1);
            ready(unsent == 0, || format!("{unsent} message(s) not sent"))
        })
        .await;
    }

    /// Polls a message until its status is `want`.
    pub async fn wait_for_status(&self, id: &str, want: &str, within: Duration) -> Value {
        wait_until(within, async || {
            let m = self.message(id).await;
            if m["status"] == want {
                Ok(m)
            } else {
                Err(format!(
                    "message {id} is {} (wanted {want}): {m}",
                    m["status"]
                ))
            }
        })
        .await
    }
}

/// The apalis row of a message's send job.
#[derive(Debug, sqlx::FromRow)]
pub struct JobRow {
    pub status: String,
    pub attempts: i32,
    pub run_at: chrono::DateTime<chrono::Utc>,
}

impl TestApp {
    pub async fn job_of(&self, message_id: &str) -> JobRow {
        sqlx::query_as(
            "SELECT j.status, j.attempts, j.run_at FROM apalis.jobs j
             JOIN messages m ON m.job_id = j.id WHERE m.id = $1::uuid",
        )
        .bind(message_id)
        .fetch_one(&self.db.pool)
        .await
        .expect("the message's job")
    }

    /// The recorded outcome of each attempt, in order.
    pub async fn outcomes(&self, message_id: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT outcome FROM message_attempts WHERE message_id = $1::uuid ORDER BY attempt",
        )
        .bind(message_id)
        .fetch_all(&self.db.pool)
        .await
        .expect("attempts")
    }
}

impl TestApp {
    /// Another process of the same role on the same database and gateway (own pool, own
    /// workers); stopped when the returned value is dropped.
    pub async fn another_process(&self, role: ProcessRole) -> OtherProcess {
        let slot = self.db.process_slot();
        let budget = app::budget(&self.config, role).expect("budget");
        let pool = bengkel_whatsapp::db::connect(&self.db.url, budget.main)
            .await
            .expect("connect");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let running = app::start(
            self.config.clone(),
            role,
            pool,
            listener,
            &Secret::new(JWT_SECRET),
        )
        .await
        .expect("start another process");
        OtherProcess {
            _slot: slot,
            base: format!("http://{}", running.local_addr),
            running: Some(running),
        }
    }
}

/// The real binary, started beside a test app on its database and gateway; killed on drop.
pub struct RealProcess {
    child: std::process::Child,
    _slot: ProcessSlot,
}

impl RealProcess {
    pub fn start(app: &TestApp, command: &str) -> Self {
        Self::start_with(app, command, &[])
    }

    /// [`Self::start`] with some of the app's variables changed.
    pub fn start_with(app: &TestApp, command: &str, env: &[(&str, &str)]) -> Self {
        let slot = app.db.process_slot();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_bengkel-whatsapp"))
            .arg(command)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&app.env)
            .envs(env.iter().copied())
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn the binary");
        Self { child, _slot: slot }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RealProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct OtherProcess {
    _slot: ProcessSlot,
    pub base: String,
    running: Option<app::Running>,
}

impl Drop for OtherProcess {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown.cancel();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop workers before the database is dropped under them.
        if let Some(r) = self.running.take() {
            r.shutdown.cancel();
        }
    }
}

pub fn token(sub: &str, role: Role, ttl: Duration) -> String {
    JwtKeys::new(JWT_SECRET.as_bytes())
        .issue(sub, role, ttl)
        .expect("token")
}

/// A token with the ops role.
pub fn ops_token() -> String {
    token("operator", Role::Ops, Duration::from_secs(3600))
}

pub fn id_of(body: &Value) -> String {
    body["data"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {body}"))
        .to_owned()
}

/// Holds the first write to `table` after its statement for `secs` before it commits (as a slow
/// WAL flush would); later writes pass at once. The table `slept` notes that it happened.
pub async fn hold_first_write(pool: &PgPool, table: &str, secs: f64) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE slept (x int);
         CREATE FUNCTION slow_once() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NOT EXISTS (SELECT 1 FROM slept) THEN
             INSERT INTO slept VALUES (1);
             PERFORM pg_sleep({secs});
           END IF;
           RETURN NULL;
         END $$;
         CREATE TRIGGER slow_once AFTER INSERT OR UPDATE ON {table}
           FOR EACH STATEMENT EXECUTE FUNCTION slow_once();"
    )))
    .execute(pool)
    .await
    .unwrap();
}

impl TestApp {
    /// A `POST` with an ops token.
    pub fn ops_post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(ops_token())
    }

    /// A `DELETE` with an ops token.
    pub fn ops_delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(ops_token())
    }
}
