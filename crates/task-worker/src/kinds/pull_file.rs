//! `PullFile`: collects a file from each selected target into the shared store, under
//! `Artifacts/{task}/{target}/`, checked against the size and SHA-256 the tentacle announced and
//! put in place only once whole.

use cuttle_core::{TargetRecord, TargetSelection};
use cuttle_storage::Execution;
use futures_util::future::join_all;

use super::Executor;
use crate::artifacts::pull_from;
use crate::ctx::{TaskCtx, TaskResult};
use crate::tentacles::{all_succeeded, selected};

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
    let file_name = std::path::Path::new(source)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let (id, size, sha256) = pull_from(key, t, source, false, &file_name, ctx).await?;
    ctx.logs
        .line(
            key,
            format!(
                "INFO  [{}] collected {source} ({size} bytes, SHA-256 {sha256}) as Artifacts/{}/{id}",
                t.name, key.task
            ),
        )
        .await;
    Ok(())
}
