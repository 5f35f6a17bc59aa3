//! Every way a webhook request can fail, and the one place each becomes an HTTP status.
//! Our own failures (database, broker) are always 503, so the gateway retries; the
//! gateway's mistakes are 4xx with a JSON `{"error": ...}` that says what was wrong.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use payhook_shared::intake::IntakeError;
use payhook_shared::providers::{ParseError, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Signature (or PayQI timestamp) refused; `status` is the provider's choice (401 or 498).
    #[error("{source}")]
    Signature { source: VerifyError, status: u16 },
    #[error("a client certificate from the configured CA is required")]
    ClientCertRequired,
    #[error("{0}")]
    BadRequest(#[from] ParseError),
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("could not read the request body")]
    BodyRead,
    #[error("temporarily unavailable, retry later")]
    Unavailable(#[from] IntakeError),
}

impl WebhookError {
    /// The `outcome` label of `payhook_webhook_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            WebhookError::Signature { .. } => "invalid_signature",
            WebhookError::ClientCertRequired => "forbidden",
            WebhookError::BadRequest(_) | WebhookError::BodyRead => "bad_request",
            WebhookError::TooLarge { .. } => "too_large",
            WebhookError::Unavailable(_) => "unavailable",
        }
    }
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebhookError::Signature { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::UNAUTHORIZED)
            }
            WebhookError::ClientCertRequired => StatusCode::FORBIDDEN,
            WebhookError::BadRequest(_) | WebhookError::BodyRead => StatusCode::BAD_REQUEST,
            WebhookError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if matches!(self, WebhookError::Unavailable(_)) {
            res.insert_header(("Retry-After", "5"));
        }
        // The internal cause of a 503 stays in our logs; the gateway only needs to retry.
        res.json(serde_json::json!({ "error": self.to_string() }))
    }
}

/// Every way an admin API call can fail, and the one place each becomes an HTTP status. The
/// body is always `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// `PAYHOOK_ADMIN_TOKEN` is unset: the admin API is off and looks absent.
    #[error("not found")]
    Disabled,
    #[error("a valid bearer token is required (Authorization: Bearer <PAYHOOK_ADMIN_TOKEN>)")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// PostgreSQL or RabbitMQ is away; the cause is logged, the caller may retry.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for AdminError {
    fn from(e: sqlx::Error) -> Self {
        tracing::warn!(error = %e, "admin call: PostgreSQL");
        Self::Unavailable("PostgreSQL".into())
    }
}

impl From<payhook_shared::replay::ReplayError> for AdminError {
    fn from(e: payhook_shared::replay::ReplayError) -> Self {
        use payhook_shared::replay::ReplayError;
        tracing::warn!(error = %e, "admin replay failed");
        match e {
            ReplayError::Database(_) => Self::Unavailable("PostgreSQL".into()),
            ReplayError::Broker(b) => Self::Unavailable(format!("RabbitMQ ({b})")),
        }
    }
}

impl From<payhook_shared::lookup::RegisterError> for AdminError {
    fn from(e: payhook_shared::lookup::RegisterError) -> Self {
        use payhook_shared::lookup::RegisterError;
        match e {
            RegisterError::Invalid(msg) => Self::BadRequest(msg),
            e @ RegisterError::Exists { .. } => Self::Conflict(e.to_string()),
            RegisterError::Database(e) => e.into(),
        }
    }
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::Disabled | AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        match self {
            AdminError::Unauthorized => {
                res.insert_header(("WWW-Authenticate", "Bearer realm=\"payhook-admin\""));
            }
            AdminError::Unavailable(_) => {
                res.insert_header(("Retry-After", "5"));
            }
            _ => {}
        }
        res.json(serde_json::json!({ "error": self.to_string() }))
    }
}
