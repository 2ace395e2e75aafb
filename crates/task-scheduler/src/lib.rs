//! The scheduler role: cluster loops that no single worker can run for itself. Finding lost
//! nodes, failing (or re-queuing) the tasks they held and putting those tasks' logs in place;
//! and the periodic health check of every target.

use std::time::Duration;

use cuttle_core::{NewTask, TargetSelection, TaskKind};
use cuttle_storage::{SharedStore, Store};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// A node silent for longer than this is lost.
    pub offline_after: Duration,
    /// How often to look for lost nodes.
    pub check_interval: Duration,
    /// How often every target's health is checked; `None`: never.
    pub health_check_every: Option<Duration>,
}

impl SchedulerConfig {
    /// Checks often enough that a loss is acted on within about a quarter of the timeout
    /// after it expires, at most every 15 s and at least every 250 ms.
    pub fn new(offline_after: Duration) -> Self {
        let check_interval =
            (offline_after / 4).clamp(Duration::from_millis(250), Duration::from_secs(15));
        SchedulerConfig {
            offline_after,
            check_interval,
            health_check_every: None,
        }
    }
}

/// Runs the lost-node loop until `shutdown`. Safe to run on every node at once: the store
/// hands each lost node to exactly one scheduler.
pub async fn serve(
    config: SchedulerConfig,
    store: Store,
    shared: SharedStore,
    wake_local: impl Fn() + Send + Sync + 'static,
    shutdown: CancellationToken,
) {
    let wake_local = std::sync::Arc::new(wake_local);
    if let Some(every) = config.health_check_every {
        let (store, wake, stop) = (store.clone(), wake_local.clone(), shutdown.clone());
        tokio::spawn(periodic_health_checks(every, store, move || wake(), stop));
    }
    let mut tick = tokio::time::interval(config.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.handle_lost_nodes(config.offline_after).await {
            Ok(lost) => {
                for node in lost {
                    tracing::warn!(
                        node = %node.name,
                        failed = node.failed.len(),
                        requeued = node.requeued.len(),
                        offline_after_secs = config.offline_after.as_secs(),
                        "node lost: no heartbeat within the offline timeout; its tasks were stopped"
                    );
                    if !node.requeued.is_empty() {
                        wake_local();
                    }
                    salvage_logs(&shared, node).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "look for lost nodes"),
        }
    }
}

const HEALTH_CHECK_JOB: &str = "health_check_period";

/// Enqueues a `HealthCheck` of every target once per period, counted from the Unix epoch:
/// every scheduler tries at each period's start and the store lets exactly one succeed. A
/// node that dies between winning a period and enqueuing skips that period's check.
async fn periodic_health_checks(
    every: Duration,
    store: Store,
    wake_local: impl Fn(),
    shutdown: CancellationToken,
) {
    let period_ms = every.as_millis().max(1) as i64;
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let period = now / period_ms;
        let wait = match store.claim_period(HEALTH_CHECK_JOB, period).await {
            Ok(won) => {
                // A cluster without targets has nothing to check: no task, no noise.
                let any_target = won
                    && match store.list_targets(None, Duration::ZERO).await {
                        Ok(t) => !t.is_empty(),
                        Err(_) => true, // let the task report the problem
                    };
                if any_target {
                    let task = NewTask {
                        kind: TaskKind::HealthCheck {
                            on: TargetSelection::default(),
                        },
                        description: format!("Periodic health check (period {period})"),
                        // One at a time: a slow check never overlaps the next.
                        concurrency_tag: Some("system/health-check".into()),
                    };
                    match store.enqueue(&task, None).await {
                        Ok(t) => {
                            tracing::info!(task = %t.id, period, "periodic health check queued");
                            wake_local();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, period, "queue the periodic health check")
                        }
                    }
                }
                Duration::from_millis(((period + 1) * period_ms - now).max(1) as u64)
            }
            Err(e) => {
                tracing::warn!(error = %e, "periodic health check: will try again");
                Duration::from_secs(5).min(every)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Puts the logs of a lost node's stopped tasks in place, ending with why they stop there, and
/// removes the uploads and artifacts it was receiving (never to be finished). A failure is
/// logged and left to the node's own clean-up when it starts again.
async fn salvage_logs(shared: &SharedStore, node: cuttle_storage::LostNode) {
    let mut tasks = node.failed;
    tasks.extend(node.requeued);
    let shared = shared.clone();
    let name = node.name;
    let note = format!("ERROR node {name} was lost; this task's log ends here");
    let res = tokio::task::spawn_blocking(move || {
        if !tasks.is_empty() {
            shared.salvage_task_logs(&name, &tasks, false, &note)?;
        }
        let cleared = shared.clear_in_progress(&name)?;
        if cleared > 0 {
            tracing::info!(node = %name, cleared, "removed a lost node's unfinished uploads");
        }
        Ok::<_, cuttle_storage::Error>(())
    })
    .await;
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "clean up after a lost node"),
        Err(e) => tracing::warn!(error = %e, "clean up after a lost node"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_interval_follows_the_timeout() {
        assert_eq!(
            SchedulerConfig::new(Duration::from_secs(60)).check_interval,
            Duration::from_secs(15)
        );
        assert_eq!(
            SchedulerConfig::new(Duration::from_secs(4)).check_interval,
            Duration::from_secs(1)
        );
        assert_eq!(
            SchedulerConfig::new(Duration::from_millis(100)).check_interval,
            Duration::from_millis(250)
        );
        assert_eq!(
            SchedulerConfig::new(Duration::from_secs(3600)).check_interval,
            Duration::from_secs(15)
        );
    }
}
