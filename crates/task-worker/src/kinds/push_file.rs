//! `PushFile`: sends a file from the shared store to each selected target's files folder, read
//! twice from the store (to hash it, then to send it), never held in memory; checked by size
//! and SHA-256 on arrival.

use cuttle_core::{TargetRecord, TargetSelection};
use cuttle_proto::v1::FileHeader;
use cuttle_storage::Execution;
use futures_util::future::join_all;

use super::Executor;
use crate::ctx::{TaskCtx, TaskResult};
use crate::tentacles::{all_succeeded, selected, send_file};

pub(crate) struct PushFile {
    pub(crate) source: String,
    pub(crate) destination: String,
    pub(crate) on: TargetSelection,
}

impl Executor for PushFile {
    async fn run(&self, key: Execution, ctx: &TaskCtx) -> TaskResult {
        push(key, &self.source, &self.destination, &self.on, ctx).await
    }
}

/// Sends a file from the shared store to every selected target at once. Read twice from the
/// store (to hash it, then to send it), never held in memory.
async fn push(
    key: Execution,
    source: &str,
    destination: &str,
    on: &TargetSelection,
    ctx: &TaskCtx,
) -> TaskResult {
    let path = ctx.targets.shared.root().join(source);
    let hashed = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || cuttle_proto::files::sha256_file(&path)).await
    };
    let (size, sha256) = match hashed {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Err(format!("read {}: {e}", path.display()).into()),
        Err(e) => return Err(format!("hash {}: {e}", path.display()).into()),
    };
    let chosen = selected(on, ctx).await?;
    ctx.logs
        .line(
            key,
            format!(
                "INFO  sending {source} ({size} bytes, SHA-256 {sha256}) to {} target(s) as {destination}",
                chosen.len()
            ),
        )
        .await;
    let header = FileHeader {
        path: destination.to_owned(),
        size,
        sha256,
        skip_if_present: false,
    };
    ctx.until_stopped(async {
        all_succeeded(join_all(chosen.iter().map(|t| push_one(key, t, &path, &header, ctx))).await)
    })
    .await
}

async fn push_one(
    key: Execution,
    t: &TargetRecord,
    path: &std::path::Path,
    header: &FileHeader,
    ctx: &TaskCtx,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let reply = send_file(t, path, header, ctx).await?;
    let secs = started.elapsed().as_secs_f64();
    ctx.logs
        .line(
            key,
            format!(
                "INFO  [{}] received {} bytes in {secs:.1} s ({:.0} MiB/s) at {}",
                t.name,
                reply.size,
                reply.size as f64 / 1048576.0 / secs.max(0.001),
                reply.path
            ),
        )
        .await;
    Ok(())
}
