use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cuttle_core::{ErrorCode, ValidationError};

/// A failed request, rendered as `{"error": {"code", "message"}}` with the matching status.
#[derive(Debug)]
pub(crate) struct ApiError {
    code: ErrorCode,
    message: String,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u64>,
    /// A `Conflict` because the name or version is taken (gRPC's ALREADY_EXISTS), not because
    /// the state of things refuses the request (FAILED_PRECONDITION).
    already_exists: bool,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
            already_exists: false,
        }
    }

    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// A 409 for a name or version that is taken (gRPC's ALREADY_EXISTS).
    pub(crate) fn already_exists(message: impl Into<String>) -> Self {
        ApiError {
            already_exists: true,
            ..Self::new(ErrorCode::Conflict, message)
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// Seconds the client should wait before trying again, if it should.
    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
    }

    /// Whether this is a conflict with something that exists already (a name, a version).
    pub(crate) fn is_already_exists(&self) -> bool {
        self.already_exists
    }

    pub(crate) fn code(&self) -> ErrorCode {
        self.code
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::bad_request(e.0)
    }
}

impl From<cuttle_storage::Error> for ApiError {
    fn from(e: cuttle_storage::Error) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "request failed: database unavailable");
            ApiError::new(ErrorCode::Unavailable, e.to_string())
        } else if let cuttle_storage::Error::Conflict(msg) = e {
            // The database refused a second row with one key: a name or version taken.
            ApiError::already_exists(msg)
        } else if let cuttle_storage::Error::Invalid(msg) = e {
            ApiError::bad_request(msg)
        } else {
            tracing::error!(error = %e, "request failed");
            ApiError::new(ErrorCode::Internal, "internal error; see the node's log")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({
            "error": { "code": self.code.as_str(), "message": self.message }
        });
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}
