//! Campaigns in the database: made as drafts, their status moved by one conditional update each
//! (a move the status does not allow changes nothing: `409`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

use super::{
    Status, Step,
    request::{Audience, NewCampaign},
};
use crate::{
    error::FieldError,
    gateway::settings::GatewayKind,
    segments::{Filters, Source},
    templates::cloud_api::unsendable,
};

/// A campaign as `GET /campaigns` lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Campaign {
    pub id: Uuid,
    pub name: String,
    pub segment_id: Option<Uuid>,
    /// The segment as it was when the campaign was made.
    pub source: String,
    #[schema(value_type = Filters)]
    pub filters: Json<Filters>,
    pub reminder_type: bool,
    pub status: String,
    pub start_at: Option<DateTime<Utc>>,
    /// Seconds: a message not sent this long after its step started expires.
    pub expires_after: Option<i64>,
    /// Its own send window (`HH:MM-HH:MM`), on top of the delivery policy's.
    pub send_window: Option<String>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub const COLUMNS: &str = "id, name, segment_id, source, filters, reminder_type, status, start_at, \
     extract(epoch FROM expires_after)::bigint AS expires_after, send_window, created_by, created_at, \
     started_at, finished_at";

/// Why a new campaign was not stored.
pub enum Refused {
    Invalid(Vec<FieldError>),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for Refused {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

/// Stores `new` as a draft: its segment (saved, or given) copied, its templates checked.
pub async fn create(
    pool: &PgPool,
    gateway: GatewayKind,
    new: &NewCampaign,
    by: &str,
) -> Result<Campaign, Refused> {
    let mut errors = Vec::new();
    let (segment_id, source, filters) = match &new.audience {
        Audience::Given(source, filters) => (None, *source, filters.clone()),
        Audience::Saved(id) => {
            let row: Option<(String, Json<Filters>)> =
                sqlx::query_as("SELECT source, filters FROM segments WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            match row {
                Some((source, Json(filters))) => (
                    Some(*id),
                    Source::parse(&source).unwrap_or_default(),
                    filters,
                ),
                None => {
                    errors.push(FieldError::new(
                        "segment_id",
                        format!("segment {id} not found"),
                    ));
                    (None, Source::default(), Filters::default())
                }
            }
        }
    };
    let keys: Vec<String> = new
        .steps
        .iter()
        .flat_map(|s| s.variants.iter().filter_map(|v| v.template_key.clone()))
        .collect();
    let known: Vec<String> = sqlx::query_scalar("SELECT key FROM templates WHERE key = ANY($1)")
        .bind(&keys)
        .fetch_all(pool)
        .await?;
    for (i, step) in new.steps.iter().enumerate() {
        for (j, v) in step.variants.iter().enumerate() {
            let Some(key) = &v.template_key else { continue };
            let field = format!("steps[{i}].variants[{j}].template_key");
            if !known.contains(key) {
                errors.push(FieldError::new(
                    field,
                    format!("template {key:?} not found"),
                ));
            } else if crate::admin::placeholders_for(key).is_some()
                || key == crate::inbound::OPTOUT_CONFIRMATION
            {
                errors.push(FieldError::new(
                    field,
                    format!("{key:?} is not written to customers"),
                ));
            } else if unsendable(pool, gateway, key).await?.is_some() {
                // On the Cloud API a campaign reaches people outside their 24-hour window:
                // only as an approved WhatsApp template.
                errors.push(FieldError::new(
                    field,
                    format!(
                        "{key:?} is not mapped to a WhatsApp template: PUT /templates/{key}/cloud-api first"
                    ),
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(Refused::Invalid(errors));
    }
    let mut tx = pool.begin().await?;
    let id = Uuid::now_v7();
    let campaign: Campaign = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO campaigns (id, name, segment_id, source, filters, reminder_type, start_at,
                                expires_after, created_by, send_window)
         VALUES ($1, $2, $3, $4, $5, $6, $7, make_interval(secs => $8), $9, $10)
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(&new.name)
    .bind(segment_id)
    .bind(source.as_str())
    .bind(Json(&filters))
    .bind(new.reminder_type)
    .bind(new.start_at)
    .bind(new.expires_after_secs.map(|s| s as f64))
    .bind(by)
    .bind(new.send_window.map(|w| w.to_string()))
    .fetch_one(&mut *tx)
    .await?;
    for (i, step) in new.steps.iter().enumerate() {
        sqlx::query(
            "INSERT INTO campaign_steps (campaign_id, step, variants, delay_days, only_if)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(i as i32)
        .bind(Json(&step.variants))
        .bind(step.delay_days as i32)
        .bind(step.only_if.map(|o| o.as_str()))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(campaign)
}

pub async fn get(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Campaign>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM campaigns WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<Campaign>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM campaigns ORDER BY created_at DESC, id DESC LIMIT 500"
    )))
    .fetch_all(pool)
    .await
}

/// A step as stored, with what it is doing.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = CampaignStep)]
pub struct StepRow {
    pub step: i32,
    #[schema(value_type = Step)]
    #[sqlx(skip)]
    #[serde(flatten)]
    pub definition: Option<Step>,
    #[serde(skip)]
    pub variants: Json<Vec<super::Variant>>,
    #[serde(skip)]
    pub delay_days: i32,
    #[serde(skip)]
    pub only_if: Option<String>,
    /// `pending`, `running` (its messages are out), `done` (every one final), `cancelled`.
    pub status: String,
    pub due_at: Option<DateTime<Utc>>,
    /// Its §11 batch (`GET /whatsapp/messages?batch=…`, `batch.finished`).
    pub batch_id: Option<Uuid>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub async fn steps(pool: &PgPool, id: Uuid) -> sqlx::Result<Vec<StepRow>> {
    let mut rows: Vec<StepRow> = sqlx::query_as(
        "SELECT step, variants, delay_days, only_if, status, due_at, batch_id, started_at,
                finished_at
         FROM campaign_steps WHERE campaign_id = $1 ORDER BY step",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    for r in &mut rows {
        r.definition = Some(Step {
            variants: r.variants.0.clone(),
            delay_days: u32::try_from(r.delay_days).unwrap_or(0),
            only_if: r.only_if.as_deref().and_then(super::OnlyIf::parse),
        });
    }
    Ok(rows)
}

/// `draft` → `scheduled` (a `start_at` ahead) or `running`; the first step is due then.
/// `None` when the status does not allow it.
pub async fn start(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Status>> {
    let mut tx = pool.begin().await?;
    let status: Option<String> = sqlx::query_scalar(
        "UPDATE campaigns SET
            status = CASE WHEN start_at > now() THEN 'scheduled' ELSE 'running' END,
            started_at = greatest(coalesce(start_at, now()), now())
         WHERE id = $1 AND status = 'draft' RETURNING status",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if status.is_some() {
        sqlx::query(
            "UPDATE campaign_steps SET due_at = c.started_at FROM campaigns c
             WHERE c.id = $1 AND campaign_id = $1 AND step = 0",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(status.map(|s| {
        if s == "scheduled" {
            Status::Scheduled
        } else {
            Status::Running
        }
    }))
}

/// Cancels a campaign that has not ended: its steps not started and its messages not sent yet.
/// Returns how many messages were cancelled; `None` when the status does not allow it.
pub async fn cancel(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<u64>> {
    let mut tx = pool.begin().await?;
    let moved = sqlx::query(
        "UPDATE campaigns SET status = 'cancelled', finished_at = now()
         WHERE id = $1 AND status IN ('draft', 'scheduled', 'running', 'paused')",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved == 0 {
        return Ok(None);
    }
    sqlx::query(
        "UPDATE campaign_steps SET status = 'cancelled'
         WHERE campaign_id = $1 AND status = 'pending'",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let cancelled = crate::messages::withdraw::cancel_for_campaign(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Some(cancelled))
}

/// `running`/`scheduled` → `paused`: no step starts, and its messages waiting to be sent are
/// parked (`queue::park`). Returns how many; `None` when the status does not allow it.
pub async fn pause(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<u64>> {
    let mut tx = pool.begin().await?;
    let moved = sqlx::query(
        "UPDATE campaigns SET status = 'paused' WHERE id = $1 AND status IN ('scheduled', 'running')",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved == 0 {
        return Ok(None);
    }
    let jobs = unsent_jobs(&mut tx, id).await?;
    let n = crate::queue::park(&mut tx, &jobs).await?;
    tx.commit().await?;
    Ok(Some(n))
}

/// `paused` → `running` (or `scheduled` when its `start_at` is still ahead): its parked messages
/// are due now — unless its own send window is closed (`tz`): then they stay parked until it
/// opens. Returns how many woke; `None` when the status does not allow it.
pub async fn resume(pool: &PgPool, id: Uuid, tz: chrono_tz::Tz) -> sqlx::Result<Option<u64>> {
    let mut tx = pool.begin().await?;
    let window: Option<Option<String>> = sqlx::query_scalar(
        "UPDATE campaigns SET status = CASE WHEN start_at > now() THEN 'scheduled' ELSE 'running' END
         WHERE id = $1 AND status = 'paused' RETURNING send_window",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(window) = window else {
        return Ok(None);
    };
    let closed = super::outside_window(window.as_deref(), tz, Utc::now());
    sqlx::query("UPDATE campaigns SET window_parked = $2 WHERE id = $1")
        .bind(id)
        .bind(closed)
        .execute(&mut *tx)
        .await?;
    let n = if closed {
        0
    } else {
        let jobs = unsent_jobs(&mut tx, id).await?;
        crate::queue::unpark(&mut tx, &jobs).await?
    };
    tx.commit().await?;
    Ok(Some(n))
}

pub(super) async fn unsent_jobs(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT job_id FROM messages
         WHERE campaign_id = $1 AND status IN ('queued', 'retrying') AND job_id IS NOT NULL",
    )
    .bind(id)
    .fetch_all(conn)
    .await
}
