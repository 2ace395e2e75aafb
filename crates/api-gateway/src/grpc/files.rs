//! A shared-store file sent as a stream of chunks, whole or a range of it, read as the client
//! takes them (HTTP/2 flow control): packages and artifacts alike.

use std::io::{Seek, SeekFrom};
use std::path::PathBuf;

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncReadExt;
use tonic::Status;

use super::convert::status;
use crate::resources::files::store_failed;

/// Bytes in one chunk.
const CHUNK: usize = 256 * 1024;

/// The part of a `size`-byte file a request asks for: from `offset`, `length` bytes (0: to the
/// end). OUT_OF_RANGE for an offset past the end.
pub(super) fn range(size: u64, offset: u64, length: u64) -> Result<(u64, u64), Status> {
    if offset > size {
        return Err(Status::out_of_range(format!(
            "offset: {offset} is past the end of the file ({size} bytes)"
        )));
    }
    let end = match length {
        0 => size,
        n => size.min(offset.saturating_add(n)),
    };
    Ok((offset, end))
}

/// `path` from `offset` to `end` as `(bytes, where they start)` chunks, counted by `meter`.
pub(super) async fn chunks(
    path: PathBuf,
    (offset, end): (u64, u64),
    what: &'static str,
    meter: Option<cuttle_telemetry::IntCounter>,
) -> Result<impl Stream<Item = Result<(Bytes, u64), Status>> + Send + 'static, Status> {
    let file = tokio::task::spawn_blocking(move || {
        let opened = std::fs::File::open(&path).and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            Ok(f)
        });
        opened.map_err(|source| cuttle_storage::Error::Io {
            context: what,
            path,
            source,
        })
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(|e| status(store_failed(e)))?;
    let reader = tokio::fs::File::from_std(file).take(end - offset);
    Ok(
        tokio_util::io::ReaderStream::with_capacity(reader, CHUNK).scan(offset, move |at, read| {
            let item = match read {
                Ok(bytes) => {
                    if let Some(m) = &meter {
                        m.inc_by(bytes.len() as u64);
                    }
                    let start = *at;
                    *at += bytes.len() as u64;
                    Ok((bytes, start))
                }
                Err(e) => {
                    tracing::error!(error = %e, what, "read a file being downloaded");
                    Err(Status::unavailable(
                        "the shared file store failed; see the node's log",
                    ))
                }
            };
            futures_util::future::ready(Some(item))
        }),
    )
}
