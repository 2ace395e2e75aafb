//! Files over the protocol: a header with size and SHA-256, then the bytes in chunks. Both ends
//! (worker and tentacle) send and check files the same way, and neither holds a file in memory.

use std::path::Path;

use tokio_stream::{Stream, StreamExt};

use crate::v1::{file_chunk, FileChunk, FileHeader};

/// Bytes per data message.
pub const CHUNK: usize = 64 * 1024;

/// Size and lower-case hex SHA-256 of a file, read in blocks (blocking: call it off the async
/// threads).
pub fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 * CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The messages of a transfer: `header`, then the file in chunks as the transport asks for
/// them. A read error ends the stream early; the receiver then refuses the short file.
pub async fn chunks(
    path: &Path,
    header: FileHeader,
) -> std::io::Result<impl Stream<Item = FileChunk> + Send + 'static> {
    let file = tokio::fs::File::open(path).await?;
    let first = FileChunk {
        part: Some(file_chunk::Part::Header(header)),
    };
    let data = tokio_util::io::ReaderStream::with_capacity(file, CHUNK)
        .map_while(Result::ok)
        .map(|b| FileChunk {
            part: Some(file_chunk::Part::Data(b.to_vec())),
        });
    Ok(tokio_stream::once(first).chain(data))
}
