//! A campaign's results per step and variant (SPEC §15; every variant of a started step, also
//! one that got nobody): what became of its messages, their
//! receipts, and what the recipients did — replied within 7 days of the step's start, visited
//! (a newer last visit) within 30 — holdouts included, so the variants' reply and visit rates
//! can be set against theirs.

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct VariantResult {
    pub step: i32,
    pub variant: i32,
    /// Its recipients got no message.
    pub holdout: bool,
    pub recipients: i64,
    /// Recipients of a template variant who got no message: it rendered empty or too long, or
    /// its template was deleted (the log says which).
    pub skipped: i64,
    /// Not sent yet (`queued`, `sending`, `retrying`).
    pub queued: i64,
    pub sent: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub expired: i64,
    /// Receipts: delivered (read ones included), read.
    pub delivered: i64,
    pub read: i64,
    /// Wrote to us within 7 days of the step's start.
    pub replied: i64,
    /// A newer last visit within 30 days of the step's start.
    pub visited: i64,
    #[sqlx(skip)]
    pub rates: Rates,
}

/// Shares, 0 to 1 (`null` without a base).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[schema(as = CampaignRates)]
pub struct Rates {
    /// sent / (recipients − holdout).
    pub sent: Option<f64>,
    /// delivered / sent.
    pub delivered: Option<f64>,
    /// read / sent.
    pub read: Option<f64>,
    /// replied / recipients.
    pub replied: Option<f64>,
    /// visited / recipients.
    pub visited: Option<f64>,
}

fn share(n: i64, of: i64) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

pub async fn of(pool: &PgPool, campaign: Uuid) -> sqlx::Result<Vec<VariantResult>> {
    let mut rows: Vec<VariantResult> = sqlx::query_as(
        "SELECT v.step, v.variant, v.holdout, count(r.phone) AS recipients,
                count(*) FILTER (WHERE r.phone IS NOT NULL AND r.message_id IS NULL
                                 AND NOT r.holdout) AS skipped,
                count(*) FILTER (WHERE m.status IN ('queued', 'sending', 'retrying')) AS queued,
                count(*) FILTER (WHERE m.status = 'sent') AS sent,
                count(*) FILTER (WHERE m.status = 'failed') AS failed,
                count(*) FILTER (WHERE m.status = 'cancelled') AS cancelled,
                count(*) FILTER (WHERE m.status = 'expired') AS expired,
                count(*) FILTER (WHERE m.delivery_status IN ('delivered', 'read')) AS delivered,
                count(*) FILTER (WHERE m.delivery_status = 'read') AS read,
                count(*) FILTER (WHERE EXISTS (
                    SELECT 1 FROM inbound_messages i WHERE i.from_phone = r.phone
                       AND i.received_at >= v.started_at
                       AND i.received_at < v.started_at + interval '7 days')) AS replied,
                count(*) FILTER (WHERE EXISTS (
                    SELECT 1 FROM vehicles ve WHERE ve.customer_id = r.customer_id
                       AND ve.last_visit_date > v.started_at::date
                       AND ve.last_visit_date <= v.started_at::date + 30)
                    OR EXISTS (
                    SELECT 1 FROM manual_whatsapp mw WHERE mw.id = r.manual_id
                       AND mw.last_service > v.started_at::date
                       AND mw.last_service <= v.started_at::date + 30)) AS visited
         FROM (SELECT s.campaign_id, s.step, s.started_at, (e.ord - 1)::int AS variant,
                      coalesce((e.v ->> 'holdout')::bool, false) AS holdout
               FROM campaign_steps s
               CROSS JOIN LATERAL jsonb_array_elements(s.variants) WITH ORDINALITY AS e(v, ord)
               WHERE s.campaign_id = $1 AND s.started_at IS NOT NULL) v
         LEFT JOIN campaign_recipients r
                ON r.campaign_id = v.campaign_id AND r.step = v.step AND r.variant = v.variant
         LEFT JOIN messages m ON m.id = r.message_id
         GROUP BY v.step, v.variant, v.holdout ORDER BY v.step, v.variant",
    )
    .bind(campaign)
    .fetch_all(pool)
    .await?;
    for r in &mut rows {
        let messaged = if r.holdout { 0 } else { r.recipients };
        r.rates = Rates {
            sent: share(r.sent, messaged),
            delivered: share(r.delivered, r.sent),
            read: share(r.read, r.sent),
            replied: share(r.replied, r.recipients),
            visited: share(r.visited, r.recipients),
        };
    }
    Ok(rows)
}
