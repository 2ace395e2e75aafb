//! Typed extractors: every rejection becomes the API's JSON error (400 with the reason, 413 for
//! a body over the limit), so handlers see only well-formed input. And the one page type every
//! list answers with.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use cuttle_core::ErrorCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ApiError;
use crate::MAX_JSON_BODY;

pub(crate) type ApiResult = Result<Response, ApiError>;

const DEFAULT_LIST_LIMIT: u32 = 100;
const MAX_LIST_LIMIT: u32 = 1000;

pub(crate) fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("request body too large (limit {} MiB)", MAX_JSON_BODY >> 20),
    )
}

/// The raw body (at most 1 MiB) of a JSON request: refused when a string in it holds a NUL
/// character (`\u0000`), which no field takes (and PostgreSQL cannot store).
pub(crate) struct RawBody(pub(crate) Bytes);

/// Whether a string of this JSON text holds the escape `\u0000`. A linear scan, no parse: it
/// follows strings and their escapes (`\\u0000` is a backslash and `u0000`, not a NUL).
fn holds_nul(json: &[u8]) -> bool {
    let mut in_string = false;
    let mut i = 0;
    while i < json.len() {
        match (in_string, json[i]) {
            (false, b'"') => in_string = true,
            (true, b'"') => in_string = false,
            (true, b'\\') => {
                if json.get(i + 1) == Some(&b'u') && json.get(i + 2..i + 6) == Some(b"0000") {
                    return true;
                }
                // The escaped character (or `u` and its digits, read as plain text next).
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    false
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::bad_request(r.body_text())
            }
        })?;
        if holds_nul(&bytes) {
            return Err(ApiError::bad_request(
                "the body holds a NUL character (\\u0000) in a string, which no field takes",
            ));
        }
        Ok(RawBody(bytes))
    }
}

/// A JSON body parsed into `T`: 400 naming what is wrong (serde's message names the field and
/// where), whatever the `Content-Type`.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Path parameters (`String`, or a tuple for several).
pub(crate) struct PathParams<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| PathParams(t))
            .map_err(|r| ApiError::bad_request(r.body_text()))
    }
}

/// The query string as a map; [`QueryMap::only`] refuses parameters the endpoint does not know
/// (a typo would otherwise be silently ignored).
pub(crate) struct QueryMap(pub(crate) HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| QueryMap(q))
            .map_err(|r| ApiError::bad_request(r.body_text()))
    }
}

impl QueryMap {
    pub(crate) fn only(self, known: &[&str]) -> Result<HashMap<String, String>, ApiError> {
        if let Some(unknown) = self.0.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {unknown:?}: use {}",
                known.join(", ")
            )));
        }
        Ok(self.0)
    }
}

/// A list's `limit` as a gRPC request gives it (0: unset): 1 to 1000, 100 when unset.
pub(crate) fn limit_or_default(n: u32) -> Result<u32, ApiError> {
    match n {
        0 => Ok(DEFAULT_LIST_LIMIT),
        n if n <= MAX_LIST_LIMIT => Ok(n),
        n => Err(ApiError::bad_request(format!(
            "limit: 1 to {MAX_LIST_LIMIT}, not {n}"
        ))),
    }
}

/// `?limit=N` for list endpoints: 1 to 1000, 100 when absent.
pub(crate) fn parse_limit(raw: Option<&String>) -> Result<u32, ApiError> {
    match raw {
        None => Ok(DEFAULT_LIST_LIMIT),
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit must be a whole number from 1 to {MAX_LIST_LIMIT}, got {l:?}"
            ))),
        },
    }
}

/// One page of a list: `{"items": […], "next": CURSOR}`; `next` (absent on the last page) is what
/// to pass as `?before=` for the following page.
#[derive(Debug, Serialize)]
pub(crate) struct Page<T: Serialize> {
    pub(crate) items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next: Option<String>,
}

impl<T: Serialize> Page<T> {
    /// A whole list, in one page.
    pub(crate) fn all(items: Vec<T>) -> Self {
        Page { items, next: None }
    }
}

#[cfg(test)]
mod tests {
    use super::holds_nul;

    #[test]
    fn a_nul_escape_in_a_string_is_found_and_nothing_else_is() {
        assert!(holds_nul(br#"{"name": "a\u0000b"}"#));
        assert!(holds_nul(br#"{"a\u0000": 1}"#), "in a member's name too");
        assert!(holds_nul(br#"["x", "\"\u0000"]"#), "after an escaped quote");
        assert!(
            !holds_nul(br#"{"name": "a\\u0000b"}"#),
            "a backslash, then u0000"
        );
        assert!(!holds_nul(br#"{"name": "a\u0001b", "n": 0}"#));
        assert!(!holds_nul(b"{\"name\": \"caf\\u00e9\"}"));
    }
}
