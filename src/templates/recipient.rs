//! Who a number belongs to, for a template send (README "Templates": sending a template): the
//! customer or manual record whose phone it is gives the placeholders it knows — as its
//! reminder would — and its language. One query per kind of record for all the numbers of a
//! request (a batch has up to 1,000).

use std::collections::HashMap;

use chrono::NaiveDate;
use sqlx::PgPool;

use super::{Language, Values, tanggal, tanggal_dmy};
use crate::reminders::calendar;

/// Where a number is looked up first: an ad-hoc send is about a customer, a manual send about
/// a manual record; the other kind of record is asked only for the numbers the first lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefer {
    Customers,
    Manual,
}

/// The record a number belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipient {
    /// `nama` (manual records: `customer_name`); `None` when empty.
    pub name: Option<String>,
    /// The stored salutation (`None`: not given; `Some("")`: none wanted).
    pub salutation: Option<String>,
    pub language: Language,
    /// Its vehicle, when it has exactly one (a manual record always has its own).
    pub vehicle: Option<Vehicle>,
}

/// A vehicle's placeholders' sources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vehicle {
    pub no_pol: Option<String>,
    pub model: Option<String>,
    pub next: Option<NaiveDate>,
    pub last: Option<NaiveDate>,
}

fn present(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Recipient {
    /// The placeholders the record fills — `nama`, `no_pol`, `model` and the due date's
    /// `tanggal` (in `language`), `tanggal_dmy`, `hari` (from `today`) — each only when it has
    /// a value. The salutation is left to the caller: it goes with the name finally used.
    pub fn values(&self, language: Language, today: NaiveDate, interval_months: u32) -> Values {
        let mut out = Values::new();
        if let Some(name) = present(&self.name) {
            out.insert("nama".into(), name.to_owned());
        }
        let Some(v) = &self.vehicle else {
            return out;
        };
        if let Some(no_pol) = present(&v.no_pol) {
            out.insert("no_pol".into(), no_pol.to_owned());
        }
        if let Some(model) = present(&v.model) {
            out.insert("model".into(), model.to_owned());
        }
        if let Some((due, _)) = calendar::due_date(v.next, v.last, interval_months) {
            out.insert("tanggal".into(), tanggal(due, language));
            out.insert("tanggal_dmy".into(), tanggal_dmy(due));
            out.insert("hari".into(), (due - today).num_days().to_string());
        }
        out
    }
}

#[derive(sqlx::FromRow)]
struct CustomerRow {
    phone: String,
    nama: Option<String>,
    salutation: Option<String>,
    language: String,
    vehicles: Option<i64>,
    no_pol: Option<String>,
    model: Option<String>,
    next_visit_date: Option<NaiveDate>,
    last_visit_date: Option<NaiveDate>,
}

#[derive(sqlx::FromRow)]
struct ManualRow {
    phone: String,
    customer_name: String,
    salutation: Option<String>,
    language: String,
    nopol: String,
    next_service: Option<NaiveDate>,
    last_service: Option<NaiveDate>,
}

/// Customers by their phone in its normalized form (`customers.phone`: `phone_normalized(hp)`,
/// stored and indexed; `hp` is kept as typed); of several with one number, the one changed last.
async fn customers(pool: &PgPool, phones: &[&str]) -> sqlx::Result<HashMap<String, Recipient>> {
    let rows: Vec<CustomerRow> = sqlx::query_as(
        "SELECT DISTINCT ON (p.phone) p.phone, c.nama, c.salutation, c.language, v.vehicles,
                v.no_pol, v.model, v.next_visit_date, v.last_visit_date
         FROM unnest($1::text[]) AS p(phone)
         JOIN customers c ON c.phone = p.phone
         LEFT JOIN LATERAL (
             SELECT count(*) OVER () AS vehicles, no_pol, model, next_visit_date, last_visit_date
             FROM vehicles WHERE customer_id = c.id LIMIT 1
         ) v ON true
         ORDER BY p.phone, c.updated_at DESC, c.id",
    )
    .bind(phones)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let vehicle = (r.vehicles == Some(1)).then_some(Vehicle {
                no_pol: r.no_pol,
                model: r.model,
                next: r.next_visit_date,
                last: r.last_visit_date,
            });
            let recipient = Recipient {
                name: r.nama,
                salutation: r.salutation,
                language: Language::from_db(&r.language),
                vehicle,
            };
            (r.phone, recipient)
        })
        .collect())
}

/// Manual records by `no_hp` (stored normalized); of several with one number, an active one
/// changed last.
async fn manual(pool: &PgPool, phones: &[&str]) -> sqlx::Result<HashMap<String, Recipient>> {
    let rows: Vec<ManualRow> = sqlx::query_as(
        "SELECT DISTINCT ON (no_hp) no_hp AS phone, customer_name, salutation, language, nopol,
                next_service, last_service
         FROM manual_whatsapp WHERE no_hp = ANY($1)
         ORDER BY no_hp, is_active DESC, updated_at DESC, id",
    )
    .bind(phones)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let recipient = Recipient {
                name: Some(r.customer_name),
                salutation: r.salutation,
                language: Language::from_db(&r.language),
                vehicle: Some(Vehicle {
                    no_pol: Some(r.nopol),
                    model: None,
                    next: r.next_service,
                    last: r.last_service,
                }),
            };
            (r.phone, recipient)
        })
        .collect())
}

/// The records `phones` (normalized) belong to; a number that belongs to nothing is absent.
pub async fn find(
    pool: &PgPool,
    phones: &[&str],
    prefer: Prefer,
) -> sqlx::Result<HashMap<String, Recipient>> {
    if phones.is_empty() {
        return Ok(HashMap::new());
    }
    let mut found = match prefer {
        Prefer::Customers => customers(pool, phones).await?,
        Prefer::Manual => manual(pool, phones).await?,
    };
    let rest: Vec<&str> = phones
        .iter()
        .copied()
        .filter(|p| !found.contains_key(*p))
        .collect();
    if !rest.is_empty() {
        let others = match prefer {
            Prefer::Customers => manual(pool, &rest).await?,
            Prefer::Manual => customers(pool, &rest).await?,
        };
        found.extend(others);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_fills_what_it_has_and_the_due_date_in_the_language_asked() {
        let d = |m, day| NaiveDate::from_ymd_opt(2026, m, day).unwrap();
        let r = Recipient {
            name: Some(" Siti ".into()),
            salutation: Some("Ibu".into()),
            language: Language::Id,
            vehicle: Some(Vehicle {
                no_pol: Some("B 1 A".into()),
                model: Some(" ".into()),
                next: None,
                last: Some(d(8, 1)),
            }),
        };
        let v = r.values(Language::En, d(11, 29), 4);
        assert_eq!(v["nama"], "Siti");
        assert_eq!(v["no_pol"], "B 1 A");
        assert!(!v.contains_key("model"), "an empty model fills nothing");
        assert_eq!(v["tanggal"], "1 December 2026");
        assert_eq!(v["tanggal_dmy"], "01-12-2026");
        assert_eq!(v["hari"], "2");
        assert!(!v.contains_key("salutation"));
        let nobody = Recipient::default().values(Language::Id, d(11, 29), 4);
        assert!(nobody.is_empty(), "{nobody:?}");
    }
}
