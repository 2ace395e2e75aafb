//! `PullFile`: collects a file from each selected target into the shared store, under
//! `Artifacts/{task}/{target}/`, checked against the size and SHA-256 the tentacle announced and
//! put in place only once whole.

use cuttle_core::{Comms, TargetRecord, TargetSelection};
use cuttle_proto::v1::{file_chunk, FileChunk, PullFileRequest, RelayPullFile};
use cuttle_storage::Execution;
use futures_util::future::join_all;
use tonic::Streaming;

use super::Executor;
use crate::ctx::{TaskCtx, TaskResult};
use crate::tentacles::{all_succeeded, listening, relayed, selected};

pub(crate) struct PullFile {
    pub(crate) source: String,
    pub(crate) on: TargetSelection,
}

impl Executor for PullFile {
    async fn run(&self, key: Execution, ctx: &TaskCtx) -> TaskResult {
        pull(key, &self.source, &self.on, ctx).await
    }
}

/// Collects a file from every selected target into the shared store as the task's artifacts.
async fn pull(key: Execution, source: &str, on: &TargetSelection, ctx: &TaskCtx) -> TaskResult {
    let chosen = selected(on, ctx).await?;
    ctx.until_stopped(async {
        all_succeeded(join_all(chosen.iter().map(|t| pull_one(key, t, source, ctx))).await)
    })
    .await
}

async fn pull_one(
    key: Execution,
    t: &TargetRecord,
    source: &str,
    ctx: &TaskCtx,
) -> Result<(), String> {
    let request = PullFileRequest {
        path: source.to_owned(),
    };
    let stream = match t.comms {
        Comms::Polling => {
            relayed(t, ctx, |mut client| {
                let relay = RelayPullFile {
                    target_id: t.id.0,
                    request: Some(request.clone()),
                };
                async move { client.pull_file(relay).await }
            })
            .await
        }
        Comms::Listening => match listening(t, ctx).await {
            Ok(mut client) => client
                .pull_file(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| s.message().to_owned()),
            Err(e) => Err(e),
        },
    }
    .map_err(|e| format!("{}: {e}", t.name))?;
    let file_name = std::path::Path::new(source)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let dest = ctx
        .targets
        .shared
        .artifact_path(key.task, &t.name, &file_name);
    let temp = ctx
        .targets
        .shared
        .artifact_temp(&ctx.node)
        .map_err(|e| format!("{}: {e}", t.name))?;
    let received = receive(stream, &temp).await;
    let placed = received.and_then(|(size, sha256)| {
        ctx.targets
            .shared
            .place_artifact(&temp, &dest)
            .map(|()| (size, sha256))
            .map_err(|e| e.to_string())
    });
    match placed {
        Ok((size, sha256)) => {
            ctx.logs
                .line(
                    key,
                    format!(
                        "INFO  [{}] collected {source} ({size} bytes, SHA-256 {sha256}) as {}",
                        t.name,
                        dest.display()
                    ),
                )
                .await;
            Ok(())
        }
        Err(e) => {
            // Half-received: nothing is put in place.
            let _ = tokio::fs::remove_file(&temp).await;
            Err(format!("{}: {e}", t.name))
        }
    }
}

/// Writes a pulled file to `temp`, checking it against its header; fsynced when it returns Ok.
async fn receive(
    mut stream: Streaming<FileChunk>,
    temp: &std::path::Path,
) -> Result<(u64, String), String> {
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncWriteExt;
    let header = match stream.message().await.map_err(|s| s.message().to_owned())? {
        Some(FileChunk {
            part: Some(file_chunk::Part::Header(h)),
        }) => h,
        _ => return Err("the file did not start with its header".into()),
    };
    let io = |e: std::io::Error| format!("write {}: {e}", temp.display());
    let mut file = tokio::fs::File::create(temp).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.message().await.map_err(|s| s.message().to_owned())? {
        let Some(file_chunk::Part::Data(bytes)) = chunk.part else {
            return Err("a second header in one file".into());
        };
        size += bytes.len() as u64;
        if size > header.size {
            return Err(format!("more than the announced {} bytes", header.size));
        }
        hasher.update(&bytes);
        file.write_all(&bytes).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    let sha256 = cuttle_proto::files::hex(&hasher.finalize());
    if size != header.size || sha256 != header.sha256 {
        return Err(format!(
            "received {size} bytes with SHA-256 {sha256}; the tentacle announced {} bytes with {}",
            header.size, header.sha256
        ));
    }
    Ok((size, sha256))
}
