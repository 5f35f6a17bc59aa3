//! Operator look-ups: find events, payments and members by what an operator knows (a payment
//! reference, an event id, a mandate id, an email), their timelines, counts by status, and
//! registering an expected payment. One set of queries for the admin API, the ops console
//! (through the API) and `payhook-worker show`.
//!
//! Lists are keyset-paginated on `id`, newest first: a page holds at most `limit` rows and
//! `next` is the cursor for the following page (`id < cursor`), `None` on the last page.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

/// Rows per page when the caller does not say.
pub const DEFAULT_LIMIT: i64 = 50;
/// The most rows one page may hold.
pub const MAX_LIMIT: i64 = 500;

/// Every `webhook_events.status`, in the order an event moves through them.
pub const EVENT_STATUSES: [&str; 6] = [
    "received",
    "published",
    "processed",
    "retrying",
    "dead",
    "ignored",
];

/// The providers payhook knows (the `provider` column values).
pub const PROVIDERS: [&str; 4] = ["gocardless", "paystack", "flutterwave", "payqi"];

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The cursor of the next page, `None` when this is the last one.
    pub next: Option<i64>,
}

/// Where a page starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Only rows with `id < cursor` (the `next` of the previous page).
    pub cursor: Option<i64>,
    pub limit: i64,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            cursor: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl PageRequest {
    /// A page request from `?limit=&cursor=` texts: the limit is capped at [`MAX_LIMIT`];
    /// anything that is not a positive integer is an error saying so.
    pub fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<Self, String> {
        let limit = match limit.filter(|s| !s.is_empty()) {
            None => DEFAULT_LIMIT,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if n > 0 => n.min(MAX_LIMIT),
                _ => return Err(format!("limit must be a positive integer, not {s:?}")),
            },
        };
        let cursor = match cursor.filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => match s.parse::<i64>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(format!("cursor must be a positive integer, not {s:?}")),
            },
        };
        Ok(Self { cursor, limit })
    }

    /// Cuts the `limit + 1` rows fetched into a page.
    pub(crate) fn page<T>(self, mut rows: Vec<T>, id: impl Fn(&T) -> i64) -> Page<T> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(id)
        } else {
            None
        };
        Page { items: rows, next }
    }
}

/// A `webhook_events` row without its payload (lists and timelines).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub delivery_id: Option<i64>,
    pub provider: String,
    pub external_id: String,
    pub event_type: String,
    pub resource_id: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub processed_at: Option<DateTime<Utc>>,
}

/// One event with its payload (the gateway's JSON as received).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventDetail {
    #[serde(flatten)]
    pub event: EventRow,
    pub payload: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct PaymentRow {
    pub id: i64,
    pub provider: String,
    pub external_id: String,
    pub reference: Option<String>,
    pub member_id: Option<i64>,
    pub mandate_id: Option<String>,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub status: String,
    pub failure_reason: Option<String>,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct MemberRow {
    pub id: i64,
    pub mandate_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub membership_type: String,
    pub address_line1: Option<String>,
    pub address_line2: Option<String>,
    pub city: Option<String>,
    pub county: Option<String>,
    pub postcode: Option<String>,
    pub status: String,
    pub status_reason: Option<String>,
    pub joined_on: Option<NaiveDate>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What to list events by; every field narrows the list, `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub status: Option<String>,
    pub provider: Option<String>,
    /// payhook's event id, the gateway's event id, the resource id (payment, mandate), a
    /// payment's reference or external id, a mandate id or a member's email.
    pub q: Option<String>,
}

const EVENT_COLUMNS: &str = "e.id, e.delivery_id, e.provider, e.external_id, e.event_type,
    e.resource_id, e.status, e.attempts, e.last_error, e.occurred_at, e.received_at,
    e.published_at, e.processed_at";

/// The events a search text `$1` (numeric form `$2`) is about: the event itself, or every
/// event of the payments and members it names. A payment's events carry its external id (or
/// reference) as resource id; a mandate's events carry the mandate id.
const EVENT_MATCH: &str = "(
    e.id = $2 OR e.external_id = $1 OR e.resource_id = $1
    OR EXISTS (
        SELECT 1 FROM payments p
        WHERE p.provider = e.provider AND e.resource_id IN (p.external_id, p.reference)
          AND (p.reference = $1 OR p.external_id = $1 OR p.mandate_id = $1
               OR p.member_id IN (SELECT m.id FROM members m
                                  WHERE m.mandate_id = $1 OR lower(m.email) = lower($1))))
    OR (e.provider = 'gocardless' AND EXISTS (
        SELECT 1 FROM members m
        WHERE m.mandate_id = e.resource_id AND lower(m.email) = lower($1)))
)";

fn numeric(q: &str) -> Option<i64> {
    q.trim().parse().ok()
}

/// Events matching `filter`, newest first.
pub async fn list_events(
    pool: &PgPool,
    filter: &EventFilter,
    page: PageRequest,
) -> Result<Page<EventRow>, sqlx::Error> {
    let q = filter.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM webhook_events e
         WHERE ($1::text IS NULL OR {EVENT_MATCH})
           AND ($3::text IS NULL OR e.status = $3)
           AND ($4::text IS NULL OR e.provider = $4)
           AND ($5::bigint IS NULL OR e.id < $5)
         ORDER BY e.id DESC LIMIT $6"
    );
    let rows: Vec<EventRow> = sqlx::query_as(&sql)
        .bind(q)
        .bind(q.and_then(numeric))
        .bind(filter.status.as_deref())
        .bind(filter.provider.as_deref())
        .bind(page.cursor)
        .bind(page.limit + 1)
        .fetch_all(pool)
        .await?;
    Ok(page.page(rows, |e| e.id))
}

/// One event with its payload.
pub async fn event(pool: &PgPool, id: i64) -> Result<Option<EventDetail>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        event: EventRow,
        payload: Value,
    }
    let sql = format!("SELECT {EVENT_COLUMNS}, e.payload FROM webhook_events e WHERE e.id = $1");
    let row: Option<Row> = sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?;
    Ok(row.map(|r| EventDetail {
        event: r.event,
        payload: r.payload,
    }))
}

/// What an EVENT_ID names: payhook's numeric `webhook_events.id` or a gateway's event id
/// (DESIGN.md, "Operators"), as the CLI and the admin API take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventRef {
    /// Exactly one event: its payhook id.
    One(i64),
    None,
    /// A gateway id that several providers use: (provider, payhook id) of each, by id.
    Ambiguous(Vec<(String, i64)>),
}

impl EventRef {
    /// The message for an id that names several events: which ones, and how to pick.
    pub fn ambiguity(name: &str, candidates: &[(String, i64)]) -> String {
        let named: Vec<String> = candidates
            .iter()
            .map(|(p, id)| format!("{p} (event {id})"))
            .collect();
        format!(
            "{name:?} is an event id of {}: name the provider (--provider / ?provider=) or use payhook's id",
            named.join(" and ")
        )
    }
}

/// Resolves an EVENT_ID. Without `provider`, payhook's own id wins when the text is one (it is
/// the primary key, and no gateway numbers its events like ours); otherwise the gateway id,
/// which may be shared. With `provider`, that gateway's id wins, then payhook's id if the
/// event is that provider's.
pub async fn resolve_event(
    pool: &PgPool,
    name: &str,
    provider: Option<&str>,
) -> Result<EventRef, sqlx::Error> {
    let name = name.trim();
    let rows: Vec<(i64, String, bool)> = sqlx::query_as(
        "SELECT id, provider, (id = $2) IS TRUE AS by_id FROM webhook_events
         WHERE (id = $2 OR external_id = $1) AND ($3::text IS NULL OR provider = $3)
         ORDER BY id LIMIT 20",
    )
    .bind(name)
    .bind(numeric(name))
    .bind(provider)
    .fetch_all(pool)
    .await?;
    let (by_id, by_gateway): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.2);
    let own = by_id.first().map(|r| r.0);
    let resolved = match (provider, own, by_gateway.as_slice()) {
        (None, Some(id), _) => EventRef::One(id),
        (_, _, [(id, _, _)]) => EventRef::One(*id),
        (_, Some(id), []) => EventRef::One(id),
        (_, None, []) => EventRef::None,
        (_, _, many) => {
            EventRef::Ambiguous(many.iter().map(|(id, p, _)| (p.clone(), *id)).collect())
        }
    };
    Ok(resolved)
}

const PAYMENT_COLUMNS: &str = "p.id, p.provider, p.external_id, p.reference, p.member_id,
    p.mandate_id, p.amount_minor, p.currency, p.status, p.failure_reason, p.metadata,
    p.created_at, p.updated_at";

/// The payment with payhook's id `id`.
pub async fn payment_by_id(pool: &PgPool, id: i64) -> Result<Option<PaymentRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments p WHERE p.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Payments whose reference, external id or mandate id is `q`, or whose member's email is
/// `q` (case-insensitive); every payment when `q` is `None`. Newest first.
pub async fn list_payments(
    pool: &PgPool,
    q: Option<&str>,
    page: PageRequest,
) -> Result<Page<PaymentRow>, sqlx::Error> {
    let q = q.map(str::trim).filter(|q| !q.is_empty());
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments p
         WHERE ($1::text IS NULL OR p.reference = $1 OR p.external_id = $1 OR p.mandate_id = $1
                OR p.member_id IN (SELECT m.id FROM members m WHERE lower(m.email) = lower($1)))
           AND ($2::bigint IS NULL OR p.id < $2)
         ORDER BY p.id DESC LIMIT $3"
    );
    let rows: Vec<PaymentRow> = sqlx::query_as(&sql)
        .bind(q)
        .bind(page.cursor)
        .bind(page.limit + 1)
        .fetch_all(pool)
        .await?;
    Ok(page.page(rows, |p| p.id))
}

const MEMBER_COLUMNS: &str = "m.id, m.mandate_id, m.name, m.email, m.membership_type,
    m.address_line1, m.address_line2, m.city, m.county, m.postcode, m.status, m.status_reason,
    m.joined_on, m.created_at, m.updated_at";

/// Members whose mandate id or email is `q` (case-insensitive), or whose name contains it;
/// every member when `q` is `None`. Newest first.
pub async fn list_members(
    pool: &PgPool,
    q: Option<&str>,
    page: PageRequest,
) -> Result<Page<MemberRow>, sqlx::Error> {
    let q = q.map(str::trim).filter(|q| !q.is_empty());
    let sql = format!(
        "SELECT {MEMBER_COLUMNS} FROM members m
         WHERE ($1::text IS NULL OR m.mandate_id = $1 OR lower(m.email) = lower($1)
                OR m.name ILIKE '%' || replace(replace(replace($1, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%')
           AND ($2::bigint IS NULL OR m.id < $2)
         ORDER BY m.id DESC LIMIT $3"
    );
    let rows: Vec<MemberRow> = sqlx::query_as(&sql)
        .bind(q)
        .bind(page.cursor)
        .bind(page.limit + 1)
        .fetch_all(pool)
        .await?;
    Ok(page.page(rows, |m| m.id))
}

/// Everything a search text finds: the payments and members it names, and their events (or
/// the event it names) in the order they happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub payments: Vec<PaymentRow>,
    pub members: Vec<MemberRow>,
    /// Oldest first, by the gateway's time (else when received), then id.
    pub events: Vec<EventRow>,
    /// The bank transactions `q` names (the bank's transaction id) and those that paid the
    /// payments above.
    pub bank_transactions: Vec<crate::bank::BankTransaction>,
}

impl Timeline {
    pub fn is_empty(&self) -> bool {
        self.payments.is_empty()
            && self.members.is_empty()
            && self.events.is_empty()
            && self.bank_transactions.is_empty()
    }
}

/// The timeline of `q` (a reference, event id, mandate id or email), at most `limit` rows of
/// each kind.
pub async fn timeline(pool: &PgPool, q: &str, limit: i64) -> Result<Timeline, sqlx::Error> {
    let page = PageRequest {
        cursor: None,
        limit: limit.clamp(1, MAX_LIMIT),
    };
    let filter = EventFilter {
        q: Some(q.to_owned()),
        ..Default::default()
    };
    let (payments, members, events) = tokio::try_join!(
        list_payments(pool, Some(q), page),
        list_members(pool, Some(q), page),
        list_events(pool, &filter, page),
    )?;
    let mut events = events.items;
    events.sort_by_key(|e| (e.occurred_at.unwrap_or(e.received_at), e.id));
    let mut payments = payments.items;
    let mut bank_transactions = crate::bank::by_transaction_id(pool, q).await?;
    for b in &bank_transactions {
        if let Some(id) = b
            .payment_id
            .filter(|id| !payments.iter().any(|p| p.id == *id))
        {
            payments.extend(payment_by_id(pool, id).await?);
        }
    }
    for p in &payments {
        if let Some(b) = crate::bank::paid_by(pool, p.id).await? {
            if !bank_transactions.iter().any(|x| x.id == b.id) {
                bank_transactions.push(b);
            }
        }
    }
    Ok(Timeline {
        payments,
        members: members.items,
        events,
        bank_transactions,
    })
}

/// Events by status, every status present (0 when none).
pub async fn event_counts(pool: &PgPool) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    counts(
        pool,
        "SELECT status, count(*) FROM webhook_events GROUP BY status",
        &EVENT_STATUSES,
    )
    .await
}

/// Payments by status (only the statuses that occur).
pub async fn payment_counts(pool: &PgPool) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    counts(
        pool,
        "SELECT status, count(*) FROM payments GROUP BY status",
        &[],
    )
    .await
}

async fn counts(
    pool: &PgPool,
    sql: &str,
    every: &[&str],
) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let mut out: BTreeMap<String, i64> = every.iter().map(|s| ((*s).to_owned(), 0)).collect();
    let rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(pool).await?;
    out.extend(rows);
    Ok(out)
}

/// An expected payment an operator registers before the gateway reports it, so the
/// reconciler asks the gateway about it once it is older than `PENDING_AFTER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPendingPayment {
    pub provider: String,
    pub external_id: String,
    pub reference: String,
    pub amount_minor: i64,
    pub currency: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{0}")]
    Invalid(String),
    #[error("payment {provider}/{external_id} already exists")]
    Exists {
        provider: String,
        external_id: String,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl NewPendingPayment {
    /// Checks every field; the error says which one is wrong and why.
    pub fn validate(&self) -> Result<(), String> {
        // `bank`: a payment expected by bank transfer, completed by a matched bank credit
        // (DESIGN.md, "Bank data"); no gateway is asked about it.
        if !PROVIDERS.contains(&self.provider.as_str()) && self.provider != "bank" {
            return Err(format!(
                "provider must be one of {}, bank, not {:?}",
                PROVIDERS.join(", "),
                self.provider
            ));
        }
        for (field, value) in [
            ("external_id", &self.external_id),
            ("reference", &self.reference),
        ] {
            if value.trim().is_empty() {
                return Err(format!("{field} must not be empty"));
            }
            if value.len() > 255 || value.trim() != value {
                return Err(format!(
                    "{field} must be at most 255 characters, without surrounding blanks"
                ));
            }
        }
        if self.amount_minor <= 0 {
            return Err("amount_minor must be a positive integer (minor units)".into());
        }
        let code_ok =
            self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase());
        if !code_ok || crate::money::exponent(&self.currency).is_err() {
            return Err(format!(
                "currency must be an upper-case ISO 4217 code, not {:?}",
                self.currency
            ));
        }
        Ok(())
    }
}

/// Stores `p` as a `pending` payment, then tries the bank credits still waiting for theirs
/// (unmatched or ambiguous): the answer is the payment as it is after that, completed if a
/// credit paid it. Nothing is written when it is invalid or when the gateway's id is already
/// known.
pub async fn register_pending_payment(
    pool: &PgPool,
    p: &NewPendingPayment,
) -> Result<PaymentRow, RegisterError> {
    p.validate().map_err(RegisterError::Invalid)?;
    let sql = format!(
        "INSERT INTO payments AS p (provider, external_id, reference, amount_minor, currency, status, metadata)
         VALUES ($1, $2, $3, $4, $5, 'pending', '{{\"registered_by\": \"admin\"}}'::jsonb)
         ON CONFLICT (provider, external_id) DO NOTHING
         RETURNING {PAYMENT_COLUMNS}"
    );
    let row: Option<PaymentRow> = sqlx::query_as(&sql)
        .bind(&p.provider)
        .bind(&p.external_id)
        .bind(&p.reference)
        .bind(p.amount_minor)
        .bind(&p.currency)
        .fetch_optional(pool)
        .await?;
    let row = row.ok_or_else(|| RegisterError::Exists {
        provider: p.provider.clone(),
        external_id: p.external_id.clone(),
    })?;
    // The payment is registered whatever happens next: a failure here is the reconciler's to
    // retry, not the caller's (a retried registration would only be told it exists).
    match crate::domain::bank_matching::retry_for_payment(pool, row.id).await {
        Ok(matched) if !matched.is_empty() => {}
        Ok(_) => return Ok(row),
        Err(e) => {
            tracing::warn!(payment_id = row.id, error = %e, "bank credits not tried against a registered payment; the reconciler will");
            return Ok(row);
        }
    }
    let row = sqlx::query_as(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments p WHERE p.id = $1"
    ))
    .bind(row.id)
    .fetch_one(pool)
    .await?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_request_caps_the_limit_and_refuses_nonsense() {
        assert_eq!(PageRequest::parse(None, None), Ok(PageRequest::default()));
        assert_eq!(
            PageRequest::parse(Some("100000"), Some("42")),
            Ok(PageRequest {
                cursor: Some(42),
                limit: MAX_LIMIT
            })
        );
        assert!(PageRequest::parse(Some("0"), None).is_err());
        assert!(PageRequest::parse(Some("ten"), None).is_err());
        assert!(PageRequest::parse(None, Some("-1")).is_err());
    }

    #[test]
    fn a_page_has_a_next_cursor_only_when_more_rows_exist() {
        let req = PageRequest {
            cursor: None,
            limit: 2,
        };
        assert_eq!(
            req.page(vec![9, 8, 7], |n| *n),
            Page {
                items: vec![9, 8],
                next: Some(8)
            }
        );
        assert_eq!(
            req.page(vec![9, 8], |n| *n),
            Page {
                items: vec![9, 8],
                next: None
            }
        );
    }

    fn payment() -> NewPendingPayment {
        NewPendingPayment {
            provider: "paystack".into(),
            external_id: "ref-1".into(),
            reference: "ref-1".into(),
            amount_minor: 500,
            currency: "NGN".into(),
        }
    }

    #[test]
    fn a_pending_payment_is_checked_field_by_field() {
        assert_eq!(payment().validate(), Ok(()));
        let bad = [
            NewPendingPayment {
                provider: "stripe".into(),
                ..payment()
            },
            NewPendingPayment {
                external_id: " ".into(),
                ..payment()
            },
            NewPendingPayment {
                amount_minor: 0,
                ..payment()
            },
            NewPendingPayment {
                currency: "ngn".into(),
                ..payment()
            },
            NewPendingPayment {
                currency: "ZZZ".into(),
                ..payment()
            },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?}");
        }
    }
}
