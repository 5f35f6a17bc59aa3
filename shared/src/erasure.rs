//! A member's right to be forgotten (DESIGN.md, "Data lifecycle"): the member's name, email
//! and address are cleared; the raw deliveries of every event about the member's mandate and
//! payments are deleted, and the personal fields of those events' stored payloads (and of the
//! member's own domain events) are cleared, wherever they sit in each gateway's shape.
//! Amounts, dates, statuses and the ledger stay: financial records are kept by law.
//! `member.erased` goes to the outbox. Idempotent: a second run finds nothing left and says so.
//! The member is stamped `erased_at`, so a later `mandates.created` fills personal fields only
//! from what it carries itself, never from the gateway's API (see `gocardless_mandates`).
//!
//! One set of queries for `payhook-worker forget` and `POST /admin/members/{id}/forget`.

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

/// Keys whose values are personal data in any gateway's payload (GoCardless customers and
/// metadata, Paystack and Flutterwave customers, bank-account data): cleared wherever they
/// appear. A non-personal value under one of these names is cleared too, which costs nothing
/// the ledger needs (amounts, ids, dates and statuses have other names).
const PERSONAL_KEYS: &[&str] = &[
    "name",
    "full_name",
    "first_name",
    "last_name",
    "given_name",
    "family_name",
    "company_name",
    "customer_name",
    "account_holder_name",
    "debtorName",
    "email",
    "phone",
    "phone_number",
    "mobile",
    "address",
    "address_line1",
    "address_line2",
    "address_line3",
    "street",
    "city",
    "region",
    "county",
    "postcode",
    "postal_code",
];

/// What one erasure did, for one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Erased {
    pub member_id: i64,
    pub mandate_id: String,
    /// Whether the member row still held personal fields (false: erased before).
    pub member_cleared: bool,
    /// Stored event payloads (and domain events) that held personal fields, now cleared.
    pub payloads_cleared: u64,
    /// Raw deliveries deleted.
    pub deliveries_deleted: u64,
}

impl Erased {
    /// True when this run changed nothing (everything was erased before).
    pub fn nothing_left(&self) -> bool {
        !self.member_cleared && self.payloads_cleared == 0 && self.deliveries_deleted == 0
    }
}

impl std::fmt::Display for Erased {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.nothing_left() {
            return write!(
                f,
                "member {} ({}): nothing left to erase",
                self.member_id, self.mandate_id
            );
        }
        write!(
            f,
            "member {} ({}): {}personal fields of {} stored payload(s) cleared, {} raw delivery(ies) deleted",
            self.member_id,
            self.mandate_id,
            if self.member_cleared {
                "name, email and address cleared; "
            } else {
                ""
            },
            self.payloads_cleared,
            self.deliveries_deleted
        )
    }
}

/// Erases every member whose mandate id is `target`, or whose email is `target`
/// (case-insensitive: one person may hold several mandates). Empty when none matches.
pub async fn forget(pool: &PgPool, target: &str) -> Result<Vec<Erased>, sqlx::Error> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM members WHERE mandate_id = $1 OR lower(email) = lower($1) ORDER BY id",
    )
    .bind(target.trim())
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(e) = forget_member(pool, id).await? {
            out.push(e);
        }
    }
    Ok(out)
}

/// Erases member `id` in one transaction; `None` when there is no such member.
pub async fn forget_member(pool: &PgPool, id: i64) -> Result<Option<Erased>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Locked for the transaction: a worker creating or updating this member waits, then sees
    // it erased.
    let Some((mandate_id, had_personal)): Option<(String, bool)> = sqlx::query_as(
        "SELECT mandate_id,
                num_nonnulls(name, email, address_line1, address_line2, city, county, postcode) > 0
         FROM members WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };

    // Every event about the mandate or one of its payments: the mandate's own events, and
    // the payments' (by the payment's gateway id, whichever gateway; reconciler answers too).
    let events: Vec<(i64, Option<i64>, Value)> = sqlx::query_as(
        "WITH mine AS (SELECT provider, external_id FROM payments WHERE member_id = $1 OR mandate_id = $2)
         SELECT e.id, e.delivery_id, e.payload FROM webhook_events e
         WHERE (e.provider = 'gocardless'
                AND (e.resource_id = $2 OR e.payload #>> '{links,mandate}' = $2
                     OR e.payload #>> '{links,payment}' IN (SELECT external_id FROM mine
                                                            WHERE provider = 'gocardless')))
            OR (e.provider, e.resource_id) IN (SELECT provider, external_id FROM mine)
         FOR UPDATE OF e",
    )
    .bind(id)
    .bind(&mandate_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut cleared_ids = Vec::new();
    let mut cleared_payloads = Vec::new();
    let mut deliveries: Vec<i64> = Vec::new();
    for (event_id, delivery, mut payload) in events {
        if clear_personal(&mut payload) {
            cleared_ids.push(event_id);
            cleared_payloads.push(payload);
        }
        deliveries.extend(delivery);
    }
    deliveries.sort_unstable();
    deliveries.dedup();
    sqlx::query(
        "UPDATE webhook_events e SET payload = x.payload
         FROM UNNEST($1::bigint[], $2::jsonb[]) AS x(id, payload) WHERE e.id = x.id",
    )
    .bind(&cleared_ids)
    .bind(&cleared_payloads)
    .execute(&mut *tx)
    .await?;
    let mut payloads_cleared = cleared_ids.len() as u64;

    // The member's own domain events carry the row as it was (name, email, address).
    let outbox: Vec<(i64, Value)> = sqlx::query_as(
        "SELECT id, payload FROM domain_outbox WHERE (payload #>> '{member,id}')::bigint = $1
         FOR UPDATE",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    for (row, mut payload) in outbox {
        if clear_personal(&mut payload) {
            sqlx::query("UPDATE domain_outbox SET payload = $2 WHERE id = $1")
                .bind(row)
                .bind(&payload)
                .execute(&mut *tx)
                .await?;
            payloads_cleared += 1;
        }
    }

    // Other events of a deleted delivery keep their own (parsed) payloads; they no longer
    // point at a raw body (ON DELETE SET NULL).
    let deliveries_deleted = sqlx::query("DELETE FROM webhook_deliveries WHERE id = ANY($1)")
        .bind(&deliveries)
        .execute(&mut *tx)
        .await?
        .rows_affected();

    sqlx::query(
        "UPDATE members SET name = NULL, email = NULL, address_line1 = NULL, address_line2 = NULL,
                city = NULL, county = NULL, postcode = NULL,
                erased_at = COALESCE(erased_at, now()), updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let erased = Erased {
        member_id: id,
        mandate_id,
        member_cleared: had_personal,
        payloads_cleared,
        deliveries_deleted,
    };
    if !erased.nothing_left() {
        crate::domain::outbox::member(&mut tx, "member.erased", id, chrono::Utc::now()).await?;
    }
    tx.commit().await?;
    Ok(Some(erased))
}

/// Sets every personal field of `value` (at any depth) to null; true when any held something.
fn clear_personal(value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            let mut changed = false;
            for (k, v) in map.iter_mut() {
                if PERSONAL_KEYS.contains(&k.as_str()) {
                    if !v.is_null() {
                        *v = Value::Null;
                        changed = true;
                    }
                } else {
                    changed |= clear_personal(v);
                }
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| clear_personal(v) | changed),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn personal_fields_are_cleared_at_any_depth_and_amounts_and_ids_stay() {
        let mut v = json!({
            "id": "EV1",
            "metadata": {"name": "Ada Lovelace", "email": "ada@example.org", "amount": "2750"},
            "data": {"customer": {"email": "ada@example.org", "first_name": "Ada", "id": 7},
                     "amount": 500000, "reference": "ref-1"},
            "list": [{"address_line1": "1 Analytical St"}, {"postal_code": null}]
        });
        assert!(clear_personal(&mut v));
        assert_eq!(
            v,
            json!({
                "id": "EV1",
                "metadata": {"name": null, "email": null, "amount": "2750"},
                "data": {"customer": {"email": null, "first_name": null, "id": 7},
                         "amount": 500000, "reference": "ref-1"},
                "list": [{"address_line1": null}, {"postal_code": null}]
            })
        );
        assert!(!clear_personal(&mut v), "nothing left the second time");
    }
}
