//! Files of the shared store served whole or by range (packages, artifacts): streamed, never
//! read whole, with `Content-Length`, an `ETag`, one byte range (`206`) when asked, and `304`
//! when the client already holds it.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::error::ApiError;
use crate::extract::ApiResult;

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wanted {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range (`a-b`, `a-`, `-n`); several ranges, another unit or a malformed header
/// are answered with the whole file, as RFC 9110 allows.
pub(crate) fn wanted(range: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    let (first, last) = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, true) => return Wanted::Whole,
        // The last n bytes.
        (true, false) => match num(b) {
            Some(0) => return Wanted::Unsatisfiable,
            Some(n) if size > 0 => (size.saturating_sub(n), size - 1),
            Some(_) => return Wanted::Unsatisfiable,
            None => return Wanted::Whole,
        },
        (false, true) => match num(a) {
            Some(f) => (f, size.saturating_sub(1)),
            None => return Wanted::Whole,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(f), Some(l)) if l >= f => (f, l.min(size.saturating_sub(1))),
            (Some(_), Some(_)) => return Wanted::Whole,
            _ => return Wanted::Whole,
        },
    };
    if first >= size {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part(first, last)
}

/// Does an `If-None-Match` list hold this entity tag (or `*`)?
fn matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// A file of the shared store as an answer: streamed, `Content-Length`, `ETag`, one byte range
/// (`206`, `416` beyond the end), `304` when the client holds this `etag` already.
pub(crate) struct Served<'a> {
    pub(crate) path: &'a std::path::Path,
    pub(crate) size: u64,
    /// Quoted.
    pub(crate) etag: String,
    pub(crate) content_type: &'static str,
    /// For `Content-Disposition: attachment`.
    pub(crate) file_name: &'a str,
    /// Counts the bytes sent (a package's, in `cuttle_package_bytes_total{direction="out"}`).
    pub(crate) meter: Option<cuttle_telemetry::IntCounter>,
}

pub(crate) async fn serve(f: Served<'_>, headers: &HeaderMap) -> ApiResult {
    let header_str = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    let mut common = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&f.etag) {
        common.insert(header::ETAG, v);
    }
    common.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if header_str(header::IF_NONE_MATCH).is_some_and(|v| matches(v, &f.etag)) {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    let mut file = match tokio::fs::File::open(f.path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::error!(path = %f.path.display(), "a file the database names is missing");
            return Err(ApiError::not_found(format!(
                "{}: its file is missing from the shared store",
                f.file_name
            )));
        }
        Err(e) => return Err(store_failed(cuttle_storage::Error::io("open", f.path, e))),
    };
    // A range applies only while the client's copy is this one (`If-Range`).
    let range = match header_str(header::IF_RANGE) {
        Some(tag) if tag.trim() != f.etag => None,
        _ => header_str(header::RANGE),
    };
    let size = f.size;
    let (status, first, len) = match wanted(range, size) {
        Wanted::Whole => (StatusCode::OK, 0, size),
        Wanted::Part(first, last) => {
            let v = format!("bytes {first}-{last}/{size}");
            if let Ok(v) = HeaderValue::from_str(&v) {
                common.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, first, last - first + 1)
        }
        Wanted::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                common.insert(header::CONTENT_RANGE, v);
            }
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, common).into_response());
        }
    };
    if first > 0 {
        file.seek(std::io::SeekFrom::Start(first))
            .await
            .map_err(|e| store_failed(cuttle_storage::Error::io("seek", f.path, e)))?;
    }
    common.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(f.content_type),
    );
    common.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let quoted = f.file_name.replace(['"', '\\'], "_");
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{quoted}\"")) {
        common.insert(header::CONTENT_DISPOSITION, v);
    }
    let meter = f.meter;
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 64 * 1024).inspect(
        move |read| {
            if let (Some(m), Ok(bytes)) = (&meter, read) {
                m.inc_by(bytes.len() as u64);
            }
        },
    );
    let mut resp: Response = (status, common).into_response();
    *resp.body_mut() = Body::from_stream(stream);
    Ok(resp)
}

/// A shared-store failure: logged with its path, answered without it.
pub(crate) fn store_failed(e: cuttle_storage::Error) -> ApiError {
    tracing::error!(error = %e, "shared store file operation failed");
    ApiError::new(
        cuttle_core::ErrorCode::Unavailable,
        "the shared file store failed; see the node's log",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        let w = |r: &str| wanted(Some(r), 1000);
        assert_eq!(w("bytes=0-99"), Wanted::Part(0, 99));
        assert_eq!(w("bytes=900-"), Wanted::Part(900, 999));
        assert_eq!(w("bytes=-100"), Wanted::Part(900, 999));
        assert_eq!(w("bytes=-5000"), Wanted::Part(0, 999));
        assert_eq!(w("bytes=990-5000"), Wanted::Part(990, 999));
        assert_eq!(w("bytes=1000-"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=-0"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=0-1,5-6"), Wanted::Whole);
        assert_eq!(w("items=0-1"), Wanted::Whole);
        assert_eq!(w("bytes=5-1"), Wanted::Whole);
        assert_eq!(w("bytes=x-"), Wanted::Whole);
        assert_eq!(wanted(None, 10), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
    }

    #[test]
    fn if_none_match_lists_are_searched() {
        assert!(matches("\"a\", \"b\"", "\"b\""));
        assert!(matches("W/\"b\"", "\"b\""));
        assert!(matches("*", "\"b\""));
        assert!(!matches("\"a\"", "\"b\""));
    }
}
