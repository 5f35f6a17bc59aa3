//! GoCardless mandate events → members: `created` (details from the event's metadata, else
//! from the API: mandate → customer; without an API token, the metadata alone), `cancelled` / `failed` / `expired` (suspended with
//! `details.cause`), `reinstated` (active again).

use serde_json::Value;
use sqlx::PgConnection;

use super::members::{self, MemberDetails};
use super::{id_at, str_at, when, Context, DomainError, Event};

/// The mandate a mandate event is about: `links.mandate`.
fn mandate_id(event: &Event) -> Result<String, DomainError> {
    event
        .resource_id
        .clone()
        .or_else(|| id_at(&event.payload, &["links", "mandate"]))
        .ok_or_else(|| DomainError::permanent("links.mandate is missing"))
}

/// The mandate a GoCardless event names itself (a mandate event's own, a payment's
/// `links.mandate`): what the worker's batch locks before applying it
/// ([`super::members::lock_mandates`]).
pub(super) fn named_mandate(event: &Event) -> Option<String> {
    if event.provider != "gocardless" {
        return None;
    }
    if event.event_type.starts_with("mandates.") {
        return mandate_id(event).ok();
    }
    id_at(&event.payload, &["links", "mandate"])
}

pub(super) async fn created(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &Event,
) -> Result<(), DomainError> {
    let mandate = mandate_id(event)?;
    let meta = event
        .payload
        .get("metadata")
        .cloned()
        .unwrap_or(Value::Null);
    let text = |k: &str| {
        str_at(&meta, &[k])
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let mut details = MemberDetails {
        name: text("name"),
        email: text("email"),
        membership_type: members::membership_type(text("mandate_type").as_deref())?,
        address_line1: text("address_line1"),
        address_line2: text("address_line2"),
        city: text("city"),
        county: text("county"),
        postcode: text("postcode"),
        joined_on: Some(when(event).date_naive()),
    };
    // Real GoCardless events carry ids only; whatever the metadata lacks comes from the API.
    // Without a token, what the metadata has is the member; with nothing at all there is no
    // member to make, and the event retries (its message names GOCARDLESS_API_TOKEN).
    // An erased member gets back only what an event carries anew, never what the API knows.
    if !details.is_complete() && !members::is_erased(conn, &mandate).await? {
        match fetch_details(ctx, &mandate).await {
            Ok(fetched) => details = details.or(fetched),
            Err(DomainError::Transient(_))
                if details.has_any() && !ctx.gateways.gocardless.is_configured() => {}
            Err(e) => return Err(e),
        }
    }
    members::upsert(conn, &mandate, &details, Some(when(event)), when(event)).await?;
    Ok(())
}

pub(super) async fn suspended(conn: &mut PgConnection, event: &Event) -> Result<(), DomainError> {
    let mandate = mandate_id(event)?;
    let cause = str_at(&event.payload, &["details", "cause"]);
    members::set_status(conn, &mandate, "suspended", cause, when(event)).await?;
    Ok(())
}

pub(super) async fn reinstated(conn: &mut PgConnection, event: &Event) -> Result<(), DomainError> {
    let mandate = mandate_id(event)?;
    members::set_status(conn, &mandate, "active", None, when(event)).await?;
    Ok(())
}

/// A member's details from the GoCardless API: the mandate (its `metadata.mandate_type`,
/// `links.customer`, `created_at`), then the customer.
pub(super) async fn fetch_details(
    ctx: &Context,
    mandate_id: &str,
) -> Result<MemberDetails, DomainError> {
    let api = &ctx.gateways.gocardless;
    let mandate = api.mandate(mandate_id).await?;
    let customer = api.customer(&mandate.links.customer).await?;
    let mandate_type = mandate.metadata.get("mandate_type").and_then(Value::as_str);
    let clean = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    Ok(MemberDetails {
        name: customer.display_name(),
        email: clean(customer.email.clone()),
        membership_type: members::membership_type(mandate_type)?,
        address_line1: clean(customer.address_line1.clone()),
        address_line2: clean(customer.address_line2.clone()),
        city: clean(customer.city.clone()),
        county: clean(customer.region.clone()),
        postcode: clean(customer.postal_code.clone()),
        joined_on: mandate
            .created_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.date_naive()),
    })
}
