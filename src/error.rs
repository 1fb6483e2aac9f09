//! The one error type of the HTTP layer. Each variant documents its status;
//! every answer is `{"error":{"code":…,"message":…}}` and one log line.
//! Causes of 5xx are logged, never shown to the client.

use rocket::http::{ContentType, Status};
use rocket::response::{self, Responder, Response};
use rocket::Request;
use std::io::Cursor;

#[derive(Debug)]
pub enum AppError {
    /// 400: the body is not JSON at all.
    MalformedJson(String),
    /// 401: a webhook signature is missing, stale or wrong.
    InvalidSignature(&'static str),
    /// 401: a missing or wrong admin bearer token.
    Unauthorized,
    /// 404: nothing here.
    NotFound(String),
    /// 409: the request conflicts with the resource's state.
    Conflict(String),
    /// 413: the body is over the route's limit.
    PayloadTooLarge(u64),
    /// 422: JSON that does not describe a usable request.
    InvalidPayload(String),
    /// 503: the database cannot take the write now (disk full, locked,
    /// read-only); the gateway should retry. Nothing was written.
    Unavailable(String),
    /// 500: a bug.
    Internal(String),
}

impl AppError {
    pub fn status(&self) -> Status {
        match self {
            AppError::MalformedJson(_) => Status::BadRequest,
            AppError::InvalidSignature(_) | AppError::Unauthorized => Status::Unauthorized,
            AppError::NotFound(_) => Status::NotFound,
            AppError::Conflict(_) => Status::Conflict,
            AppError::PayloadTooLarge(_) => Status::PayloadTooLarge,
            AppError::InvalidPayload(_) => Status::UnprocessableEntity,
            AppError::Unavailable(_) => Status::ServiceUnavailable,
            AppError::Internal(_) => Status::InternalServerError,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::MalformedJson(_) => "malformed_json",
            AppError::InvalidSignature(_) => "invalid_signature",
            AppError::Unauthorized => "unauthorized",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::PayloadTooLarge(_) => "payload_too_large",
            AppError::InvalidPayload(_) => "invalid_payload",
            AppError::Unavailable(_) => "unavailable",
            AppError::Internal(_) => "internal",
        }
    }

    /// What the client may read.
    pub fn public_message(&self) -> String {
        match self {
            AppError::MalformedJson(m)
            | AppError::InvalidPayload(m)
            | AppError::NotFound(m)
            | AppError::Conflict(m) => m.clone(),
            AppError::InvalidSignature(m) => (*m).to_owned(),
            AppError::Unauthorized => "a valid Authorization: Bearer token is required".into(),
            AppError::PayloadTooLarge(limit) => format!("body is larger than {limit} bytes"),
            AppError::Unavailable(_) => {
                "the database cannot take writes right now; retry later".into()
            }
            AppError::Internal(_) => "internal error".into(),
        }
    }
}

impl From<crate::db::DbError> for AppError {
    /// A database that is away or busy is worth retrying (503); anything
    /// else (a panic, a constraint, a value that does not convert) would
    /// fail the same way on every retry, for days of a gateway's retries:
    /// a 500 with its cause in the log (`DbError::is_unavailable`).
    fn from(e: crate::db::DbError) -> Self {
        if e.is_unavailable() {
            AppError::Unavailable(e.to_string())
        } else {
            AppError::Internal(e.to_string())
        }
    }
}

/// The code a request was refused with, kept in the request's local cache
/// by `AppError`'s responder (or, for Rocket's catchers, by the webhook
/// metrics fairing from the status), so the metrics count the refusal.
pub struct Refused(pub &'static str);

pub fn json_error(status: Status, code: &str, message: &str) -> Response<'static> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    Response::build()
        .status(status)
        .header(ContentType::JSON)
        .sized_body(body.len(), Cursor::new(body))
        .finalize()
}

impl<'r> Responder<'r, 'static> for AppError {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let status = self.status();
        let path = req.uri().path();
        // The metrics count a refused webhook under the code it was refused with.
        req.local_cache(|| Refused(self.code()));
        match &self {
            AppError::Unavailable(cause) | AppError::Internal(cause) => {
                log::error!("{} {path}: {} ({cause})", req.method(), status.code)
            }
            other => log::warn!(
                "{} {path}: {} {}",
                req.method(),
                status.code,
                other.public_message()
            ),
        }
        Ok(json_error(status, self.code(), &self.public_message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DbError;

    #[test]
    fn a_panicked_database_job_is_a_500_and_a_closed_database_a_503() {
        assert_eq!(
            AppError::from(DbError::Panicked).status(),
            Status::InternalServerError
        );
        assert_eq!(
            AppError::from(DbError::Closed).status(),
            Status::ServiceUnavailable
        );
        assert_eq!(
            AppError::from(DbError::Unavailable("connection refused".into())).status(),
            Status::ServiceUnavailable
        );
        assert_eq!(
            AppError::from(DbError::Value("-1 does not fit a u32".into())).status(),
            Status::InternalServerError
        );
    }

    #[test]
    fn sqlite_busy_is_a_503_and_a_constraint_or_conversion_a_500() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert_eq!(
            AppError::from(DbError::Sql(busy)).status(),
            Status::ServiceUnavailable
        );
        let unique = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE),
            None,
        );
        assert_eq!(
            AppError::from(DbError::Sql(unique)).status(),
            Status::InternalServerError
        );
        let conversion =
            rusqlite::Error::InvalidColumnType(0, "amount".into(), rusqlite::types::Type::Text);
        assert_eq!(
            AppError::from(DbError::Sql(conversion)).status(),
            Status::InternalServerError
        );
    }
}
