//! The admin API and the ops console, on the ops listener (DESIGN.md, "Operators").
//!
//! Every `/admin/*` call but the console page needs `Authorization: Bearer
//! <PAYHOOK_ADMIN_TOKEN>`; with the variable unset the whole API, page included, answers 404,
//! as if absent.
//! Handlers are thin: the queries live in `payhook_shared::lookup`, replay in
//! `payhook_shared::replay`, the error→status mapping in [`crate::error::AdminError`].
//!
//! | call | answer |
//! | --- | --- |
//! | `GET /admin/` | the ops console (HTML, no token needed for the page; 404 when the API is off) |
//! | `GET /admin/events?status=&provider=&q=&limit=&cursor=` | `{"items": [event], "next"}` |
//! | `GET /admin/events/{id}?provider=` | the event with its payload |
//! | `POST /admin/events/{id}/replay?provider=` | `{"replayed": 1, "event": {...}}` |
//!
//! `{id}` is payhook's id or the gateway's event id; a gateway id two providers share is 409
//! naming them, and `?provider=` picks one.
//! | `POST /admin/events/replay?status=dead` | `{"replayed": n}` |
//! | `GET /admin/payments?q=&limit=&cursor=` | `{"items": [payment], "next"}` |
//! | `POST /admin/payments` | 201 with the new pending payment; 409 if it exists |
//! | `GET /admin/members?q=&limit=&cursor=` | `{"items": [member], "next"}` |
//! | `POST /admin/members/{id}/forget` | what was erased (`payhook_shared::erasure::Erased`); 404 for no such member |
//! | `GET /admin/stats` | `{"events": {status: n}, "payments": {status: n}, "rejected": n, "bank_waiting": n}` |
//! | `/admin/rejected…` | genuine deliveries refused for their content ([`super::rejected`]) |
//! | `/admin/bank-transactions…` | bank credits and debits, their matches, a match by hand ([`super::bank`]) |

use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use payhook_shared::amqp::Broker;
use payhook_shared::intake::Intake;
use payhook_shared::lookup::{self, EventFilter, EventRef, NewPendingPayment, PageRequest};
use serde::Deserialize;
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::error::AdminError;

const CONSOLE: &str = include_str!("console.html");

pub struct AdminState {
    pub pool: PgPool,
    pub broker: Arc<Broker>,
    /// Ingest's group commit: a reparsed delivery goes in as the gateway's would.
    pub intake: Intake,
    /// How long a reparsed delivery may wait for PostgreSQL and RabbitMQ (`INGEST_TIMEOUT`).
    pub timeout: std::time::Duration,
    /// `PAYHOOK_ADMIN_TOKEN`; `None`: the admin API is off (404).
    pub token: Option<String>,
}

/// Mounts the console and the API (the state is [`AdminState`], as app data).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin").route(web::get().to(console_redirect)))
        .service(web::resource("/admin/").route(web::get().to(console)))
        .service(web::resource("/admin/stats").route(web::get().to(stats)))
        .service(web::resource("/admin/events").route(web::get().to(list_events)))
        .service(web::resource("/admin/events/replay").route(web::post().to(replay_all)))
        .service(web::resource("/admin/events/{id}").route(web::get().to(get_event)))
        .service(web::resource("/admin/events/{id}/replay").route(web::post().to(replay_event)))
        .service(
            web::resource("/admin/payments")
                .route(web::get().to(list_payments))
                .route(web::post().to(register_payment)),
        )
        .service(web::resource("/admin/members").route(web::get().to(list_members)))
        .service(web::resource("/admin/members/{id}/forget").route(web::post().to(forget_member)))
        .configure(super::rejected::configure)
        .configure(super::bank::configure);
}

/// Proof that the request carries the admin token. As the first extractor of a handler it
/// answers 404 (API off) or 401 before anything else is looked at.
pub struct Admin;

impl FromRequest for Admin {
    type Error = AdminError;
    type Future = Ready<Result<Self, AdminError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authorize(req))
    }
}

fn authorize(req: &HttpRequest) -> Result<Admin, AdminError> {
    let expected = req
        .app_data::<web::Data<AdminState>>()
        .and_then(|s| s.token.as_deref())
        .ok_or(AdminError::Disabled)?;
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or(AdminError::Unauthorized)?;
    // Length first (it is not secret), then a comparison whose time does not depend on
    // where the first difference is.
    if given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(Admin)
    } else {
        Err(AdminError::Unauthorized)
    }
}

/// The query string of the list calls; everything optional, checked by hand so a bad value
/// gets a JSON error that says what was wrong.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub q: Option<String>,
    pub status: Option<String>,
    pub provider: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

impl ListQuery {
    pub(super) fn page(&self) -> Result<PageRequest, AdminError> {
        PageRequest::parse(self.limit.as_deref(), self.cursor.as_deref())
            .map_err(AdminError::BadRequest)
    }

    fn q(&self) -> Option<&str> {
        self.q.as_deref().map(str::trim).filter(|q| !q.is_empty())
    }
}

/// `Some(value)` when set and one of `allowed`; a 400 naming them when not.
pub(super) fn one_of(
    name: &str,
    value: Option<&str>,
    allowed: &[&str],
) -> Result<Option<String>, AdminError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if allowed.contains(&v) => Ok(Some(v.to_owned())),
        Some(v) => Err(AdminError::BadRequest(format!(
            "{name} must be one of {}, not {v:?}",
            allowed.join(", ")
        ))),
    }
}

/// `?provider=` of the calls that take an EVENT_ID.
#[derive(Debug, Default, Deserialize)]
pub struct EventIdQuery {
    pub provider: Option<String>,
}

/// The payhook id an EVENT_ID path segment names (payhook's id or the gateway's).
async fn event_id(pool: &PgPool, raw: &str, query: &EventIdQuery) -> Result<i64, AdminError> {
    let provider = one_of("provider", query.provider.as_deref(), &lookup::PROVIDERS)?;
    match lookup::resolve_event(pool, raw, provider.as_deref()).await? {
        EventRef::One(id) => Ok(id),
        EventRef::None => Err(AdminError::NotFound(match provider {
            Some(p) => format!("no {p} event {raw:?}"),
            None => format!("no event {raw:?}"),
        })),
        EventRef::Ambiguous(candidates) => {
            Err(AdminError::Conflict(EventRef::ambiguity(raw, &candidates)))
        }
    }
}

/// The admin API is on: `PAYHOOK_ADMIN_TOKEN` is set. The console page needs no token (its
/// calls carry it), but with the API off it would be a page whose every call fails, and it
/// would tell a scanner that an admin API lives here: absent, like the rest.
pub struct AdminOn;

impl FromRequest for AdminOn {
    type Error = AdminError;
    type Future = Ready<Result<Self, AdminError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let on = req
            .app_data::<web::Data<AdminState>>()
            .is_some_and(|s| s.token.is_some());
        ready(if on {
            Ok(AdminOn)
        } else {
            Err(AdminError::Disabled)
        })
    }
}

async fn console(_: AdminOn) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ))
        .body(CONSOLE)
}

async fn console_redirect(_: AdminOn) -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/admin/"))
        .finish()
}

async fn stats(_: Admin, state: web::Data<AdminState>) -> Result<HttpResponse, AdminError> {
    let (events, payments, rejected, bank_waiting) = tokio::try_join!(
        lookup::event_counts(&state.pool),
        lookup::payment_counts(&state.pool),
        payhook_shared::rejected::waiting(&state.pool),
        payhook_shared::bank::waiting(&state.pool)
    )?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "events": events, "payments": payments, "rejected": rejected, "bank_waiting": bank_waiting
    })))
}

async fn list_events(
    _: Admin,
    state: web::Data<AdminState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AdminError> {
    let filter = EventFilter {
        status: one_of("status", query.status.as_deref(), &lookup::EVENT_STATUSES)?,
        provider: one_of("provider", query.provider.as_deref(), &lookup::PROVIDERS)?,
        q: query.q().map(str::to_owned),
    };
    let page = lookup::list_events(&state.pool, &filter, query.page()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn get_event(
    _: Admin,
    state: web::Data<AdminState>,
    path: web::Path<String>,
    query: web::Query<EventIdQuery>,
) -> Result<HttpResponse, AdminError> {
    let id = event_id(&state.pool, &path, &query).await?;
    let event = lookup::event(&state.pool, id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no event {id}")))?;
    Ok(HttpResponse::Ok().json(event))
}

async fn replay_event(
    _: Admin,
    state: web::Data<AdminState>,
    path: web::Path<String>,
    query: web::Query<EventIdQuery>,
) -> Result<HttpResponse, AdminError> {
    let id = event_id(&state.pool, &path, &query).await?;
    payhook_shared::replay::replay_event(&state.pool, &state.broker, id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no event {id}")))?;
    tracing::info!(event_id = id, "event replayed from the admin API");
    let event = lookup::event(&state.pool, id).await?.map(|e| e.event);
    Ok(HttpResponse::Ok().json(serde_json::json!({ "replayed": 1, "event": event })))
}

#[derive(Debug, Deserialize)]
struct ReplayAllQuery {
    status: Option<String>,
}

async fn replay_all(
    _: Admin,
    state: web::Data<AdminState>,
    query: web::Query<ReplayAllQuery>,
) -> Result<HttpResponse, AdminError> {
    if query.status.as_deref() != Some("dead") {
        return Err(AdminError::BadRequest(
            "only dead events are replayed in bulk: POST /admin/events/replay?status=dead".into(),
        ));
    }
    let report =
        payhook_shared::replay::replay_dead(&state.pool, &state.broker, &mut |_, _| {}).await?;
    tracing::info!(
        replayed = report.replayed,
        "dead events replayed from the admin API"
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({ "replayed": report.replayed })))
}

async fn list_payments(
    _: Admin,
    state: web::Data<AdminState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AdminError> {
    let page = lookup::list_payments(&state.pool, query.q(), query.page()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// The body of `POST /admin/payments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterPayment {
    provider: String,
    external_id: String,
    reference: String,
    amount_minor: i64,
    currency: String,
}

async fn register_payment(
    _: Admin,
    state: web::Data<AdminState>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let body: RegisterPayment = serde_json::from_slice(&body).map_err(|e| {
        AdminError::BadRequest(format!(
            "expected {{\"provider\", \"external_id\", \"reference\", \"amount_minor\", \"currency\"}}: {e}"
        ))
    })?;
    let payment = lookup::register_pending_payment(
        &state.pool,
        &NewPendingPayment {
            provider: body.provider,
            external_id: body.external_id,
            reference: body.reference,
            amount_minor: body.amount_minor,
            currency: body.currency,
        },
    )
    .await?;
    tracing::info!(
        payment_id = payment.id,
        provider = %payment.provider,
        "expected payment registered from the admin API"
    );
    Ok(HttpResponse::Created().json(payment))
}

async fn list_members(
    _: Admin,
    state: web::Data<AdminState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AdminError> {
    let page = lookup::list_members(&state.pool, query.q(), query.page()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn forget_member(
    _: Admin,
    state: web::Data<AdminState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let id = path
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| AdminError::BadRequest(format!("{:?} is not a member id", path.as_str())))?;
    let erased = payhook_shared::erasure::forget_member(&state.pool, id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no member {id}")))?;
    tracing::info!(
        member_id = id,
        "member's personal data erased from the admin API"
    );
    Ok(HttpResponse::Ok().json(erased))
}
