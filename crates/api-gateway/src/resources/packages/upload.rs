//! Receiving a package, whatever its size, without holding it: the body's pieces go through a
//! small bounded channel to a blocking writer that hashes and writes them under this node's
//! in-progress folder; only a complete upload whose size and hash check out is fsynced, renamed
//! into its content-named place and recorded. Anything else — a client gone half-way, an idle
//! body, too many bytes, a bad name, a lost race — leaves no file and no row.

use std::path::PathBuf;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use cuttle_core::{
    package_version_key, parse_package_version, validate_package_id, ErrorCode, PackageFileName,
    PackageFormat, SemVer,
};
use cuttle_storage::{Audit, IncomingFile, NewPackage, PackageRecord, SharedStore};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use super::multipart::{boundary, Event, Multipart};
use super::{flag, shown};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiResult, PathParams, QueryMap};
use crate::resources::documents::{resolve_space, space_id};
use crate::resources::files::store_failed;
use crate::AppState;

/// Pieces of the body in flight to the writer: what bounds an upload's memory.
const IN_FLIGHT: usize = 8;
/// Bytes kept from the file's start to check it is the format it claims.
const HEAD: usize = 512;

enum Piece {
    Data(Bytes),
    /// The body is complete: sync and keep the file.
    End,
}

/// The package being received, once its name is known.
struct Named {
    package_id: String,
    version: SemVer,
    format: PackageFormat,
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "the package is over this server's limit of {max} bytes (CUTTLE_PACKAGE_MAX_BYTES)"
        ),
    )
}

/// Checks the name, and that the version is not there already (unless it is to be replaced):
/// a conflict is answered before the body is read. Gives the id in the case the repository
/// already knows it by.
async fn check_name(
    s: &AppState,
    caller: &Caller,
    space: &str,
    named: &mut Named,
    replace: bool,
) -> Result<(), ApiError> {
    validate_package_id(&named.package_id)?;
    let versions = s
        .store
        .list_packages(Some(space), Some(&named.package_id))
        .await?;
    if let Some(first) = versions.first() {
        named.package_id = first.package_id.clone();
    }
    let key = package_version_key(&named.version);
    let exists = versions.iter().any(|p| {
        p.version
            .parse::<SemVer>()
            .is_ok_and(|v| package_version_key(&v) == key)
    });
    if exists && !replace {
        return Err(ApiError::already_exists(format!(
            "package {} version {} is already in the repository (upload it as a new \
                 version; an operator may replace a version nothing has released yet with \
                 replace=true)",
            named.package_id, named.version
        )));
    }
    if exists {
        // Released bytes never change under a release: a version something names stays.
        if !caller.scope.grants(cuttle_core::Scope::Operator) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "replacing a package version needs scope operator; {} has scope {} (upload \
                     it as a new version)",
                    caller.name, caller.scope
                ),
            ));
        }
        let id = named.package_id.to_lowercase();
        if let Some(pin) = cuttle_storage::package_pins(&s.store, space)
            .await?
            .into_iter()
            .find(|p| p.package_id == id && p.version_key == key)
        {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "package {} version {} cannot be replaced: {} names it (upload it as a new \
                     version)",
                    named.package_id, named.version, pin.by
                ),
            ));
        }
    }
    Ok(())
}

/// Does the file start the way its format does?
fn looks_like(format: PackageFormat, head: &[u8]) -> bool {
    if format.is_zip() {
        head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06")
    } else if format.is_gzip() {
        head.starts_with(&[0x1f, 0x8b])
    } else {
        head.get(257..262) == Some(b"ustar")
    }
}

/// The writer's end: size, SHA-256 and the synced in-progress file.
type Written =
    tokio::sync::oneshot::Receiver<Result<(u64, String, PathBuf), cuttle_storage::Error>>;

/// Starts the writer of a new in-progress file on a thread of its own: a long upload never
/// holds one of the blocking threads every other request shares (database calls on SQLite,
/// log reads). How many run at once is bounded by [`Uploads`].
fn start_writer(shared: SharedStore, node: String) -> (mpsc::Sender<Piece>, Written) {
    let (tx, mut rx) = mpsc::channel::<Piece>(IN_FLIGHT);
    let (done, written) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("cuttle-upload".into())
        .spawn(move || {
            let mut write = || {
                let mut file = IncomingFile::create(shared.package_temp(&node)?)?;
                while let Some(piece) = rx.blocking_recv() {
                    match piece {
                        Piece::Data(b) => file.write(&b)?,
                        Piece::End => return file.finish(),
                    }
                }
                // The handler went away before the end: the file is dropped, and with it
                // removed.
                Err(cuttle_storage::Error::Invalid("upload abandoned".into()))
            };
            let _ = done.send(write());
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "start an upload's writer");
    }
    (tx, written)
}

/// Uploads a node takes at once, in all and per API key: each holds a writer thread and a file
/// in progress.
pub(crate) struct Uploads {
    all: std::sync::Arc<tokio::sync::Semaphore>,
    per_key: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// Uploads at once per node, and per API key.
const UPLOADS_PER_NODE: usize = 32;
pub(crate) const UPLOADS_PER_KEY: usize = 4;

impl Default for Uploads {
    fn default() -> Self {
        Uploads {
            all: std::sync::Arc::new(tokio::sync::Semaphore::new(UPLOADS_PER_NODE)),
            per_key: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

/// One upload's place; given back when dropped.
pub(crate) struct UploadSlot<'a> {
    uploads: &'a Uploads,
    key: String,
    _all: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        let mut per_key = self
            .uploads
            .per_key
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_key.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_key.remove(&self.key);
            }
        }
    }
}

impl Uploads {
    /// Uploads this node is receiving now.
    pub(crate) fn in_progress(&self) -> usize {
        UPLOADS_PER_NODE - self.all.available_permits()
    }

    /// A place for one more upload by `key` (the caller's principal): 429 past its share,
    /// 503 when the node takes no more.
    pub(crate) fn enter(&self, key: &str) -> Result<UploadSlot<'_>, ApiError> {
        let all = self.all.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("this node takes {UPLOADS_PER_NODE} uploads at once; retry shortly"),
            )
            .retry_after(5)
        })?;
        let mut per_key = self.per_key.lock().unwrap_or_else(|p| p.into_inner());
        let n = per_key.entry(key.to_owned()).or_default();
        if *n >= UPLOADS_PER_KEY {
            return Err(ApiError::new(
                ErrorCode::TooManyRequests,
                format!(
                    "at most {UPLOADS_PER_KEY} uploads at once per API key; retry when one ends"
                ),
            )
            .retry_after(5));
        }
        *n += 1;
        Ok(UploadSlot {
            uploads: self,
            key: key.to_owned(),
            _all: all,
        })
    }
}

/// Most of a refused upload's body read and dropped before the answer, so that a client that
/// sends its whole body before reading (no `Expect: 100-continue`) hears why instead of a reset.
pub(crate) const DRAIN_LIMIT: u64 = 16 << 20;

type BodyStream = axum::body::BodyDataStream;

pub(super) async fn upload(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    PathParams(space): PathParams<String>,
    query: QueryMap,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let mut stream = body.into_data_stream();
    let result = receive(&s, caller, space, query, &headers, &mut stream).await;
    if result.is_err() {
        drain_refused(&headers, &mut stream, s.config.limits.body_timeout).await;
    }
    result
}

/// [`drain`] for a refused HTTP request, unless its client waits for `100 Continue` (it has
/// sent nothing, and is not asked for anything).
pub(crate) async fn drain_refused(
    headers: &HeaderMap,
    body: &mut BodyStream,
    idle: std::time::Duration,
) {
    let waits_to_send = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if !waits_to_send {
        drain(body, idle, |b| b.len()).await;
    }
}

/// Reads and drops what a refused request still sends — at most [`DRAIN_LIMIT`] bytes (`size`
/// says a piece's), none once it idles for `idle` — so a client that sends its whole body
/// before it reads (most do) hears why instead of a reset. REST's and gRPC's one way.
pub(crate) async fn drain<S, T, E>(
    stream: &mut S,
    idle: std::time::Duration,
    size: impl Fn(&T) -> usize,
) where
    S: futures_util::Stream<Item = Result<T, E>> + Unpin,
{
    let mut drained = 0u64;
    while drained < DRAIN_LIMIT {
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(piece))) => drained += size(&piece) as u64,
            _ => break,
        }
    }
}

async fn receive(
    s: &AppState,
    caller: Caller,
    space: String,
    query: QueryMap,
    headers: &HeaderMap,
    stream: &mut BodyStream,
) -> ApiResult {
    let _slot = s.uploads.enter(&caller.principal)?;
    let q = query.only(&["package_id", "version", "format", "replace"])?;
    let replace = flag(q.get("replace"), "replace")?;
    let expected = match headers.get("x-content-sha256") {
        None => None,
        Some(v) => {
            let v = v.to_str().unwrap_or_default().trim().to_ascii_lowercase();
            if v.len() != 64 || !v.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ApiError::bad_request(
                    "X-Content-SHA256 must be 64 hexadecimal digits",
                ));
            }
            Some(v)
        }
    };
    let max = s.config.package_max_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let (Some(max), Some(n)) = (max, declared) {
        if n > max {
            return Err(too_large(max));
        }
    }
    let space = space_id(&resolve_space(s, &space).await?);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let multipart = match boundary(content_type) {
        Some(Ok(b)) => {
            if ["package_id", "version", "format"]
                .iter()
                .any(|k| q.contains_key(*k))
            {
                return Err(ApiError::bad_request(
                    "a multipart upload is named by its file part (PackageId.Version.ext); \
                     package_id, version and format are for a raw body",
                ));
            }
            Some(Multipart::new(&b))
        }
        Some(Err(e)) => return Err(ApiError::bad_request(e)),
        None => None,
    };
    let named = match &multipart {
        Some(_) => None,
        None => {
            let need = |k: &str| {
                q.get(k).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "a raw upload needs ?package_id=, ?version= and ?format= (missing {k}); \
                         or send multipart/form-data with a file named PackageId.Version.ext"
                    ))
                })
            };
            let mut n = Named {
                package_id: need("package_id")?.clone(),
                version: parse_package_version(need("version")?)?,
                format: PackageFormat::parse(need("format")?)?,
            };
            check_name(s, &caller, &space, &mut n, replace).await?;
            Some(n)
        }
    };

    let incoming = Incoming {
        space,
        replace,
        expected,
        multipart,
        named,
    };
    let added = store_upload(s, &caller, incoming, stream).await?;
    Ok((StatusCode::CREATED, Json(shown(&added))).into_response())
}

/// What is known of an upload before its bytes: where it goes, what it is (or the multipart
/// reader that will say), the SHA-256 it must have.
pub(crate) struct Incoming {
    /// The space's id.
    pub(crate) space: String,
    pub(crate) replace: bool,
    pub(crate) expected: Option<String>,
    multipart: Option<Multipart>,
    named: Option<Named>,
}

impl Incoming {
    /// A raw upload named by the client (`package_id`, `version`, `format`): checked now, and a
    /// version the repository has is refused before any byte is read. `space` is as the client
    /// named it; `expected`, when given, is 64 hexadecimal digits.
    pub(crate) async fn raw(
        s: &AppState,
        caller: &Caller,
        space: &str,
        (package_id, version, format): (&str, &str, &str),
        replace: bool,
        expected: Option<&str>,
    ) -> Result<Incoming, ApiError> {
        let expected = match expected.map(|v| v.trim().to_ascii_lowercase()) {
            Some(v) if v.len() != 64 || !v.chars().all(|c| c.is_ascii_hexdigit()) => {
                return Err(ApiError::bad_request("sha256: 64 hexadecimal digits"))
            }
            v => v,
        };
        let space = space_id(&resolve_space(s, space).await?);
        let mut n = Named {
            package_id: package_id.to_owned(),
            version: parse_package_version(version)?,
            format: PackageFormat::parse(format)?,
        };
        check_name(s, caller, &space, &mut n, replace).await?;
        Ok(Incoming {
            space,
            replace,
            expected,
            multipart: None,
            named: Some(n),
        })
    }
}

/// Receives an upload's bytes from `stream` (pieces in order), hashing and writing them as they
/// come in flat memory, and keeps the package only when it is complete and checks out: its
/// record. REST's and gRPC's one way to take a package. The caller holds an upload slot.
pub(crate) async fn store_upload<S, E>(
    s: &AppState,
    caller: &Caller,
    incoming: Incoming,
    stream: &mut S,
) -> Result<PackageRecord, ApiError>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let Incoming {
        space,
        replace,
        expected,
        mut multipart,
        mut named,
    } = incoming;
    let max = s.config.package_max_bytes;
    let (tx, writer) = start_writer(s.shared.clone(), s.config.node_name.clone());
    let started = std::time::Instant::now();
    let idle = s.config.limits.body_timeout;
    let mut received = 0u64;
    let mut head = Vec::with_capacity(HEAD);
    'body: loop {
        let piece = match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => {
                return Err(ApiError::new(
                    ErrorCode::RequestTimeout,
                    format!(
                        "the upload stalled: no bytes for {} s; nothing was kept",
                        idle.as_secs_f32()
                    ),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::info!(error = %e, received, "package upload cut short");
                return Err(ApiError::bad_request(format!(
                    "the upload was cut short after {received} bytes ({e}); nothing was kept"
                )));
            }
            Ok(Some(Ok(bytes))) => bytes,
        };
        received += piece.len() as u64;
        if let Some(max) = max.filter(|m| received > *m) {
            return Err(too_large(max));
        }
        let mut data = Vec::new();
        match &mut multipart {
            None => data.push(piece),
            Some(m) => {
                let mut file_name = None;
                m.feed(&piece, &mut |e| {
                    match e {
                        Event::File(name) => file_name = Some(name),
                        Event::Data(d) => data.push(Bytes::copy_from_slice(d)),
                    }
                    Ok(())
                })
                .map_err(ApiError::bad_request)?;
                if let Some(name) = file_name {
                    let parsed = PackageFileName::parse(&name)?;
                    let mut n = Named {
                        package_id: parsed.package_id,
                        version: parsed.version,
                        format: parsed.format,
                    };
                    check_name(s, caller, &space, &mut n, replace).await?;
                    named = Some(n);
                }
            }
        }
        for d in data {
            let file_bytes = writer_bytes(&head, &d);
            head.extend_from_slice(file_bytes);
            if tx.send(Piece::Data(d)).await.is_err() {
                // The writer failed (a full disk, say): stop reading; its error is below.
                break 'body;
            }
        }
    }
    if tx.is_closed() {
        return Err(writer
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
            .map_err(store_failed)
            .err()
            .unwrap_or_else(|| ApiError::new(ErrorCode::Internal, "the upload's writer stopped")));
    }
    if let Some(m) = &multipart {
        m.finish().map_err(ApiError::bad_request)?;
    }
    let Some(named) = named else {
        return Err(ApiError::bad_request("the upload named no package"));
    };
    let _ = tx.send(Piece::End).await;
    drop(tx);
    let received_in = started.elapsed();
    let (size, sha256, temp) = writer
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(store_failed)?;
    cuttle_telemetry::metrics().package_bytes_in(size);
    // From here the complete file is ours to place or remove.
    let discard = |path: PathBuf| {
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(path);
        })
    };
    if let Some(want) = &expected {
        if *want != sha256 {
            discard(temp).await.ok();
            return Err(ApiError::bad_request(format!(
                "the body's SHA-256 is {sha256}, not the {want} X-Content-SHA256 gave; \
                 nothing was kept"
            )));
        }
    }
    if size == 0 || !looks_like(named.format, &head) {
        discard(temp).await.ok();
        return Err(ApiError::bad_request(format!(
            "the file is not a {} archive (its first bytes say otherwise); nothing was kept",
            named.format
        )));
    }
    let version = named.version.to_string();
    let file =
        SharedStore::package_file_name(&space, &named.package_id, &version, &sha256, named.format);
    let (shared, placed) = (s.shared.clone(), file.clone());
    tokio::task::spawn_blocking(move || shared.place_package(&temp, &placed))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(store_failed)?;

    let by = caller.clone();
    let audit: Audit<PackageRecord> = Box::new(move |p| {
        by.event(
            "package.upload",
            format!("{}.{}", p.package_id, p.version),
            json!({"sha256": p.sha256, "size": p.size, "format": p.format.extension()}),
        )
    });
    let uploaded_by = caller.actor();
    let added = s
        .store
        .add_package(
            &NewPackage {
                space: &space,
                package_id: &named.package_id,
                version: &version,
                version_key: &package_version_key(&named.version),
                format: named.format,
                size,
                sha256: &sha256,
                file: &file,
                uploaded_by: &uploaded_by,
            },
            replace,
            Some(audit),
        )
        .await;
    let added = match added {
        Ok(a) => a,
        Err(e) => {
            // Lost a race (or the database failed): keep the file only if the winner's row
            // names the very same file (same bytes).
            let winner = s
                .store
                .get_package(
                    &space,
                    &named.package_id,
                    &package_version_key(&named.version),
                )
                .await
                .ok()
                .flatten();
            if winner.is_none_or(|w| w.file != file) {
                let shared = s.shared.clone();
                let _ =
                    tokio::task::spawn_blocking(move || shared.remove_package_file(&file)).await;
            }
            return Err(e.into());
        }
    };
    if let Some(old) = added.replaced.filter(|old| old.file != added.added.file) {
        let shared = s.shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = shared.remove_package_file(&old.file) {
                tracing::warn!(error = %e, "remove a replaced package's file");
            }
        })
        .await;
    }
    tracing::info!(
        package = %added.added.package_id,
        version = %added.added.version,
        size,
        received_secs = received_in.as_secs_f64(),
        total_secs = started.elapsed().as_secs_f64(),
        "package uploaded"
    );
    Ok(added.added)
}

/// The part of `d` that still fits in the file's first [`HEAD`] bytes.
fn writer_bytes<'a>(head: &[u8], d: &'a [u8]) -> &'a [u8] {
    &d[..d.len().min(HEAD.saturating_sub(head.len()))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_recognised_by_their_first_bytes() {
        assert!(looks_like(PackageFormat::Zip, b"PK\x03\x04rest"));
        assert!(looks_like(PackageFormat::Nupkg, b"PK\x05\x06"));
        assert!(looks_like(PackageFormat::TarGz, &[0x1f, 0x8b, 8]));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(looks_like(PackageFormat::Tar, &tar));
        assert!(!looks_like(PackageFormat::Zip, b"<html>"));
        assert!(!looks_like(PackageFormat::Tgz, b"PK\x03\x04"));
        assert!(!looks_like(PackageFormat::Tar, &[0u8; 100]));
    }
}
