//! Whole processes: kill -9, split roles, graceful shutdown, start-up errors, embedded database.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::helpers::{Gateway, TestDb, env_for, http_status, metric, ready, token, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_bengkel-whatsapp");

struct Proc {
    child: Child,
    base: String,
}

impl Proc {
    async fn start(cmd: &str, env: &HashMap<String, String>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(BIN)
            .arg(cmd)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the binary");
        let base = format!("http://127.0.0.1:{port}");
        wait_until(Duration::from_secs(30), async || {
            let status = reqwest::get(format!("{base}/health/ready"))
                .await
                .map(|r| r.status().as_u16());
            ready(matches!(status, Ok(200)), || {
                format!("{cmd} did not become ready: {status:?}")
            })
        })
        .await;
        Self { child, base }
    }

    fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().ok();
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill -TERM");
        self.child.wait().expect("wait")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client_token() -> String {
    token(
        "proc-tester",
        bengkel_whatsapp::http::auth::Role::Client,
        Duration::from_secs(600),
    )
}

async fn post_json(base: &str, path: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(client_token())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

async fn message_status(db: &TestDb, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM messages WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn wait_for_sent(db: &TestDb, id: &str) {
    wait_until(Duration::from_secs(10), async || {
        let status = message_status(db, id).await;
        ready(status == "sent", || format!("message {id} is {status}"))
    })
    .await;
}

#[tokio::test]
async fn a_scheduled_message_survives_kill_9_and_is_sent_once_after_restart() {
    let db = TestDb::with_processes(1).await;
    let gateway = Gateway::start().await;
    gateway.ok().await;
    let env = env_for(&db, &gateway);

    let mut first = Proc::start("serve", &env).await;
    let at = chrono::Utc::now().timestamp_millis() + 2_500;
    let (status, body) = post_json(
        &first.base,
        "/whatsapp/send",
        json!({"to": "0812345678", "body": "survivor", "schedule": at}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    first.kill_9();

    // The clock moves on past the schedule while nobody runs.
    sqlx::query(
        "UPDATE apalis.jobs SET run_at = now() - interval '1 second'
         WHERE id = (SELECT job_id FROM messages WHERE id = $1::uuid)",
    )
    .bind(&id)
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(gateway.calls().await, 0, "nobody is running");
    assert_eq!(message_status(&db, &id).await, "queued");

    let _second = Proc::start("serve", &env).await;
    gateway.wait_for_calls(1, Duration::from_secs(5)).await;
    // The outcome is recorded after the call (grouped with others): on a loaded machine that
    // has taken more than a second.
    wait_for_sent(&db, &id).await;
    db.wait_idle(Duration::from_secs(10)).await;
    assert_eq!(gateway.calls().await, 1, "sent exactly once");
}

#[tokio::test]
async fn a_backlog_enqueued_by_api_is_drained_once_by_a_later_worker() {
    let db = TestDb::with_processes(2).await;
    let gateway = Gateway::start().await;
    gateway.ok().await;
    let mut env = env_for(&db, &gateway);
    env.insert("WORKER_CONCURRENCY".into(), "4".into());

    let mut api = Proc::start("api", &env).await;
    for i in 0..20 {
        let (status, _) = post_json(
            &api.base,
            "/whatsapp/send",
            json!({"to": "0812345678", "body": format!("backlog {i}")}),
        )
        .await;
        assert_eq!(status, 202);
    }
    // `api` runs no workers: none registered, no job ever taken.
    let (workers, taken): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM queue_processes),
                (SELECT count(*) FROM apalis.jobs WHERE status <> 'Pending' OR lock_by IS NOT NULL)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((workers, taken), (0, 0), "api runs no workers");
    assert_eq!(gateway.calls().await, 0, "api never calls the gateway");
    assert!(api.terminate().success());

    let worker = Proc::start("worker", &env).await;
    let (status, _) = post_json(
        &worker.base,
        "/whatsapp/send",
        json!({"to": "0812345678", "body": "x"}),
    )
    .await;
    assert_eq!(status, 404, "worker serves no business endpoints");
    gateway.wait_for_calls(20, Duration::from_secs(10)).await;
    db.wait_idle(Duration::from_secs(10)).await;
    let requests = gateway.requests().await;
    assert_eq!(requests.len(), 20);
    let bodies: std::collections::HashSet<String> = requests
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["body"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(bodies.len(), 20, "each message once");
    let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE status = 'sent'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(sent, 20);
}

#[tokio::test]
async fn sigterm_finishes_the_send_in_flight_before_exiting() {
    let db = TestDb::with_processes(1).await;
    let gateway = Gateway::start().await;
    gateway
        .respond_times(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(json!({"success": true}))
                .set_delay(Duration::from_millis(1_500)),
            1,
        )
        .await;
    let env = env_for(&db, &gateway);
    let mut proc = Proc::start("serve", &env).await;
    let (_, body) = post_json(
        &proc.base,
        "/whatsapp/send",
        json!({"to": "0812345678", "body": "in flight"}),
    )
    .await;
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    gateway.wait_for_calls(1, Duration::from_secs(5)).await;
    let status = proc.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        message_status(&db, &id).await,
        "sent",
        "the in-flight send was recorded before exit"
    );
}

#[test]
fn a_bad_configuration_value_stops_start_up_naming_the_variable() {
    let out = Command::new(BIN)
        .arg("migrate")
        .env("SEND_MAX_ATTEMPTS", "lots")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SEND_MAX_ATTEMPTS"), "{stderr}");

    let out = Command::new(BIN)
        .arg("serve")
        .env("STARSENDER_API_KEY", "live")
        .env_remove("JWT_SECRET")
        .env("DATABASE_URL", "postgres://x@127.0.0.1:1/x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWT_SECRET"));
}

#[test]
fn token_prints_a_jwt_that_the_service_accepts() {
    let out = Command::new(BIN)
        .args(["token", "--sub", "kasir", "--role", "ops", "--ttl", "2h"])
        .env("JWT_SECRET", crate::helpers::JWT_SECRET)
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = bengkel_whatsapp::http::auth::JwtKeys::new(crate::helpers::JWT_SECRET.as_bytes())
        .verify(token.trim())
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.role),
        ("kasir", bengkel_whatsapp::http::auth::Role::Ops)
    );
    assert!(claims.exp - claims.iat == 7_200);
    let bad = Command::new(BIN)
        .args(["token", "--sub", "x", "--role", "admin"])
        .env("JWT_SECRET", "s")
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn without_database_url_an_embedded_cluster_is_created_and_reused() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("embedded-{}", uuid::Uuid::new_v4().simple()));
    for round in ["creates", "reuses"] {
        let out = Command::new(BIN)
            .arg("migrate")
            .env_remove("DATABASE_URL")
            .env("DATA_DIR", &dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
        assert!(dir.join("postgres/PG_VERSION").exists());
        assert!(
            !dir.join("postgres/postmaster.pid").exists(),
            "{round}: the cluster is stopped on exit"
        );
    }

    // The last process using the cluster stops it: `migrate` (as `demo-data` would) next to a
    // running `serve` leaves it running; so does the `serve` that started it when a second
    // `serve` still uses it; the second one, last out, stops it.
    let serve = |port: u16| {
        Command::new(BIN)
            .arg("serve")
            .env_remove("DATABASE_URL")
            .env("DATA_DIR", &dir)
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let ready = |port: u16| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = http_status(port, "/health/ready") == Some(200);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "serve on {port} did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let term = |child: &mut Child| {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success());
    };
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let pid_file = dir.join("postgres/postmaster.pid");
    let (port_a, port_b) = (free_port(), free_port());
    let mut first = serve(port_a);
    ready(port_a);
    let out = Command::new(BIN)
        .arg("migrate")
        .env_remove("DATABASE_URL")
        .env("DATA_DIR", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        pid_file.exists(),
        "migrate leaves the cluster to the serve using it"
    );
    let mut second = serve(port_b);
    ready(port_b);
    term(&mut first);
    assert!(
        pid_file.exists(),
        "the first serve leaves the cluster to the second"
    );
    ready(port_b);
    term(&mut second);
    assert!(!pid_file.exists(), "the last one out stops it");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Scrapes `/metrics` until `ok` (the sampler refreshes database gauges every 5 s).
async fn scrape_until(base: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    wait_until(Duration::from_secs(15), async || {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if ok(&text) {
            Ok(text)
        } else {
            Err(format!("metrics never showed {what}:\n{text}"))
        }
    })
    .await
}

#[tokio::test]
async fn metrics_count_what_the_process_did_with_route_templates() {
    let db = TestDb::with_processes(1).await;
    let gateway = Gateway::start().await;
    gateway
        .respond_times(
            crate::helpers::gateway_error(500, json!({"success": false})),
            1,
        )
        .await;
    gateway.ok().await;
    let mut env = env_for(&db, &gateway);
    env.insert("SEND_RATE_PER_SECOND".into(), "50".into());
    let proc = Proc::start("serve", &env).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, body) = post_json(
            &proc.base,
            "/whatsapp/send",
            json!({"to": "0812345678", "body": format!("m{i}")}),
        )
        .await;
        ids.push(body["data"]["id"].as_str().unwrap().to_owned());
    }
    let client = reqwest::Client::new();
    for id in &ids {
        let res = client
            .get(format!("{}/whatsapp/messages/{id}", proc.base))
            .bearer_auth(client_token())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let text = scrape_until(&proc.base, "3 sends and 3 done jobs", |text| {
        metric(text, "bengkel_sends_total{outcome=\"sent\"}") == Some(3.0)
            && metric(
                text,
                "bengkel_queue_jobs{queue=\"whatsapp-send\",status=\"done\"}",
            ) == Some(3.0)
    })
    .await;
    assert_eq!(
        metric(&text, "bengkel_messages_enqueued_total{kind=\"adhoc\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric(&text, "bengkel_sends_total{outcome=\"retry\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "bengkel_gateway_responses_total{gateway=\"starsender\",class=\"ok\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            "bengkel_gateway_responses_total{gateway=\"starsender\",class=\"server_error\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "bengkel_gateway_request_duration_seconds_count"),
        Some(4.0)
    );
    assert_eq!(
        metric(&text, "bengkel_throttle_wait_seconds_count"),
        Some(4.0)
    );
    assert_eq!(
        metric(
            &text,
            "bengkel_queue_jobs{queue=\"whatsapp-send\",status=\"pending\"}"
        ),
        Some(0.0)
    );
    assert!(text.contains("bengkel_queue_oldest_pending_age_seconds{queue=\"whatsapp-send\"}"));
    assert!(text.contains("# TYPE bengkel_gateway_request_duration_seconds histogram"));
    assert_eq!(
        metric(
            &text,
            "bengkel_http_requests_total{method=\"GET\",route=\"/whatsapp/messages/{id}\",status=\"200\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert!(!text.contains(&ids[0]), "no raw paths in labels");

    // A fan-out and a pause: the fan-out metrics and the database-derived gauges follow.
    let (status, _) = post_json(
        &proc.base,
        "/scheduler/maintenance-reminder/run-now",
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let ops = token(
        "ops",
        bengkel_whatsapp::http::auth::Role::Ops,
        Duration::from_secs(600),
    );
    let res = client
        .post(format!("{}/ops/queues/reminder-fanout/pause", proc.base))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = scrape_until(&proc.base, "the pause and the fan-out", |text| {
        metric(text, "bengkel_queue_paused{queue=\"reminder-fanout\"}") == Some(1.0)
            && metric(text, "bengkel_fanout_last_success_timestamp_seconds")
                .is_some_and(|t| t > 0.0)
    })
    .await;
    assert_eq!(
        metric(&text, "bengkel_queue_paused{queue=\"whatsapp-send\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "bengkel_fanout_runs_total{trigger=\"manual\"}"),
        Some(1.0)
    );
    // Series that saw nothing yet exist at 0, so that `increase()` sees their first event.
    for zero in [
        "bengkel_fanout_runs_total{trigger=\"catch_up\"}",
        "bengkel_sends_total{outcome=\"failed\"}",
        "bengkel_gateway_responses_total{gateway=\"starsender\",class=\"unauthorized\"}",
        "bengkel_messages_enqueued_total{kind=\"manual\"}",
    ] {
        assert_eq!(metric(&text, zero), Some(0.0), "{zero}");
    }
    assert_eq!(
        metric(&text, "bengkel_fanout_reminders_queued_total"),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "bengkel_fanout_duration_seconds_count"),
        Some(1.0)
    );
    let last = metric(&text, "bengkel_fanout_last_success_timestamp_seconds").unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (now - 60.0..=now + 1.0).contains(&last),
        "{last} is not a recent unix time"
    );
    // Every metric of SPEC §8, with its type.
    for (name, kind) in [
        ("bengkel_messages_enqueued_total", "counter"),
        ("bengkel_sends_total", "counter"),
        ("bengkel_gateway_responses_total", "counter"),
        ("bengkel_gateway_request_duration_seconds", "histogram"),
        ("bengkel_throttle_wait_seconds", "histogram"),
        ("bengkel_queue_jobs", "gauge"),
        ("bengkel_queue_oldest_pending_age_seconds", "gauge"),
        ("bengkel_queue_paused", "gauge"),
        ("bengkel_fanout_runs_total", "counter"),
        ("bengkel_fanout_reminders_queued_total", "counter"),
        ("bengkel_fanout_duration_seconds", "histogram"),
        ("bengkel_fanout_last_success_timestamp_seconds", "gauge"),
        ("bengkel_http_requests_total", "counter"),
        ("bengkel_http_request_duration_seconds", "histogram"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is not a {kind}:\n{text}"
        );
    }
    assert!(text.contains("bengkel_http_requests_total{method=\"POST\",route=\"/ops/queues/{queue}/pause\",status=\"200\"} 1"));
}

/// The schedule's gauges (SPEC §14 alert rules "the scheduler is stopped" and "the daily run has
/// not started 30 minutes after its time"): a run that is due but held back (its queue paused)
/// shows as scheduled and not started; once it runs, its start is after the scheduled time; a
/// stopped schedule shows as not running with nothing scheduled.
#[tokio::test]
async fn the_schedule_gauges_show_a_due_run_that_has_not_started_and_a_stopped_schedule() {
    let db = TestDb::with_processes(1).await;
    let gateway = Gateway::start().await;
    let mut env = env_for(&db, &gateway);
    env.insert("APP_TIMEZONE".into(), "UTC".into());
    let proc = Proc::start("serve", &env).await;
    let ops = token(
        "ops",
        bengkel_whatsapp::http::auth::Role::Ops,
        Duration::from_secs(600),
    );
    let client = reqwest::Client::new();
    let ops_post = async |path: &str| {
        let res = client
            .post(format!("{}{path}", proc.base))
            .bearer_auth(&ops)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    };
    ops_post("/ops/queues/reminder-fanout/pause").await;
    // Daily at the minute an hour ago, and the schedule older than that: the run is due (the
    // ticker claims it as a catch-up), but its job waits in the paused queue.
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let scheduled = hour_ago.timestamp() - hour_ago.timestamp() % 60;
    sqlx::query(
        "UPDATE scheduler_settings SET enabled = true, hour = $1, minute = $2,
                updated_at = now() - interval '2 days'",
    )
    .bind(i32::try_from(chrono::Timelike::hour(&hour_ago)).unwrap())
    .bind(i32::try_from(chrono::Timelike::minute(&hour_ago)).unwrap())
    .execute(&db.pool)
    .await
    .unwrap();
    let text = scrape_until(&proc.base, "a scheduled run that has not started", |text| {
        metric(text, "bengkel_fanout_scheduled_timestamp_seconds") == Some(scheduled as f64)
    })
    .await;
    assert_eq!(metric(&text, "bengkel_scheduler_running"), Some(1.0));
    assert_eq!(
        metric(&text, "bengkel_fanout_last_start_timestamp_seconds"),
        Some(0.0)
    );

    ops_post("/ops/queues/reminder-fanout/resume").await;
    scrape_until(&proc.base, "the run started after its time", |text| {
        metric(text, "bengkel_fanout_last_start_timestamp_seconds")
            .is_some_and(|t| t >= scheduled as f64)
    })
    .await;

    ops_post("/scheduler/maintenance-reminder/stop").await;
    let text = scrape_until(&proc.base, "the stopped schedule", |text| {
        metric(text, "bengkel_scheduler_running") == Some(0.0)
    })
    .await;
    assert_eq!(
        metric(&text, "bengkel_fanout_scheduled_timestamp_seconds"),
        Some(0.0)
    );
    for name in [
        "bengkel_scheduler_running",
        "bengkel_fanout_scheduled_timestamp_seconds",
        "bengkel_fanout_last_start_timestamp_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} gauge\n")),
            "{name} is not a gauge"
        );
    }
}

/// The delivery-policy series (README "Delivery policy") exist from the start of a process, the
/// counters at 0 for every label value, so that `increase()` and the dashboard see their first
/// event and the circuit alert always has a series to evaluate.
#[tokio::test]
async fn a_fresh_process_exposes_every_delivery_policy_series_from_the_start() {
    let db = TestDb::with_processes(1).await;
    let gateway = Gateway::start().await;
    let proc = Proc::start("serve", &env_for(&db, &gateway)).await;
    let text = reqwest::get(format!("{}/metrics", proc.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut zeros = vec!["bengkel_sends_total{outcome=\"expired\"}".to_owned()];
    for reason in [
        "rate_limit",
        "retry_after",
        "circuit_open",
        "send_window",
        "recipient_spacing",
        "paused",
    ] {
        zeros.push(format!("bengkel_sends_held_total{{reason=\"{reason}\"}}"));
    }
    for kind in ["adhoc", "maintenance", "manual"] {
        zeros.push(format!(
            "bengkel_messages_suppressed_total{{kind=\"{kind}\"}}"
        ));
        zeros.push(format!("bengkel_messages_expired_total{{kind=\"{kind}\"}}"));
    }
    for zero in &zeros {
        assert_eq!(metric(&text, zero), Some(0.0), "{zero}:\n{text}");
    }
    // Nothing was sent: the circuit is closed. The effective rate is the policy's to set.
    assert_eq!(metric(&text, "bengkel_circuit_open"), Some(0.0), "{text}");
    assert!(
        metric(&text, "bengkel_send_rate_effective").is_some_and(f64::is_finite),
        "{text}"
    );
    for (name, kind) in [
        ("bengkel_sends_held_total", "counter"),
        ("bengkel_messages_suppressed_total", "counter"),
        ("bengkel_messages_expired_total", "counter"),
        ("bengkel_send_rate_effective", "gauge"),
        ("bengkel_circuit_open", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is not a {kind}:\n{text}"
        );
    }
}

#[tokio::test]
async fn in_sandbox_mode_a_message_is_sent_to_the_built_in_gateway_and_listed() {
    let db = TestDb::with_processes(1).await;
    let gateway = Gateway::start().await;
    let mut env = env_for(&db, &gateway);
    env.remove("STARSENDER_API_KEY");
    env.remove("STARSENDER_API_URL");
    let proc = Proc::start("serve", &env).await;
    let (status, body) = post_json(&proc.base, "/whatsapp/send", json!({"to": "+62 812-3456-789", "body": "Halo sandbox", "file": "https://example.com/a.pdf"})).await;
    assert_eq!(status, 202, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    wait_for_sent(&db, &id).await;
    // The listing needs a token (any role).
    let listed: Value = reqwest::Client::new()
        .get(format!("{}/sandbox/starsender/messages", proc.base))
        .bearer_auth(client_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["to"], "628123456789");
    assert_eq!(listed["data"][0]["body"], "Halo sandbox");
    assert_eq!(listed["data"][0]["messageType"], "media");
    assert_eq!(gateway.calls().await, 0, "nothing went to the live gateway");
}

#[tokio::test]
async fn workers_recover_by_themselves_after_their_database_connections_are_killed() {
    let app = crate::helpers::TestApp::spawn().await;
    let (_, first) = app
        .send(json!({"to": "0812345678", "body": "before"}))
        .await;
    app.wait_for_status(
        first["data"]["id"].as_str().unwrap(),
        "sent",
        Duration::from_secs(5),
    )
    .await;

    // An outage as the workers see it: every connection of theirs is cut.
    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    // (In the select list, not the WHERE clause: there it could be run before the filter.)
    let killed: Vec<(i32, bool)> = sqlx::query_as(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
    )
    .bind(&app.db.name)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let killed: Vec<i32> = killed.into_iter().map(|(pid, _)| pid).collect();
    assert!(
        killed.len() >= 2,
        "the worker and its listener were connected"
    );
    wait_until(Duration::from_secs(5), async || {
        let left: Vec<i32> =
            sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE pid = ANY($1)")
                .bind(&killed)
                .fetch_all(&mut conn)
                .await
                .unwrap();
        ready(left.is_empty(), || {
            format!("backends {left:?} not gone yet")
        })
    })
    .await;
    let (status, second) = app.send(json!({"to": "0812345678", "body": "after"})).await;
    assert_eq!(status, 202, "{second}");
    app.wait_for_status(
        second["data"]["id"].as_str().unwrap(),
        "sent",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(app.gateway.calls().await, 2);
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_carry_the_request_id() {
    use std::io::BufRead;
    let db = TestDb::with_processes(1).await;
    let gateway = Gateway::start().await;
    gateway.ok().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env_for(&db, &gateway))
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_until(Duration::from_secs(30), async || {
        let status = client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        ready(matches!(status, Ok(200)), || {
            format!("serve did not become ready: {status:?}")
        })
    })
    .await;
    let ops = token(
        "ops",
        bengkel_whatsapp::http::auth::Role::Ops,
        Duration::from_secs(600),
    );
    let res = client
        .post(format!("{base}/ops/queues/whatsapp-send/pause"))
        .bearer_auth(&ops)
        .header("x-request-id", "rid-log-test-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "rid-log-test-42", "echoed");
    let generated = client.get(format!("{base}/health")).send().await.unwrap();
    assert!(
        !generated.headers()["x-request-id"].is_empty(),
        "generated when absent"
    );

    let mut found = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = 0;
    while found.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        lines += 1;
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
        if v["message"] == "queue paused" {
            found = Some(v);
        }
    }
    let paused = found.unwrap_or_else(|| panic!("no `queue paused` log line among {lines}"));
    assert_eq!(paused["span"]["request_id"], "rid-log-test-42", "{paused}");
    assert_eq!(paused["queue"], "whatsapp-send");
    child.kill().ok();
    child.wait().ok();
}

#[tokio::test]
async fn a_fan_out_killed_half_way_leaves_whole_pages_and_the_next_pass_finishes_it() {
    let db = TestDb::with_processes(1).await;
    let gateway = Gateway::start().await;
    gateway.ok().await;
    let env = env_for(&db, &gateway);
    let loaded = Command::new(BIN)
        .args(["demo-data", "--vehicles", "400000"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&env)
        .output()
        .unwrap();
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    // Nothing is sent here: this is about what the fan-out writes.
    sqlx::query("INSERT INTO queue_pauses (queue) VALUES ('whatsapp-send')")
        .execute(&db.pool)
        .await
        .unwrap();
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Jakarta)
        .date_naive();
    let count = |sql: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    // Due by the next visit, or (one in 10 demo vehicles) by the last one + 4 months.
    let sendable: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM vehicles v JOIN customers c ON c.id = v.customer_id,
                LATERAL (SELECT coalesce(v.next_visit_date,
                                         (v.last_visit_date + interval '4 months')::date) AS due) d
         WHERE d.due >= $1 AND d.due < $1 + 3 AND c.hp IS NOT NULL",
    )
    .bind(today)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // Every page commits its reminders, messages and jobs together, or none of them.
    let consistent = || async {
        let reminders = count("SELECT count(*) FROM reminders").await;
        let messages = count("SELECT count(*) FROM messages WHERE kind = 'maintenance'").await;
        let jobs = count("SELECT count(*) FROM apalis.jobs WHERE job_type = 'whatsapp-send'").await;
        assert_eq!(
            (messages, jobs),
            (reminders, reminders),
            "reminders, messages and jobs"
        );
        reminders
    };

    let mut first = Proc::start("serve", &env).await;
    let base = first.base.clone();
    let pass = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}/customers/send-maintenance-reminder"))
            .bearer_auth(client_token())
            .send()
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while count("SELECT count(*) FROM reminders").await == 0 {
        assert!(Instant::now() < deadline, "the fan-out never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill_9();
    assert!(pass.await.unwrap().is_err(), "the pass was cut off");
    let at_kill = consistent().await;
    assert!(
        (1..sendable).contains(&at_kill),
        "killed half-way: {at_kill} of {sendable} reminders"
    );

    let second = Proc::start("serve", &env).await;
    let (status, again) = post_json(
        &second.base,
        "/customers/send-maintenance-reminder",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (
            again["data"]["reminder_queued"].as_i64(),
            again["data"]["already_queued"].as_i64()
        ),
        (Some(sendable - at_kill), Some(at_kill))
    );
    assert_eq!(consistent().await, sendable, "every sendable vehicle once");
}

#[tokio::test]
async fn many_processes_starting_at_once_all_migrate() {
    // six `migrate` processes of one or two connections each
    let db = TestDb::with_processes(3).await;
    let gateway = Gateway::start().await;
    let env = env_for(&db, &gateway);
    for round in 0..3 {
        let children: Vec<_> = (0..6)
            .map(|_| {
                Command::new(BIN)
                    .arg("migrate")
                    .env_clear()
                    .env("PATH", std::env::var("PATH").unwrap_or_default())
                    .envs(&env)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
