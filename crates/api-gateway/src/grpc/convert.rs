//! Between the public API's messages and what the operations take and give: errors to gRPC
//! statuses (with `google.rpc` details), times to `Timestamp`s, JSON to `Struct`s and back.

use std::collections::BTreeMap;
use std::time::Duration;

use cuttle_core::{ErrorCode, UnixMs};
use prost_types::value::Kind;
use serde_json::{Map, Number, Value};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::Caller;
use crate::error::ApiError;

/// Where the error details say errors come from.
const DOMAIN: &str = "cuttle";

/// The status an operation's error becomes: the code a gRPC client expects for it, the same
/// message REST gives, and details — `ErrorInfo` with REST's error code as its reason, the
/// field of a bad request (`BadRequest`), when to retry (`RetryInfo`).
pub(super) fn status(e: ApiError) -> Status {
    let code = match e.code() {
        ErrorCode::BadRequest => Code::InvalidArgument,
        ErrorCode::Unauthorized => Code::Unauthenticated,
        ErrorCode::Forbidden => Code::PermissionDenied,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::RequestTimeout => Code::DeadlineExceeded,
        ErrorCode::Conflict if e.is_already_exists() => Code::AlreadyExists,
        ErrorCode::Conflict => Code::FailedPrecondition,
        ErrorCode::PayloadTooLarge | ErrorCode::TooManyRequests => Code::ResourceExhausted,
        ErrorCode::Draining | ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Internal => Code::Internal,
    };
    let mut details = ErrorDetails::new();
    details.set_error_info(e.code().as_str(), DOMAIN, std::collections::HashMap::new());
    if code == Code::InvalidArgument {
        if let Some(field) = field_of(e.message()) {
            details.add_bad_request_violation(field, e.message());
        }
    }
    if let Some(secs) = e.retry_after_secs() {
        details.set_retry_info(Some(Duration::from_secs(secs)));
    }
    Status::with_error_details(code, e.message(), details)
}

/// The field a validation message names first (`steps[1].name: …` names `steps[1].name`).
fn field_of(message: &str) -> Option<&str> {
    let (field, _) = message.split_once(": ")?;
    let plain = !field.is_empty()
        && field
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c));
    plain.then_some(field)
}

/// INVALID_ARGUMENT naming `field`.
pub(super) fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    status(ApiError::bad_request(format!("{field}: {why}")))
}

/// A required text field, or INVALID_ARGUMENT naming it.
pub(super) fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    match value.trim() {
        "" => Err(invalid(field, "required")),
        v => Ok(v),
    }
}

/// Who is calling: the key the authentication layer found (absent only if that layer was
/// bypassed, which the router never does).
pub(super) fn caller<T>(req: &tonic::Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("an API key is required"))
}

/// A place among `actor`'s streams on this node (live logs, watches), or RESOURCE_EXHAUSTED.
pub(super) fn stream_slot(
    s: &crate::AppState,
    actor: &str,
) -> Result<crate::ui::streams::Slot, Status> {
    s.streams.open(actor).ok_or_else(|| {
        Status::resource_exhausted(format!(
            "{actor} follows {} logs or watches on this node already; end one",
            crate::ui::streams::PER_PERSON
        ))
    })
}

pub(super) fn timestamp(ms: UnixMs) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub(super) fn timestamp_opt(ms: Option<UnixMs>) -> Option<prost_types::Timestamp> {
    ms.map(timestamp)
}

/// A JSON object as a `Struct` (anything else becomes an empty one).
pub(super) fn to_struct(v: &Value) -> prost_types::Struct {
    let fields = match v {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        _ => BTreeMap::new(),
    };
    prost_types::Struct { fields }
}

fn to_value(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        Value::Object(_) => Kind::StructValue(to_struct(v)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A `Struct` as a JSON object. `Struct` numbers are all doubles: a whole one becomes a JSON
/// integer, so it reads back as the integer it was meant to be (`"timeout_secs": 30`).
pub(super) fn from_struct(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), from_value(v)))
            .collect::<Map<_, _>>(),
    )
}

fn from_value(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Value::Number(Number::from(*n as i64))
            } else {
                Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(from_value).collect()),
        Some(Kind::StructValue(s)) => from_struct(s),
    }
}

/// A JSON string member (empty when absent).
pub(super) fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_struct_round_trips_and_whole_numbers_stay_integers() {
        let v = json!({"script": "echo hi", "timeout_secs": 30, "ratio": 0.5,
            "tags": ["a", null, true], "nested": {"n": -2}});
        let back = from_struct(&to_struct(&v));
        assert_eq!(back, v);
        assert!(back["timeout_secs"].is_u64());
    }

    #[test]
    fn errors_get_the_code_a_grpc_client_expects_and_name_the_field() {
        let s = status(ApiError::bad_request("steps[1].name: required"));
        assert_eq!(s.code(), Code::InvalidArgument);
        let details = s.get_error_details();
        let field = &details.bad_request().unwrap().field_violations[0].field;
        assert_eq!(field, "steps[1].name");
        assert_eq!(details.error_info().unwrap().reason, "bad_request");
        let stale = status(ApiError::new(
            ErrorCode::Conflict,
            "changed since it was read",
        ));
        assert_eq!(stale.code(), Code::FailedPrecondition);
        let limited = status(ApiError::new(ErrorCode::TooManyRequests, "slow down").retry_after(7));
        assert_eq!(limited.code(), Code::ResourceExhausted);
        assert_eq!(
            limited
                .get_error_details()
                .retry_info()
                .unwrap()
                .retry_delay,
            Some(Duration::from_secs(7))
        );
        assert_eq!(field_of("invalid task body: expected value"), None);
    }

    /// The table in docs/grpc.md, row by row.
    #[test]
    fn every_error_code_maps_as_the_docs_say() {
        let taken = ApiError::from(cuttle_storage::Error::Conflict("taken".into()));
        let cases = [
            (
                ApiError::new(ErrorCode::Unauthorized, "x"),
                Code::Unauthenticated,
            ),
            (
                ApiError::new(ErrorCode::Forbidden, "x"),
                Code::PermissionDenied,
            ),
            (ApiError::new(ErrorCode::NotFound, "x"), Code::NotFound),
            (taken, Code::AlreadyExists),
            (
                ApiError::new(ErrorCode::Conflict, "x"),
                Code::FailedPrecondition,
            ),
            (
                ApiError::new(ErrorCode::BadRequest, "x"),
                Code::InvalidArgument,
            ),
            (
                ApiError::new(ErrorCode::TooManyRequests, "x"),
                Code::ResourceExhausted,
            ),
            (
                ApiError::new(ErrorCode::PayloadTooLarge, "x"),
                Code::ResourceExhausted,
            ),
            (
                ApiError::new(ErrorCode::Unavailable, "x"),
                Code::Unavailable,
            ),
            (ApiError::new(ErrorCode::Draining, "x"), Code::Unavailable),
            (
                ApiError::new(ErrorCode::RequestTimeout, "x"),
                Code::DeadlineExceeded,
            ),
            (ApiError::new(ErrorCode::Internal, "x"), Code::Internal),
        ];
        for (e, want) in cases {
            let rest = e.code().as_str();
            let s = status(e);
            assert_eq!(s.code(), want, "{rest}");
            assert_eq!(s.get_error_details().error_info().unwrap().reason, rest);
        }
    }

    #[test]
    fn timestamps_split_milliseconds() {
        let t = timestamp(1_700_000_000_123);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_000_000));
    }
}
