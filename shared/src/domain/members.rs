//! Members, one per GoCardless mandate (upserted on mandate_id). Details are filled in by
//! whichever event knows them; the status follows the latest dated mandate event
//! ([`super::status::member_status_wins`]), so a late `mandates.created` never reactivates a
//! member whose mandate was cancelled after it.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;

use super::outbox;
use super::status::member_status_wins;
use super::DomainError;

pub const MEMBERSHIP_TYPES: [&str; 4] = ["individual", "household", "corporate", "lifetime"];

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Member {
    pub id: i64,
    pub mandate_id: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub status_changed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, mandate_id, status, status_reason, status_changed_at";

/// What we know about a member. Personal data: no `Debug` that prints it, never logged.
#[derive(Clone, Default, PartialEq)]
pub struct MemberDetails {
    pub name: Option<String>,
    pub email: Option<String>,
    /// One of [`MEMBERSHIP_TYPES`]; `None` keeps the row's (individual for a new member).
    pub membership_type: Option<String>,
    pub address_line1: Option<String>,
    pub address_line2: Option<String>,
    pub city: Option<String>,
    pub county: Option<String>,
    pub postcode: Option<String>,
    pub joined_on: Option<NaiveDate>,
}

impl std::fmt::Debug for MemberDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberDetails")
            .field("membership_type", &self.membership_type)
            .field("joined_on", &self.joined_on)
            .finish_non_exhaustive()
    }
}

impl MemberDetails {
    /// True when name and email are both known (no need to ask the gateway).
    pub fn is_complete(&self) -> bool {
        self.name.is_some() && self.email.is_some()
    }

    /// True when the gateway told us anything about the person (name or email).
    pub fn has_any(&self) -> bool {
        self.name.is_some() || self.email.is_some()
    }

    /// Fields of `self`, else of `other`.
    pub fn or(self, other: MemberDetails) -> MemberDetails {
        MemberDetails {
            name: self.name.or(other.name),
            email: self.email.or(other.email),
            membership_type: self.membership_type.or(other.membership_type),
            address_line1: self.address_line1.or(other.address_line1),
            address_line2: self.address_line2.or(other.address_line2),
            city: self.city.or(other.city),
            county: self.county.or(other.county),
            postcode: self.postcode.or(other.postcode),
            joined_on: self.joined_on.or(other.joined_on),
        }
    }
}

/// A membership type as the gateway's metadata spells it; unknown values are refused, since
/// guessing a type would bill the member wrongly.
pub fn membership_type(raw: Option<&str>) -> Result<Option<String>, DomainError> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let t = raw.to_ascii_lowercase();
    if MEMBERSHIP_TYPES.contains(&t.as_str()) {
        Ok(Some(t))
    } else {
        Err(DomainError::permanent(format!(
            "mandate_type must be one of {}",
            MEMBERSHIP_TYPES.join(", ")
        )))
    }
}

/// Serializes, until the transaction ends, the creation of a mandate's member with the
/// payments written for it meanwhile. Without it, a payment inserted while its member is
/// being created in another transaction sees no member, the new member's link ([`upsert`])
/// sees no payment, and both commit unlinked for ever. Only a mandate WITHOUT a member is
/// locked: once the member is committed every payment sees it, so payments of known members
/// never wait on each other. The worker's batch takes it for every mandate its events name
/// ([`super::batch`]); a handler that learns of another mandate (from our row or the API)
/// takes it before writing.
///
/// `creating`: the mandates whose member this transaction may create (exclusive lock);
/// `paying`: those it only writes payments for (shared lock: payments of one mandate never
/// wait on each other, only on its member's creation). A mandate in both is exclusive.
pub async fn lock_mandates(
    conn: &mut PgConnection,
    creating: &[String],
    paying: &[String],
) -> Result<(), sqlx::Error> {
    if creating.is_empty() && paying.is_empty() {
        return Ok(());
    }
    // One global order over both kinds: two transactions never wait on each other in a cycle.
    let mut all: Vec<(&str, bool)> = creating
        .iter()
        .map(|m| (m.as_str(), true))
        .chain(paying.iter().map(|m| (m.as_str(), false)))
        .collect();
    // Exclusive first among equal ids, so dedup keeps it.
    all.sort_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
    all.dedup_by(|a, b| a.0 == b.0);
    let (ids, exclusive): (Vec<&str>, Vec<bool>) = all.into_iter().unzip();
    // The bigint key space; the reconciler's locks use the (int, int) one, so they never meet.
    sqlx::query(
        "SELECT CASE WHEN m.x THEN pg_advisory_xact_lock(hashtextextended('mandate:' || m.id, 0))
                     ELSE pg_advisory_xact_lock_shared(hashtextextended('mandate:' || m.id, 0)) END
         FROM UNNEST($1::text[], $2::bool[]) WITH ORDINALITY AS m(id, x, n)
         WHERE NOT EXISTS (SELECT 1 FROM members x WHERE x.mandate_id = m.id)
         ORDER BY m.n",
    )
    .bind(&ids)
    .bind(&exclusive)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn find(
    conn: &mut PgConnection,
    mandate_id: &str,
) -> Result<Option<Member>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM members WHERE mandate_id = $1"
    ))
    .bind(mandate_id)
    .fetch_optional(conn)
    .await
}

/// Whether the member of `mandate_id` had its personal data erased ([`crate::erasure`]).
pub async fn is_erased(conn: &mut PgConnection, mandate_id: &str) -> Result<bool, sqlx::Error> {
    let erased: Option<bool> =
        sqlx::query_scalar("SELECT erased_at IS NOT NULL FROM members WHERE mandate_id = $1")
            .bind(mandate_id)
            .fetch_optional(conn)
            .await?;
    Ok(erased.unwrap_or(false))
}

/// Creates the member of `mandate_id` or fills in its details (known values win over
/// missing ones). `active_since`: the time of an event saying the mandate is active
/// (`mandates.created`); `None` when the details come from elsewhere.
pub async fn upsert(
    conn: &mut PgConnection,
    mandate_id: &str,
    d: &MemberDetails,
    active_since: Option<DateTime<Utc>>,
    occurred_at: DateTime<Utc>,
) -> Result<Member, DomainError> {
    let inserted: Option<Member> = sqlx::query_as(&insert_linked(
        "INSERT INTO members (mandate_id, name, email, membership_type, address_line1, address_line2,
                              city, county, postcode, joined_on, status, status_changed_at)
         VALUES ($1, $2, $3, COALESCE($4, 'individual'), $5, $6, $7, $8, $9, $10, 'active', $11)",
        "'member.created'",
        "$12",
    ))
    .bind(mandate_id)
    .bind(&d.name)
    .bind(&d.email)
    .bind(&d.membership_type)
    .bind(&d.address_line1)
    .bind(&d.address_line2)
    .bind(&d.city)
    .bind(&d.county)
    .bind(&d.postcode)
    .bind(d.joined_on)
    .bind(active_since)
    .bind(occurred_at)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(m) = inserted {
        return Ok(m);
    }

    let old = lock(conn, mandate_id).await?;
    let activate = active_since
        .filter(|at| member_status_wins((&old.status, old.status_changed_at), ("active", *at)));
    let changed: bool = sqlx::query_scalar(
        "WITH old AS (SELECT * FROM members WHERE mandate_id = $1)
         UPDATE members m SET
             name = COALESCE($2, m.name), email = COALESCE($3, m.email),
             membership_type = COALESCE($4, m.membership_type),
             address_line1 = COALESCE($5, m.address_line1), address_line2 = COALESCE($6, m.address_line2),
             city = COALESCE($7, m.city), county = COALESCE($8, m.county),
             postcode = COALESCE($9, m.postcode), joined_on = COALESCE($10, m.joined_on),
             updated_at = now()
         FROM old WHERE m.id = old.id
         RETURNING (m.name, m.email, m.membership_type, m.address_line1, m.address_line2, m.city,
                    m.county, m.postcode, m.joined_on)
               IS DISTINCT FROM
                   (old.name, old.email, old.membership_type, old.address_line1, old.address_line2,
                    old.city, old.county, old.postcode, old.joined_on)",
    )
    .bind(mandate_id)
    .bind(&d.name)
    .bind(&d.email)
    .bind(&d.membership_type)
    .bind(&d.address_line1)
    .bind(&d.address_line2)
    .bind(&d.city)
    .bind(&d.county)
    .bind(&d.postcode)
    .bind(d.joined_on)
    .fetch_one(&mut *conn)
    .await?;
    let new = match activate {
        Some(at) => write_status(conn, &old, "active", None, at).await?,
        None => old.clone(),
    };
    if new.status != old.status {
        outbox::member(conn, "member.reinstated", new.id, occurred_at).await?;
    } else if changed {
        outbox::member(conn, "member.updated", new.id, occurred_at).await?;
    }
    Ok(new)
}

/// Sets the member's status as of `at`, unless a later status is already recorded. A member
/// we have not seen yet is created bare (its details follow with `mandates.created`).
pub async fn set_status(
    conn: &mut PgConnection,
    mandate_id: &str,
    status: &str,
    reason: Option<&str>,
    at: DateTime<Utc>,
) -> Result<Member, DomainError> {
    let reason = if status == "active" { None } else { reason };
    let inserted: Option<Member> = sqlx::query_as(&insert_linked(
        "INSERT INTO members (mandate_id, status, status_reason, status_changed_at)
         VALUES ($1, $2, $3, $4)",
        "$5",
        "$4",
    ))
    .bind(mandate_id)
    .bind(status)
    .bind(reason)
    .bind(at)
    .bind(status_event(status))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(m) = inserted {
        return Ok(m);
    }
    let old = lock(conn, mandate_id).await?;
    if !member_status_wins((&old.status, old.status_changed_at), (status, at)) {
        return Ok(old);
    }
    let new = write_status(conn, &old, status, reason, at).await?;
    if new.status != old.status {
        outbox::member(conn, status_event(status), new.id, at).await?;
    } else if new.status_reason != old.status_reason {
        outbox::member(conn, "member.updated", new.id, at).await?;
    }
    Ok(new)
}

fn status_event(status: &str) -> &'static str {
    if status == "suspended" {
        "member.suspended"
    } else {
        "member.reinstated"
    }
}

async fn lock(conn: &mut PgConnection, mandate_id: &str) -> Result<Member, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM members WHERE mandate_id = $1 FOR UPDATE"
    ))
    .bind(mandate_id)
    .fetch_one(conn)
    .await
}

async fn write_status(
    conn: &mut PgConnection,
    old: &Member,
    status: &str,
    reason: Option<&str>,
    at: DateTime<Utc>,
) -> Result<Member, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE members SET status = $2, status_reason = $3, status_changed_at = $4, updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(old.id)
    .bind(status)
    .bind(reason)
    .bind(at)
    .fetch_one(conn)
    .await
}

/// A new member in one statement: `insert` (an `INSERT INTO members … VALUES …`), then the
/// payments (and their ledger rows) that arrived before their member now point at it, then
/// its domain event (`type_sql`, `at_sql`). Returns the member's [`COLUMNS`], or no row when
/// the member existed already.
fn insert_linked(insert: &str, type_sql: &str, at_sql: &str) -> String {
    format!(
        "WITH m AS ({insert} ON CONFLICT (mandate_id) DO NOTHING RETURNING *),
         linked AS (
             UPDATE payments p SET member_id = m.id, updated_at = now() FROM m
             WHERE p.mandate_id = m.mandate_id AND p.member_id IS NULL
             RETURNING p.id, m.id AS member_id),
         ledger AS (
             UPDATE transactions t SET member_id = linked.member_id FROM linked
             WHERE t.payment_id = linked.id AND t.member_id IS NULL),
         o AS ({outbox})
         SELECT {COLUMNS} FROM m",
        outbox = outbox::insert_from("m", "member", type_sql, at_sql),
    )
}
