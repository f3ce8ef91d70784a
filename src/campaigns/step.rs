//! Starting a step: in one transaction the step is claimed (`pending` → `running`, so one
//! process starts it however many try), its recipients are snapshotted — the segment as it is
//! now, for a later step only those of the previous step that its `only_if` keeps — each is
//! given its variant, and the messages go out as one §11 batch of kind `campaign`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

use super::{OnlyIf, Variant, assign};
use crate::{
    config::Config,
    messages::{
        Kind,
        phone::PhoneNumber,
        request::NewMessage,
        store::{self, Item, Stored},
    },
    reminders::{business_date, schedule::job::workshop},
    segments::{
        Filters, Recipient, Source,
        query::{self, Spec},
    },
    templates::{self, Subject},
};

/// The `created_by` of campaign messages.
pub const BY: &str = "campaign";
/// Messages per insert statement (all in the step's transaction).
const CHUNK: usize = 5_000;

/// What a started step did.
#[derive(Debug, Clone, Default)]
pub struct Started {
    pub recipients: usize,
    pub messages: usize,
    /// Every message was final at once (none to send, all opted out): the step is done.
    pub done: bool,
}

#[derive(sqlx::FromRow)]
struct Claimed {
    source: String,
    filters: Json<Filters>,
    reminder_type: bool,
    campaign_started: Option<DateTime<Utc>>,
    expires_after: Option<f64>,
    variants: Json<Vec<Variant>>,
    only_if: Option<String>,
    previous_started: Option<DateTime<Utc>>,
    send_window: Option<String>,
}

/// Starts step `step` of `campaign` if it is still `pending`; `None` when another process did.
pub async fn start(
    pool: &PgPool,
    config: &Config,
    campaign: Uuid,
    step: i32,
) -> sqlx::Result<Option<Started>> {
    let mut tx = query::begin(pool).await?;
    let batch_id = Uuid::now_v7();
    let claimed: Option<Claimed> = sqlx::query_as(
        "WITH s AS (
            UPDATE campaign_steps SET status = 'running', started_at = now(), batch_id = $3
            WHERE campaign_id = $1 AND step = $2 AND status = 'pending'
            RETURNING variants, only_if
         )
         SELECT c.source, c.filters, c.reminder_type, c.started_at AS campaign_started,
                extract(epoch FROM c.expires_after)::float8 AS expires_after,
                s.variants, s.only_if, c.send_window,
                (SELECT p.started_at FROM campaign_steps p
                 WHERE p.campaign_id = $1 AND p.step = $2 - 1) AS previous_started
         FROM s, campaigns c WHERE c.id = $1",
    )
    .bind(campaign)
    .bind(step)
    .bind(batch_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(c) = claimed else {
        return Ok(None);
    };
    let spec = Spec {
        source: Source::parse(&c.source).unwrap_or_default(),
        filters: &c.filters.0,
        reminder_type: c.reminder_type,
        interval_months: config.service_interval_months,
    };
    let mut recipients = query::all(&mut tx, &spec).await?;
    if step > 0 {
        let kept = keep(
            &mut tx,
            campaign,
            step - 1,
            c.only_if.as_deref().and_then(OnlyIf::parse),
            c.previous_started.unwrap_or_else(Utc::now),
            c.campaign_started.unwrap_or_else(Utc::now).date_naive(),
        )
        .await?;
        recipients.retain(|r| kept.contains(&r.phone));
    }
    let expires_at = c
        .expires_after
        .map(|secs| Utc::now() + chrono::Duration::seconds(secs as i64));
    let made = messages(
        &mut tx,
        config,
        campaign,
        step,
        &c.variants.0,
        &recipients,
        expires_at,
    )
    .await?;
    let mut started = Started {
        recipients: recipients.len(),
        ..Started::default()
    };
    let mut message_of: HashMap<&str, Uuid> = HashMap::new();
    for chunk in made.messages.chunks(CHUNK) {
        let items: Vec<Item<'_>> = chunk.iter().map(|(_, m)| Item::new(m, BY)).collect();
        let stored =
            store::store(&mut tx, &items, Some(batch_id), config.send_max_attempts).await?;
        for ((phone, _), s) in chunk.iter().zip(stored) {
            if let Stored::Created(a) = s {
                message_of.insert(phone.as_str(), a.id);
            }
        }
    }
    started.messages = message_of.len();
    // The messages' campaign, step and variant; the step's recipients with theirs.
    let phones: Vec<&str> = recipients.iter().map(|r| r.phone.as_str()).collect();
    let variants: Vec<i32> = recipients
        .iter()
        .map(|r| assign(campaign, &r.phone, &c.variants.0) as i32)
        .collect();
    let holdouts: Vec<bool> = variants
        .iter()
        .map(|v| c.variants.0.get(*v as usize).is_some_and(|v| v.holdout))
        .collect();
    let ids: Vec<Option<Uuid>> = phones.iter().map(|p| message_of.get(p).copied()).collect();
    let customer_ids: Vec<Option<Uuid>> = recipients.iter().map(|r| r.customer_id).collect();
    let vehicle_ids: Vec<Option<Uuid>> = recipients.iter().map(|r| r.vehicle_id).collect();
    let manual_ids: Vec<Option<Uuid>> = recipients.iter().map(|r| r.manual_id).collect();
    sqlx::query(
        "INSERT INTO campaign_recipients (campaign_id, step, phone, variant, holdout, message_id,
                                          customer_id, vehicle_id, manual_id)
         SELECT $1, $2, * FROM unnest($3::text[], $4::int[], $5::bool[], $6::uuid[], $7::uuid[],
                                      $8::uuid[], $9::uuid[])",
    )
    .bind(campaign)
    .bind(step)
    .bind(&phones)
    .bind(&variants)
    .bind(&holdouts)
    .bind(&ids)
    .bind(&customer_ids)
    .bind(&vehicle_ids)
    .bind(&manual_ids)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE messages m SET campaign_id = $1, campaign_step = $2, campaign_variant = r.variant
         FROM campaign_recipients r
         WHERE r.campaign_id = $1 AND r.step = $2 AND m.id = r.message_id",
    )
    .bind(campaign)
    .bind(step)
    .execute(&mut *tx)
    .await?;
    // Outside the campaign's own window its messages wait parked until it opens (the driver).
    if super::outside_window(c.send_window.as_deref(), config.app_timezone, Utc::now()) {
        let jobs = super::repo::unsent_jobs(&mut tx, campaign).await?;
        crate::queue::park(&mut tx, &jobs).await?;
        sqlx::query("UPDATE campaigns SET window_parked = true WHERE id = $1")
            .bind(campaign)
            .execute(&mut *tx)
            .await?;
    }
    crate::webhooks::outbox::batch_opened(&mut tx, batch_id).await?;
    let open: Option<i32> =
        sqlx::query_scalar("SELECT open FROM batch_progress WHERE batch_id = $1")
            .bind(batch_id)
            .fetch_optional(&mut *tx)
            .await?;
    if open.unwrap_or(0) == 0 {
        super::driver::step_done(&mut tx, campaign, step).await?;
        started.done = true;
    }
    tx.commit().await?;
    metrics::counter!("bengkel_campaign_messages_total", "outcome" => "queued")
        .increment(started.messages as u64);
    Ok(Some(started))
}

/// The numbers of step `previous`'s recipients that `only_if` keeps.
async fn keep(
    conn: &mut PgConnection,
    campaign: Uuid,
    previous: i32,
    only_if: Option<OnlyIf>,
    previous_started: DateTime<Utc>,
    campaign_started: NaiveDate,
) -> sqlx::Result<HashSet<String>> {
    let condition = match only_if {
        None => "true",
        Some(OnlyIf::NotRead) => "m.delivery_status IS DISTINCT FROM 'read'",
        Some(OnlyIf::NotDelivered) => {
            "m.delivery_status IS NULL OR m.delivery_status = 'undelivered'"
        }
        Some(OnlyIf::NoReply) => {
            "NOT EXISTS (SELECT 1 FROM whatsapp_contacts w \
                         WHERE w.phone = r.phone AND w.last_inbound_at >= $3)"
        }
        Some(OnlyIf::NoVisit) => {
            "NOT EXISTS (SELECT 1 FROM vehicles v \
                         WHERE v.customer_id = r.customer_id AND v.last_visit_date > $4) \
             AND NOT EXISTS (SELECT 1 FROM manual_whatsapp mw \
                             WHERE mw.id = r.manual_id AND mw.last_service > $4)"
        }
    };
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT r.phone FROM campaign_recipients r LEFT JOIN messages m ON m.id = r.message_id
         WHERE r.campaign_id = $1 AND r.step = $2 AND ({condition})"
    )))
    .bind(campaign)
    .bind(previous)
    .bind(previous_started)
    .bind(campaign_started)
    .fetch_all(conn)
    .await
    .map(|v: Vec<String>| v.into_iter().collect())
}

struct Made {
    /// (phone, message) of every recipient who gets one.
    messages: Vec<(String, NewMessage)>,
}

/// Each recipient's message from its variant's current template, in its language.
async fn messages(
    conn: &mut PgConnection,
    config: &Config,
    campaign: Uuid,
    step: i32,
    variants: &[Variant],
    recipients: &[Recipient],
    expires_at: Option<DateTime<Utc>>,
) -> sqlx::Result<Made> {
    let mut current = Vec::with_capacity(variants.len());
    for v in variants {
        current.push(match &v.template_key {
            Some(key) => templates::repo::current(&mut *conn, key).await?,
            None => None,
        });
    }
    let shop = workshop(config);
    let today = business_date(config.app_timezone, Utc::now());
    let mut made = Made {
        messages: Vec::with_capacity(recipients.len()),
    };
    for r in recipients {
        let v = assign(campaign, &r.phone, variants);
        let Some(Some(template)) = current.get(v) else {
            continue; // a holdout, or a template deleted since
        };
        let Ok(to) = PhoneNumber::parse(&r.phone) else {
            continue;
        };
        let subject = Subject {
            name: r.name.as_deref().unwrap_or_default(),
            salutation: r.salutation.as_deref(),
            language: r.language,
            no_pol: r.no_pol.as_deref().unwrap_or_default(),
            model: r.model.as_deref(),
            due: r.due_date.unwrap_or(today),
            today,
        };
        let (body, origin) = template.render_recorded(&subject, &shop);
        if body.trim().is_empty() || templates::check_text(&body).is_err() {
            tracing::warn!(%campaign, step, phone = r.phone, "campaign message renders empty or too long: not sent");
            continue;
        }
        let mut message =
            NewMessage::internal(Kind::Campaign, to, body, None).with_template(origin);
        message.expires_at = expires_at;
        made.messages.push((r.phone.clone(), message));
    }
    Ok(made)
}
