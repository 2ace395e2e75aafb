//! `EventArchive`: moves audit events older than a cut-off out of the database into one gzipped
//! JSON-lines file per UTC day in the shared store. Only whole days go (a day whose last moment
//! is older than the cut-off), oldest first; each day's file is put in place complete before
//! its events are deleted. A run that died between the two is redone by the next: the day's
//! events are written again (the same ones: a past day gets no new events) over the file, then
//! deleted — never lost, never archived twice.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cuttle_core::{civil_date, UnixMs, DAY_MS};
use cuttle_storage::{DayExport, Execution};

use super::Executor;
use crate::ctx::{TaskCtx, TaskError, TaskResult};

/// Events read from the database at a time.
const PAGE: u32 = 1000;

pub(crate) struct EventArchive {
    pub(crate) older_than: Duration,
}

impl Executor for EventArchive {
    async fn run(&self, key: Execution, ctx: &TaskCtx) -> TaskResult {
        ctx.until_stopped(archive(key, self.older_than, ctx)).await
    }
}

fn failed(why: String) -> TaskError {
    TaskError::Failed(why)
}

async fn archive(key: Execution, older_than: Duration, ctx: &TaskCtx) -> TaskResult {
    let store = &ctx.targets.store;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as UnixMs)
        .unwrap_or(0);
    let cutoff = now - older_than.as_millis() as UnixMs;
    // Days before this one end before the cut-off.
    let first_kept_day = cutoff.div_euclid(DAY_MS);
    let Some(oldest) = store
        .oldest_event_at()
        .await
        .map_err(|e| failed(format!("read the oldest event: {e}")))?
    else {
        ctx.logs.line(key, "INFO  no events to archive").await;
        return Ok(());
    };
    let (mut days, mut archived) = (0u64, 0u64);
    for day in oldest.div_euclid(DAY_MS)..first_kept_day {
        let (from, to) = (day * DAY_MS, (day + 1) * DAY_MS);
        let shared = ctx.targets.shared.clone();
        let node = ctx.node.clone();
        let mut export: Option<DayExport> = None;
        let mut after = 0i64;
        loop {
            let page = store
                .events_between(from, to, after, PAGE)
                .await
                .map_err(|e| failed(format!("read events: {e}")))?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            let full = page.len() == PAGE as usize;
            let (shared, node) = (shared.clone(), node.clone());
            let taken = export.take();
            export = Some(
                tokio::task::spawn_blocking(move || {
                    let mut x = match taken {
                        Some(x) => x,
                        None => shared.start_day_export(&node, day)?,
                    };
                    for (_, e) in &page {
                        x.write(e)?;
                    }
                    Ok::<_, cuttle_storage::Error>(x)
                })
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(format!("write the archive: {e}")))?,
            );
            if !full {
                break;
            }
        }
        let Some(export) = export else { continue };
        let count = export.events;
        let placed = tokio::task::spawn_blocking(move || export.finish())
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(format!("write the archive: {e}")))?;
        let deleted = store
            .delete_events_between(from, to)
            .await
            .map_err(|e| failed(format!("delete archived events: {e}")))?;
        let (y, m, d) = civil_date(day);
        let shown = placed
            .strip_prefix(ctx.targets.shared.root())
            .unwrap_or(&placed)
            .display()
            .to_string();
        ctx.logs
            .line(
                key,
                format!(
                    "INFO  {y:04}-{m:02}-{d:02}: {count} event(s) archived to {shown}, {deleted} \
                     deleted from the database"
                ),
            )
            .await;
        days += 1;
        archived += count;
    }
    ctx.logs
        .line(
            key,
            format!(
                "INFO  archive done: {archived} event(s) of {days} day(s) older than {} s",
                older_than.as_secs()
            ),
        )
        .await;
    Ok(())
}
