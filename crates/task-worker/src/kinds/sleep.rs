//! `Sleep`: waits, logging start and end; for smoke tests and benchmarks.

use std::time::Duration;

use cuttle_storage::Execution;

use super::Executor;
use crate::ctx::{TaskCtx, TaskResult};

pub(crate) struct Sleep {
    pub(crate) duration_ms: u64,
}

impl Executor for Sleep {
    async fn run(&self, key: Execution, ctx: &TaskCtx) -> TaskResult {
        let ms = self.duration_ms;
        ctx.logs
            .line(key, format!("INFO  sleeping for {ms} ms"))
            .await;
        ctx.until_stopped(async {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        })
        .await?;
        ctx.logs.line(key, format!("INFO  slept {ms} ms")).await;
        Ok(())
    }
}
