//! The admin API's bank transactions (DESIGN.md, "Bank data"): what the bank feed reported
//! and what each credit paid, and an operator's match by hand of a credit the rule could not
//! place (`payhook_shared::bank`). Same token and error mapping as the rest of
//! [`super::admin`].
//!
//! | call | answer |
//! | --- | --- |
//! | `GET /admin/bank-transactions?status=&limit=&cursor=` | `{"items": [row], "next"}`, newest first |
//! | `GET /admin/bank-transactions/{id}` | the row with its `payment` (null when none) |
//! | `POST /admin/bank-transactions/{id}/match` `{"payment_id"}` | the row, matched, with its `payment`; 404 no such row or payment, 409 a debit, already matched, a payment no longer expected, or other amounts |

use actix_web::{web, HttpResponse};
use payhook_shared::bank::{self, ManualMatchError};
use payhook_shared::domain::DomainError;
use serde::Deserialize;

use super::admin::{one_of, Admin, AdminState, ListQuery};
use crate::error::AdminError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin/bank-transactions").route(web::get().to(list)))
        .service(web::resource("/admin/bank-transactions/{id}").route(web::get().to(get)))
        .service(
            web::resource("/admin/bank-transactions/{id}/match").route(web::post().to(match_one)),
        );
}

async fn list(
    _: Admin,
    state: web::Data<AdminState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AdminError> {
    let status = one_of("status", query.status.as_deref(), &bank::MATCH_STATUSES)?;
    let page = bank::list(&state.pool, status.as_deref(), query.page()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn get(
    _: Admin,
    state: web::Data<AdminState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let id = bank_id(&path)?;
    let row = bank::get(&state.pool, id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no bank transaction {id}")))?;
    Ok(HttpResponse::Ok().json(row))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchBody {
    payment_id: i64,
}

async fn match_one(
    _: Admin,
    state: web::Data<AdminState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let id = bank_id(&path)?;
    let MatchBody { payment_id } = serde_json::from_slice(&body).map_err(|e| {
        AdminError::BadRequest(format!("the body must be {{\"payment_id\": <id>}}: {e}"))
    })?;
    bank::match_by_hand(&state.pool, id, payment_id)
        .await
        .map_err(|e| match e {
            ManualMatchError::NoTransaction(_) | ManualMatchError::NoPayment(_) => {
                AdminError::NotFound(e.to_string())
            }
            ManualMatchError::Domain(DomainError::Transient(msg)) => {
                tracing::warn!(error = %msg, "manual bank match failed");
                AdminError::Unavailable("PostgreSQL".into())
            }
            other => AdminError::Conflict(other.to_string()),
        })?;
    tracing::info!(
        bank_transaction_id = id,
        payment_id,
        "bank transaction matched by hand"
    );
    let row = bank::get(&state.pool, id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no bank transaction {id}")))?;
    Ok(HttpResponse::Ok().json(row))
}

fn bank_id(raw: &str) -> Result<i64, AdminError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| AdminError::BadRequest(format!("{raw:?} is not a bank transaction id")))
}
