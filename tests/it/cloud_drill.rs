//! The kill -9 drill on the Cloud API (SPEC §13 "Ambiguous sends, resolved by receipts"): a
//! worker dies with calls out at the gateway. Each of those calls may have sent. After the
//! orphan rescue, a message whose status webhook came in time is marked sent with no second
//! call; only one with no status is sent again.

use std::{collections::HashMap, time::Duration};

use bengkel_whatsapp::app::ProcessRole;
use serde_json::json;

use crate::helpers::{
    GraphAnswer, GraphApi, Options, RealProcess, StatusEvent, StatusPoster, TestApp, id_of,
    wrote_just_now,
};

const NUMBER_ID: &str = "106540352242922";
const APP_SECRET: &str = "app-secret-for-the-drill";

#[tokio::test]
async fn kill_9_mid_call_sends_again_only_what_no_status_vouched_for() {
    let graph = GraphApi::start().await;
    // Every call reaches "Meta" and hangs: the worker dies with them out.
    graph.always(Some(GraphAnswer::Late(Duration::from_secs(30))));
    let env: Vec<(&'static str, String)> = vec![
        ("GATEWAY", "cloud_api".into()),
        ("CLOUD_API_ACCESS_TOKEN", "EAAG-drill".into()),
        ("CLOUD_API_PHONE_NUMBER_ID", NUMBER_ID.into()),
        ("CLOUD_API_APP_SECRET", APP_SECRET.into()),
        ("CLOUD_API_VERIFY_TOKEN", "verify".into()),
        ("CLOUD_API_BASE_URL", graph.base_url()),
        ("CLOUD_API_TIMEOUT_SECS", "60".into()),
        ("AMBIGUOUS_RECEIPT_WAIT_SECS", "20".into()),
        ("WORKER_CONCURRENCY", "6".into()),
    ];
    let app = TestApp::spawn_with(Options {
        role: ProcessRole::Api,
        processes: 2,
        env,
        ..Options::default()
    })
    .await;
    let mut victim = RealProcess::start(&app, "worker");
    let phones: Vec<String> = (0..10).map(|i| format!("62816000000{i:02}")).collect();
    let phones: Vec<&str> = phones.iter().map(String::as_str).collect();
    wrote_just_now(&app, &phones).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let (status, reply) = app
            .send(json!({"to": format!("62816000000{i:02}"), "body": format!("drill {i}")}))
            .await;
        assert_eq!(status, 202, "{reply}");
        ids.push(id_of(&reply));
    }
    let in_flight = graph.wait_for_calls(6, Duration::from_secs(30)).await;
    victim.kill_9();
    graph.always(None);
    let out: Vec<String> = in_flight
        .iter()
        .filter_map(|c| c.callback_data().map(str::to_owned))
        .collect();
    // Meta's status webhooks of half of the calls that were out reach us; the other half never do.
    let vouched: Vec<String> = out.iter().step_by(2).cloned().collect();
    let hooks = StatusPoster::new(
        &format!("{}/inbound/cloud-api", app.base),
        APP_SECRET,
        NUMBER_ID,
    );
    let statuses: Vec<StatusEvent> = vouched
        .iter()
        .map(|id| StatusEvent::new(&format!("wamid.drill.{id}"), "sent").callback(id))
        .collect();
    assert_eq!(hooks.statuses(&statuses).await, 200);
    // A survivor rescues the orphans, processes the statuses and sends the rest.
    let _survivor = app.another_process(ProcessRole::Worker).await;
    for id in &ids {
        app.wait_for_status(id, "sent", Duration::from_secs(90))
            .await;
    }
    let mut calls: HashMap<String, usize> = HashMap::new();
    for call in graph.requests() {
        if let Some(id) = call.callback_data() {
            *calls.entry(id.to_owned()).or_default() += 1;
        }
    }
    let twice: Vec<&String> = ids.iter().filter(|id| calls.get(*id) > Some(&1)).collect();
    for id in &vouched {
        assert_eq!(
            calls.get(id),
            Some(&1),
            "{id}: its status came, no second call"
        );
        assert_eq!(
            app.message(id).await["gateway_message_id"],
            format!("wamid.drill.{id}")
        );
    }
    for id in ids.iter().filter(|id| !out.contains(id)) {
        assert_eq!(calls.get(id), Some(&1), "{id} was not out at the kill");
    }
    assert_eq!(
        twice.len(),
        out.len() - vouched.len(),
        "only the unvouched went twice"
    );
    eprintln!(
        "drill: {} messages, {} calls out at the kill, {} saved by their status (one call), {} sent twice (no status)",
        ids.len(),
        out.len(),
        vouched.len(),
        twice.len()
    );
}
