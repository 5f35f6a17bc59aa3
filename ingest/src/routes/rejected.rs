//! The admin API's rejected deliveries: genuine bodies refused for their content, kept so they
//! can be read and reparsed after an upgrade (`payhook_shared::rejected`). Same token and
//! error mapping as the rest of [`super::admin`].
//!
//! | call | answer |
//! | --- | --- |
//! | `GET /admin/rejected?provider=&limit=&cursor=` | `{"items": [row], "next"}`, newest first |
//! | `GET /admin/rejected/{id}` | the row with its `body` (as text) |
//! | `POST /admin/rejected/{id}/reparse` | `{"outcome": "ingested", "delivery_id", "new_event_ids", "duplicates", "rejected": row}` or `{"outcome": "still_rejected", "reason", "rejected": row}` |

use actix_web::{web, HttpResponse};
use payhook_shared::lookup;
use payhook_shared::rejected::{self, ReparseError};

use super::admin::{one_of, Admin, AdminState, ListQuery};
use crate::error::AdminError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/admin/rejected").route(web::get().to(list)))
        .service(web::resource("/admin/rejected/{id}").route(web::get().to(get)))
        .service(web::resource("/admin/rejected/{id}/reparse").route(web::post().to(reparse)));
}

async fn list(
    _: Admin,
    state: web::Data<AdminState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AdminError> {
    let provider = one_of("provider", query.provider.as_deref(), &lookup::PROVIDERS)?;
    let page = rejected::list(&state.pool, provider.as_deref(), query.page()?).await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn get(
    _: Admin,
    state: web::Data<AdminState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let id = rejected_id(&path)?;
    let row = rejected::get(&state.pool, id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no rejected delivery {id}")))?;
    Ok(HttpResponse::Ok().json(row))
}

async fn reparse(
    _: Admin,
    state: web::Data<AdminState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let id = rejected_id(&path)?;
    let (outcome, row) = rejected::reparse(&state.pool, &state.intake, id, state.timeout)
        .await
        .map_err(|e| match e {
            ReparseError::NotFound(_) | ReparseError::UnknownProvider(_) => {
                AdminError::NotFound(e.to_string())
            }
            ReparseError::Database(e) => e.into(),
            ReparseError::Intake(e) => AdminError::Unavailable(e.to_string()),
        })?;
    tracing::info!(rejected_id = id, outcome = ?outcome, "rejected delivery reparsed from the admin API");
    let mut body = serde_json::to_value(&outcome).unwrap_or_default();
    body["rejected"] = serde_json::to_value(&row).unwrap_or_default();
    Ok(HttpResponse::Ok().json(body))
}

fn rejected_id(raw: &str) -> Result<i64, AdminError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| AdminError::BadRequest(format!("{raw:?} is not a rejected delivery id")))
}
